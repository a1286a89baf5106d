// The update rules as fused loops over each parameter's contiguous data: one pass, no temporaries.
#include <cmath>

#include "xgrad/kernel.hpp"
#include "xgrad/optim/adam.hpp"
#include "xgrad/optim/sgd.hpp"

namespace xg::optim {
using namespace xg::kernel;

namespace {
/// The gradient as a contiguous tensor of the parameter's dtype, or undefined if there is none.
Tensor grad_of(const std::string& name, const Tensor& p, const std::string& opt) {
  Tensor g = p.grad();
  if (!g.defined()) return g;
  XG_CHECK(g.shape() == p.shape() && g.dtype() == p.dtype(), "{}: the gradient of \"{}\" is {} {}, but the parameter is {} {}",
           opt, name, dtype_name(g.dtype()), shape_str(g.shape()), dtype_name(p.dtype()), shape_str(p.shape()));
  return contiguous_data(g);
}
/// One SGD update over contiguous data: d = gs g + wd p; with momentum, b = first ? d : mu b + damp d and
/// d = nesterov ? d + mu b : b; then p -= lr d. Momentum is a template flag so each loop vectorises.
template <class T>
struct SgdStep {
  T gs, lr, wd, mu, damp;
  bool nesterov, first;
  template <bool Momentum>
  void run(T* p, const T* g, T* b, std::int64_t n) const {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      T d = gs * g[i] + wd * p[i];
      if constexpr (Momentum) {
        b[i] = first ? d : mu * b[i] + damp * d;
        d = nesterov ? d + mu * b[i] : b[i];
      }
      p[i] -= lr * d;
    }
  }
};

/// One Adam/AdamW update over contiguous data: m, v moving averages of g and g^2 (g = gs g + l2 p first),
/// p *= decay, p -= step_size m / (sqrt(v or max v) / sqrt(bc2) + eps).
template <class T>
struct AdamStep {
  T gs, beta1, beta2, step_size, inv_sqrt_bc2, eps, decay, l2;
  template <bool Amsgrad>
  void run(T* p, const T* g, T* m, T* v, T* vmax, std::int64_t n) const {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      T gi = gs * g[i] + l2 * p[i];
      p[i] *= decay;
      m[i] = beta1 * m[i] + (T(1) - beta1) * gi;
      v[i] = beta2 * v[i] + (T(1) - beta2) * gi * gi;
      T vv = v[i];
      if constexpr (Amsgrad) {
        vmax[i] = vmax[i] > vv ? vmax[i] : vv;
        vv = vmax[i];
      }
      p[i] -= step_size * m[i] / (std::sqrt(vv) * inv_sqrt_bc2 + eps);
    }
  }
};
}  // namespace

SGD::SGD(std::vector<ParamGroup> groups, SGDOptions o) : Optimizer("SGD", std::move(groups), o.lr, o.weight_decay), options_(o) {
  XG_CHECK(o.momentum >= 0, "SGD: invalid momentum {}", o.momentum);
  XG_CHECK(!(o.nesterov && (o.momentum <= 0 || o.dampening != 0)), "SGD: nesterov momentum needs momentum > 0 and zero dampening");
}

void SGD::step(double grad_scale) {
  check_grad_scale(grad_scale);
  autograd::NoGradGuard ng;
  const auto& o = options_;
  for (const auto& group : groups()) {
    for (const auto& named : group.params) {
      const std::string& name = named.first;
      const Tensor& p = named.second;
      Tensor g = grad_of(name, p, "SGD");
      if (!g.defined()) continue;
      bool first = next_step(name) == 1;
      Tensor buf = o.momentum != 0 ? buffer(name, "momentum_buffer", p) : Tensor();
      dispatch_float(p.dtype(), "SGD", [&]<class T>() {
        const SgdStep<T> k{T(grad_scale), T(group.lr), T(group.weight_decay), T(o.momentum), T(1 - o.dampening), o.nesterov, first};
        T *pp = write_ptr<T>(p), *pb = buf.defined() ? write_ptr<T>(buf) : nullptr;
        const T* pg = ptr<T>(g);
        parallel_for_elements(p.numel(), [&](std::int64_t b, std::int64_t e) {
          if (pb) {
            k.template run<true>(pp + b, pg + b, pb + b, e - b);
          } else {
            k.template run<false>(pp + b, pg + b, nullptr, e - b);
          }
        });
      });
    }
  }
}

Adam::Adam(std::vector<ParamGroup> groups, AdamOptions o) : Adam("Adam", std::move(groups), o, false) {}

Adam::Adam(std::string name, std::vector<ParamGroup> groups, AdamOptions o, bool decoupled)
    : Optimizer(std::move(name), std::move(groups), o.lr, o.weight_decay), options_(o), decoupled_(decoupled) {
  XG_CHECK(o.betas.first >= 0 && o.betas.first < 1 && o.betas.second >= 0 && o.betas.second < 1,
           "{}: betas must be in [0, 1), got ({}, {})", this->name(), o.betas.first, o.betas.second);
  XG_CHECK(o.eps >= 0, "{}: invalid eps {}", this->name(), o.eps);
}

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions o)
    : Adam("AdamW", std::move(groups), AdamOptions{o.lr, o.betas, o.eps, o.weight_decay, o.amsgrad}, true) {}

void Adam::step(double grad_scale) {
  check_grad_scale(grad_scale);
  autograd::NoGradGuard ng;
  const auto& o = options_;
  for (const auto& group : groups()) {
    for (const auto& named : group.params) {
      const std::string& name = named.first;
      const Tensor& p = named.second;
      Tensor g = grad_of(name, p, this->name());
      if (!g.defined()) continue;
      const std::int64_t t = next_step(name);
      Tensor& m = buffer(name, "exp_avg", p);
      Tensor& v = buffer(name, "exp_avg_sq", p);
      Tensor vmax = o.amsgrad ? buffer(name, "max_exp_avg_sq", p) : Tensor();
      const double b1 = o.betas.first, b2 = o.betas.second;
      const double bc1 = 1 - std::pow(b1, static_cast<double>(t)), bc2 = 1 - std::pow(b2, static_cast<double>(t));
      dispatch_float(p.dtype(), this->name(), [&]<class T>() {
        const T lr = T(group.lr), wd = T(group.weight_decay);
        const AdamStep<T> k{T(grad_scale), T(b1), T(b2), T(group.lr / bc1), T(1 / std::sqrt(bc2)), T(o.eps),
                            decoupled_ ? T(1) - lr * wd : T(1),  // AdamW: p *= 1 - lr wd
                            decoupled_ ? T(0) : wd};             // Adam: g += wd p
        T *pp = write_ptr<T>(p), *pm = write_ptr<T>(m), *pv = write_ptr<T>(v);
        T* pvmax = vmax.defined() ? write_ptr<T>(vmax) : nullptr;
        const T* pg = ptr<T>(g);
        parallel_for_elements(p.numel(), [&](std::int64_t b, std::int64_t e) {
          if (pvmax) {
            k.template run<true>(pp + b, pg + b, pm + b, pv + b, pvmax + b, e - b);
          } else {
            k.template run<false>(pp + b, pg + b, pm + b, pv + b, nullptr, e - b);
          }
        });
      });
    }
  }
}

}  // namespace xg::optim

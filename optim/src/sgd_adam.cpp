// The update rules as fused loops over each parameter's contiguous data: one pass, no temporaries.
#include <cmath>
#include <type_traits>

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
/// f.template operator()<a, b>() for run-time flags, so that each update loop vectorises with its flags fixed.
template <class F>
void with_flags(bool a, bool b, F&& f) {
  if (a)
    b ? f.template operator()<true, true>() : f.template operator()<true, false>();
  else
    b ? f.template operator()<false, true>() : f.template operator()<false, false>();
}
/// A float32 parameter's bf16 copy for autocast, written in the update's pass when a forward used one
/// (kernel::bf16_copy_for_update); null otherwise and for float64.
template <class T>
std::uint16_t* bf16_copy_of(const Tensor& p) {
  if constexpr (std::is_same_v<T, float>) return bf16_copy_for_update(p);
  return nullptr;
}

/// One SGD update over contiguous data: d = gs g + wd p; with momentum, b = first ? d : mu b + damp d and
/// d = nesterov ? d + mu b : b; then p -= lr d. With Copy, p16 = p rounded to bf16.
template <class T>
struct SgdStep {
  T gs, lr, wd, mu, damp;
  bool nesterov, first;
  template <bool Momentum, bool Copy>
  void run(T* p, const T* g, T* b, std::uint16_t* p16, std::int64_t n) const {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      T d = gs * g[i] + wd * p[i];
      if constexpr (Momentum) {
        b[i] = first ? d : mu * b[i] + damp * d;
        d = nesterov ? d + mu * b[i] : b[i];
      }
      p[i] -= lr * d;
      if constexpr (Copy) p16[i] = to_bf16_bits(p[i]);
    }
  }
};

/// One Adam/AdamW update over contiguous data: m, v moving averages of g and g^2 (g = gs g + l2 p first),
/// p *= decay, p -= step_size m / (sqrt(v or max v) / sqrt(bc2) + eps). With Copy, p16 = p rounded to bf16.
template <class T>
struct AdamStep {
  T gs, beta1, beta2, step_size, inv_sqrt_bc2, eps, decay, l2;
  template <bool Amsgrad, bool Copy>
  void run(T* p, const T* g, T* m, T* v, T* vmax, std::uint16_t* p16, std::int64_t n) const {
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
      if constexpr (Copy) p16[i] = to_bf16_bits(p[i]);
    }
  }
};
}  // namespace

SGD::SGD(std::vector<ParamGroup> groups, SGDOptions o) : Optimizer("SGD", std::move(groups), o.lr, o.weight_decay), options_(o) {
  XG_CHECK(o.momentum >= 0 && std::isfinite(o.momentum), "SGD: invalid momentum {}", o.momentum);
  XG_CHECK(std::isfinite(o.dampening), "SGD: invalid dampening {}", o.dampening);
  XG_CHECK(!(o.nesterov && (o.momentum <= 0 || o.dampening != 0)), "SGD: nesterov momentum needs momentum > 0 and zero dampening");
}

std::optional<std::vector<std::string>> SGD::state_buffers() const {
  if (options_.momentum != 0) return std::vector<std::string>{"momentum_buffer"};
  return std::vector<std::string>{};
}

std::optional<std::vector<std::string>> Adam::state_buffers() const {
  if (options_.amsgrad) return std::vector<std::string>{"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  return std::vector<std::string>{"exp_avg", "exp_avg_sq"};
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
        std::uint16_t* p16 = bf16_copy_of<T>(p);
        with_flags(pb != nullptr, p16 != nullptr, [&]<bool Momentum, bool Copy>() {
          parallel_for_elements(p.numel(), [&](std::int64_t b, std::int64_t e) {
            k.template run<Momentum, Copy>(pp + b, pg + b, Momentum ? pb + b : nullptr, Copy ? p16 + b : nullptr, e - b);
          });
        });
        if (p16) bf16_copy_written(p);
      });
    }
  }
}

Adam::Adam(std::vector<ParamGroup> groups, AdamOptions o) : Adam("Adam", std::move(groups), o, false) {}

Adam::Adam(std::string name, std::vector<ParamGroup> groups, AdamOptions o, bool decoupled)
    : Optimizer(std::move(name), std::move(groups), o.lr, o.weight_decay), options_(o), decoupled_(decoupled) {
  XG_CHECK(o.betas.first >= 0 && o.betas.first < 1 && o.betas.second >= 0 && o.betas.second < 1,
           "{}: betas must be in [0, 1), got ({}, {})", this->name(), o.betas.first, o.betas.second);
  XG_CHECK(o.eps >= 0 && std::isfinite(o.eps), "{}: invalid eps {}", this->name(), o.eps);
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
        std::uint16_t* p16 = bf16_copy_of<T>(p);
        with_flags(pvmax != nullptr, p16 != nullptr, [&]<bool Amsgrad, bool Copy>() {
          parallel_for_elements(p.numel(), [&](std::int64_t b, std::int64_t e) {
            k.template run<Amsgrad, Copy>(pp + b, pg + b, pm + b, pv + b, Amsgrad ? pvmax + b : nullptr,
                                          Copy ? p16 + b : nullptr, e - b);
          });
        });
        if (p16) bf16_copy_written(p);
      });
    }
  }
}

}  // namespace xg::optim

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
}  // namespace

SGD::SGD(std::vector<ParamGroup> groups, SGDOptions o) : Optimizer("SGD", std::move(groups), o.lr, o.weight_decay), options_(o) {
  XG_CHECK(o.momentum >= 0, "SGD: invalid momentum {}", o.momentum);
  XG_CHECK(!(o.nesterov && (o.momentum <= 0 || o.dampening != 0)), "SGD: nesterov momentum needs momentum > 0 and zero dampening");
}

void SGD::step() {
  autograd::NoGradGuard ng;
  const auto& o = options_;
  for (const auto& group : groups()) {
    for (const auto& [name, p] : group.params) {
      Tensor g = grad_of(name, p, "SGD");
      if (!g.defined()) continue;
      bool first = next_step(name) == 1;
      Tensor buf = o.momentum != 0 ? buffer(name, "momentum_buffer", p) : Tensor();
      dispatch_float(p.dtype(), "SGD", [&]<class T>() {
        T* pp = write_ptr<T>(p);
        const T* gp = ptr<T>(g);
        T* bp = buf.defined() ? write_ptr<T>(buf) : nullptr;
        const T lr = T(group.lr), wd = T(group.weight_decay), mu = T(o.momentum), damp = T(1 - o.dampening);
        const std::int64_t n = p.numel();
#pragma omp simd
        for (std::int64_t i = 0; i < n; ++i) {
          T d = gp[i] + wd * pp[i];
          if (bp) {
            bp[i] = first ? d : mu * bp[i] + damp * d;
            d = o.nesterov ? d + mu * bp[i] : bp[i];
          }
          pp[i] -= lr * d;
        }
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

void Adam::step() {
  autograd::NoGradGuard ng;
  const auto& o = options_;
  for (const auto& group : groups()) {
    for (const auto& [name, p] : group.params) {
      Tensor g = grad_of(name, p, this->name());
      if (!g.defined()) continue;
      const std::int64_t t = next_step(name);
      Tensor& m = buffer(name, "exp_avg", p);
      Tensor& v = buffer(name, "exp_avg_sq", p);
      Tensor vmax = o.amsgrad ? buffer(name, "max_exp_avg_sq", p) : Tensor();
      const double b1 = o.betas.first, b2 = o.betas.second;
      const double bc1 = 1 - std::pow(b1, static_cast<double>(t)), bc2 = 1 - std::pow(b2, static_cast<double>(t));
      dispatch_float(p.dtype(), this->name(), [&]<class T>() {
        T* pp = write_ptr<T>(p);
        const T* gp = ptr<T>(g);
        T* mp = write_ptr<T>(m);
        T* vp = write_ptr<T>(v);
        T* xp = vmax.defined() ? write_ptr<T>(vmax) : nullptr;
        const T lr = T(group.lr), wd = T(group.weight_decay), eps = T(o.eps);
        const T beta1 = T(b1), beta2 = T(b2), step_size = T(group.lr / bc1), inv_sqrt_bc2 = T(1 / std::sqrt(bc2));
        const T decay = decoupled_ ? T(1) - lr * wd : T(1);  // AdamW: p *= 1 - lr wd
        const T l2 = decoupled_ ? T(0) : wd;                 // Adam: g += wd p
        const std::int64_t n = p.numel();
#pragma omp simd
        for (std::int64_t i = 0; i < n; ++i) {
          T gi = gp[i] + l2 * pp[i];
          pp[i] *= decay;
          mp[i] = beta1 * mp[i] + (T(1) - beta1) * gi;
          vp[i] = beta2 * vp[i] + (T(1) - beta2) * gi * gi;
          T vv = vp[i];
          if (xp) {
            xp[i] = xp[i] > vv ? xp[i] : vv;
            vv = xp[i];
          }
          pp[i] -= step_size * mp[i] / (std::sqrt(vv) * inv_sqrt_bc2 + eps);
        }
      });
    }
  }
}

}  // namespace xg::optim

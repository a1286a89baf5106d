// The element-wise update rules (SGD, Adam, AdamW, RMSprop, Adagrad) as fused loops over each parameter's
// contiguous data: one pass, no temporaries, on the loop Optimizer::for_each_update shares.
#include <cmath>
#include <type_traits>

#include "xgrad/kernel.hpp"
#include "xgrad/optim/adagrad.hpp"
#include "xgrad/optim/adam.hpp"
#include "xgrad/optim/rmsprop.hpp"
#include "xgrad/optim/sgd.hpp"

namespace xg::optim {
using namespace xg::kernel;

namespace {
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

/// The part of every update after its scalars are known: p's elements in chunks on the pool, the loop
/// instantiated for the run-time flag (its optional state) with and without writing the bf16 copy, and
/// the copy marked current after. `chunk.template operator()<Flag, Copy>(b, e, p16)` updates [b, e).
template <class T, class Chunk>
void update_elements(const Tensor& p, bool flag, Chunk&& chunk) {
  std::uint16_t* p16 = bf16_copy_of<T>(p);
  with_flags(flag, p16 != nullptr, [&]<bool Flag, bool Copy>() {
    parallel_for_elements(p.numel(), [&](std::int64_t b, std::int64_t e) {
      chunk.template operator()<Flag, Copy>(b, e, Copy ? p16 + b : nullptr);
    });
  });
  if (p16) bf16_copy_written(p);
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
  const auto& o = options_;
  for_each_update(grad_scale, [&](const Update& u) {
    Tensor buf = o.momentum != 0 ? buffer(u.name, "momentum_buffer", u.param) : Tensor();
    dispatch_float(u.param.dtype(), "SGD", [&]<class T>() {
      const SgdStep<T> k{T(grad_scale), T(u.group.lr), T(u.group.weight_decay), T(o.momentum), T(1 - o.dampening),
                         o.nesterov, u.step == 1};
      T *pp = write_ptr<T>(u.param), *pb = buf.defined() ? write_ptr<T>(buf) : nullptr;
      const T* pg = ptr<T>(u.grad);
      update_elements<T>(u.param, pb != nullptr, [&]<bool Momentum, bool Copy>(std::int64_t b, std::int64_t e, std::uint16_t* p16) {
        k.template run<Momentum, Copy>(pp + b, pg + b, Momentum ? pb + b : nullptr, p16, e - b);
      });
    });
  });
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
  const auto& o = options_;
  for_each_update(grad_scale, [&](const Update& u) {
    Tensor& m = buffer(u.name, "exp_avg", u.param);
    Tensor& v = buffer(u.name, "exp_avg_sq", u.param);
    Tensor vmax = o.amsgrad ? buffer(u.name, "max_exp_avg_sq", u.param) : Tensor();
    const double b1 = o.betas.first, b2 = o.betas.second, t = static_cast<double>(u.step);
    const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
    dispatch_float(u.param.dtype(), name(), [&]<class T>() {
      const T lr = T(u.group.lr), wd = T(u.group.weight_decay);
      const AdamStep<T> k{T(grad_scale), T(b1), T(b2), T(u.group.lr / bc1), T(1 / std::sqrt(bc2)), T(o.eps),
                          decoupled_ ? T(1) - lr * wd : T(1),  // AdamW: p *= 1 - lr wd
                          decoupled_ ? T(0) : wd};             // Adam: g += wd p
      T *pp = write_ptr<T>(u.param), *pm = write_ptr<T>(m), *pv = write_ptr<T>(v);
      T* pvmax = vmax.defined() ? write_ptr<T>(vmax) : nullptr;
      const T* pg = ptr<T>(u.grad);
      update_elements<T>(u.param, pvmax != nullptr, [&]<bool Amsgrad, bool Copy>(std::int64_t b, std::int64_t e, std::uint16_t* p16) {
        k.template run<Amsgrad, Copy>(pp + b, pg + b, pm + b, pv + b, Amsgrad ? pvmax + b : nullptr, p16, e - b);
      });
    });
  });
}

// ---- RMSprop and Adagrad -------------------------------------------------------------------------------

namespace {
/// One RMSprop update: g = gs g + wd p; v = alpha v + (1 - alpha) g^2; centered: a = alpha a + (1 - alpha) g
/// and v - a^2 in place of v; d = g / (sqrt(.) + eps); momentum: b = mu b + d, p -= lr b; else p -= lr d.
template <class T>
struct RmspropStep {
  T gs, lr, wd, alpha, eps, mu;
  bool momentum;
  template <bool Centered, bool Copy>
  void run(T* p, const T* g, T* v, T* a, T* b, std::uint16_t* p16, std::int64_t n) const {
    for (std::int64_t i = 0; i < n; ++i) {
      const T gi = gs * g[i] + wd * p[i];
      v[i] = alpha * v[i] + (T(1) - alpha) * gi * gi;
      T denom = v[i];
      if constexpr (Centered) {
        a[i] = alpha * a[i] + (T(1) - alpha) * gi;
        denom -= a[i] * a[i];
      }
      const T d = gi / (std::sqrt(denom) + eps);
      if (momentum) {
        b[i] = mu * b[i] + d;
        p[i] -= lr * b[i];
      } else {
        p[i] -= lr * d;
      }
      if constexpr (Copy) p16[i] = to_bf16_bits(p[i]);
    }
  }
};

/// One Adagrad update: g = gs g + wd p; s += g^2; p -= clr g / (sqrt(s) + eps).
template <class T>
struct AdagradStep {
  T gs, clr, wd, eps;
  template <bool Unused, bool Copy>
  void run(T* p, const T* g, T* s, std::uint16_t* p16, std::int64_t n) const {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      const T gi = gs * g[i] + wd * p[i];
      s[i] += gi * gi;
      p[i] -= clr * gi / (std::sqrt(s[i]) + eps);
      if constexpr (Copy) p16[i] = to_bf16_bits(p[i]);
    }
  }
};
}  // namespace

RMSprop::RMSprop(std::vector<ParamGroup> groups, RMSpropOptions o)
    : Optimizer("RMSprop", std::move(groups), o.lr, o.weight_decay), options_(o) {
  XG_CHECK(o.alpha >= 0 && o.alpha <= 1, "RMSprop: alpha must be in [0, 1], got {}", o.alpha);
  XG_CHECK(o.eps >= 0 && std::isfinite(o.eps), "RMSprop: invalid eps {}", o.eps);
  XG_CHECK(o.momentum >= 0 && std::isfinite(o.momentum), "RMSprop: invalid momentum {}", o.momentum);
}

std::optional<std::vector<std::string>> RMSprop::state_buffers() const {
  std::vector<std::string> names = {"square_avg"};
  if (options_.momentum > 0) names.push_back("momentum_buffer");
  if (options_.centered) names.push_back("grad_avg");
  return names;
}

void RMSprop::step(double grad_scale) {
  const auto& o = options_;
  for_each_update(grad_scale, [&](const Update& u) {
    Tensor& v = buffer(u.name, "square_avg", u.param);
    Tensor a = o.centered ? buffer(u.name, "grad_avg", u.param) : Tensor();
    Tensor b = o.momentum > 0 ? buffer(u.name, "momentum_buffer", u.param) : Tensor();
    dispatch_float(u.param.dtype(), "RMSprop", [&]<class T>() {
      const RmspropStep<T> k{T(grad_scale), T(u.group.lr), T(u.group.weight_decay), T(o.alpha), T(o.eps), T(o.momentum),
                             o.momentum > 0};
      T *pp = write_ptr<T>(u.param), *pv = write_ptr<T>(v);
      T* pa = a.defined() ? write_ptr<T>(a) : nullptr;
      T* pb = b.defined() ? write_ptr<T>(b) : nullptr;
      const T* pg = ptr<T>(u.grad);
      update_elements<T>(u.param, o.centered, [&]<bool Centered, bool Copy>(std::int64_t s, std::int64_t e, std::uint16_t* p16) {
        k.template run<Centered, Copy>(pp + s, pg + s, pv + s, Centered ? pa + s : nullptr, pb ? pb + s : nullptr, p16, e - s);
      });
    });
  });
}

Adagrad::Adagrad(std::vector<ParamGroup> groups, AdagradOptions o)
    : Optimizer("Adagrad", std::move(groups), o.lr, o.weight_decay), options_(o) {
  XG_CHECK(o.lr_decay >= 0 && std::isfinite(o.lr_decay), "Adagrad: invalid lr_decay {}", o.lr_decay);
  XG_CHECK(o.initial_accumulator_value >= 0 && std::isfinite(o.initial_accumulator_value),
           "Adagrad: invalid initial_accumulator_value {}", o.initial_accumulator_value);
  XG_CHECK(o.eps >= 0 && std::isfinite(o.eps), "Adagrad: invalid eps {}", o.eps);
}

std::optional<std::vector<std::string>> Adagrad::state_buffers() const { return std::vector<std::string>{"sum"}; }

void Adagrad::step(double grad_scale) {
  const auto& o = options_;
  for_each_update(grad_scale, [&](const Update& u) {
    Tensor& s = buffer(u.name, "sum", u.param);
    if (u.step == 1 && o.initial_accumulator_value != 0) s.fill_(o.initial_accumulator_value);
    const double clr = u.group.lr / (1 + static_cast<double>(u.step - 1) * o.lr_decay);
    dispatch_float(u.param.dtype(), "Adagrad", [&]<class T>() {
      const AdagradStep<T> k{T(grad_scale), T(clr), T(u.group.weight_decay), T(o.eps)};
      T *pp = write_ptr<T>(u.param), *ps = write_ptr<T>(s);
      const T* pg = ptr<T>(u.grad);
      update_elements<T>(u.param, false, [&]<bool Unused, bool Copy>(std::int64_t b, std::int64_t e, std::uint16_t* p16) {
        k.template run<Unused, Copy>(pp + b, pg + b, ps + b, p16, e - b);
      });
    });
  });
}

}  // namespace xg::optim

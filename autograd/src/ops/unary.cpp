// Unary math ops: forward as one vectorised expression, backward rule in Tensor ops right below, with
// the derivative in a one-line comment.
#include <cmath>
#include <limits>

#include "elementwise_kernels.hpp"

namespace xg {
using namespace kernel;
using autograd::record;
using autograd::Saved;
using Grads = std::vector<Tensor>;

// ---- unary ----------------------------------------------------------------------------------------------

Tensor neg(const Tensor& x) {
  Tensor out = dispatch_all(x.dtype(), [&]<class T>() { return unary_kernel<T>(x, [](const auto& a) { return -a; }); });
  return record("neg", {x}, out, [](const Tensor& g) { return Grads{neg(g)}; });  // d/dx = -1
}

Tensor sign(const Tensor& x) {
  return dispatch_all(x.dtype(), [&]<class T>() {
    return unary_kernel<T>(x, [](const auto& a) { return xt::sign(a); });
  });
}

Tensor abs(const Tensor& x) {
  Tensor out = dispatch_all(x.dtype(), [&]<class T>() { return unary_kernel<T>(x, [](const auto& a) { return xt::abs(a); }); });
  return record("abs", {x}, out, [sx = Saved(x)](const Tensor& g) { return Grads{g * sign(sx.get())}; });  // d/dx = sign(x)
}

Tensor exp(const Tensor& x) {
  Tensor out = dispatch_float(x.dtype(), "exp", [&]<class T>() { return unary_kernel<T>(x, [](const auto& a) { return xt::exp(a); }); });
  return record("exp", {x}, out, [sx = Saved(x), so = Saved::output(out)](const Tensor& g) {
    return Grads{g * output_or(so, [&] { return exp(sx.get()); })};  // d/dx = exp(x)
  });
}

Tensor log(const Tensor& x) {
  Tensor out = dispatch_float(x.dtype(), "log", [&]<class T>() { return unary_kernel<T>(x, [](const auto& a) { return xt::log(a); }); });
  return record("log", {x}, out, [sx = Saved(x)](const Tensor& g) { return Grads{g / sx.get()}; });  // d/dx = 1/x
}

Tensor sqrt(const Tensor& x) {
  Tensor out = dispatch_float(x.dtype(), "sqrt", [&]<class T>() { return unary_kernel<T>(x, [](const auto& a) { return xt::sqrt(a); }); });
  return record("sqrt", {x}, out, [sx = Saved(x), so = Saved::output(out)](const Tensor& g) {
    return Grads{g * 0.5 / output_or(so, [&] { return sqrt(sx.get()); })};  // d/dx = 1 / (2 sqrt(x))
  });
}

Tensor rsqrt(const Tensor& x) {
  Tensor out = dispatch_float(x.dtype(), "rsqrt", [&]<class T>() {
    return unary_kernel<T>(x, [](const auto& a) { return T(1) / xt::sqrt(a); });
  });
  return record("rsqrt", {x}, out, [sx = Saved(x), so = Saved::output(out)](const Tensor& g) {
    Tensor y = output_or(so, [&] { return rsqrt(sx.get()); });
    return Grads{g * -0.5 * y * y * y};  // d/dx = -x^(-3/2) / 2
  });
}

Tensor sin(const Tensor& x) {
  Tensor out = dispatch_float(x.dtype(), "sin", [&]<class T>() { return unary_kernel<T>(x, [](const auto& a) { return xt::sin(a); }); });
  return record("sin", {x}, out, [sx = Saved(x)](const Tensor& g) { return Grads{g * cos(sx.get())}; });  // d/dx = cos x
}

Tensor cos(const Tensor& x) {
  Tensor out = dispatch_float(x.dtype(), "cos", [&]<class T>() { return unary_kernel<T>(x, [](const auto& a) { return xt::cos(a); }); });
  return record("cos", {x}, out, [sx = Saved(x)](const Tensor& g) { return Grads{neg(g) * sin(sx.get())}; });  // d/dx = -sin x
}

Tensor tanh(const Tensor& x) {
  Tensor out = dispatch_float(x.dtype(), "tanh", [&]<class T>() { return unary_kernel<T>(x, [](const auto& a) { return xt::tanh(a); }); });
  return record("tanh", {x}, out, [sx = Saved(x), so = Saved::output(out)](const Tensor& g) {
    Tensor y = output_or(so, [&] { return tanh(sx.get()); });
    return Grads{g * (1.0 - y * y)};  // d/dx = 1 - tanh(x)^2
  });
}

Tensor sigmoid(const Tensor& x) {
  Tensor out = dispatch_float(x.dtype(), "sigmoid", [&]<class T>() {
    return unary_kernel<T>(x, [](const auto& a) { return T(1) / (T(1) + xt::exp(-a)); });
  });
  return record("sigmoid", {x}, out, [sx = Saved(x), so = Saved::output(out)](const Tensor& g) {
    Tensor y = output_or(so, [&] { return sigmoid(sx.get()); });
    return Grads{g * y * (1.0 - y)};  // d/dx = s (1 - s)
  });
}

Tensor erf(const Tensor& x) {
  Tensor out = dispatch_float(x.dtype(), "erf", [&]<class T>() { return unary_kernel<T>(x, [](const auto& a) { return xt::erf(a); }); });
  return record("erf", {x}, out, [sx = Saved(x)](const Tensor& g) {
    const Tensor& v = sx.get();
    return Grads{g * M_2_SQRTPI * exp(neg(v * v))};  // d/dx = 2/sqrt(pi) exp(-x^2)
  });
}

Tensor relu(const Tensor& x) {
  Tensor out = dispatch_float(x.dtype(), "relu", [&]<class T>() {
    return unary_kernel<T>(x, [](const auto& a) { return xt::maximum(a, T(0)); });
  });
  return record("relu", {x}, out, [sx = Saved(x)](const Tensor& g) { return Grads{g * gt(sx.get(), 0.0)}; });  // d/dx = [x > 0]
}

Tensor clamp(const Tensor& x, double lo, double hi) {
  XG_CHECK(!(lo > hi), "clamp: min {} is greater than max {}", lo, hi);
  Tensor out = dispatch_float(x.dtype(), "clamp", [&]<class T>() {
    return unary_kernel<T>(x, [lo, hi](const auto& a) {
      return xt::minimum(xt::maximum(a, static_cast<T>(lo)), static_cast<T>(hi));
    });
  });
  return record("clamp", {x}, out, [sx = Saved(x), lo, hi](const Tensor& g) {
    const Tensor& v = sx.get();
    return Grads{g * ge(v, lo) * le(v, hi)};  // d/dx = [lo <= x <= hi]
  });
}
Tensor clamp_min(const Tensor& x, double lo) { return clamp(x, lo, std::numeric_limits<double>::infinity()); }
Tensor clamp_max(const Tensor& x, double hi) { return clamp(x, -std::numeric_limits<double>::infinity(), hi); }

}  // namespace xg

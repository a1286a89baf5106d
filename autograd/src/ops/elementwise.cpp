// Elementwise ops: broadcasting binary ops, unary math, comparisons, where, and the in-place forms.
// Each op: checks, forward kernel, then its backward rule written with Tensor ops (so it is
// differentiable again under create_graph), with the derivative in a one-line comment.
#include <xtensor/xadapt.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xnoalias.hpp>

#include <cmath>
#include <limits>

#include "../internal.hpp"

namespace xg {
using namespace detail;
using autograd::record;
using autograd::Saved;
using Grads = std::vector<Tensor>;

Tensor detail::contiguous_data(const Tensor& x) { return x.is_contiguous() ? x : x.detach().clone(); }

namespace {

// ---- kernels --------------------------------------------------------------------------------------------

/// out = f(a, b) with NumPy broadcasting; out has dtype `out_dtype` (a's unless a comparison says otherwise).
template <class T, class F>
Tensor binary_kernel(const Tensor& a, const Tensor& b, const Shape& shape, F f) {
  Tensor out = empty(shape, {a.dtype()});
  // Fast paths without stride bookkeeping: same-shape contiguous operands, or one of them a single value.
  if (a.is_contiguous() && b.is_contiguous() && (a.shape() == shape || a.numel() == 1) &&
      (b.shape() == shape || b.numel() == 1)) {
    const T* x = ptr<T>(a);
    const T* y = ptr<T>(b);
    T* z = ptr<T>(out);
    const std::int64_t n = out.numel();
    if (a.numel() == n && b.numel() == n) {
      for (std::int64_t i = 0; i < n; ++i) z[i] = f(x[i], y[i]);
    } else if (b.numel() == 1) {
      const T yv = *y;
      for (std::int64_t i = 0; i < n; ++i) z[i] = f(x[i], yv);
    } else {
      const T xv = *x;
      for (std::int64_t i = 0; i < n; ++i) z[i] = f(xv, y[i]);
    }
    return out;
  }
  Shape sa = broadcast_strides(a, shape), sb = broadcast_strides(b, shape), so = out.strides();
  const T* pa = static_cast<const T*>(a.impl()->storage->data);
  const T* pb = static_cast<const T*>(b.impl()->storage->data);
  T* po = ptr<T>(out);
  strided_loop<3>(shape, {&sa, &sb, &so}, {a.offset(), b.offset(), 0},
                  [&](const std::array<std::int64_t, 3>& o, std::int64_t n, const std::array<std::int64_t, 3>& in) {
                    const T* x = pa + o[0];
                    const T* y = pb + o[1];
                    T* z = po + o[2];
                    // Separate loops for the common stride patterns so each one vectorises.
                    if (in[0] == 1 && in[1] == 1) {
                      for (std::int64_t i = 0; i < n; ++i) z[i] = f(x[i], y[i]);
                    } else if (in[0] == 1 && in[1] == 0) {
                      const T yv = *y;
                      for (std::int64_t i = 0; i < n; ++i) z[i] = f(x[i], yv);
                    } else if (in[0] == 0 && in[1] == 1) {
                      const T xv = *x;
                      for (std::int64_t i = 0; i < n; ++i) z[i] = f(xv, y[i]);
                    } else {
                      for (std::int64_t i = 0; i < n; ++i) z[i] = f(x[i * in[0]], y[i * in[1]]);
                    }
                  });
  return out;
}

/// self[i] = f(self[i], other[i]) with `other` broadcast to self's shape, through self's strides.
template <class T, class F>
void inplace_kernel(const Tensor& self, const Tensor& other, F f) {
  Shape so = self.strides(), sb = broadcast_strides(other, self.shape());
  T* ps = static_cast<T*>(self.impl()->storage->data);
  const T* pb = static_cast<const T*>(other.impl()->storage->data);
  strided_loop<2>(self.shape(), {&so, &sb}, {self.offset(), other.offset()},
                  [&](const std::array<std::int64_t, 2>& o, std::int64_t n, const std::array<std::int64_t, 2>& in) {
                    T* x = ps + o[0];
                    const T* y = pb + o[1];
                    if (in[0] == 1 && in[1] == 1) {
                      for (std::int64_t i = 0; i < n; ++i) x[i] = f(x[i], y[i]);
                    } else if (in[0] == 1 && in[1] == 0) {
                      const T yv = *y;
                      for (std::int64_t i = 0; i < n; ++i) x[i] = f(x[i], yv);
                    } else {
                      for (std::int64_t i = 0; i < n; ++i) x[i * in[0]] = f(x[i * in[0]], y[i * in[1]]);
                    }
                  });
}

/// out = expr(x) elementwise, as one xtensor expression over the flat contiguous data (xsimd-vectorised).
template <class T, class E>
Tensor unary_kernel(const Tensor& x, E expr) {
  Tensor xc = contiguous_data(x);
  Tensor out = empty(x.shape(), {x.dtype()});
  const auto n = static_cast<std::size_t>(x.numel());
  if (n == 0) return out;
  auto a = xt::adapt(ptr<T>(xc), n, xt::no_ownership(), std::array<std::size_t, 1>{n});
  auto o = xt::adapt(ptr<T>(out), n, xt::no_ownership(), std::array<std::size_t, 1>{n});
  xt::noalias(o) = expr(a);
  return out;
}

/// Same for two same-shape inputs (used by fused backward kernels).
template <class T, class E>
Tensor unary2_kernel(const Tensor& x, const Tensor& y, E expr) {
  Tensor xc = contiguous_data(x), yc = contiguous_data(y);
  Tensor out = empty(x.shape(), {x.dtype()});
  const auto n = static_cast<std::size_t>(x.numel());
  if (n == 0) return out;
  auto a = xt::adapt(ptr<T>(xc), n, xt::no_ownership(), std::array<std::size_t, 1>{n});
  auto b = xt::adapt(ptr<T>(yc), n, xt::no_ownership(), std::array<std::size_t, 1>{n});
  auto o = xt::adapt(ptr<T>(out), n, xt::no_ownership(), std::array<std::size_t, 1>{n});
  xt::noalias(o) = expr(a, b);
  return out;
}

Tensor scalar_like(const Tensor& t, double v) { return scalar_tensor(v, t.dtype()); }

/// Forward of a binary op: dtype check, broadcast shape, kernel dispatch.
template <class Op>
Tensor binary_forward(const Tensor& a, const Tensor& b, std::string_view name, bool float_only, Op op) {
  check_same_dtype(a, b, name);
  Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  if (float_only) return dispatch_float(a.dtype(), name, [&]<class T>() { return binary_kernel<T>(a, b, shape, op); });
  return dispatch_all(a.dtype(), [&]<class T>() { return binary_kernel<T>(a, b, shape, op); });
}

/// The saved output when only first-order gradients are wanted, else the output recomputed from its input
/// so that the rule stays differentiable (an op must not hold its own output with a grad_fn).
template <class F>
Tensor output_or(const Saved& out, F recompute) {
  return autograd::is_grad_enabled() ? recompute() : out.get();
}

}  // namespace

// ---- binary arithmetic ---------------------------------------------------------------------------------

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(a, b, "add", false, [](auto x, auto y) { return x + y; });
  bool ga = a.requires_grad(), gb = b.requires_grad();
  return record("add", {a, b}, out, [sa = a.shape(), sb = b.shape(), ga, gb](const Tensor& g) {
    return Grads{ga ? sum_to(g, sa) : Tensor(), gb ? sum_to(g, sb) : Tensor()};  // d/da = 1, d/db = 1
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(a, b, "sub", false, [](auto x, auto y) { return x - y; });
  bool ga = a.requires_grad(), gb = b.requires_grad();
  return record("sub", {a, b}, out, [sa = a.shape(), sb = b.shape(), ga, gb](const Tensor& g) {
    return Grads{ga ? sum_to(g, sa) : Tensor(), gb ? sum_to(neg(g), sb) : Tensor()};  // d/da = 1, d/db = -1
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(a, b, "mul", false, [](auto x, auto y) { return x * y; });
  bool ga = a.requires_grad(), gb = b.requires_grad();
  return record("mul", {a, b}, out, [sa = Saved(a), sb = Saved(b), ga, gb](const Tensor& g) {
    const Tensor &x = sa.get(), &y = sb.get();
    return Grads{ga ? sum_to(g * y, x.shape()) : Tensor(),  // d/da = b
                 gb ? sum_to(g * x, y.shape()) : Tensor()};  // d/db = a
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(a, b, "div", false, [](auto x, auto y) { return x / y; });
  bool ga = a.requires_grad(), gb = b.requires_grad();
  return record("div", {a, b}, out, [sa = Saved(a), sb = Saved(b), ga, gb](const Tensor& g) {
    const Tensor &x = sa.get(), &y = sb.get();
    return Grads{ga ? sum_to(g / y, x.shape()) : Tensor(),                   // d/da = 1/b
                 gb ? sum_to(neg(g) * x / (y * y), y.shape()) : Tensor()};  // d/db = -a/b^2
  });
}

Tensor pow(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(a, b, "pow", true, [](auto x, auto y) { return std::pow(x, y); });
  bool ga = a.requires_grad(), gb = b.requires_grad();
  return record("pow", {a, b}, out, [sa = Saved(a), sb = Saved(b), so = Saved::output(out), ga, gb](const Tensor& g) {
    const Tensor &x = sa.get(), &y = sb.get();
    Tensor gx, gy;
    if (ga) gx = sum_to(g * y * pow(x, y - 1.0), x.shape());  // d/da = b a^(b-1)
    if (gb) {
      Tensor o = output_or(so, [&] { return pow(x, y); });
      gy = sum_to(g * o * log(x), y.shape());  // d/db = a^b log a
    }
    return Grads{gx, gy};
  });
}

Tensor pow(const Tensor& a, double p) {
  Tensor out = dispatch_float(a.dtype(), "pow", [&]<class T>() {
    return unary_kernel<T>(a, [p](const auto& x) { return xt::pow(x, static_cast<T>(p)); });
  });
  return record("pow", {a}, out, [sa = Saved(a), p](const Tensor& g) {
    if (p == 0.0) return Grads{zeros_like(g)};  // not 0 * a^-1, which is NaN at a = 0
    return Grads{g * p * pow(sa.get(), p - 1.0)};  // d/da = p a^(p-1)
  });
}

Tensor pow(double base, const Tensor& e) { return pow(full(e.shape(), base, {e.dtype()}), e); }

Tensor maximum(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(a, b, "maximum", false, [](auto x, auto y) { return x > y ? x : y; });
  return record("maximum", {a, b}, out, [sa = Saved(a), sb = Saved(b)](const Tensor& g) {
    const Tensor &x = sa.get(), &y = sb.get();
    Tensor wa = gt(x, y) + eq(x, y) * 0.5;  // d/da = [a > b] (half each on ties)
    return Grads{sum_to(g * wa, x.shape()), sum_to(g * (1.0 - wa), y.shape())};
  });
}

Tensor minimum(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(a, b, "minimum", false, [](auto x, auto y) { return x < y ? x : y; });
  return record("minimum", {a, b}, out, [sa = Saved(a), sb = Saved(b)](const Tensor& g) {
    const Tensor &x = sa.get(), &y = sb.get();
    Tensor wa = lt(x, y) + eq(x, y) * 0.5;  // d/da = [a < b] (half each on ties)
    return Grads{sum_to(g * wa, x.shape()), sum_to(g * (1.0 - wa), y.shape())};
  });
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_same_dtype(a, b, "where");
  Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor out = empty(shape, {a.dtype()});
  dispatch_all(a.dtype(), [&]<class T>() {
    dispatch_all(cond.dtype(), [&]<class C>() {
      Shape sc = broadcast_strides(cond, shape), sa = broadcast_strides(a, shape), sb = broadcast_strides(b, shape);
      Shape so = out.strides();
      const C* pc = static_cast<const C*>(cond.impl()->storage->data);
      const T* pa = static_cast<const T*>(a.impl()->storage->data);
      const T* pb = static_cast<const T*>(b.impl()->storage->data);
      T* po = ptr<T>(out);
      strided_loop<4>(shape, {&sc, &sa, &sb, &so}, {cond.offset(), a.offset(), b.offset(), 0},
                      [&](const auto& o, std::int64_t n, const auto& in) {
                        for (std::int64_t i = 0; i < n; ++i)
                          po[o[3] + i] = pc[o[0] + i * in[0]] != C(0) ? pa[o[1] + i * in[1]] : pb[o[2] + i * in[2]];
                      });
    });
  });
  bool ga = a.requires_grad(), gb = b.requires_grad();
  return record("where", {a, b}, out, [c = Saved(cond), sa = a.shape(), sb = b.shape(), ga, gb](const Tensor& g) {
    Tensor zero = scalar_like(g, 0.0);
    // d/da = [cond], d/db = [!cond]
    return Grads{ga ? sum_to(where(c.get(), g, zero), sa) : Tensor(), gb ? sum_to(where(c.get(), zero, g), sb) : Tensor()};
  });
}
Tensor where(const Tensor& cond, const Tensor& a, double b) { return where(cond, a, scalar_like(a, b)); }
Tensor where(const Tensor& cond, double a, const Tensor& b) { return where(cond, scalar_like(b, a), b); }

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

namespace {
constexpr double kSqrt2OverPi = 0.7978845608028654;  // sqrt(2/pi), GPT-2's tanh GELU
constexpr double kGeluCubic = 0.044715;
constexpr double kInvSqrt2Pi = 0.3989422804014327;  // 1/sqrt(2 pi)

/// d gelu(x)/dx * g written with Tensor ops: the reference, and the path for higher-order gradients.
Tensor gelu_backward_composite(const Tensor& g, const Tensor& x, bool approx) {
  if (!approx) {
    Tensor cdf = 0.5 * (1.0 + erf(x * M_SQRT1_2));
    Tensor pdf = exp(-0.5 * x * x) * kInvSqrt2Pi;
    return g * (cdf + x * pdf);  // d/dx x Phi(x) = Phi(x) + x phi(x)
  }
  Tensor x2 = x * x;
  Tensor t = tanh(kSqrt2OverPi * (x + kGeluCubic * x2 * x));
  // d/dx 0.5 x (1 + t) = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3c x^2)
  return g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * kSqrt2OverPi * (1.0 + 3.0 * kGeluCubic * x2));
}

/// The same derivative as one fused xsimd kernel, for first-order backward.
Tensor gelu_backward_fused(const Tensor& g, const Tensor& x, bool approx) {
  return dispatch_float(x.dtype(), "gelu_backward", [&]<class T>() {
    if (!approx)
      return unary2_kernel<T>(g, x, [](const auto& gg, const auto& v) {
        return gg * (T(0.5) * (T(1) + xt::erf(v * T(M_SQRT1_2))) + v * xt::exp(T(-0.5) * v * v) * T(kInvSqrt2Pi));
      });
    // Two passes, t = tanh(u) first: an xtensor expression must not keep a local sub-expression (it
    // would hold it by reference past the lambda's return).
    Tensor t = unary_kernel<T>(x, [](const auto& v) { return xt::tanh(T(kSqrt2OverPi) * (v + T(kGeluCubic) * v * v * v)); });
    Tensor gc = contiguous_data(g), xc = contiguous_data(x);
    const auto n = static_cast<std::size_t>(x.numel());
    if (n == 0) return t;
    auto gg = xt::adapt(ptr<T>(gc), n, xt::no_ownership(), std::array<std::size_t, 1>{n});
    auto v = xt::adapt(ptr<T>(xc), n, xt::no_ownership(), std::array<std::size_t, 1>{n});
    auto o = xt::adapt(ptr<T>(t), n, xt::no_ownership(), std::array<std::size_t, 1>{n});
    xt::noalias(o) = gg * (T(0.5) * (T(1) + o) +
                           T(0.5) * v * (T(1) - o * o) * T(kSqrt2OverPi) * (T(1) + T(3 * kGeluCubic) * v * v));
    return t;
  });
}
}  // namespace

Tensor gelu(const Tensor& x, bool approx) {
  Tensor out = dispatch_float(x.dtype(), "gelu", [&]<class T>() {
    if (!approx)
      return unary_kernel<T>(x, [](const auto& a) { return T(0.5) * a * (T(1) + xt::erf(a * T(M_SQRT1_2))); });
    return unary_kernel<T>(x, [](const auto& a) {
      return T(0.5) * a * (T(1) + xt::tanh(T(kSqrt2OverPi) * (a + T(kGeluCubic) * a * a * a)));
    });
  });
  return record("gelu", {x}, out, [sx = Saved(x), approx](const Tensor& g) {
    if (autograd::is_grad_enabled()) return Grads{gelu_backward_composite(g, sx.get(), approx)};
    return Grads{gelu_backward_fused(g, sx.get(), approx)};
  });
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

// ---- comparisons (no gradient) -------------------------------------------------------------------------

#define XG_COMPARISON(name, expr)                                                                        \
  Tensor name(const Tensor& a, const Tensor& b) {                                                        \
    return binary_forward(a, b, #name, false, [](auto x, auto y) { return decltype(x)((expr) ? 1 : 0); }); \
  }                                                                                                      \
  Tensor name(const Tensor& a, double b) { return name(a, scalar_like(a, b)); }
XG_COMPARISON(eq, x == y)
XG_COMPARISON(ne, x != y)
XG_COMPARISON(lt, x < y)
XG_COMPARISON(le, x <= y)
XG_COMPARISON(gt, x > y)
XG_COMPARISON(ge, x >= y)
#undef XG_COMPARISON

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  XG_CHECK(broadcast_shapes(x.shape(), mask.shape(), "masked_fill") == x.shape(),
           "masked_fill: mask of shape {} must broadcast to the tensor's shape {}", shape_str(mask.shape()),
           shape_str(x.shape()));
  return where(mask, value, x);
}

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  if (a.shape() != b.shape()) return false;
  auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  for (std::size_t i = 0; i < va.size(); ++i) {
    if (std::isnan(va[i]) || std::isnan(vb[i])) return false;
    if (std::abs(va[i] - vb[i]) > atol + rtol * std::abs(vb[i])) return false;
  }
  return true;
}

// ---- operators ------------------------------------------------------------------------------------------

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& a) { return neg(a); }
Tensor operator+(const Tensor& a, double b) { return add(a, scalar_like(a, b)); }
Tensor operator-(const Tensor& a, double b) { return sub(a, scalar_like(a, b)); }
Tensor operator*(const Tensor& a, double b) { return mul(a, scalar_like(a, b)); }
Tensor operator/(const Tensor& a, double b) { return div(a, scalar_like(a, b)); }
Tensor operator+(double a, const Tensor& b) { return add(scalar_like(b, a), b); }
Tensor operator-(double a, const Tensor& b) { return sub(scalar_like(b, a), b); }
Tensor operator*(double a, const Tensor& b) { return mul(scalar_like(b, a), b); }
Tensor operator/(double a, const Tensor& b) { return div(scalar_like(b, a), b); }

// ---- in-place -------------------------------------------------------------------------------------------

namespace {
/// Refuses in-place writes that would silently break the graph, or write one element through two indices.
void check_inplace(const Tensor& self, std::string_view op, const Tensor* other = nullptr) {
  if (autograd::is_grad_enabled()) {
    XG_CHECK(!(self.requires_grad() && self.is_leaf()),
             "{}: a leaf tensor that requires grad (shape {}) cannot be modified in place while recording. Hint: do "
             "the update under xg::autograd::NoGradGuard",
             op, shape_str(self.shape()));
    XG_CHECK(!self.requires_grad(),
             "{}: tensor of shape {} is part of a graph ({}); in-place changes would invalidate its gradient. Use "
             "the out-of-place op",
             op, shape_str(self.shape()), self.grad_fn()->name());
    XG_CHECK(!(other && other->requires_grad()),
             "{}: the operand (shape {}) requires grad, but in-place ops are not recorded. Use the out-of-place op",
             op, shape_str(other->shape()));
  }
  for (std::size_t i = 0; i < self.shape().size(); ++i)
    XG_CHECK(!(self.strides()[i] == 0 && self.shape()[i] > 1),
             "{}: tensor of shape {} is an expanded view (several elements share memory); clone() it first", op,
             shape_str(self.shape()));
  if (other)
    XG_CHECK(broadcast_shapes(self.shape(), other->shape(), op) == self.shape(),
             "{}: operand of shape {} does not broadcast to the tensor's shape {}", op, shape_str(other->shape()),
             shape_str(self.shape()));
}

template <class F>
Tensor& inplace_binary(Tensor& self, const Tensor& other_in, std::string_view op, F f) {
  check_inplace(self, op, &other_in);
  Tensor other = other_in.dtype() == self.dtype() ? other_in : other_in.detach().to(self.dtype());
  dispatch_all(self.dtype(), [&]<class T>() { inplace_kernel<T>(self, other, f); });
  ++self.impl()->storage->version;
  return self;
}
}  // namespace

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  if (alpha == 1.0) return inplace_binary(*this, other, "add_", [](auto x, auto y) { return x + y; });
  return inplace_binary(*this, other, "add_", [alpha](auto x, auto y) { return x + static_cast<decltype(x)>(alpha) * y; });
}
Tensor& Tensor::sub_(const Tensor& other) { return inplace_binary(*this, other, "sub_", [](auto x, auto y) { return x - y; }); }
Tensor& Tensor::mul_(const Tensor& other) { return inplace_binary(*this, other, "mul_", [](auto x, auto y) { return x * y; }); }
Tensor& Tensor::div_(const Tensor& other) { return inplace_binary(*this, other, "div_", [](auto x, auto y) { return x / y; }); }
Tensor& Tensor::add_(double v) { return add_(scalar_tensor(v, dtype())); }
Tensor& Tensor::mul_(double v) { return mul_(scalar_tensor(v, dtype())); }
Tensor& Tensor::fill_(double v) {
  return inplace_binary(*this, scalar_tensor(v, dtype()), "fill_", [](auto, auto y) { return y; });
}
Tensor& Tensor::zero_() {
  return inplace_binary(*this, scalar_tensor(0.0, dtype()), "zero_", [](auto, auto y) { return y; });
}
Tensor& Tensor::copy_(const Tensor& src) { return inplace_binary(*this, src, "copy_", [](auto, auto y) { return y; }); }

}  // namespace xg

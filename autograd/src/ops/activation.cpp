// Activations with fused first-order backward kernels: gelu (exact and tanh) and silu. Their composite
// formulas in Tensor ops are the create_graph path and the reference the tests compare with.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "elementwise_kernels.hpp"

namespace xg {
using namespace kernel;
using autograd::Saved;
using Grads = std::vector<Tensor>;

namespace {
constexpr double kSqrt2OverPi = 0.7978845608028654;  // sqrt(2/pi), GPT-2's tanh GELU
constexpr double kGeluCubic = 0.044715;
constexpr double kInvSqrt2Pi = 0.3989422804014327;  // 1/sqrt(2 pi)

/// erf of a float32 batch: the rational approximation on [-4, 4] that XLA and Eigen use for single
/// precision (within 4.3e-7 of erf; beyond 4, erf is +-1 in float32). xsimd's erf (through xtensor) made
/// the exact GELU of the baby GPT's MLP 6x slower than an add.
using FBatch = xsimd::batch<float>;
FBatch erf_f32(FBatch x) {
  x = xsimd::clip(x, FBatch(-4.f), FBatch(4.f));
  const FBatch x2 = x * x;
  FBatch p = xsimd::fma(x2, FBatch(-2.72614225801306e-10f), FBatch(2.77068142495902e-08f));
  for (float c : {-2.10102402082508e-06f, -5.69250639462346e-05f, -7.34990630326855e-04f, -2.95459980854025e-03f,
                  -1.60960333262415e-02f})
    p = xsimd::fma(p, x2, FBatch(c));
  FBatch q = xsimd::fma(x2, FBatch(-1.45660718464996e-05f), FBatch(-2.13374055278905e-04f));
  for (float c : {-1.68282697438203e-03f, -7.37332916720468e-03f, -1.42647390514189e-02f}) q = xsimd::fma(q, x2, FBatch(c));
  return x * p / q;
}

/// out[i] = f(batches of a[i] (and b[i])) over [0, n) in float32 batches; the last partial batch goes
/// through the same code from a padded copy, so every element's result is independent of where it sits.
template <class F>
void float_batches(const float* a, const float* b, float* out, std::int64_t n, F f) {
  constexpr std::int64_t W = FBatch::size;
  std::int64_t i = 0;
  for (; i + W <= n; i += W)
    f(FBatch::load_unaligned(a + i), b ? FBatch::load_unaligned(b + i) : FBatch(0.f)).store_unaligned(out + i);
  if (i == n) return;
  alignas(64) float pa[W] = {}, pb[W] = {}, po[W];
  std::copy(a + i, a + n, pa);
  if (b) std::copy(b + i, b + n, pb);
  f(FBatch::load_aligned(pa), FBatch::load_aligned(pb)).store_aligned(po);
  std::copy(po, po + (n - i), out + i);
}

/// Exact GELU, x Phi(x), and its backward g (Phi(x) + x phi(x)) in float32.
void gelu_f32(const float* x, float* y, std::int64_t n) {
  float_batches(x, nullptr, y, n, [](FBatch v, FBatch) {
    return FBatch(0.5f) * v * (FBatch(1.f) + erf_f32(v * FBatch(float(M_SQRT1_2))));
  });
}
void gelu_backward_f32(const float* g, const float* x, float* dx, std::int64_t n) {
  float_batches(g, x, dx, n, [](FBatch gg, FBatch v) {
    const FBatch cdf = FBatch(0.5f) * (FBatch(1.f) + erf_f32(v * FBatch(float(M_SQRT1_2))));
    const FBatch pdf = xsimd::exp(FBatch(-0.5f) * v * v) * FBatch(float(kInvSqrt2Pi));
    return gg * (cdf + v * pdf);
  });
}

/// float32 exact GELU in xsimd batches; float64 and the tanh form as xtensor expressions over the range.
template <class T>
void gelu_values_of(const T* x, T* y, std::int64_t n, bool approx) {
  if (n <= 0) return;
  if constexpr (std::is_same_v<T, float>)
    if (!approx) return gelu_f32(x, y, n);
  auto a = flat_view(x, n);
  auto o = flat_view(y, n);
  if (!approx)
    xt::noalias(o) = T(0.5) * a * (T(1) + xt::erf(a * T(M_SQRT1_2)));
  else
    xt::noalias(o) = T(0.5) * a * (T(1) + xt::tanh(T(kSqrt2OverPi) * (a + T(kGeluCubic) * a * a * a)));
}

template <class T>
void gelu_backward_values_of(const T* g, const T* x, T* dx, std::int64_t n, bool approx) {
  if (n <= 0) return;
  if constexpr (std::is_same_v<T, float>)
    if (!approx) return gelu_backward_f32(g, x, dx, n);
  auto gg = flat_view(g, n);
  auto v = flat_view(x, n);
  auto o = flat_view(dx, n);
  if (!approx) {
    xt::noalias(o) = gg * (T(0.5) * (T(1) + xt::erf(v * T(M_SQRT1_2))) + v * xt::exp(T(-0.5) * v * v) * T(kInvSqrt2Pi));
    return;
  }
  // Two statements, t = tanh(u) first (dx may not alias g or x): an xtensor expression must not keep a
  // local sub-expression (it would hold it by reference past its scope).
  xt::noalias(o) = xt::tanh(T(kSqrt2OverPi) * (v + T(kGeluCubic) * v * v * v));
  xt::noalias(o) =
      gg * (T(0.5) * (T(1) + o) + T(0.5) * v * (T(1) - o * o) * T(kSqrt2OverPi) * (T(1) + T(3 * kGeluCubic) * v * v));
}

struct GeluRule {
  Saved x;
  bool approx;

  Grads composite(const Tensor& g) const { return {gelu_backward(g, x.get(), approx)}; }

  Grads fused(const Tensor& g) const {
    const Tensor& xv = x.get();
    return {dispatch_float(xv.dtype(), "gelu_backward", [&]<class T>() {
      Tensor gc = contiguous_data(g), xc = contiguous_data(xv), dx = empty(xv.shape(), {xv.dtype()});
      parallel_for_elements(xv.numel(), [&](std::int64_t b, std::int64_t e) {
        gelu_backward_values(ptr<T>(gc) + b, ptr<T>(xc) + b, ptr<T>(dx) + b, e - b, approx);
      });
      return dx;
    })};
  }
};
}  // namespace

namespace kernel {
void gelu_values(const float* x, float* y, std::int64_t n, bool approx) { gelu_values_of(x, y, n, approx); }
void gelu_values(const double* x, double* y, std::int64_t n, bool approx) { gelu_values_of(x, y, n, approx); }
void gelu_backward_values(const float* g, const float* x, float* dx, std::int64_t n, bool approx) {
  gelu_backward_values_of(g, x, dx, n, approx);
}
void gelu_backward_values(const double* g, const double* x, double* dx, std::int64_t n, bool approx) {
  gelu_backward_values_of(g, x, dx, n, approx);
}
}  // namespace kernel

Tensor gelu(const Tensor& x, bool approx) {
  Tensor out = dispatch_float(x.dtype(), "gelu", [&]<class T>() {
    Tensor xc = contiguous_data(x), y = empty(x.shape(), {x.dtype()});
    parallel_for_elements(x.numel(), [&](std::int64_t b, std::int64_t e) {
      gelu_values(ptr<T>(xc) + b, ptr<T>(y) + b, e - b, approx);
    });
    return y;
  });
  return autograd::record_fused("gelu", {x}, out, GeluRule{Saved(x), approx});
}

Tensor gelu_backward(const Tensor& grad, const Tensor& x, bool approx) {
  if (!approx) {
    Tensor cdf = 0.5 * (1.0 + erf(x * M_SQRT1_2));
    Tensor pdf = exp(-0.5 * x * x) * kInvSqrt2Pi;
    return grad * (cdf + x * pdf);  // d/dx x Phi(x) = Phi(x) + x phi(x)
  }
  Tensor x2 = x * x;
  Tensor t = tanh(kSqrt2OverPi * (x + kGeluCubic * x2 * x));
  // d/dx 0.5 x (1 + t) = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3c x^2)
  return grad * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * kSqrt2OverPi * (1.0 + 3.0 * kGeluCubic * x2));
}

namespace {
struct SiluRule {
  Saved x;
  // d/dx x s(x) = s (1 + x (1 - s)), s = sigmoid(x)
  Grads composite(const Tensor& g) const {
    Tensor s = sigmoid(x.get());
    return {g * s * (1.0 + x.get() * (1.0 - s))};
  }
  Grads fused(const Tensor& g) const {
    const Tensor& xv = x.get();
    return {dispatch_float(xv.dtype(), "silu_backward", [&]<class T>() {
      return unary2_kernel<T>(g, xv, [](const auto& gg, const auto& v) {
        return gg * (T(1) / (T(1) + xt::exp(-v))) * (T(1) + v * (T(1) - T(1) / (T(1) + xt::exp(-v))));
      });
    })};
  }
};
}  // namespace

Tensor silu(const Tensor& x) {
  Tensor out = dispatch_float(x.dtype(), "silu", [&]<class T>() {
    return unary_kernel<T>(x, [](const auto& a) { return a / (T(1) + xt::exp(-a)); });
  });
  return autograd::record_fused("silu", {x}, out, SiluRule{Saved(x)});
}

}  // namespace xg

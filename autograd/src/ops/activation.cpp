// Activations with fused first-order backward kernels: gelu (exact and tanh) and silu. Their composite
// formulas in Tensor ops are the create_graph path and the reference the tests compare with.
#include <cmath>

#include "elementwise_kernels.hpp"

namespace xg {
using namespace kernel;
using autograd::Saved;
using Grads = std::vector<Tensor>;

namespace {
constexpr double kSqrt2OverPi = 0.7978845608028654;  // sqrt(2/pi), GPT-2's tanh GELU
constexpr double kGeluCubic = 0.044715;
constexpr double kInvSqrt2Pi = 0.3989422804014327;  // 1/sqrt(2 pi)

struct GeluRule {
  Saved x;
  bool approx;

  Grads composite(const Tensor& g) const {
    const Tensor& v = x.get();
    if (!approx) {
      Tensor cdf = 0.5 * (1.0 + erf(v * M_SQRT1_2));
      Tensor pdf = exp(-0.5 * v * v) * kInvSqrt2Pi;
      return {g * (cdf + v * pdf)};  // d/dx x Phi(x) = Phi(x) + x phi(x)
    }
    Tensor v2 = v * v;
    Tensor t = tanh(kSqrt2OverPi * (v + kGeluCubic * v2 * v));
    // d/dx 0.5 x (1 + t) = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3c x^2)
    return {g * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * kSqrt2OverPi * (1.0 + 3.0 * kGeluCubic * v2))};
  }

  Grads fused(const Tensor& g) const {
    const Tensor& xv = x.get();
    return {dispatch_float(xv.dtype(), "gelu_backward", [&]<class T>() {
      if (!approx)
        return unary2_kernel<T>(g, xv, [](const auto& gg, const auto& v) {
          return gg * (T(0.5) * (T(1) + xt::erf(v * T(M_SQRT1_2))) + v * xt::exp(T(-0.5) * v * v) * T(kInvSqrt2Pi));
        });
      // Two statements per chunk, t = tanh(u) first: an xtensor expression must not keep a local
      // sub-expression (it would hold it by reference past the lambda's return).
      Tensor gc = contiguous_data(g), xc = contiguous_data(xv), t = empty(xv.shape(), {xv.dtype()});
      parallel_for(xv.numel(), kElementwiseGrain, [&](std::int64_t b, std::int64_t e) {
        auto gg = flat_view<T>(gc, b, e);
        auto v = flat_view<T>(xc, b, e);
        auto o = flat_view<T>(t, b, e);
        xt::noalias(o) = xt::tanh(T(kSqrt2OverPi) * (v + T(kGeluCubic) * v * v * v));
        xt::noalias(o) = gg * (T(0.5) * (T(1) + o) +
                               T(0.5) * v * (T(1) - o * o) * T(kSqrt2OverPi) * (T(1) + T(3 * kGeluCubic) * v * v));
      });
      return t;
    })};
  }
};
}  // namespace

Tensor gelu(const Tensor& x, bool approx) {
  Tensor out = dispatch_float(x.dtype(), "gelu", [&]<class T>() {
    if (!approx)
      return unary_kernel<T>(x, [](const auto& a) { return T(0.5) * a * (T(1) + xt::erf(a * T(M_SQRT1_2))); });
    return unary_kernel<T>(x, [](const auto& a) {
      return T(0.5) * a * (T(1) + xt::tanh(T(kSqrt2OverPi) * (a + T(kGeluCubic) * a * a * a)));
    });
  });
  return autograd::record_fused("gelu", {x}, out, GeluRule{Saved(x), approx});
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

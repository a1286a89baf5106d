// linear: x W^T + b fused with the bias and an optional GELU, forward and backward, on the GEMM backends.
#include "xgrad/nn/functional.hpp"

#include <algorithm>
#include <type_traits>
#include <utility>

#include "xgrad/autograd.hpp"
#include "xgrad/kernel.hpp"

namespace xg::nn::functional {
using namespace xg::kernel;

namespace {
using autograd::Saved;
using Grads = std::vector<Tensor>;

bool has_gelu(Activation a) { return a != Activation::none; }
bool tanh_form(Activation a) { return a == Activation::gelu_tanh; }

/// gemm with alpha = 1, passing operands rounded to bf16 before (float32 under autocast) along.
template <class T>
void gemm_reusing(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, const T* a, std::int64_t lda,
                  const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc, const Bf16Operand& a16,
                  const Bf16Operand& b16) {
  if constexpr (std::is_same_v<T, float>)
    gemm(ta, tb, m, n, k, 1.f, a, lda, b, ldb, beta, c, ldc, a16, b16);
  else
    gemm(ta, tb, m, n, k, T(1), a, lda, b, ldb, beta, c, ldc);
}

/// x and W rounded to bf16 once under autocast, for the forward product and the backward ones.
struct Bf16Inputs {
  Bf16Operand x, w;
};

/// y [rows, out] = act(x [rows, in] W^T (+ b)). Without an activation the bias costs no pass of its own
/// (kernel::linear_product). With one, the GEMM writes the pre-activation h and a single pass per row adds
/// the bias (in h, kept for backward) and applies it.
template <class T>
void linear_forward(const T* x, const T* w, const T* b, T* y, T* h, std::int64_t rows, std::int64_t in,
                    std::int64_t out, Activation act, const Bf16Inputs& r16) {
  if (!has_gelu(act)) {
    if constexpr (std::is_same_v<T, float>)
      linear_product(rows, out, in, x, in, w, in, b, y, out, r16.x, r16.w);
    else
      linear_product(rows, out, in, x, in, w, in, b, y, out);
    return;
  }
  gemm_reusing(false, true, rows, out, in, x, in, w, in, T(0), h, out, r16.x, r16.w);
  parallel_for(rows, row_grain(out), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      T* hr = h + r * out;
      if (b)
#pragma omp simd
        for (std::int64_t c = 0; c < out; ++c) hr[c] += b[c];
      gelu_values(hr, y + r * out, out, tanh_form(act));
    }
  });
}

/// db [out] = (or, accumulating, +=) the column sums of g [rows, out]: threads own column ranges and add
/// the rows in order, so the sum is the same on any thread count. With `h`, g is first replaced by the
/// activation's gradient dh = g act'(h) (written to dh) in the same pass; db may then be null.
template <class T>
void column_sums(const T* g, T* db, std::int64_t rows, std::int64_t out, bool accumulate, const T* h = nullptr,
                 T* dh = nullptr, Activation act = Activation::none) {
  parallel_for(out, 64, [&](std::int64_t c0, std::int64_t c1) {
    if (db && !accumulate) std::fill(db + c0, db + c1, T(0));
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* gr = g + r * out;
      if (h) {
        gelu_backward_values(gr + c0, h + r * out + c0, dh + r * out + c0, c1 - c0, tanh_form(act));
        gr = dh + r * out;
      }
      if (db)
#pragma omp simd
        for (std::int64_t c = c0; c < c1; ++c) db[c] += gr[c];
    }
  });
}

struct LinearRule {
  Saved x, w, b;
  bool gx, gw, gb;
  bool bf16;  // recorded under autocast: the backward products run in bf16 too
  Activation act;
  Tensor h;  // the pre-activation x W^T + b, when there is an activation
  Bf16Inputs r16;

  Grads fused(const Tensor& g) const {
    autocast precision(bf16);
    const Tensor &xv = x.get(), &wv = w.get();
    const std::int64_t in = wv.shape()[1], out = wv.shape()[0], rows = g.numel() / std::max<std::int64_t>(out, 1);
    return dispatch_float(xv.dtype(), "linear_backward", [&]<class T>() {
      Tensor xc = contiguous_data(xv), gc = contiguous_data(g), wc = contiguous_data(wv);
      Tensor dx, dw, db;
      // db = the column sums of g (or of the activation's gradient dh, computed in the same pass): straight
      // into .grad when the bias already holds gradients of earlier micro-batches.
      Tensor dh = has_gelu(act) ? empty(h.shape(), {h.dtype()}) : Tensor();
      auto bias_pass = [&](T* into, bool accumulate) {
        column_sums(ptr<T>(gc), into, rows, out, accumulate, dh.defined() ? ptr<T>(h) : nullptr,
                    dh.defined() ? ptr<T>(dh) : nullptr, act);
      };
      if (gb && !autograd::accumulate_into_grad(2, [&](const Tensor& buf) { bias_pass(write_ptr<T>(buf), true); })) {
        db = empty({out}, {wv.dtype()});
        bias_pass(ptr<T>(db), false);
      } else if (!gb && dh.defined()) {
        bias_pass(nullptr, false);
      }
      const T* go = dh.defined() ? ptr<T>(dh) : ptr<T>(gc);  // the gradient at the GEMM's output
      Bf16Operand g16;
      if constexpr (std::is_same_v<T, float>)
        if (gx && gw) g16 = Bf16Operand(go, rows, out, out);  // one rounding for both products
      if (gx) {  // dx = g W
        dx = empty(xv.shape(), {xv.dtype()});
        gemm_reusing(false, false, rows, in, out, go, out, ptr<T>(wc), in, T(0), ptr<T>(dx), in, g16, r16.w);
      }
      // dW = g^T x summed over every row: added by the GEMM (beta = 1) into .grad or this backward's sum.
      auto weight_grad = [&](const Tensor& into, T beta) {
        gemm_reusing(true, false, out, in, rows, go, out, ptr<T>(xc), in, beta, write_ptr<T>(into), in, g16, r16.x);
      };
      if (gw && !autograd::accumulate_into_grad(1, [&](const Tensor& buf) { weight_grad(buf, T(1)); })) {
        dw = empty(wv.shape(), {wv.dtype()});
        weight_grad(dw, T(0));
      }
      return Grads{dx, dw, db};
    });
  }
  Grads composite(const Tensor& g) const {
    autocast precision(bf16);
    const Tensor &xv = x.get(), &wv = w.get();
    const std::int64_t in = wv.shape()[1], out = wv.shape()[0];
    // The pre-activation recomputed from the inputs, so that a recorded backward differentiates through it.
    Tensor go = has_gelu(act) ? gelu_backward(g, linear(xv, wv, b.get()), tanh_form(act)) : g;
    Tensor g2 = reshape(go, {-1, out});
    return {gx ? matmul(go, wv) : Tensor(), gw ? matmul(transpose(g2, 0, 1), reshape(xv, {-1, in})) : Tensor(),
            gb ? sum(g2, {0}) : Tensor()};
  }
};
}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) { return linear(x, weight, bias, Activation::none); }

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Activation activation) {
  XG_CHECK(activation == Activation::none || activation == Activation::gelu || activation == Activation::gelu_tanh,
           "linear: unknown activation {}", static_cast<int>(activation));
  XG_CHECK(weight.dim() == 2 && x.dim() >= 1 && x.shape().back() == weight.shape()[1],
           "linear: input {} does not match weight {} (expected input [..., {}])", shape_str(x.shape()),
           shape_str(weight.shape()), weight.dim() == 2 ? weight.shape()[1] : -1);
  XG_CHECK(!bias.defined() || bias.shape() == Shape{weight.shape()[0]}, "linear: bias {} does not match weight {}",
           shape_str(bias.shape()), shape_str(weight.shape()));
  check_same_dtype(x, weight, "linear");
  if (bias.defined()) check_same_dtype(x, bias, "linear");
  if (!is_floating(x.dtype()) || x.numel() == 0 || weight.numel() == 0) {
    Tensor y = matmul(x, weight.t());  // int64 and empty products: matmul's rules
    if (bias.defined()) y = y + bias;
    return has_gelu(activation) ? gelu(y, tanh_form(activation)) : y;
  }
  const std::int64_t in = weight.shape()[1], out = weight.shape()[0], rows = x.numel() / in;
  Shape shape = x.shape();
  shape.back() = out;
  Tensor y = empty(shape, {x.dtype()});
  Tensor h = has_gelu(activation) ? empty(shape, {x.dtype()}) : Tensor();
  Bf16Inputs r16;
  dispatch_float(x.dtype(), "linear", [&]<class T>() {
    Tensor xc = contiguous_data(x), wc = contiguous_data(weight), bc = bias.defined() ? contiguous_data(bias) : Tensor();
    if constexpr (std::is_same_v<T, float>) {
      // Under autocast, rounded once here for the backward products too (the saved tensors' versions
      // are checked there, so the copies cannot be stale).
      r16.x = Bf16Operand(ptr<float>(xc), rows, in, in);
      r16.w = Bf16Operand::of_weight(wc);  // the optimizer's copy when it is current
    }
    linear_forward<T>(ptr<T>(xc), ptr<T>(wc), bc.defined() ? ptr<T>(bc) : nullptr, ptr<T>(y),
                      h.defined() ? ptr<T>(h) : nullptr, rows, in, out, activation, r16);
  });
  if (!weight.requires_grad()) r16.x = {};  // kept only for the backward products that need them
  if (!x.requires_grad()) r16.w = {};
  const bool gb = bias.defined() && bias.requires_grad();
  return autograd::record_fused(has_gelu(activation) ? "linear_gelu" : "linear", {x, weight, bias}, y,
                                LinearRule{Saved(x), Saved(weight), has_gelu(activation) ? Saved(bias) : Saved(),
                                           x.requires_grad(), weight.requires_grad(), gb, is_autocast_enabled(),
                                           activation, h, std::move(r16)});
}

}  // namespace xg::nn::functional

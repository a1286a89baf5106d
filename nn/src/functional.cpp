// The simple functional ops, written with other ops: linear, dropout, embedding. The fused ones have
// their own files (softmax, layer_norm, cross_entropy, attention).
#include "xgrad/nn/functional.hpp"

#include <algorithm>

#include "xgrad/autograd.hpp"
#include "xgrad/kernel.hpp"

namespace xg::nn::functional {
using namespace xg::kernel;

namespace {
using autograd::Saved;
using Grads = std::vector<Tensor>;

/// y [rows, out] = x [rows, in] W^T (+ b): each row starts as the bias and the GEMM adds into it
/// (beta = 1), so the bias costs no pass of its own.
template <class T>
void linear_forward(const T* x, const T* w, const T* b, T* y, std::int64_t rows, std::int64_t in, std::int64_t out) {
  if (b)
    parallel_for(rows, row_grain(out), [&](std::int64_t r0, std::int64_t r1) {
      for (std::int64_t r = r0; r < r1; ++r) std::copy_n(b, out, y + r * out);
    });
  gemm(false, true, rows, out, in, T(1), x, in, w, in, b ? T(1) : T(0), y, out);
}

/// db [out] = (or, accumulating, +=) the column sums of g [rows, out]: threads own column ranges and add
/// the rows in order, so the sum is the same on any thread count.
template <class T>
void column_sums(const T* g, T* db, std::int64_t rows, std::int64_t out, bool accumulate) {
  parallel_for(out, 64, [&](std::int64_t c0, std::int64_t c1) {
    if (!accumulate) std::fill(db + c0, db + c1, T(0));
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* gr = g + r * out;
#pragma omp simd
      for (std::int64_t c = c0; c < c1; ++c) db[c] += gr[c];
    }
  });
}

struct LinearRule {
  Saved x, w;
  bool gx, gw, gb;
  bool bf16;  // recorded under autocast: the backward products run in bf16 too

  Grads fused(const Tensor& g) const {
    autocast precision(bf16);
    const Tensor &xv = x.get(), &wv = w.get();
    const std::int64_t in = wv.shape()[1], out = wv.shape()[0], rows = g.numel() / std::max<std::int64_t>(out, 1);
    return dispatch_float(xv.dtype(), "linear_backward", [&]<class T>() {
      Tensor xc = contiguous_data(xv), gc = contiguous_data(g), wc = contiguous_data(wv);
      Tensor dx, dw, db;
      if (gx) {  // dx = g W
        dx = empty(xv.shape(), {xv.dtype()});
        gemm(false, false, rows, in, out, T(1), ptr<T>(gc), out, ptr<T>(wc), in, T(0), ptr<T>(dx), in);
      }
      // dW = g^T x summed over every row, and db = the column sums of g: added by the GEMM (beta = 1) or
      // the sums straight into .grad when the weights already hold gradients of earlier micro-batches.
      auto weight_grad = [&](const Tensor& into, T beta) {
        gemm(true, false, out, in, rows, T(1), ptr<T>(gc), out, ptr<T>(xc), in, beta, write_ptr<T>(into), in);
      };
      if (gw && !autograd::accumulate_into_grad(1, [&](const Tensor& buf) { weight_grad(buf, T(1)); })) {
        dw = empty(wv.shape(), {wv.dtype()});
        weight_grad(dw, T(0));
      }
      if (gb && !autograd::accumulate_into_grad(2, [&](const Tensor& buf) {
            column_sums(ptr<T>(gc), write_ptr<T>(buf), rows, out, true);
          })) {
        db = empty({out}, {wv.dtype()});
        column_sums(ptr<T>(gc), ptr<T>(db), rows, out, false);
      }
      return Grads{dx, dw, db};
    });
  }
  Grads composite(const Tensor& g) const {
    autocast precision(bf16);
    const Tensor &xv = x.get(), &wv = w.get();
    const std::int64_t in = wv.shape()[1], out = wv.shape()[0];
    Tensor g2 = reshape(g, {-1, out});
    return {gx ? matmul(g, wv) : Tensor(), gw ? matmul(transpose(g2, 0, 1), reshape(xv, {-1, in})) : Tensor(),
            gb ? sum(g2, {0}) : Tensor()};
  }
};
}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  XG_CHECK(weight.dim() == 2 && x.dim() >= 1 && x.shape().back() == weight.shape()[1],
           "linear: input {} does not match weight {} (expected input [..., {}])", shape_str(x.shape()),
           shape_str(weight.shape()), weight.dim() == 2 ? weight.shape()[1] : -1);
  XG_CHECK(!bias.defined() || bias.shape() == Shape{weight.shape()[0]}, "linear: bias {} does not match weight {}",
           shape_str(bias.shape()), shape_str(weight.shape()));
  check_same_dtype(x, weight, "linear");
  if (bias.defined()) check_same_dtype(x, bias, "linear");
  if (!is_floating(x.dtype()) || x.numel() == 0 || weight.numel() == 0) {
    Tensor y = matmul(x, weight.t());  // int64 and empty products: matmul's rules
    return bias.defined() ? y + bias : y;
  }
  const std::int64_t in = weight.shape()[1], out = weight.shape()[0], rows = x.numel() / in;
  Shape shape = x.shape();
  shape.back() = out;
  Tensor y = empty(shape, {x.dtype()});
  dispatch_float(x.dtype(), "linear", [&]<class T>() {
    Tensor xc = contiguous_data(x), wc = contiguous_data(weight), bc = bias.defined() ? contiguous_data(bias) : Tensor();
    linear_forward<T>(ptr<T>(xc), ptr<T>(wc), bc.defined() ? ptr<T>(bc) : nullptr, ptr<T>(y), rows, in, out);
  });
  return autograd::record_fused("linear", {x, weight, bias}, y,
                                LinearRule{Saved(x), Saved(weight), x.requires_grad(), weight.requires_grad(),
                                           bias.defined() && bias.requires_grad(), is_autocast_enabled()});
}

// ---- dropout, embedding -------------------------------------------------------------------------------

Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  XG_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability must be in [0, 1], got {}", p);
  if (!training || p == 0.0) return x;
  if (p == 1.0) return x * 0.0;
  // The kept elements are scaled by 1/(1-p) so the expected value is unchanged (inverted dropout).
  Tensor keep = ge(rand(x.shape(), {x.dtype()}, gen), p) * (1.0 / (1.0 - p));
  return x * keep;
}

Tensor embedding(const Tensor& ids, const Tensor& weight) {
  XG_CHECK(ids.dtype() == DType::int64, "embedding: ids must be int64, got {} {}", dtype_name(ids.dtype()),
           shape_str(ids.shape()));
  XG_CHECK(weight.dim() == 2, "embedding: weight must be [num_embeddings, dim], got {}", shape_str(weight.shape()));
  const std::int64_t v = weight.shape()[0];
  for (auto id : ids.to_vector<std::int64_t>())
    XG_CHECK(id >= 0 && id < v, "embedding: token id {} is out of range for {} embeddings (weight {})", id, v,
             shape_str(weight.shape()));
  Shape shape = ids.shape();
  shape.push_back(weight.shape()[1]);
  return reshape(index_select(weight, 0, reshape(ids, {-1})), shape);
}

}  // namespace xg::nn::functional

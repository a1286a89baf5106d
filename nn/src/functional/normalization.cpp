// layer_norm over the last dim: one fused pass per row forward (keeping each row's mean and 1/std) and
// backward, with the composite formula as the create_graph path. add_layer_norm takes a pre-norm
// transformer's residual add into the same pass, and backward adds into the residual's gradient.
#include <algorithm>
#include <cmath>
#include <vector>

#include "xgrad/kernel.hpp"
#include "xgrad/nn/functional.hpp"

namespace xg::nn::functional {
using namespace xg::kernel;
using autograd::Saved;
using Grads = std::vector<Tensor>;

namespace {

/// x [rows, n] -> y [rows, n], mean and rstd [rows]: y = (x - mean) rstd w + b. With `residual`, x is first
/// replaced by sum = x + residual (written out), in the pass that takes the statistics.
template <class T>
void layer_norm_forward(const T* x, const T* residual, T* sum, const T* w, const T* b, T* y, T* mean, T* rstd,
                        std::int64_t rows, std::int64_t n, T eps) {
  // Missing affine parameters as ones and zeros: branch-free loops (a select per element made GCC
  // emit gathers, 4x slower).
  std::vector<T> ones(w ? 0 : static_cast<std::size_t>(n), T(1)), zeros(b ? 0 : static_cast<std::size_t>(n), T(0));
  if (!w) w = ones.data();
  if (!b) b = zeros.data();
  parallel_for(rows, row_grain(n), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * n;
      T* yr = y + r * n;
      const auto [mu, var] = residual ? add_row_moments(xr, residual + r * n, sum + r * n, n) : row_moments(xr, n);
      if (residual) xr = sum + r * n;
      const T rs = T(1) / std::sqrt(var + eps), m = mu;
      mean[r] = mu;
      rstd[r] = rs;
#pragma omp simd
      for (std::int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - m) * rs * w[i] + b[i];
    }
  });
}

/// Rows per block of layer_norm's backward: blocks, not threads, own the partial weight and bias
/// gradients, so their sum is the same whatever the thread count.
constexpr std::int64_t kLayerNormBlockRows = 32;

/// g, x [rows, n] -> dx [rows, n] (added to dx's values when `accumulate`); dw, db [n] accumulated (either
/// may be null): dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) with dxhat = g w.
template <class T>
void layer_norm_backward(const T* g, const T* x, const T* w, const T* mean, const T* rstd, T* dx, bool accumulate,
                         T* dw, T* db, std::int64_t rows, std::int64_t n) {
  const std::int64_t blocks = (rows + kLayerNormBlockRows - 1) / kLayerNormBlockRows;
  std::vector<T> ones(w ? 0 : static_cast<std::size_t>(n), T(1));
  if (!w) w = ones.data();  // branch-free loops, as in the forward
  // Per block: n partial dw then n partial db.
  std::vector<T> partial(dw || db ? static_cast<std::size_t>(blocks * 2 * n) : 0, T(0));
  parallel_for(blocks, std::max<std::int64_t>(1, row_grain(n) / kLayerNormBlockRows), [&](std::int64_t b0, std::int64_t b1) {
    // sink: where a missing dw or db is accumulated, so that one branch-free loop serves every case.
    std::vector<T> xhat(static_cast<std::size_t>(n)), dxhat(static_cast<std::size_t>(n)),
        sink(partial.empty() ? static_cast<std::size_t>(2 * n) : 0);
    for (std::int64_t blk = b0; blk < b1; ++blk) {
      T* pdw = partial.empty() ? sink.data() : partial.data() + blk * 2 * n;
      T* pdb = pdw + n;
      for (std::int64_t r = blk * kLayerNormBlockRows; r < std::min(rows, (blk + 1) * kLayerNormBlockRows); ++r) {
        const T* xr = x + r * n;
        const T* gr = g + r * n;
        T* dr = dx + r * n;
        const T mu = mean[r], rs = rstd[r];
        T* xh = xhat.data();
        T* dxh = dxhat.data();
#pragma omp simd
        for (std::int64_t i = 0; i < n; ++i) {
          xh[i] = (xr[i] - mu) * rs;
          dxh[i] = gr[i] * w[i];
        }
        // Both row means in one pass of the vectorised helper: GCC turned a two-variable simd reduction
        // here into gathers.
        const auto sums = row_sum_dot(dxh, xh, n);
        const T m1 = sums.first / T(n), m2 = sums.second / T(n);
        if (accumulate) {
          // Rounded before the add, in a loop of its own (no fused multiply-add across them): the same bits
          // as adding a separate dx, whichever path a backward takes.
#pragma omp simd
          for (std::int64_t i = 0; i < n; ++i) {
            dxh[i] = rs * (dxh[i] - m1 - xh[i] * m2);
            pdw[i] += gr[i] * xh[i];
            pdb[i] += gr[i];
          }
#pragma omp simd
          for (std::int64_t i = 0; i < n; ++i) dr[i] += dxh[i];
        } else {
#pragma omp simd
          for (std::int64_t i = 0; i < n; ++i) {
            dr[i] = rs * (dxh[i] - m1 - xh[i] * m2);
            pdw[i] += gr[i] * xh[i];
            pdb[i] += gr[i];
          }
        }
      }
    }
  });
  for (std::int64_t blk = 0; blk < blocks && !partial.empty(); ++blk) {
    const T* pdw = partial.data() + blk * 2 * n;
    if (dw)
#pragma omp simd
      for (std::int64_t i = 0; i < n; ++i) dw[i] += pdw[i];
    if (db)
#pragma omp simd
      for (std::int64_t i = 0; i < n; ++i) db[i] += pdw[n + i];
  }
}

struct LayerNormRule {
  Saved x, w, b;
  Tensor mean, rstd;  // [rows], from the forward pass
  double eps;

  Grads fused(const Tensor& g) const {
    const Tensor &xv = x.get(), &wv = w.get(), &bv = b.get();
    return dispatch_float(xv.dtype(), "layer_norm_backward", [&]<class T>() {
      const auto shape2d = rows_of(xv);  // no structured binding: the lambda below captures them (clang 14)
      const std::int64_t rows = shape2d.first, n = shape2d.second;
      Tensor xc = contiguous_data(xv), gc = contiguous_data(g), wc = wv.defined() ? contiguous_data(wv) : Tensor();
      Tensor dx;
      Tensor dw = wv.defined() ? zeros(wv.shape(), {xv.dtype()}) : Tensor();
      Tensor db = bv.defined() ? zeros(bv.shape(), {xv.dtype()}) : Tensor();
      auto run = [&](T* into, bool accumulate) {
        layer_norm_backward<T>(ptr<T>(gc), ptr<T>(xc), wc.defined() ? ptr<T>(wc) : nullptr, ptr<T>(mean), ptr<T>(rstd),
                               into, accumulate, dw.defined() ? ptr<T>(dw) : nullptr, db.defined() ? ptr<T>(db) : nullptr,
                               rows, n);
      };
      // A pre-norm residual stream's gradient is already waiting at x: add to it in the same pass.
      if (!autograd::accumulate_into_grad(0, [&](const Tensor& buf) { run(write_ptr<T>(buf), true); })) {
        dx = empty(xv.shape(), {xv.dtype()});
        run(ptr<T>(dx), false);
      }
      return Grads{dx, dw, db};
    });
  }
  Grads composite(const Tensor& g) const {
    const Tensor &xv = x.get(), &wv = w.get(), &bv = b.get();
    Tensor xc = xv - last_mean(xv);
    Tensor rs = rsqrt(last_mean(xc * xc) + eps);
    Tensor xhat = xc * rs;
    Tensor dxhat = wv.defined() ? g * wv : g;
    Tensor dx = rs * (dxhat - last_mean(dxhat) - xhat * last_mean(dxhat * xhat));
    return {dx, wv.defined() ? sum_to(g * xhat, wv.shape()) : Tensor(), bv.defined() ? sum_to(g, bv.shape()) : Tensor()};
  }
  static Tensor last_mean(const Tensor& t) { return xg::mean(t, {-1}, true); }
};

}  // namespace

namespace {
/// layer_norm of x, or with `residual` of sum = x + residual, which is then returned too.
std::pair<Tensor, Tensor> norm(const Tensor& x, const Tensor& residual, const Tensor& weight, const Tensor& bias,
                               double eps, std::string_view op) {
  XG_CHECK(x.dim() >= 1, "{}: expected at least 1 dim, got a 0-d tensor", op);
  const std::int64_t c = x.shape().back();
  for (const Tensor* p : {&weight, &bias})
    if (p->defined()) {
      check_same_dtype(x, *p, op);
      XG_CHECK(p->shape() == Shape{c}, "{}: {} has shape {}, expected [{}] to match input {}", op,
               p == &weight ? "weight" : "bias", shape_str(p->shape()), c, shape_str(x.shape()));
    }
  if (residual.defined()) {
    check_same_dtype(x, residual, op);
    XG_CHECK(residual.shape() == x.shape(), "{}: residual {} does not have the input's shape {}", op,
             shape_str(residual.shape()), shape_str(x.shape()));
  }
  const auto shape2d = rows_of(x);
  const std::int64_t rows = shape2d.first, n = shape2d.second;
  Tensor mean = empty({rows}, {x.dtype()}), rstd = empty({rows}, {x.dtype()});
  Tensor y = empty(x.shape(), {x.dtype()});
  Tensor sum = residual.defined() ? empty(x.shape(), {x.dtype()}) : Tensor();
  dispatch_float(x.dtype(), op, [&]<class T>() {
    // Held here: a strided weight's contiguous copy must outlive the kernel that reads it.
    Tensor xc = contiguous_data(x), rc = residual.defined() ? contiguous_data(residual) : Tensor(),
           wc = weight.defined() ? contiguous_data(weight) : Tensor(), bc = bias.defined() ? contiguous_data(bias) : Tensor();
    layer_norm_forward<T>(ptr<T>(xc), rc.defined() ? ptr<T>(rc) : nullptr, sum.defined() ? ptr<T>(sum) : nullptr,
                          wc.defined() ? ptr<T>(wc) : nullptr, bc.defined() ? ptr<T>(bc) : nullptr, ptr<T>(y),
                          ptr<T>(mean), ptr<T>(rstd), rows, n, T(eps));
  });
  // The sum is recorded as an add and the norm as a layer_norm of it: two nodes, values from one pass.
  Tensor in = x;
  if (residual.defined())
    in = sum = autograd::record("add", {x, residual}, sum, [](const Tensor& g) { return std::vector<Tensor>{g, g}; });
  y = autograd::record_fused("layer_norm", {in, weight, bias}, y,
                             LayerNormRule{Saved(in), Saved(weight), Saved(bias), mean, rstd, eps});
  return {sum, y};
}
}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  return norm(x, Tensor(), weight, bias, eps, "layer_norm").second;
}

std::pair<Tensor, Tensor> add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor& weight,
                                         const Tensor& bias, double eps) {
  XG_CHECK(residual.defined(), "add_layer_norm: the residual is an undefined tensor");
  return norm(x, residual, weight, bias, eps, "add_layer_norm");
}

}  // namespace xg::nn::functional

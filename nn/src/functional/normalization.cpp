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

// ---- RMS, group and batch normalisation, written with other ops --------------------------------------

namespace {
/// weight and bias of shape [c] (when given), in x's dtype.
void check_affine(const Tensor& x, const Tensor& weight, const Tensor& bias, std::int64_t c, std::string_view op) {
  for (const auto* t : {&weight, &bias}) {
    if (!t->defined()) continue;
    XG_CHECK(t->shape() == Shape{c}, "{}: {} has shape {}, expected [{}]", op, t == &weight ? "weight" : "bias",
             shape_str(t->shape()), c);
    check_same_dtype(x, *t, op);
  }
}
/// [C] as [1, C, 1, ...] against x [N, C, *].
Tensor per_channel(const Tensor& t, std::int64_t dims) {
  Shape s(static_cast<std::size_t>(dims), 1);
  s[1] = t.size(0);
  return t.reshape(s);
}
void check_channels_input(const Tensor& x, std::string_view op) {
  XG_CHECK(x.dim() >= 2 && is_floating(x.dtype()), "{}: expected a float input [N, C, *], got {} {}", op,
           dtype_name(x.dtype()), shape_str(x.shape()));
}
}  // namespace

Tensor rms_norm(const Tensor& x, const Tensor& weight, std::optional<double> eps) {
  XG_CHECK(x.dim() >= 1 && is_floating(x.dtype()), "rms_norm: expected a float input with a last dim, got {} {}",
           dtype_name(x.dtype()), shape_str(x.shape()));
  const double e = eps ? *eps : (x.dtype() == DType::float32 ? 0x1p-23 : 0x1p-52);
  XG_CHECK(e >= 0 && std::isfinite(e), "rms_norm: eps must be finite and >= 0, got {}", e);
  check_affine(x, weight, {}, x.shape().back(), "rms_norm");
  Tensor y = x * rsqrt(mean(x * x, {-1}, true) + e);
  return weight.defined() ? y * weight : y;
}

Tensor group_norm(const Tensor& x, std::int64_t num_groups, const Tensor& weight, const Tensor& bias, double eps) {
  check_channels_input(x, "group_norm");
  const std::int64_t n = x.size(0), c = x.size(1);
  XG_CHECK(num_groups > 0 && c % num_groups == 0, "group_norm: {} channels cannot be split into {} groups", c, num_groups);
  XG_CHECK(eps >= 0 && std::isfinite(eps), "group_norm: eps must be finite and >= 0, got {}", eps);
  check_affine(x, weight, bias, c, "group_norm");
  Tensor g = x.reshape({n, num_groups, -1});
  Tensor centered = g - mean(g, {2}, true);
  Tensor y = (centered * rsqrt(mean(centered * centered, {2}, true) + eps)).reshape(x.shape());
  if (weight.defined()) y = y * per_channel(weight, x.dim());
  if (bias.defined()) y = y + per_channel(bias, x.dim());
  return y;
}

Tensor batch_norm(const Tensor& x, const BatchNormOptions& o) {
  check_channels_input(x, "batch_norm");
  const std::int64_t c = x.size(1);
  check_affine(x, o.weight, o.bias, c, "batch_norm");
  check_affine(x, o.running_mean, o.running_var, c, "batch_norm");
  XG_CHECK(o.running_mean.defined() == o.running_var.defined(),
           "batch_norm: give both running_mean and running_var, or neither");
  XG_CHECK(o.eps >= 0 && std::isfinite(o.eps), "batch_norm: eps must be finite and >= 0, got {}", o.eps);
  XG_CHECK(o.momentum >= 0 && o.momentum <= 1, "batch_norm: momentum must be in [0, 1], got {}", o.momentum);
  Shape dims = {0};
  for (std::int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  Tensor m, v;
  if (o.training || !o.running_mean.defined()) {
    const std::int64_t count = x.numel() / std::max<std::int64_t>(c, 1);
    XG_CHECK(!o.training || count > 1, "batch_norm: training needs more than one value per channel, got input {}",
             shape_str(x.shape()));
    m = mean(x, dims, true);
    Tensor centered = x - m;
    v = mean(centered * centered, dims, true);
    if (o.training && o.running_mean.defined()) {
      // The running variance is the unbiased one, as in PyTorch.
      autograd::NoGradGuard ng;
      const double unbias = static_cast<double>(count) / static_cast<double>(count - 1);
      Tensor rm = o.running_mean, rv = o.running_var;  // handles to the caller's buffers
      rm.mul_(1.0 - o.momentum).add_(m.detach().reshape({c}), o.momentum);
      rv.mul_(1.0 - o.momentum).add_(v.detach().reshape({c}), o.momentum * unbias);
    }
    Tensor y = centered * rsqrt(v + o.eps);
    if (o.weight.defined()) y = y * per_channel(o.weight, x.dim());
    if (o.bias.defined()) y = y + per_channel(o.bias, x.dim());
    return y;
  }
  m = per_channel(o.running_mean, x.dim());
  v = per_channel(o.running_var, x.dim());
  Tensor y = (x - m) * rsqrt(v + o.eps);
  if (o.weight.defined()) y = y * per_channel(o.weight, x.dim());
  if (o.bias.defined()) y = y + per_channel(o.bias, x.dim());
  return y;
}

}  // namespace xg::nn::functional

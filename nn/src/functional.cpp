// Fused row kernels (softmax, log_softmax, layer_norm, cross_entropy) and the simple functional ops.
// Each fused op's backward has two paths: the fused kernel for plain backward(), and the composite
// formula in Tensor ops when the backward itself is recorded (create_graph), so it is differentiable again.
#include "xgrad/nn/functional.hpp"

#include <cmath>
#include <limits>

#include "internal.hpp"
#include "row_kernels.hpp"
#include "xgrad/autograd.hpp"

namespace xg::nn::functional {
using namespace xg::detail;
using autograd::record;
using autograd::Saved;
using Grads = std::vector<Tensor>;

namespace {

/// Rows and row length of x seen as [rows, n] over its last dim.
std::pair<std::int64_t, std::int64_t> rows_of(const Tensor& x) {
  std::int64_t n = x.dim() == 0 ? 1 : x.shape().back();
  return {n == 0 ? 0 : x.numel() / n, n};
}

/// Applies f to the last dim after moving `dim` there, and moves it back (views, no copies).
template <class F>
Tensor along_last(const Tensor& x, std::int64_t dim, std::string_view op, F f) {
  std::int64_t d = wrap_dim(dim, x.dim(), op, x.shape());
  if (x.dim() == 0 || d == x.dim() - 1) return f(x);
  return transpose(f(transpose(x, d, -1)), d, -1);
}

/// y[r] = f(x[r]) for each row r over the last dim: f(x_row, y_row, n).
template <class F>
Tensor map_rows(const Tensor& x, std::string_view op, F f) {
  return dispatch_float(x.dtype(), op, [&]<class T>() {
    Tensor xc = contiguous_data(x);
    Tensor y = empty(x.shape(), {x.dtype()});
    auto [rows, n] = rows_of(x);
    for (std::int64_t r = 0; r < rows; ++r) f(ptr<T>(xc) + r * n, ptr<T>(y) + r * n, n);
    return y;
  });
}

/// out[r] = f(a[r], b[r]) for each row over the last dim: f(a_row, b_row, out_row, n).
template <class F>
Tensor map_rows2(const Tensor& a, const Tensor& b, std::string_view op, F f) {
  return dispatch_float(a.dtype(), op, [&]<class T>() {
    Tensor ac = contiguous_data(a), bc = contiguous_data(b);
    Tensor out = empty(a.shape(), {a.dtype()});
    auto [rows, n] = rows_of(a);
    for (std::int64_t r = 0; r < rows; ++r) f(ptr<T>(ac) + r * n, ptr<T>(bc) + r * n, ptr<T>(out) + r * n, n);
    return out;
  });
}

Tensor softmax_last(const Tensor& x) {
  Tensor out = map_rows(x, "softmax", []<class T>(const T* xr, T* yr, std::int64_t n) {
    T inv = T(1) / exp_shift_sum(xr, yr, n, row_max(xr, n));
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) yr[i] *= inv;
  });
  return record("softmax", {x}, out, [sx = Saved(x), so = Saved::output(out)](const Tensor& g) {
    if (autograd::is_grad_enabled()) {
      Tensor y = softmax_last(sx.get());
      return Grads{y * (g - sum(g * y, {-1}, true))};  // dx = y (g - <g, y>)
    }
    return Grads{map_rows2(g, so.get(), "softmax_backward", []<class T>(const T* gr, const T* yr, T* dr, std::int64_t n) {
      T dot = row_dot(gr, yr, n);
#pragma omp simd
      for (std::int64_t i = 0; i < n; ++i) dr[i] = yr[i] * (gr[i] - dot);
    })};
  });
}

Tensor log_softmax_last(const Tensor& x) {
  Tensor out = map_rows(x, "log_softmax", []<class T>(const T* xr, T* yr, std::int64_t n) {
    T m = row_max(xr, n);
    T lse = m + std::log(exp_shift_sum(xr, yr, n, m));
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) yr[i] = xr[i] - lse;
  });
  return record("log_softmax", {x}, out, [sx = Saved(x), so = Saved::output(out)](const Tensor& g) {
    if (autograd::is_grad_enabled())  // dx = g - softmax(x) sum(g)
      return Grads{g - softmax_last(sx.get()) * sum(g, {-1}, true)};
    return Grads{map_rows2(g, so.get(), "log_softmax_backward", []<class T>(const T* gr, const T* yr, T* dr, std::int64_t n) {
      T gs = row_sum(gr, n);
      exp_shift_sum(yr, dr, n, T(0));  // dr = exp(y) = softmax
#pragma omp simd
      for (std::int64_t i = 0; i < n; ++i) dr[i] = gr[i] - dr[i] * gs;
    })};
  });
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  XG_CHECK(weight.dim() == 2 && x.dim() >= 1 && x.shape().back() == weight.shape()[1],
           "linear: input {} does not match weight {} (expected input [..., {}])", shape_str(x.shape()),
           shape_str(weight.shape()), weight.dim() == 2 ? weight.shape()[1] : -1);
  XG_CHECK(!bias.defined() || bias.shape() == Shape{weight.shape()[0]}, "linear: bias {} does not match weight {}",
           shape_str(bias.shape()), shape_str(weight.shape()));
  Tensor y = matmul(x, weight.t());
  return bias.defined() ? y + bias : y;
}

Tensor softmax(const Tensor& x, std::int64_t dim) { return along_last(x, dim, "softmax", softmax_last); }
Tensor log_softmax(const Tensor& x, std::int64_t dim) { return along_last(x, dim, "log_softmax", log_softmax_last); }

// ---- layer_norm ---------------------------------------------------------------------------------------

namespace {
/// The layer_norm backward in Tensor ops: the reference, and the path for higher-order gradients.
Grads layer_norm_backward_composite(const Tensor& g, const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  Tensor xc = x - mean(x, {-1}, true);
  Tensor rstd = rsqrt(mean(xc * xc, {-1}, true) + eps);
  Tensor xhat = xc * rstd;
  Tensor dxhat = w.defined() ? g * w : g;
  // dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), per row
  Tensor dx = rstd * (dxhat - mean(dxhat, {-1}, true) - xhat * mean(dxhat * xhat, {-1}, true));
  return {dx, w.defined() ? sum_to(g * xhat, w.shape()) : Tensor(), b.defined() ? sum_to(g, b.shape()) : Tensor()};
}
}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  XG_CHECK(x.dim() >= 1, "layer_norm: expected at least 1 dim, got a 0-d tensor");
  std::int64_t c = x.shape().back();
  for (const Tensor* p : {&weight, &bias})
    if (p->defined()) {
      check_same_dtype(x, *p, "layer_norm");
      XG_CHECK(p->shape() == Shape{c}, "layer_norm: {} has shape {}, expected [{}] to match input {}",
               p == &weight ? "weight" : "bias", shape_str(p->shape()), c, shape_str(x.shape()));
    }
  auto [rows, n] = rows_of(x);
  Tensor mean_t = empty({rows}, {x.dtype()}), rstd_t = empty({rows}, {x.dtype()});
  Tensor out = dispatch_float(x.dtype(), "layer_norm", [&]<class T>() {
    Tensor xc = contiguous_data(x);
    Tensor y = empty(x.shape(), {x.dtype()});
    const T* w = weight.defined() ? ptr<T>(contiguous_data(weight)) : nullptr;
    const T* b = bias.defined() ? ptr<T>(contiguous_data(bias)) : nullptr;
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* xr = ptr<T>(xc) + r * n;
      T* yr = ptr<T>(y) + r * n;
      T mu = row_sum(xr, n) / T(n);
      T var = 0;
#pragma omp simd reduction(+ : var)
      for (std::int64_t i = 0; i < n; ++i) var += (xr[i] - mu) * (xr[i] - mu);
      T rstd = T(1) / std::sqrt(var / T(n) + T(eps));
      ptr<T>(mean_t)[r] = mu;
      ptr<T>(rstd_t)[r] = rstd;
#pragma omp simd
      for (std::int64_t i = 0; i < n; ++i) {
        T v = (xr[i] - mu) * rstd;
        yr[i] = (w ? v * w[i] : v) + (b ? b[i] : T(0));
      }
    }
    return y;
  });
  return record("layer_norm", {x, weight, bias}, out,
                [sx = Saved(x), sw = Saved(weight), sb = Saved(bias), mean_t, rstd_t, eps](const Tensor& g) {
                  const Tensor &x = sx.get(), &w = sw.get(), &b = sb.get();
                  if (autograd::is_grad_enabled()) return layer_norm_backward_composite(g, x, w, b, eps);
                  return dispatch_float(x.dtype(), "layer_norm_backward", [&]<class T>() {
                    auto [rows, n] = rows_of(x);
                    Tensor xc = contiguous_data(x), gc = contiguous_data(g);
                    Tensor dx = empty(x.shape(), {x.dtype()});
                    Tensor dw = w.defined() ? zeros(w.shape(), {x.dtype()}) : Tensor();
                    Tensor db = b.defined() ? zeros(b.shape(), {x.dtype()}) : Tensor();
                    const T* wp = w.defined() ? ptr<T>(contiguous_data(w)) : nullptr;
                    T* dwp = dw.defined() ? ptr<T>(dw) : nullptr;
                    T* dbp = db.defined() ? ptr<T>(db) : nullptr;
                    std::vector<T> xhat(n), dxhat(n);
                    for (std::int64_t r = 0; r < rows; ++r) {
                      const T* xr = ptr<T>(xc) + r * n;
                      const T* gr = ptr<T>(gc) + r * n;
                      T* dr = ptr<T>(dx) + r * n;
                      T mu = ptr<T>(mean_t)[r], rstd = ptr<T>(rstd_t)[r];
                      T m1 = 0, m2 = 0;
#pragma omp simd reduction(+ : m1, m2)
                      for (std::int64_t i = 0; i < n; ++i) {
                        xhat[i] = (xr[i] - mu) * rstd;
                        dxhat[i] = wp ? gr[i] * wp[i] : gr[i];
                        m1 += dxhat[i];
                        m2 += dxhat[i] * xhat[i];
                      }
                      m1 /= T(n);
                      m2 /= T(n);
#pragma omp simd
                      for (std::int64_t i = 0; i < n; ++i) dr[i] = rstd * (dxhat[i] - m1 - xhat[i] * m2);
                      if (dwp)
#pragma omp simd
                        for (std::int64_t i = 0; i < n; ++i) dwp[i] += gr[i] * xhat[i];
                      if (dbp)
#pragma omp simd
                        for (std::int64_t i = 0; i < n; ++i) dbp[i] += gr[i];
                    }
                    return Grads{dx, dw, db};
                  });
                });
}

// ---- cross_entropy ------------------------------------------------------------------------------------

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, CrossEntropyOptions o) {
  XG_CHECK(logits.dim() >= 1, "cross_entropy: logits must have a class dim, got a 0-d tensor");
  XG_CHECK(targets.dtype() == DType::int64, "cross_entropy: targets must be int64 class indices, got {} {}",
           dtype_name(targets.dtype()), shape_str(targets.shape()));
  Shape lead(logits.shape().begin(), logits.shape().end() - 1);
  XG_CHECK(targets.shape() == lead, "cross_entropy: targets {} must have the shape of the logits {} without the "
           "class dim, i.e. {}", shape_str(targets.shape()), shape_str(logits.shape()), shape_str(lead));
  const std::int64_t c = logits.shape().back();
  auto [rows, n] = rows_of(logits);
  std::vector<std::int64_t> t = targets.to_vector<std::int64_t>();
  std::int64_t count = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    if (t[r] == o.ignore_index) continue;
    XG_CHECK(t[r] >= 0 && t[r] < c, "cross_entropy: target {} (at position {}) is out of range for {} classes",
             t[r], r, c);
    ++count;
  }
  // Per-row loss lse - x[t] (0 for ignored rows); the row log-sum-exps are kept for backward.
  Tensor lse_t = empty({rows}, {logits.dtype()});
  Tensor per_row = dispatch_float(logits.dtype(), "cross_entropy", [&]<class T>() {
    Tensor xc = contiguous_data(logits);
    Tensor loss = empty(lead, {logits.dtype()});
    std::vector<T> scratch(n);
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* xr = ptr<T>(xc) + r * n;
      T m = row_max(xr, n);
      T lse = m + std::log(exp_shift_sum(xr, scratch.data(), n, m));
      ptr<T>(lse_t)[r] = lse;
      ptr<T>(loss)[r] = t[r] == o.ignore_index ? T(0) : lse - xr[t[r]];
    }
    return loss;
  });
  Tensor out;
  double scale = 1.0;
  if (o.reduction == Reduction::none) {
    out = per_row;
  } else {
    out = sum(per_row);
    if (o.reduction == Reduction::mean) {
      scale = 1.0 / static_cast<double>(count);  // NaN when every target is ignored, like PyTorch
      out = out * scale;
    }
  }
  Reduction red = o.reduction;
  std::int64_t ignore = o.ignore_index;
  return record("cross_entropy", {logits}, out, [sx = Saved(logits), targets, lse_t, red, scale, ignore](const Tensor& g) {
    const Tensor& x = sx.get();
    auto [rows, n] = rows_of(x);
    Tensor valid = ne(targets, static_cast<double>(ignore)).to(x.dtype());
    if (autograd::is_grad_enabled()) {
      // dx = (softmax(x) - one_hot(t)) * g_row, with g_row = g * scale on counted rows, 0 on ignored ones.
      Tensor safe = where(valid.to(DType::int64), targets, index_tensor({0}).reshape({}));
      Tensor onehot = scatter_add(zeros(x.shape(), {x.dtype()}), -1, unsqueeze(safe, -1), unsqueeze(valid, -1));
      Tensor grow = red == Reduction::none ? g * valid : expand(g * scale, valid.shape()) * valid;
      return Grads{(softmax_last(x) - onehot) * unsqueeze(grow, -1)};
    }
    return Grads{dispatch_float(x.dtype(), "cross_entropy_backward", [&]<class T>() {
      Tensor xc = contiguous_data(x), gc = contiguous_data(g);
      Tensor dx = empty(x.shape(), {x.dtype()});
      auto tv = targets.to_vector<std::int64_t>();
      for (std::int64_t r = 0; r < rows; ++r) {
        const T* xr = ptr<T>(xc) + r * n;
        T* dr = ptr<T>(dx) + r * n;
        if (tv[r] == ignore) {
          std::fill_n(dr, n, T(0));
          continue;
        }
        T gr = red == Reduction::none ? ptr<T>(gc)[r] : ptr<T>(gc)[0] * T(scale);
        exp_shift_sum(xr, dr, n, ptr<T>(lse_t)[r]);  // softmax
#pragma omp simd
        for (std::int64_t i = 0; i < n; ++i) dr[i] *= gr;
        dr[tv[r]] -= gr;
      }
      return dx;
    })};
  });
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

// softmax and log_softmax over a dim: one fused pass per row forward and backward, with the composite
// formulas as the create_graph path.
#include <cmath>

#include "xgrad/kernel.hpp"
#include "xgrad/nn/functional.hpp"

namespace xg::nn::functional {
using namespace xg::kernel;
using autograd::Saved;
using Grads = std::vector<Tensor>;

namespace {

/// y[r] = f(x[r]) for each row r over the last dim: f(x_row, y_row, n).
template <class F>
Tensor map_rows(const Tensor& x, std::string_view op, F f) {
  return dispatch_float(x.dtype(), op, [&]<class T>() {
    Tensor xc = contiguous_data(x);
    Tensor y = empty(x.shape(), {x.dtype()});
    const auto shape2d = rows_of(x);  // not a structured binding: clang 14 cannot capture one
    const std::int64_t rows = shape2d.first, n = shape2d.second;
    parallel_for(rows, row_grain(n), [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t r = begin; r < end; ++r) f(ptr<T>(xc) + r * n, ptr<T>(y) + r * n, n);
    });
    return y;
  });
}

/// out[r] = f(a[r], b[r]) for each row over the last dim: f(a_row, b_row, out_row, n).
template <class F>
Tensor map_rows2(const Tensor& a, const Tensor& b, std::string_view op, F f) {
  return dispatch_float(a.dtype(), op, [&]<class T>() {
    Tensor ac = contiguous_data(a), bc = contiguous_data(b);
    Tensor out = empty(a.shape(), {a.dtype()});
    const auto shape2d = rows_of(a);
    const std::int64_t rows = shape2d.first, n = shape2d.second;
    parallel_for(rows, row_grain(n), [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t r = begin; r < end; ++r) f(ptr<T>(ac) + r * n, ptr<T>(bc) + r * n, ptr<T>(out) + r * n, n);
    });
    return out;
  });
}

/// Applies f to the last dim after moving `dim` there, and moves it back (views, no copies).
template <class F>
Tensor along_last(const Tensor& x, std::int64_t dim, std::string_view op, F f) {
  std::int64_t d = wrap_dim(dim, x.dim(), op, x.shape());
  if (x.dim() == 0 || d == x.dim() - 1) return f(x);
  return transpose(f(transpose(x, d, -1)), d, -1);
}

Tensor softmax_last(const Tensor& x);

struct SoftmaxRule {
  Saved x, y;
  // dx = y (g - <g, y>) per row
  Grads fused(const Tensor& g) const {
    return {map_rows2(g, y.get(), "softmax_backward", []<class T>(const T* gr, const T* yr, T* dr, std::int64_t n) {
      T dot = row_dot(gr, yr, n);
#pragma omp simd
      for (std::int64_t i = 0; i < n; ++i) dr[i] = yr[i] * (gr[i] - dot);
    })};
  }
  Grads composite(const Tensor& g) const {
    Tensor s = softmax_last(x.get());
    return {s * (g - sum(g * s, {-1}, true))};
  }
};

/// [rows, n] -> [rows, n]: y = exp(x - max) / sum(exp(x - max)).
Tensor softmax_last(const Tensor& x) {
  Tensor y = map_rows(x, "softmax", []<class T>(const T* xr, T* yr, std::int64_t n) {
    T inv = T(1) / exp_shift_sum(xr, yr, n, row_max(xr, n));
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) yr[i] *= inv;
  });
  return autograd::record_fused("softmax", {x}, y, SoftmaxRule{Saved(x), Saved::output(y)});
}

struct LogSoftmaxRule {
  Saved x, y;
  // dx = g - softmax(x) sum(g) per row, with softmax(x) = exp(y)
  Grads fused(const Tensor& g) const {
    return {map_rows2(g, y.get(), "log_softmax_backward", []<class T>(const T* gr, const T* yr, T* dr, std::int64_t n) {
      T gs = row_sum(gr, n);
      exp_shift_sum(yr, dr, n, T(0));
#pragma omp simd
      for (std::int64_t i = 0; i < n; ++i) dr[i] = gr[i] - dr[i] * gs;
    })};
  }
  Grads composite(const Tensor& g) const { return {g - softmax_last(x.get()) * sum(g, {-1}, true)}; }
};

/// [rows, n] -> [rows, n]: y = x - max - log(sum(exp(x - max))).
Tensor log_softmax_last(const Tensor& x) {
  Tensor y = map_rows(x, "log_softmax", []<class T>(const T* xr, T* yr, std::int64_t n) {
    T m = row_max(xr, n);
    T lse = m + std::log(exp_shift_sum(xr, yr, n, m));
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) yr[i] = xr[i] - lse;
  });
  return autograd::record_fused("log_softmax", {x}, y, LogSoftmaxRule{Saved(x), Saved::output(y)});
}

}  // namespace

Tensor softmax(const Tensor& x, std::int64_t dim) { return along_last(x, dim, "softmax", softmax_last); }
Tensor log_softmax(const Tensor& x, std::int64_t dim) { return along_last(x, dim, "log_softmax", log_softmax_last); }

}  // namespace xg::nn::functional

// Helpers shared by the kernels: errors, dtype dispatch, strided iteration. Not installed.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "xgrad/autograd.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/tensor.hpp"

namespace xg::detail {

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

#define XG_CHECK(cond, ...)                        \
  do {                                             \
    if (!(cond)) ::xg::detail::fail(__VA_ARGS__);  \
  } while (0)

/// Runs f.template operator()<T>() with T the C++ type of dtype, for float32/float64 only.
template <class F>
decltype(auto) dispatch_float(DType dt, std::string_view op, F&& f) {
  switch (dt) {
    case DType::float32: return f.template operator()<float>();
    case DType::float64: return f.template operator()<double>();
    default: fail("{}: expected a floating-point tensor (float32 or float64), got {}", op, dtype_name(dt));
  }
}
/// Same, including int64.
template <class F>
decltype(auto) dispatch_all(DType dt, F&& f) {
  switch (dt) {
    case DType::float32: return f.template operator()<float>();
    case DType::float64: return f.template operator()<double>();
    default: return f.template operator()<std::int64_t>();
  }
}

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::float32; }
template <> constexpr DType dtype_of<double>() { return DType::float64; }
template <> constexpr DType dtype_of<std::int64_t>() { return DType::int64; }

inline std::int64_t numel_of(const Shape& s) {
  std::int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}
inline Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  std::int64_t acc = 1;
  for (std::size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i] > 0 ? s[i] : 1;
  }
  return st;
}
/// Wraps a negative dim and checks it is in range for a tensor of `ndim` dims.
std::int64_t wrap_dim(std::int64_t dim, std::int64_t ndim, std::string_view op, const Shape& shape);
/// Shape two shapes broadcast to, or a clear error naming op.
Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view op);
/// Strides that read `t` as if it had been broadcast to `shape` (0 along broadcast dims).
Shape broadcast_strides(const Tensor& t, const Shape& shape);
/// A view sharing storage with new shape/strides/offset, no graph.
Tensor make_view(const Tensor& base, Shape shape, Shape strides, std::int64_t offset);
/// x itself if contiguous, else a contiguous copy that records nothing (for kernels that read flat data).
Tensor contiguous_data(const Tensor& x);
/// Row-major C = alpha op(A) op(B) + beta C on BLAS, op = transpose when ta / tb.
void gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
          std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc);
void gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, double alpha, const double* a,
          std::int64_t lda, const double* b, std::int64_t ldb, double beta, double* c, std::int64_t ldc);
/// g scattered (added) into zeros of shape xs at index along d: gather's backward, itself differentiable.
Tensor gather_backward(const Tensor& g, const Shape& xs, std::int64_t d, const Tensor& index);
/// Throws unless both dtypes are equal.
void check_same_dtype(const Tensor& a, const Tensor& b, std::string_view op);

/// Calls f(offsets, n, inner_strides) for each innermost row of `shape`, with K operands read through
/// their own strides (in elements). Adjacent dims that are contiguous for every operand are merged, so
/// the common contiguous case is a single call with n = numel.
template <std::size_t K, class F>
void strided_loop(const Shape& shape, const std::array<const Shape*, K>& strides,
                  const std::array<std::int64_t, K>& base, F&& f) {
  const std::size_t nd = shape.size();
  for (auto s : shape)
    if (s == 0) return;
  if (nd == 0) {
    std::array<std::int64_t, K> inner{};
    f(base, std::int64_t{1}, inner);
    return;
  }
  // Merge dims (from the innermost out) while every operand stays linear across them.
  std::array<std::int64_t, 16> sz{};
  std::array<std::array<std::int64_t, 16>, K> st{};
  int m = 0;
  for (std::size_t d = nd; d-- > 0;) {
    if (shape[d] == 1) continue;
    bool merge = m > 0;
    for (std::size_t k = 0; k < K && merge; ++k)
      if ((*strides[k])[d] != st[k][m - 1] * sz[m - 1]) merge = false;
    if (merge) {
      sz[m - 1] *= shape[d];
    } else {
      if (m == 16) fail("xgrad supports at most 16 non-trivial dims");
      sz[m] = shape[d];
      for (std::size_t k = 0; k < K; ++k) st[k][m] = (*strides[k])[d];
      ++m;
    }
  }
  std::array<std::int64_t, K> inner{};
  if (m == 0) {
    f(base, std::int64_t{1}, inner);
    return;
  }
  for (std::size_t k = 0; k < K; ++k) inner[k] = st[k][0];
  const std::int64_t n = sz[0];
  std::array<std::int64_t, 16> idx{};
  std::array<std::int64_t, K> off = base;
  while (true) {
    f(off, n, inner);
    int d = 1;
    for (; d < m; ++d) {
      ++idx[d];
      for (std::size_t k = 0; k < K; ++k) off[k] += st[k][d];
      if (idx[d] < sz[d]) break;
      for (std::size_t k = 0; k < K; ++k) off[k] -= st[k][d] * sz[d];
      idx[d] = 0;
    }
    if (d >= m) return;
  }
}

/// Copies any strided tensor of T into a contiguous buffer.
template <class T>
void copy_to_contiguous(const Tensor& src, T* dst) {
  const T* s = static_cast<const T*>(src.impl()->storage->data);
  Shape cs = contiguous_strides(src.shape());
  strided_loop<2>(src.shape(), {&src.strides(), &cs}, {src.offset(), 0},
                  [&](const std::array<std::int64_t, 2>& o, std::int64_t n, const std::array<std::int64_t, 2>& in) {
                    const T* a = s + o[0];
                    T* b = dst + o[1];
                    if (in[0] == 1) {
                      std::memcpy(b, a, sizeof(T) * n);
                    } else {
                      for (std::int64_t i = 0; i < n; ++i) b[i] = a[i * in[0]];
                    }
                  });
}

/// Pointer to a tensor's first element as T (unchecked).
template <class T>
T* ptr(const Tensor& t) {
  return static_cast<T*>(t.impl()->storage->data) + t.offset();
}

}  // namespace xg::detail

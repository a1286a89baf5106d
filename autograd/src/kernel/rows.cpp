// Vectorised row helpers shared by the fused kernels (softmax, layer_norm, cross_entropy, attention).
// Compiled once here with xsimd for this CPU, so the public kernel header stays free of xsimd.
// GCC 12's false -Wuninitialized inside its AVX-512 intrinsics, silenced for these lines only (see
// ops/elementwise_kernels.hpp).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <xsimd/xsimd.hpp>
#pragma GCC diagnostic pop

#include <cmath>
#include <limits>

#include "xgrad/kernel.hpp"

namespace xg::kernel {

namespace {
/// Sums (or takes the max of) the lanes of a batch through memory: xsimd::hadd's AVX-512 double path
/// trips GCC 12's false -Wuninitialized.
template <class T, class B, class F>
T fold_lanes(const B& acc, T init, F f) {
  alignas(64) T lanes[B::size];
  acc.store_aligned(lanes);
  for (std::size_t k = 0; k < B::size; ++k) init = f(init, lanes[k]);
  return init;
}

/// Explicit batches: an omp-simd max reduction vectorises with GCC but not with clang.
template <class T>
T max_of(const T* x, std::int64_t n) {
  using B = xsimd::batch<T>;
  constexpr std::int64_t W = B::size;
  const T lowest = -std::numeric_limits<T>::infinity();
  B acc(lowest);
  std::int64_t i = 0;
  for (; i + W <= n; i += W) acc = xsimd::max(acc, B::load_unaligned(x + i));
  T m = fold_lanes(acc, lowest, [](T a, T b) { return a > b ? a : b; });
  for (; i < n; ++i) m = m > x[i] ? m : x[i];
  return m;
}

/// xsimd batches: 17-34x faster than scalar std::exp.
template <class T>
T exp_shift_sum_of(const T* x, T* y, std::int64_t n, T shift) {
  using B = xsimd::batch<T>;
  constexpr std::int64_t W = B::size;
  B acc(T(0)), s(shift);
  std::int64_t i = 0;
  for (; i + W <= n; i += W) {
    B v = xsimd::exp(B::load_unaligned(x + i) - s);
    v.store_unaligned(y + i);
    acc += v;
  }
  T sum = fold_lanes(acc, T(0), [](T a, T b) { return a + b; });
  for (; i < n; ++i) {
    y[i] = std::exp(x[i] - shift);
    sum += y[i];
  }
  return sum;
}

template <class T>
T dot_of(const T* a, const T* b, std::int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (std::int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

template <class T>
T sum_of(const T* a, std::int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (std::int64_t i = 0; i < n; ++i) s += a[i];
  return s;
}
}  // namespace

float row_max(const float* x, std::int64_t n) { return max_of(x, n); }
double row_max(const double* x, std::int64_t n) { return max_of(x, n); }
float exp_shift_sum(const float* x, float* y, std::int64_t n, float shift) { return exp_shift_sum_of(x, y, n, shift); }
double exp_shift_sum(const double* x, double* y, std::int64_t n, double shift) { return exp_shift_sum_of(x, y, n, shift); }
float row_dot(const float* a, const float* b, std::int64_t n) { return dot_of(a, b, n); }
double row_dot(const double* a, const double* b, std::int64_t n) { return dot_of(a, b, n); }
float row_sum(const float* a, std::int64_t n) { return sum_of(a, n); }
double row_sum(const double* a, std::int64_t n) { return sum_of(a, n); }

}  // namespace xg::kernel

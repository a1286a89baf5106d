// Vectorised row helpers shared by the fused kernels (softmax, layer_norm, cross_entropy, attention).
// Compiled once here with xsimd for this CPU, so the public kernel header stays free of xsimd.
// GCC 12's false -Wuninitialized inside its AVX-512 intrinsics, silenced for these lines only (see
// ops/elementwise_kernels.hpp).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <xsimd/xsimd.hpp>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

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
  if (i < n) {  // the tail through one padded batch: scalar std::exp costs as much as a batch per element
    alignas(64) T lanes[W] = {};
    std::copy(x + i, x + n, lanes);
    (xsimd::exp(B::load_aligned(lanes) - s)).store_aligned(lanes);
    for (std::int64_t k = 0; i + k < n; ++k) {
      y[i + k] = lanes[k];
      sum += lanes[k];
    }
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
/// Mean and population variance of the n values load(i) yields, in one pass: sums of d = x - shift and of
/// d^2 in independent vector accumulators. With the shift one of the values (the first), the variance
/// cannot cancel away: n (mean - shift)^2 is at most n times the sum of squares it is subtracted from, so
/// the relative error stays within ~n float epsilons even for a row far from zero or with an outlier
/// first, and within a few for ordinary rows (Welford's update per lane, tried first, was twice as slow).
template <class T, class Load>
std::pair<T, T> moments_of(std::int64_t n, T shift, Load load) {
  using B = xsimd::batch<T>;
  constexpr std::int64_t W = B::size, kAcc = 4;
  const B k(shift);
  B s1[kAcc], s2[kAcc];
  for (std::int64_t l = 0; l < kAcc; ++l) s1[l] = s2[l] = B(T(0));
  std::int64_t i = 0;
  for (; i + W * kAcc <= n; i += W * kAcc)
    for (std::int64_t l = 0; l < kAcc; ++l) {
      const B d = load(i + l * W) - k;
      s1[l] += d;
      s2[l] = xsimd::fma(d, d, s2[l]);
    }
  for (; i + W <= n; i += W) {
    const B d = load(i) - k;
    s1[0] += d;
    s2[0] = xsimd::fma(d, d, s2[0]);
  }
  const auto add = [](T a, T b) { return a + b; };
  T t1 = fold_lanes((s1[0] + s1[1]) + (s1[2] + s1[3]), T(0), add);
  T t2 = fold_lanes((s2[0] + s2[1]) + (s2[2] + s2[3]), T(0), add);
  if (i < n) {  // the last partial batch: only its real values count
    alignas(64) T tail[W];
    load(i).store_aligned(tail);
    for (std::int64_t j = 0; j < n - i; ++j) {
      const T d = tail[j] - shift;
      t1 += d;
      t2 += d * d;
    }
  }
  const T nn = T(std::max<std::int64_t>(n, 1));
  return {shift + t1 / nn, std::max(T(0), (t2 - t1 * t1 / nn) / nn)};
}

/// Loads a batch of x at i, padding past n with zeros (only the tail loop reads past the end).
template <class T>
xsimd::batch<T> load_padded(const T* x, std::int64_t i, std::int64_t n) {
  using B = xsimd::batch<T>;
  if (i + static_cast<std::int64_t>(B::size) <= n) return B::load_unaligned(x + i);
  alignas(64) T buf[B::size] = {};
  std::copy(x + i, x + n, buf);
  return B::load_aligned(buf);
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

namespace {
template <class T>
std::pair<T, T> moments(const T* x, std::int64_t n) {
  return moments_of<T>(n, n > 0 ? x[0] : T(0), [&](std::int64_t i) { return load_padded(x, i, n); });
}
template <class T>
std::pair<T, T> add_moments(const T* a, const T* b, T* s, std::int64_t n) {
  return moments_of<T>(n, n > 0 ? a[0] + b[0] : T(0), [&](std::int64_t i) {
    const auto v = load_padded(a, i, n) + load_padded(b, i, n);
    if (i + static_cast<std::int64_t>(v.size) <= n) {
      v.store_unaligned(s + i);
    } else {
      alignas(64) T buf[v.size];
      v.store_aligned(buf);
      std::copy(buf, buf + (n - i), s + i);
    }
    return v;
  });
}
}  // namespace

std::pair<float, float> row_moments(const float* x, std::int64_t n) { return moments(x, n); }
std::pair<double, double> row_moments(const double* x, std::int64_t n) { return moments(x, n); }
std::pair<float, float> add_row_moments(const float* a, const float* b, float* s, std::int64_t n) {
  return add_moments(a, b, s, n);
}
std::pair<double, double> add_row_moments(const double* a, const double* b, double* s, std::int64_t n) {
  return add_moments(a, b, s, n);
}

}  // namespace xg::kernel

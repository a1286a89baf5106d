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
#include <type_traits>
#include <utility>

#include "xgrad/kernel.hpp"

namespace xg::kernel {

namespace {
/// Takes the max (or another fold) of the lanes of a batch through memory.
template <class T, class B, class F>
T fold_lanes(const B& acc, T init, F f) {
  alignas(64) T lanes[B::size];
  acc.store_aligned(lanes);
  for (std::size_t k = 0; k < B::size; ++k) init = f(init, lanes[k]);
  return init;
}

/// The sum of a batch's lanes: xsimd's in-register halving for float (through memory GCC made it a chain
/// of permutes with a constant loaded for each, the larger part of a 128-wide row's sum); through memory
/// for double, whose AVX-512 hadd trips GCC 12's false -Wuninitialized.
template <class T, class B>
T sum_lanes(const B& acc) {
  if constexpr (std::is_same_v<T, float>)
    return xsimd::hadd(acc);
  else
    return fold_lanes(acc, T(0), [](T a, T b) { return a + b; });
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

/// Loads a batch of x at i, padding past n with zeros (only the tail loop reads past the end).
template <class T>
xsimd::batch<T> load_padded(const T* x, std::int64_t i, std::int64_t n) {
  using B = xsimd::batch<T>;
  if (i + static_cast<std::int64_t>(B::size) <= n) return B::load_unaligned(x + i);
  alignas(64) T buf[B::size] = {};
  std::copy(x + i, x + n, buf);
  return B::load_aligned(buf);
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
  T sum = sum_lanes<T>(acc);
  if (i < n) {  // the tail through one padded batch: scalar std::exp costs as much as a batch per element
    alignas(64) T lanes[W];
    xsimd::exp(load_padded(x, i, n) - s).store_aligned(lanes);
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
/// Two sums in one pass, in explicit batches (an omp simd reduction of two variables became gathers).
template <class T>
std::pair<T, T> sum_dot_of(const T* a, const T* b, std::int64_t n) {
  using B = xsimd::batch<T>;
  constexpr std::int64_t W = B::size;
  B s[2] = {B(T(0)), B(T(0))}, d[2] = {B(T(0)), B(T(0))};  // two of each: the adds' latency, not their rate
  std::int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W)
    for (std::int64_t l = 0; l < 2; ++l) {
      const B va = B::load_unaligned(a + i + l * W);
      s[l] += va;
      d[l] = xsimd::fma(va, B::load_unaligned(b + i + l * W), d[l]);
    }
  if (i + W <= n) {
    const B va = B::load_unaligned(a + i);
    s[0] += va;
    d[0] = xsimd::fma(va, B::load_unaligned(b + i), d[0]);
    i += W;
  }
  T ts = sum_lanes<T>(s[0] + s[1]), td = sum_lanes<T>(d[0] + d[1]);
  for (; i < n; ++i) {
    ts += a[i];
    td += a[i] * b[i];
  }
  return {ts, td};
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
  T t1 = sum_lanes<T>((s1[0] + s1[1]) + (s1[2] + s1[3]));
  T t2 = sum_lanes<T>((s2[0] + s2[1]) + (s2[2] + s2[3]));
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

}  // namespace

float row_max(const float* x, std::int64_t n) { return max_of(x, n); }
double row_max(const double* x, std::int64_t n) { return max_of(x, n); }
float exp_shift_sum(const float* x, float* y, std::int64_t n, float shift) { return exp_shift_sum_of(x, y, n, shift); }
double exp_shift_sum(const double* x, double* y, std::int64_t n, double shift) { return exp_shift_sum_of(x, y, n, shift); }
float row_dot(const float* a, const float* b, std::int64_t n) { return dot_of(a, b, n); }
double row_dot(const double* a, const double* b, std::int64_t n) { return dot_of(a, b, n); }
float row_sum(const float* a, std::int64_t n) { return sum_of(a, n); }
double row_sum(const double* a, std::int64_t n) { return sum_of(a, n); }
std::pair<float, float> row_sum_dot(const float* a, const float* b, std::int64_t n) { return sum_dot_of(a, b, n); }
std::pair<double, double> row_sum_dot(const double* a, const double* b, std::int64_t n) { return sum_dot_of(a, b, n); }

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

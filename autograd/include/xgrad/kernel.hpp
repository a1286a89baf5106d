// xgrad: what an op's kernel needs, for built-in ops, nn, optim and users' own ops alike: checked sizes,
// dtype dispatch, raw data pointers (the writing one bumps the version), strided iteration, GEMM and
// vectorised row helpers. xtensor-free: kernels that want xtensor include it in their own .cpp file.
//
//   Tensor my_square(const Tensor& x) {
//     Tensor y = xg::empty(x.shape(), {x.dtype()});
//     xg::kernel::dispatch_float(x.dtype(), "my_square", [&]<class T>() {
//       Tensor xc = xg::kernel::contiguous_data(x);  // held: a strided x's copy must outlive the loop
//       const T* a = xg::kernel::ptr<T>(xc);
//       T* out = xg::kernel::ptr<T>(y);
//       for (std::int64_t i = 0; i < x.numel(); ++i) out[i] = a[i] * a[i];
//     });
//     return xg::autograd::record("my_square", {x}, y, [sx = xg::autograd::Saved(x)](const Tensor& g) {
//       return std::vector<Tensor>{g * 2.0 * sx.get()};  // d/dx x^2 = 2x
//     });
//   }
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <string_view>
#include <utility>
#include <vector>

#include "xgrad/autograd.hpp"
#include "xgrad/check.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/tensor.hpp"

namespace xg::kernel {

// ---- dtypes ----

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

/// Throws unless both dtypes are equal.
void check_same_dtype(const Tensor& a, const Tensor& b, std::string_view op);

// ---- sizes: every product of sizes goes through these, so an impossible size is an error, not a wrap ----

/// a * b for non-negative sizes, or an error naming `what` if it does not fit in int64.
std::int64_t checked_mul(std::int64_t a, std::int64_t b, std::string_view what);
/// v as int64, or an error naming `what` when it is NaN, infinite or outside int64 (a plain cast is undefined).
std::int64_t checked_int64(double v, std::string_view what);
/// A value of type S as element type D: checked_int64 when a floating value becomes int64, a cast otherwise.
template <class D, class S>
D convert_value(S v, std::string_view what) {
  if constexpr (std::is_same_v<D, std::int64_t> && std::is_floating_point_v<S>) return checked_int64(static_cast<double>(v), what);
  else return static_cast<D>(v);
}
/// Number of elements of a shape (checked: negative sizes and overflow are errors).
std::int64_t numel_of(const Shape& s);
/// Row-major strides of a shape.
Shape contiguous_strides(const Shape& s);
/// Wraps a negative dim and checks it is in range for a tensor of `ndim` dims.
std::int64_t wrap_dim(std::int64_t dim, std::int64_t ndim, std::string_view op, const Shape& shape);
/// Shape two shapes broadcast to, or a clear error naming op.
Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view op);
/// Strides that read `t` as if it had been broadcast to `shape` (0 along broadcast dims).
Shape broadcast_strides(const Tensor& t, const Shape& shape);

// ---- data ----

/// Pointer to a tensor's first element as T, for reading it or for filling a tensor the op just made.
/// Unchecked: dispatch on the dtype first.
template <class T>
T* ptr(const Tensor& t) {
  return static_cast<T*>(t.impl()->storage->data) + t.offset();
}
/// Pointer for changing an existing tensor in place: bumps its version, so a backward rule that saved
/// the tensor refuses to use the changed values.
template <class T>
T* write_ptr(const Tensor& t) {
  ++t.impl()->storage->version;
  return ptr<T>(t);
}
/// x itself if contiguous, else a contiguous copy that records nothing (for kernels that read flat data).
Tensor contiguous_data(const Tensor& x);
/// A view sharing storage with new shape/strides/offset, no graph.
Tensor make_view(const Tensor& base, Shape shape, Shape strides, std::int64_t offset);

/// Calls f(offsets, n, inner_strides) for each innermost row of `shape`, with K operands read through
/// their own strides (in elements). Adjacent dims that are contiguous for every operand are merged, so
/// the common contiguous case is a single call with n = numel.
template <std::size_t K, class F>
void strided_loop(const Shape& shape, const std::array<const Shape*, K>& strides,
                  const std::array<std::int64_t, K>& base, F&& f) {
  for (auto s : shape)
    if (s == 0) return;
  // Merge dims (from the innermost out) while every operand stays linear across them.
  std::array<std::int64_t, 16> sz{};
  std::array<std::array<std::int64_t, 16>, K> st{};
  int m = 0;
  for (std::size_t d = shape.size(); d-- > 0;) {
    if (shape[d] == 1) continue;
    bool merge = m > 0;
    for (std::size_t k = 0; k < K && merge; ++k)
      if ((*strides[k])[d] != st[k][m - 1] * sz[m - 1]) merge = false;
    if (merge) {
      sz[m - 1] *= shape[d];
      continue;
    }
    if (m == 16) fail("xgrad supports at most 16 non-trivial dims, got shape {}", shape_str(shape));
    sz[m] = shape[d];
    for (std::size_t k = 0; k < K; ++k) st[k][m] = (*strides[k])[d];
    ++m;
  }
  std::array<std::int64_t, K> inner{};
  if (m == 0) {  // 0-d, or every dim of size 1
    f(base, std::int64_t{1}, inner);
    return;
  }
  for (std::size_t k = 0; k < K; ++k) inner[k] = st[k][0];
  std::array<std::int64_t, 16> idx{};
  std::array<std::int64_t, K> off = base;
  while (true) {
    f(off, sz[0], inner);
    int d = 1;
    for (; d < m; ++d) {  // odometer over the outer dims
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
                    if (in[0] == 1) {
                      std::memcpy(dst + o[1], s + o[0], sizeof(T) * static_cast<std::size_t>(n));
                    } else {
                      for (std::int64_t i = 0; i < n; ++i) dst[o[1] + i] = s[o[0] + i * in[0]];
                    }
                  });
}

// ---- threads: one pool for kernels and GEMMs ----

namespace detail {
using ChunkFn = void (*)(void* ctx, std::int64_t begin, std::int64_t end);
void parallel_run(std::int64_t n, std::int64_t grain, ChunkFn fn, void* ctx);
}  // namespace detail

/// Runs f(begin, end) over [0, n) in contiguous chunks of at least `grain` items, one chunk per thread of
/// xgrad's pool (set_num_threads), which BLAS and oneDNN run on too, so kernels and GEMMs take turns on the
/// cores instead of fighting. Runs inline when [0, n) is a single chunk, on one thread, or inside another
/// parallel region (a GEMM called from a chunk then runs on its thread alone). Chunks see the caller's
/// autocast setting; the first exception a chunk throws is rethrown here after every chunk has finished.
/// Chunks must write disjoint data: a reduction keeps one partial result per chunk.
template <class F>
void parallel_for(std::int64_t n, std::int64_t grain, F&& f) {
  if (n <= 0) return;
  if (n <= grain) {
    f(std::int64_t{0}, n);
    return;
  }
  using Fn = std::remove_reference_t<F>;
  detail::parallel_run(
      n, grain, [](void* ctx, std::int64_t b, std::int64_t e) { (*static_cast<Fn*>(ctx))(b, e); },
      const_cast<void*>(static_cast<const void*>(std::addressof(f))));
}
/// Whether this build has the thread pool (GNU OpenMP); without it parallel_for runs inline.
bool has_thread_pool();
/// Whether BLAS runs on that same pool (OpenBLAS's OpenMP build) rather than a pool of its own.
bool blas_shares_pool();
/// Items per chunk below which splitting elementwise work costs more than it saves (about 64 KB of
/// float32 per thread: waking a spinning pool thread costs ~1 us).
inline constexpr std::int64_t kElementwiseGrain = 16384;
/// parallel_for over n elements of a flat elementwise loop, chunk boundaries at multiples of 16 elements
/// (64 bytes of float32): a vectorised loop then sees the same lanes and the same scalar tail whatever the
/// thread count, so its results are the same bits.
template <class F>
void parallel_for_elements(std::int64_t n, F&& f) {
  constexpr std::int64_t w = 16;
  parallel_for((n + w - 1) / w, kElementwiseGrain / w,
               [&](std::int64_t b, std::int64_t e) { f(b * w, std::min(n, e * w)); });
}
/// Rows per chunk for row kernels over rows of `row_len` items: the same ~16K items per chunk.
inline std::int64_t row_grain(std::int64_t row_len) {
  return std::max<std::int64_t>(1, kElementwiseGrain / std::max<std::int64_t>(row_len, 1));
}

// ---- GEMM and row helpers (compiled once in the library, vectorised for this CPU) ----

/// Where float32 GEMMs run. double always runs on OpenBLAS.
enum class GemmBackend { openblas, onednn };
/// Products with m * n * k up to this are small (attention's tiles); their backend is chosen on its own.
inline constexpr std::int64_t kSmallGemm = std::int64_t{1} << 18;
/// The float32 GEMM backend of larger products (or, with small, of products up to kSmallGemm): from
/// XGRAD_GEMM (auto, openblas or onednn; auto when unset) on first use. auto times both once on a
/// training-sized product and on an attention-tile-sized one and keeps the faster for each size: oneDNN
/// picks AVX-512, AVX512-BF16 or AMX by itself, whatever OpenBLAS is told (OPENBLAS_CORETYPE), while
/// OpenBLAS's per-call cost is lower on products of a few microseconds.
GemmBackend gemm_backend(bool small = false);
/// Forces a backend for every size (an error if this build has no oneDNN).
void set_gemm_backend(GemmBackend backend);
/// Forces the backends of larger and of small products.
void set_gemm_backends(GemmBackend large, GemmBackend small);
/// Whether this build has oneDNN.
bool has_onednn();
/// "OpenBLAS 0.3.21 ... (pthreads)" or "oneDNN 2.6.3 (OpenMP)" (and where small products run): what
/// benchmarks print.
std::string gemm_backend_name();

/// Whether a float32 C = A B^T of this size runs markedly slower than A B on the GEMM it goes to
/// (OpenBLAS's small-product kernels: about half the speed): a caller that multiplies by the same B several
/// times may transpose it once.
bool transposed_b_is_slow(bool float32, std::int64_t m, std::int64_t n, std::int64_t k);
template <class T>
bool transposed_b_is_slow(std::int64_t m, std::int64_t n, std::int64_t k) {
  return transposed_b_is_slow(std::is_same_v<T, float>, m, n, k);
}

/// xt [cols, rows] (leading dimension ldt) = x [rows, cols] (leading dimension ld) transposed, by OpenBLAS's
/// omatcopy (several times a plain loop's speed).
void transpose(std::int64_t rows, std::int64_t cols, const float* x, std::int64_t ld, float* xt, std::int64_t ldt);
void transpose(std::int64_t rows, std::int64_t cols, const double* x, std::int64_t ld, double* xt, std::int64_t ldt);

/// Row-major C = alpha op(A) op(B) + beta C, op = transpose when ta / tb.
void gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
          std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc);
void gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, double alpha, const double* a,
          std::int64_t lda, const double* b, std::int64_t ldb, double beta, double* c, std::int64_t ldc);

/// An operand of autocast's bf16 GEMMs rounded once and reused, as PyTorch's autocast keeps bf16 copies of
/// weights: a linear layer's weight and input from forward to backward, its output gradient for both
/// backward products. Empty, and ignored, unless autocast is on and the CPU multiplies bf16 natively.
class Bf16Operand {
 public:
  Bf16Operand() = default;
  /// The stored rows x cols matrix at src (leading dimension ld), rounded to bf16 and compacted.
  Bf16Operand(const float* src, std::int64_t rows, std::int64_t cols, std::int64_t ld);
  const std::uint16_t* data() const { return bits_ ? static_cast<const std::uint16_t*>(bits_->data) : nullptr; }
  /// A contiguous float32 matrix w [rows, cols]: its copy left by the optimizer's last update when that is
  /// current, else rounded now. A weight (a whole storage) is marked so that the optimizer keeps a copy.
  static Bf16Operand of_weight(const Tensor& w);

 private:
  // Tensor storage, from the caching allocator (fresh pages would be faulted in at every step); shared:
  // backward rules are copied.
  std::shared_ptr<Storage> bits_;
};
/// float32 -> bfloat16 bits, rounding to nearest even (a NaN stays a quiet NaN), without branches so that
/// loops over it vectorise.
inline std::uint16_t to_bf16_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, quiet = (u >> 16) | 0x40u;
  return static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}
/// For an optimizer about to rewrite a float32 parameter in place: where to write its bf16 copy in the same
/// pass (to_bf16_bits of each new value), or null when no forward under autocast has used one since the
/// last update (the stale copy is then freed). After the pass, bf16_copy_written(p) makes the copy current.
std::uint16_t* bf16_copy_for_update(const Tensor& p);
void bf16_copy_written(const Tensor& p);

/// gemm with a and / or b given as rounded once before (each must be the stored matrix of op(a) / op(b)).
void gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
          std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc,
          const Bf16Operand& a16, const Bf16Operand& b16);

/// A linear layer's product, y [m, n] (leading dimension ldy) = x [m, k] w^T + bias (w [n, k]; bias [n] or
/// null): oneDNN's matmul adds the bias as it writes y; elsewhere each row starts as the bias and the GEMM
/// adds into it (beta = 1). x16 / w16 as for gemm.
void linear_product(std::int64_t m, std::int64_t n, std::int64_t k, const float* x, std::int64_t ldx, const float* w,
                    std::int64_t ldw, const float* bias, float* y, std::int64_t ldy, const Bf16Operand& x16 = {},
                    const Bf16Operand& w16 = {});
void linear_product(std::int64_t m, std::int64_t n, std::int64_t k, const double* x, std::int64_t ldx, const double* w,
                    std::int64_t ldw, const double* bias, double* y, std::int64_t ldy);

/// max of x[0, n) (-inf when n = 0).
float row_max(const float* x, std::int64_t n);
double row_max(const double* x, std::int64_t n);
/// y = exp(x - shift) over n elements (y may alias x); returns sum(y).
float exp_shift_sum(const float* x, float* y, std::int64_t n, float shift);
double exp_shift_sum(const double* x, double* y, std::int64_t n, double shift);
/// sum of a[i] * b[i].
float row_dot(const float* a, const float* b, std::int64_t n);
double row_dot(const double* a, const double* b, std::int64_t n);
/// sum of a[i].
float row_sum(const float* a, std::int64_t n);
double row_sum(const double* a, std::int64_t n);
/// {sum of a[i], sum of a[i] * b[i]} in one pass.
std::pair<float, float> row_sum_dot(const float* a, const float* b, std::int64_t n);
std::pair<double, double> row_sum_dot(const double* a, const double* b, std::int64_t n);

/// {mean, population variance} of x[0, n) in one pass (sums shifted by x[0], vectorised): no cancellation
/// when the mean is large against the spread.
std::pair<float, float> row_moments(const float* x, std::int64_t n);
std::pair<double, double> row_moments(const double* x, std::int64_t n);
/// s = a + b over n values and the moments of s, in the same pass.
std::pair<float, float> add_row_moments(const float* a, const float* b, float* s, std::int64_t n);
std::pair<double, double> add_row_moments(const double* a, const double* b, double* s, std::int64_t n);

/// y = gelu(x) over n values (exact, or GPT-2's tanh form) and dx = g gelu'(x): the kernels behind xg::gelu,
/// for fused ops that apply it to rows they hold. Each value's result does not depend on where it sits.
void gelu_values(const float* x, float* y, std::int64_t n, bool tanh_approximation);
void gelu_values(const double* x, double* y, std::int64_t n, bool tanh_approximation);
void gelu_backward_values(const float* g, const float* x, float* dx, std::int64_t n, bool tanh_approximation);
void gelu_backward_values(const double* g, const double* x, double* dx, std::int64_t n, bool tanh_approximation);

/// Rows and row length of x seen as [rows, n] over its last dim (a 0-d tensor is one row of one).
std::pair<std::int64_t, std::int64_t> rows_of(const Tensor& x);

}  // namespace xg::kernel

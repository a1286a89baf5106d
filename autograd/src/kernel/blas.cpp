// GEMM on OpenBLAS's cblas or oneDNN, chosen at run time, and the thread count of both.
#include <cblas.h>
#ifdef XGRAD_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <string_view>
#include <vector>

#include "internal_gemm.hpp"
#include "xgrad/kernel.hpp"

extern "C" int openblas_get_parallel(void);
extern "C" char* openblas_get_config(void);

namespace xg {

namespace {
/// cblas takes int sizes: a larger one would be truncated into a wrong (or out-of-bounds) product.
int blas_int(std::int64_t v, const char* what) {
  XG_CHECK(v >= 0 && v <= std::numeric_limits<int>::max(), "gemm: {} = {} does not fit BLAS's 32-bit sizes", what, v);
  return static_cast<int>(v);
}

void openblas_sgemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                    std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, blas_int(m, "m"),
              blas_int(n, "n"), blas_int(k, "k"), alpha, a, blas_int(lda, "lda"), b, blas_int(ldb, "ldb"), beta, c,
              blas_int(ldc, "ldc"));
}

#ifdef XGRAD_HAVE_ONEDNN
void onednn_sgemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                  std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  const dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  XG_CHECK(st == dnnl_success, "gemm: oneDNN's sgemm failed (status {}) for m={} n={} k={}", static_cast<int>(st), m,
           n, k);
}
#endif

constexpr int kUnset = -1;
std::atomic<int> backends[2] = {kUnset, kUnset};  // [0] larger products, [1] small ones (kSmallGemm)
std::mutex choose_mu;

using SgemmFn = void (*)(bool, bool, std::int64_t, std::int64_t, std::int64_t, float, const float*, std::int64_t,
                         const float*, std::int64_t, float, float*, std::int64_t);

/// The faster of two GEMMs on a pair of products of one size (activations x weights, and a product with
/// the other transpose), `reps` times per round: rounds alternate between them, so that a clock or a
/// neighbour that changes speed part-way hits both, and each keeps its best round after a warm-up.
bool second_is_faster(SgemmFn first, SgemmFn second, std::int64_t m, std::int64_t n, std::int64_t k, int reps) {
  std::vector<float> a(static_cast<std::size_t>(m * k), 0.5f), b(static_cast<std::size_t>(k * n), 0.25f),
      c(static_cast<std::size_t>(m * n));
  double best[2] = {1e30, 1e30};
  for (int round = 0; round < 6; ++round)
    for (int which = 0; which < 2; ++which) {
      const SgemmFn f = which == 0 ? first : second;
      const auto t0 = std::chrono::steady_clock::now();
      for (int r = 0; r < reps; ++r) {
        f(false, true, m, n, k, 1.f, a.data(), k, b.data(), k, 0.f, c.data(), n);
        f(true, false, k, n, m, 1.f, a.data(), k, c.data(), n, 0.f, b.data(), n);
      }
      const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (round > 0) best[which] = std::min(best[which], t);
    }
  return best[1] < best[0];
}

/// {larger, small} backends.
std::pair<int, int> choose_backends() {
  const char* env = std::getenv("XGRAD_GEMM");
  const std::string_view want = env ? env : "auto";
  constexpr int blas = static_cast<int>(kernel::GemmBackend::openblas), dnn = static_cast<int>(kernel::GemmBackend::onednn);
  if (want == "openblas") return {blas, blas};
  if (want == "onednn") {
    XG_CHECK(kernel::has_onednn(), "XGRAD_GEMM=onednn, but this build of xgrad has no oneDNN (install libdnnl-dev "
             "and rebuild)");
    return {dnn, dnn};
  }
  XG_CHECK(want == "auto", "XGRAD_GEMM is \"{}\"; expected auto, openblas or onednn", want);
#ifdef XGRAD_HAVE_ONEDNN
  // A GPT's projection, and a 32-row attention tile against 64 keys of a 64-wide head (2^17, small).
  return {second_is_faster(openblas_sgemm, onednn_sgemm, 256, 768, 768, 1) ? dnn : blas,
          second_is_faster(openblas_sgemm, onednn_sgemm, 32, 64, 64, 200) ? dnn : blas};
#else
  return {blas, blas};
#endif
}
}  // namespace

bool kernel::has_onednn() {
#ifdef XGRAD_HAVE_ONEDNN
  return true;
#else
  return false;
#endif
}

kernel::GemmBackend kernel::gemm_backend(bool small) {
  int b = backends[small].load(std::memory_order_acquire);
  if (b == kUnset) {
    std::lock_guard lock(choose_mu);
    b = backends[small].load();
    if (b == kUnset) {
      const auto [large_b, small_b] = choose_backends();
      backends[1].store(small_b, std::memory_order_release);
      backends[0].store(large_b, std::memory_order_release);
      b = small ? small_b : large_b;
    }
  }
  return static_cast<GemmBackend>(b);
}

void kernel::set_gemm_backends(GemmBackend large, GemmBackend small) {
  XG_CHECK((large != GemmBackend::onednn && small != GemmBackend::onednn) || has_onednn(),
           "set_gemm_backend: this build of xgrad has no oneDNN");
  backends[1].store(static_cast<int>(small), std::memory_order_release);
  backends[0].store(static_cast<int>(large), std::memory_order_release);
}
void kernel::set_gemm_backend(GemmBackend b) { set_gemm_backends(b, b); }

std::string kernel::gemm_backend_name() {
  if (gemm_backend() == GemmBackend::onednn) {
#ifdef XGRAD_HAVE_ONEDNN
    const dnnl_version_t* v = dnnl_version();
    return fmt::format("oneDNN {}.{}.{} ({} OpenMP threads;{} bf16 {})", v->major, v->minor, v->patch,
                       get_num_threads(), gemm_backend(true) == GemmBackend::openblas ? " small products on OpenBLAS;" : "",
                       detail::bf16_mode());
#endif
  }
  const int mode = openblas_get_parallel();  // 0 sequential, 1 its own pthreads pool, 2 OpenMP
  return fmt::format("{} ({} threads{};{} bf16 {})", openblas_get_config(), get_num_threads(),
                     mode == 2 ? ", OpenMP" : mode == 1 ? ", own pthreads pool" : ", sequential",
                     gemm_backend(true) == GemmBackend::onednn ? " small products on oneDNN;" : "",
                     detail::bf16_native() ? fmt::format("on oneDNN, {}", detail::bf16_mode()) : "by rounding");
}

namespace {
/// m n k at most kSmallGemm, without overflow.
bool small_product(std::int64_t m, std::int64_t n, std::int64_t k) {
  using kernel::kSmallGemm;
  return m <= kSmallGemm && n <= kSmallGemm && k <= kSmallGemm && m * n <= kSmallGemm && m * n * k <= kSmallGemm;
}

/// Whether a float32 product runs on oneDNN's matmul primitive: A x W^T (a linear layer's forward) at least
/// 128 rows by 128 deep on the oneDNN backend, where the primitive beats oneDNN's sgemm (5% per product; 6%
/// on GPT-2 small's step at 2 threads); not attention's 32-row tiles or the other transposes.
bool on_matmul(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k) {
  return !ta && tb && m >= 128 && k >= 128 && !small_product(m, n, k) &&
         kernel::gemm_backend() == kernel::GemmBackend::onednn;
}

template <class T>
void bias_rows(const T* bias, T* y, std::int64_t m, std::int64_t n, std::int64_t ldy) {
  kernel::parallel_for(m, kernel::row_grain(n), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) std::copy_n(bias, n, y + r * ldy);
  });
}
}  // namespace

void kernel::linear_product(std::int64_t m, std::int64_t n, std::int64_t k, const float* x, std::int64_t ldx,
                            const float* w, std::int64_t ldw, const float* bias, float* y, std::int64_t ldy,
                            const Bf16Operand& x16, const Bf16Operand& w16) {
#ifdef XGRAD_HAVE_ONEDNN
  if (bias && m > 0 && n > 0 && k > 0 &&
      (is_autocast_enabled() ? detail::bf16_native() : on_matmul(false, true, m, n, k))) {
    detail::adopt_pool_size();
    if (is_autocast_enabled())
      return detail::bf16_gemm(false, true, m, n, k, 1.f, x, ldx, w, ldw, 0.f, y, ldy, x16.data(), w16.data(), bias);
    return detail::onednn_matmul(false, true, m, n, k, 1.f, x, ldx, w, ldw, 0.f, y, ldy, bias);
  }
#endif
  if (bias) bias_rows(bias, y, m, n, ldy);
  gemm(false, true, m, n, k, 1.f, x, ldx, w, ldw, bias ? 1.f : 0.f, y, ldy, x16, w16);
}
void kernel::linear_product(std::int64_t m, std::int64_t n, std::int64_t k, const double* x, std::int64_t ldx,
                            const double* w, std::int64_t ldw, const double* bias, double* y, std::int64_t ldy) {
  if (bias) bias_rows(bias, y, m, n, ldy);
  gemm(false, true, m, n, k, 1.0, x, ldx, w, ldw, bias ? 1.0 : 0.0, y, ldy);
}

bool kernel::transposed_b_is_slow(bool float32, std::int64_t m, std::int64_t n, std::int64_t k) {
  return float32 && small_product(m, n, k) && !is_autocast_enabled() && gemm_backend(true) == GemmBackend::openblas;
}

void kernel::gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                  std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, Bf16Operand(), Bf16Operand());
}

void kernel::gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                  std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc,
                  const Bf16Operand& a16, const Bf16Operand& b16) {
  detail::adopt_pool_size();
  if (is_autocast_enabled() && m > 0 && n > 0 && k > 0)
    return detail::bf16_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, a16.data(), b16.data());
  detail::sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void kernel::detail::sgemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                           const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                           std::int64_t ldc) {
#ifdef XGRAD_HAVE_ONEDNN
  if (on_matmul(ta, tb, m, n, k)) return detail::onednn_matmul(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (gemm_backend(small_product(m, n, k)) == GemmBackend::onednn)
    return onednn_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
  openblas_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void kernel::transpose(std::int64_t rows, std::int64_t cols, const float* x, std::int64_t ld, float* xt,
                       std::int64_t ldt) {
  if (rows <= 0 || cols <= 0) return;
  cblas_somatcopy(CblasRowMajor, CblasTrans, blas_int(rows, "rows"), blas_int(cols, "cols"), 1.f, x, blas_int(ld, "ld"),
                  xt, blas_int(ldt, "ldt"));
}
void kernel::transpose(std::int64_t rows, std::int64_t cols, const double* x, std::int64_t ld, double* xt,
                       std::int64_t ldt) {
  if (rows <= 0 || cols <= 0) return;
  cblas_domatcopy(CblasRowMajor, CblasTrans, blas_int(rows, "rows"), blas_int(cols, "cols"), 1.0, x, blas_int(ld, "ld"),
                  xt, blas_int(ldt, "ldt"));
}

void kernel::gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, double alpha, const double* a,
                  std::int64_t lda, const double* b, std::int64_t ldb, double beta, double* c, std::int64_t ldc) {
  detail::adopt_pool_size();
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, blas_int(m, "m"),
              blas_int(n, "n"), blas_int(k, "k"), alpha, a, blas_int(lda, "lda"), b, blas_int(ldb, "ldb"), beta, c,
              blas_int(ldc, "ldc"));
}

}  // namespace xg

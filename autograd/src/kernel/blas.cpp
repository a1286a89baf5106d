// GEMM on OpenBLAS's cblas, and the BLAS thread count.
#include <cblas.h>

#include <limits>

#include "xgrad/kernel.hpp"

extern "C" void openblas_set_num_threads(int);
extern "C" int openblas_get_num_threads(void);

namespace xg {

namespace {
/// cblas takes int sizes: a larger one would be truncated into a wrong (or out-of-bounds) product.
int blas_int(std::int64_t v, const char* what) {
  XG_CHECK(v >= 0 && v <= std::numeric_limits<int>::max(), "gemm: {} = {} does not fit BLAS's 32-bit sizes", what, v);
  return static_cast<int>(v);
}
}  // namespace

void kernel::gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                  std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, blas_int(m, "m"),
              blas_int(n, "n"), blas_int(k, "k"), alpha, a, blas_int(lda, "lda"), b, blas_int(ldb, "ldb"), beta, c,
              blas_int(ldc, "ldc"));
}
void kernel::gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, double alpha, const double* a,
                  std::int64_t lda, const double* b, std::int64_t ldb, double beta, double* c, std::int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, blas_int(m, "m"),
              blas_int(n, "n"), blas_int(k, "k"), alpha, a, blas_int(lda, "lda"), b, blas_int(ldb, "ldb"), beta, c,
              blas_int(ldc, "ldc"));
}

void set_num_threads(int n) {
  XG_CHECK(n >= 1, "set_num_threads: need at least 1 thread, got {}", n);
  openblas_set_num_threads(n);
}
int get_num_threads() { return openblas_get_num_threads(); }

}  // namespace xg

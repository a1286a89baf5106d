// The GEMM pieces blas.cpp and bf16.cpp share.
#pragma once

#include <cstdint>

namespace xg::kernel::detail {

/// float32 GEMM on the chosen backend, ignoring autocast.
void sgemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
           std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc);
/// bf16 operands, float32 accumulation; a16 / b16, when not null, are a and b already rounded (compact).
/// bias [n], added to every row, only where bf16_native().
void bf16_gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
               std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc,
               const std::uint16_t* a16 = nullptr, const std::uint16_t* b16 = nullptr, const float* bias = nullptr);
/// float32 GEMM on oneDNN's matmul primitive (cached by shape), adding bias [n] to every row when given;
/// only in builds with oneDNN.
void onednn_matmul(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                   std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc,
                   const float* bias = nullptr);
/// Whether the CPU multiplies bf16 natively (AVX512-BF16 or AMX) through oneDNN.
bool bf16_native();
/// "native on AMX" / "native on AVX512-BF16" / "by rounding", for the backend's name.
const char* bf16_mode();
/// Sets this thread's OpenMP thread count to the pool's size: OpenBLAS's OpenMP build and oneDNN follow
/// the calling thread's count, and a thread other than the one that called set_num_threads has its own.
void adopt_pool_size();

}  // namespace xg::kernel::detail

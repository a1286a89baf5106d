// xgrad's thread pool: GNU OpenMP's, entered through libgomp's C ABI (GOMP_parallel, the call GCC emits
// for `#pragma omp parallel`), so that builds with either compiler share the runtime that oneDNN and
// OpenBLAS's OpenMP build use, and no OpenMP compiler flag is needed. Without libgomp, kernels run inline.
#include <atomic>
#include <exception>
#include <mutex>

#include "internal_gemm.hpp"
#include "xgrad/kernel.hpp"

#ifdef XGRAD_HAVE_GOMP
extern "C" {
void GOMP_parallel(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags);
int omp_get_thread_num(void);
int omp_get_num_threads(void);
int omp_in_parallel(void);
int omp_get_max_threads(void);
void omp_set_num_threads(int);
}
#endif
extern "C" void openblas_set_num_threads(int);
extern "C" int openblas_get_num_threads(void);
extern "C" int openblas_get_parallel(void);

namespace xg {

namespace {
/// The pool's size for every thread of the process (0: not read yet). OpenMP keeps its thread count per
/// thread, so each thread that calls a GEMM adopts this one first (kernel::detail::adopt_pool_size).
std::atomic<int> pool_size{0};

int pool_threads() {
  int n = pool_size.load(std::memory_order_relaxed);
  if (n == 0) {
#ifdef XGRAD_HAVE_GOMP
    n = omp_get_max_threads();  // OMP_NUM_THREADS, else the CPUs this process may use
#else
    n = openblas_get_num_threads();
#endif
    int expected = 0;
    if (!pool_size.compare_exchange_strong(expected, n)) n = expected;
  }
  return n;
}

#ifdef XGRAD_HAVE_GOMP
struct Job {
  kernel::detail::ChunkFn fn;
  void* ctx;
  std::int64_t n, chunks;
  bool autocast_on;
  std::mutex mu;
  std::exception_ptr error;
};

void run_chunks(void* data) {
  Job& job = *static_cast<Job*>(data);
  const std::int64_t nt = omp_get_num_threads(), base = job.n / job.chunks, extra = job.n % job.chunks;
  // Chunk c covers [c base + min(c, extra), ...): sizes differ by at most one, and nothing overflows.
  for (std::int64_t c = omp_get_thread_num(); c < job.chunks; c += nt) {
    const std::int64_t begin = c * base + std::min(c, extra), end = begin + base + (c < extra ? 1 : 0);
    try {
      autocast precision(job.autocast_on);
      job.fn(job.ctx, begin, end);
    } catch (...) {
      std::lock_guard lock(job.mu);
      if (!job.error) job.error = std::current_exception();
    }
  }
}
#endif
}  // namespace

void kernel::detail::parallel_run(std::int64_t n, std::int64_t grain, ChunkFn fn, void* ctx) {
#ifdef XGRAD_HAVE_GOMP
  const std::int64_t threads = pool_threads();
  const std::int64_t chunks = std::min(threads, grain > 0 ? (n + grain - 1) / grain : n);
  if (chunks > 1 && !omp_in_parallel()) {
    Job job{fn, ctx, n, chunks, is_autocast_enabled(), {}, {}};
    GOMP_parallel(run_chunks, &job, static_cast<unsigned>(chunks), 0);
    if (job.error) std::rethrow_exception(job.error);
    return;
  }
#else
  (void)grain;
#endif
  fn(ctx, 0, n);
}

void kernel::detail::adopt_pool_size() {
#ifdef XGRAD_HAVE_GOMP
  thread_local int adopted = 0;
  const int n = pool_threads();
  if (adopted != n) {
    omp_set_num_threads(n);
    adopted = n;
  }
#endif
}

bool kernel::has_thread_pool() {
#ifdef XGRAD_HAVE_GOMP
  return true;
#else
  return false;
#endif
}
bool kernel::blas_shares_pool() { return openblas_get_parallel() == 2; }  // 2: OpenBLAS built with OpenMP

void set_num_threads(int n) {
  XG_CHECK(n >= 1, "set_num_threads: need at least 1 thread, got {}", n);
  pool_size.store(n, std::memory_order_relaxed);
  openblas_set_num_threads(n);  // its own pool when OpenBLAS is the pthreads build
  kernel::detail::adopt_pool_size();
}
int get_num_threads() { return pool_threads(); }

}  // namespace xg

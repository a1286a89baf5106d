// Tensor memory: a caching allocator behind Storage, so a training step stops calling malloc after the first.
#include <bit>
#include <charconv>
#include <cstring>
#include <cstdlib>
#include <mutex>
#include <unordered_map>

#include "xgrad/kernel.hpp"


namespace xg {
using namespace kernel;

namespace {

// A caching allocator: freed buffers are kept by size and handed out again, so a training loop that
// allocates the same shapes every step stops calling malloc (and stops page-faulting fresh memory)
// after its first step. Sizes are rounded up to 64 bytes, or to 1/16 of their power of two above 64 KiB,
// so the waste stays under ~6%. Leaked on purpose: tensors in static objects may be freed after it.
class CachingAllocator {
 public:
  static CachingAllocator& get() {
    static auto* a = new CachingAllocator;
    return *a;
  }
  static std::size_t round_size(std::size_t n) {
    if (n <= (64u << 10)) return (n + 63) / 64 * 64;
    std::size_t step = std::bit_floor(n) / 16;
    return (n + step - 1) / step * step;
  }
  void* allocate(std::size_t rounded) {
    {
      std::lock_guard lock(mu_);
      auto it = free_.find(rounded);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= rounded;
        return p;
      }
    }
    void* p = std::aligned_alloc(64, rounded);  // 64 bytes: one AVX-512 vector, what xsimd's aligned loads want
    if (!p) {
      release_all();  // memory held in the cache may be what is missing
      p = std::aligned_alloc(64, rounded);
    }
    if (!p) fail("out of memory allocating {} bytes", rounded);
    return p;
  }
  void deallocate(void* p, std::size_t rounded) {
    {
      std::lock_guard lock(mu_);
      if (cached_ + rounded <= limit_) {
        free_[rounded].push_back(p);
        cached_ += rounded;
        return;
      }
    }
    std::free(p);
  }
  void release_all() {
    std::lock_guard lock(mu_);
    for (auto& [_, blocks] : free_)
      for (void* p : blocks) std::free(p);
    free_.clear();
    cached_ = 0;
  }
  std::size_t cached() {
    std::lock_guard lock(mu_);
    return cached_;
  }
  void set_limit(std::size_t bytes) {
    {
      std::lock_guard lock(mu_);
      limit_ = bytes;
    }
    if (cached() > bytes) release_all();
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::size_t, std::vector<void*>> free_;
  std::size_t cached_ = 0;
  std::size_t limit_ = initial_limit();

  /// 4 GiB, or XGRAD_CACHE_LIMIT bytes (0 turns the cache off, so sanitizers see every use after free).
  static std::size_t initial_limit() {
    const char* env = std::getenv("XGRAD_CACHE_LIMIT");
    if (!env) return std::size_t(4) << 30;
    std::size_t v = 0;
    const char* end = env + std::strlen(env);
    auto [p, ec] = std::from_chars(env, end, v);
    XG_CHECK(ec == std::errc() && p == end && p != env, "XGRAD_CACHE_LIMIT must be a number of bytes, got \"{}\"", env);
    return v;
  }
};

}  // namespace

Storage::Storage(std::size_t n) : nbytes(n) {
  if (n == 0) return;
  // Keeps round_size from wrapping; no machine has 4 EiB of memory.
  XG_CHECK(n <= (std::size_t(1) << 62), "cannot allocate {} bytes", n);
  data = CachingAllocator::get().allocate(CachingAllocator::round_size(n));
}
Storage::~Storage() {
  if (data) CachingAllocator::get().deallocate(data, CachingAllocator::round_size(nbytes));
}

void empty_cache() { CachingAllocator::get().release_all(); }
std::size_t cached_bytes() { return CachingAllocator::get().cached(); }
void set_cache_limit(std::size_t bytes) { CachingAllocator::get().set_limit(bytes); }
}  // namespace xg

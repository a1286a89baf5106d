// bf16 mixed precision: the autocast switch and the bf16 GEMM (operands rounded to bfloat16, products
// accumulated in float32) on oneDNN's matmul, or rounded operands on the float32 GEMM without oneDNN; and
// the cache of oneDNN matmul primitives, which float32 products with a transposed B use too.
#ifdef XGRAD_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "internal_gemm.hpp"
#include "xgrad/kernel.hpp"

namespace xg {

namespace {
thread_local bool autocast_on = false;

inline float from_bf16(std::uint16_t h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// A stored rows x cols matrix (leading dimension ld) converted to compact bf16 (leading dimension cols),
/// rows spread over the thread pool: the conversion of a large weight is otherwise a serial pass that the
/// other threads wait through.
void pack_bf16(const float* src, std::int64_t rows, std::int64_t cols, std::int64_t ld, std::uint16_t* dst) {
  kernel::parallel_for(rows, kernel::row_grain(cols), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const float* s = src + r * ld;
      std::uint16_t* d = dst + r * cols;
#pragma omp simd
      for (std::int64_t c = 0; c < cols; ++c) d[c] = kernel::to_bf16_bits(s[c]);
    }
  });
}

/// Without oneDNN: the same numbers (bf16 operands, float32 sums) from the float32 GEMM.
void rounded_gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                  std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  const std::int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
  std::vector<float> ra(static_cast<std::size_t>(ar * ac)), rb(static_cast<std::size_t>(br * bc));
  for (std::int64_t r = 0; r < ar; ++r)
    for (std::int64_t q = 0; q < ac; ++q) ra[r * ac + q] = from_bf16(kernel::to_bf16_bits(a[r * lda + q]));
  for (std::int64_t r = 0; r < br; ++r)
    for (std::int64_t q = 0; q < bc; ++q) rb[r * bc + q] = from_bf16(kernel::to_bf16_bits(b[r * ldb + q]));
  kernel::detail::sgemm(ta, tb, m, n, k, alpha, ra.data(), ac, rb.data(), bc, beta, c, ldc);
}

#ifdef XGRAD_HAVE_ONEDNN
/// oneDNN matmul primitives by source type, shape, transposes, leading dimensions, alpha and beta:
/// creating one costs far more than running a small one.
struct Key {
  bool bf16;  // bf16 sources (compact), else float32 ones with leading dimensions lda, ldb
  std::int64_t m, n, k, lda, ldb, ldc;
  bool ta, tb;
  float alpha, beta;
  bool bias = false;  // a float32 [n] added to every row
  auto tied() const { return std::tie(bf16, m, n, k, lda, ldb, ldc, ta, tb, alpha, beta, bias); }
  bool operator<(const Key& o) const { return tied() < o.tied(); }
  using dims = dnnl::memory::dims;
  using dt = dnnl::memory::data_type;
  // op(A) is m x k: stored k x m when transposed. Likewise op(B) is k x n.
  dnnl::memory::desc a() const { return {{m, k}, bf16 ? dt::bf16 : dt::f32, ta ? dims{1, lda} : dims{lda, 1}}; }
  dnnl::memory::desc b() const { return {{k, n}, bf16 ? dt::bf16 : dt::f32, tb ? dims{1, ldb} : dims{ldb, 1}}; }
  dnnl::memory::desc c() const { return {{m, n}, dt::f32, dims{ldc, 1}}; }
  dnnl::memory::desc bias_desc() const { return bias ? dnnl::memory::desc({1, n}, dt::f32, dims{n, 1}) : dnnl::memory::desc(); }
};

dnnl::engine& cpu_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::matmul primitive_for(const Key& key) {
  static std::mutex mu;
  static std::map<Key, dnnl::matmul> cache;
  std::lock_guard lock(mu);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  dnnl::primitive_attr attr;
  if (key.alpha != 1.f) attr.set_output_scales(0, {key.alpha});
  if (key.beta != 0.f) {
    dnnl::post_ops po;
    po.append_sum(key.beta);
    attr.set_post_ops(po);
  }
  dnnl::matmul prim(
      dnnl::matmul::primitive_desc(dnnl::matmul::desc(key.a(), key.b(), key.bias_desc(), key.c()), attr, cpu_engine()));
  if (cache.size() > 4096) cache.clear();  // shapes of one model are few; this bounds a pathological caller
  cache.emplace(key, prim);
  return prim;
}

void run_matmul(const Key& key, const void* a, const void* b, float* c, const float* bias = nullptr) {
  dnnl::matmul prim = primitive_for(key);
  auto& eng = cpu_engine();
  // oneDNN takes non-const handles; it only reads the sources.
  dnnl::memory am(key.a(), eng, const_cast<void*>(a)), bm(key.b(), eng, const_cast<void*>(b)), cm(key.c(), eng, c);
  thread_local dnnl::stream stream(eng);
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
  if (bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(key.bias_desc(), eng, const_cast<float*>(bias)));
  prim.execute(stream, args);
  stream.wait();
}

void onednn_bf16_gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                      std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc,
                      const std::uint16_t* a16, const std::uint16_t* b16, const float* bias) {
  thread_local std::vector<std::uint16_t> pa, pb;
  const std::int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
  if (!a16) {
    pa.resize(static_cast<std::size_t>(ar * ac));
    pack_bf16(a, ar, ac, lda, pa.data());
    a16 = pa.data();
  }
  if (!b16) {
    pb.resize(static_cast<std::size_t>(br * bc));
    pack_bf16(b, br, bc, ldb, pb.data());
    b16 = pb.data();
  }
  run_matmul({true, m, n, k, ac, bc, ldc, ta, tb, alpha, beta, bias != nullptr}, a16, b16, c, bias);
}
#endif
}  // namespace

#ifdef XGRAD_HAVE_ONEDNN
void kernel::detail::onednn_matmul(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                                   const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta,
                                   float* c, std::int64_t ldc, const float* bias) {
  run_matmul({false, m, n, k, lda, ldb, ldc, ta, tb, alpha, beta, bias != nullptr}, a, b, c, bias);
}
#endif

autocast::autocast(bool enabled) : prev_(autocast_on) { autocast_on = enabled; }
autocast::~autocast() { autocast_on = prev_; }
bool is_autocast_enabled() { return autocast_on; }

const char* kernel::detail::bf16_mode() {
  // Asked on every linear layer and parameter update under autocast: the ISA is looked up once.
  static const char* const mode = []() -> const char* {
#ifdef XGRAD_HAVE_ONEDNN
    const auto isa = dnnl::get_effective_cpu_isa();
    if (isa == dnnl::cpu_isa::avx512_core_amx) return "native on AMX";
    if (isa == dnnl::cpu_isa::avx512_core_bf16) return "native on AVX512-BF16";
#endif
    return "by rounding";
  }();
  return mode;
}

bool kernel::detail::bf16_native() {
  static const bool native = std::strcmp(bf16_mode(), "by rounding") != 0;
  return native;
}

void kernel::detail::bf16_gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                               const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta,
                               float* c, std::int64_t ldc, const std::uint16_t* a16, const std::uint16_t* b16,
                               const float* bias) {
#ifdef XGRAD_HAVE_ONEDNN
  if (bf16_native()) return onednn_bf16_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, a16, b16, bias);
#endif
  (void)a16;  // only made when native (Bf16Operand)
  (void)b16;
  XG_CHECK(!bias, "bf16_gemm: a bias needs oneDNN's bf16 matmul");  // linear_product adds it itself otherwise
  rounded_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

kernel::Bf16Operand::Bf16Operand(const float* src, std::int64_t rows, std::int64_t cols, std::int64_t ld) {
  if (!is_autocast_enabled() || rows <= 0 || cols <= 0 || !detail::bf16_native()) return;
  bits_ = std::make_shared<Storage>(static_cast<std::size_t>(checked_mul(checked_mul(rows, cols, "bf16 operand"), 2, "bf16 operand")));
  pack_bf16(src, rows, cols, ld, static_cast<std::uint16_t*>(bits_->data));
}

namespace {
/// The tensor's storage when the tensor is the whole of it as float32 (a parameter), else null.
Storage* whole_float32_storage(const Tensor& t) {
  Storage* st = t.impl()->storage.get();
  const bool whole = st && t.dtype() == DType::float32 && t.offset() == 0 && t.is_contiguous() &&
                     static_cast<std::size_t>(t.numel()) * sizeof(float) == st->nbytes;
  return whole ? st : nullptr;
}
}  // namespace

kernel::Bf16Operand kernel::Bf16Operand::of_weight(const Tensor& w) {
  XG_CHECK(w.dim() == 2 && w.dtype() == DType::float32 && w.is_contiguous(),
           "Bf16Operand::of_weight: needs a contiguous float32 matrix, got {} {}", dtype_name(w.dtype()), shape_str(w.shape()));
  if (!is_autocast_enabled() || w.numel() == 0 || !detail::bf16_native()) return {};
  Storage* st = whole_float32_storage(w);
  if (st) st->bf16_wanted = true;
  Bf16Operand out;
  if (st && st->bf16 && st->bf16_version == st->version.load()) {
    out.bits_ = st->bf16;
    return out;
  }
  return Bf16Operand(ptr<float>(w), w.shape()[0], w.shape()[1], w.shape()[1]);
}

std::uint16_t* kernel::bf16_copy_for_update(const Tensor& p) {
  Storage* st = whole_float32_storage(p);
  if (!st) return nullptr;
  if (!st->bf16_wanted.exchange(false) || !detail::bf16_native()) {
    st->bf16.reset();  // unused since the last update: not worth a write per element
    return nullptr;
  }
  if (!st->bf16) st->bf16 = std::make_shared<Storage>(st->nbytes / 2);
  st->bf16_version = st->version.load() - 1;  // not current until bf16_copy_written
  return static_cast<std::uint16_t*>(st->bf16->data);
}

void kernel::bf16_copy_written(const Tensor& p) {
  if (Storage* st = whole_float32_storage(p); st && st->bf16) st->bf16_version = st->version.load();
}

}  // namespace xg

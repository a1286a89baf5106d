// Random numbers: xoshiro256** seeded by splitmix64, Box-Muller normals. Written out here rather than
// taken from <random> so the same seed gives the same numbers with every standard library.
#include <bit>
#include <cmath>
#include <mutex>

#include "xgrad/kernel.hpp"


namespace xg {
using namespace kernel;

void Generator::manual_seed(std::uint64_t seed) {
  std::uint64_t z = seed;
  for (auto& s : s_) {
    z += 0x9e3779b97f4a7c15ULL;
    std::uint64_t x = z;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    s = x ^ (x >> 31);
  }
  has_spare_ = false;
}
std::uint64_t Generator::next_u64() {
  const std::uint64_t result = std::rotl(s_[1] * 5, 7) * 9;
  const std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = std::rotl(s_[3], 45);
  return result;
}
double Generator::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
double Generator::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1 = 0.0;
  while (u1 <= 0.0) u1 = uniform();
  double u2 = uniform();
  double r = std::sqrt(-2.0 * std::log(u1));
  spare_ = r * std::sin(2.0 * M_PI * u2);
  has_spare_ = true;
  return r * std::cos(2.0 * M_PI * u2);
}
std::vector<std::uint64_t> Generator::state() const {
  return {s_[0], s_[1], s_[2], s_[3], has_spare_ ? 1u : 0u, std::bit_cast<std::uint64_t>(spare_)};
}
void Generator::set_state(const std::vector<std::uint64_t>& st) {
  XG_CHECK(st.size() == 6, "Generator::set_state: expected 6 words, got {}", st.size());
  XG_CHECK(st[0] | st[1] | st[2] | st[3], "Generator::set_state: an all-zero state would only ever give zeros");
  XG_CHECK(st[4] <= 1, "Generator::set_state: word 4 must be 0 or 1, got {}", st[4]);
  for (int i = 0; i < 4; ++i) s_[i] = st[i];
  has_spare_ = st[4] != 0;
  spare_ = std::bit_cast<double>(st[5]);
}

namespace {
std::mutex& gen_mutex() {
  static std::mutex m;
  return m;
}
}  // namespace
Generator& default_generator() {
  static Generator g;
  return g;
}
void manual_seed(std::uint64_t seed) {
  std::lock_guard lock(gen_mutex());
  default_generator().manual_seed(seed);
}

namespace {
template <class Fill>
Tensor random_tensor(const Shape& shape, TensorOptions o, Generator* gen, std::string_view op, Fill fill) {
  bool rg = o.requires_grad;
  o.requires_grad = false;
  Tensor t = empty(shape, o);
  std::unique_lock<std::mutex> lock;
  if (!gen) {
    lock = std::unique_lock(gen_mutex());
    gen = &default_generator();
  }
  dispatch_float(o.dtype, op, [&]<class T>() {
    T* p = ptr<T>(t);
    for (std::int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = static_cast<T>(fill(*gen));
  });
  if (rg) t.requires_grad_(true);
  return t;
}
}  // namespace

Tensor rand(const Shape& shape, TensorOptions o, Generator* gen) {
  return random_tensor(shape, o, gen, "rand", [](Generator& g) { return g.uniform(); });
}
Tensor randn(const Shape& shape, TensorOptions o, Generator* gen) {
  return random_tensor(shape, o, gen, "randn", [](Generator& g) { return g.normal(); });
}
Tensor randperm(std::int64_t n, Generator* gen) {
  XG_CHECK(n >= 0, "randperm: n must be >= 0, got {}", n);
  Tensor t = arange(0.0, static_cast<double>(n), 1.0, {DType::int64});
  std::unique_lock<std::mutex> lock;
  if (!gen) {
    lock = std::unique_lock(gen_mutex());
    gen = &default_generator();
  }
  auto* p = ptr<std::int64_t>(t);
  for (std::int64_t i = n - 1; i > 0; --i) {
    // An index uniform in [0, i] without modulo bias: draws past the largest multiple of i + 1 are redrawn.
    const std::uint64_t range = static_cast<std::uint64_t>(i) + 1, limit = UINT64_MAX - UINT64_MAX % range;
    std::uint64_t r;
    do r = gen->next_u64();
    while (r >= limit);
    std::swap(p[i], p[static_cast<std::int64_t>(r % range)]);
  }
  return t;
}

Tensor randint(std::int64_t low, std::int64_t high, const Shape& shape, Generator* gen) {
  XG_CHECK(high > low, "randint: empty range [{}, {})", low, high);
  Tensor t = empty(shape, {DType::int64});
  std::unique_lock<std::mutex> lock;
  if (!gen) {
    lock = std::unique_lock(gen_mutex());
    gen = &default_generator();
  }
  const std::uint64_t range = static_cast<std::uint64_t>(high) - static_cast<std::uint64_t>(low);
  auto* p = ptr<std::int64_t>(t);
  for (std::int64_t i = 0, n = t.numel(); i < n; ++i)
    p[i] = static_cast<std::int64_t>(static_cast<std::uint64_t>(low) + gen->next_u64() % range);
  return t;
}
}  // namespace xg

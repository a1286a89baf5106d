// Tensor state, creation, random numbers, dtype conversion and printing.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <ostream>
#include <unordered_map>

#include "internal.hpp"

extern "C" void openblas_set_num_threads(int);
extern "C" int openblas_get_num_threads(void);

namespace xg {
using namespace detail;

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::float32: return "float32";
    case DType::float64: return "float64";
    case DType::int64: return "int64";
  }
  return "?";
}
std::size_t dtype_size(DType dtype) { return dtype == DType::float32 ? 4 : 8; }

std::string shape_str(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

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
  std::size_t limit_ = std::size_t(4) << 30;
};

}  // namespace

Storage::Storage(std::size_t n) : nbytes(n) {
  if (n == 0) return;
  data = CachingAllocator::get().allocate(CachingAllocator::round_size(n));
}
Storage::~Storage() {
  if (data) CachingAllocator::get().deallocate(data, CachingAllocator::round_size(nbytes));
}

void empty_cache() { CachingAllocator::get().release_all(); }
std::size_t cached_bytes() { return CachingAllocator::get().cached(); }
void set_cache_limit(std::size_t bytes) { CachingAllocator::get().set_limit(bytes); }

namespace detail {

std::int64_t wrap_dim(std::int64_t dim, std::int64_t ndim, std::string_view op, const Shape& shape) {
  std::int64_t n = std::max<std::int64_t>(ndim, 1);  // a 0-d tensor accepts dim 0 and -1, like PyTorch
  XG_CHECK(dim >= -n && dim < n, "{}: dim {} is out of range for a tensor of shape {} (valid: {} to {})", op, dim,
           shape_str(shape), -n, n - 1);
  return dim < 0 ? dim + n : dim;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view op) {
  std::size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    std::int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    XG_CHECK(da == db || da == 1 || db == 1,
             "{}: shapes {} and {} cannot be broadcast together (dim {}: {} vs {}); sizes must match or be 1", op,
             shape_str(a), shape_str(b), i, da, db);
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Shape broadcast_strides(const Tensor& t, const Shape& shape) {
  const Shape& s = t.shape();
  const Shape& st = t.strides();
  Shape out(shape.size(), 0);
  std::size_t lead = shape.size() - s.size();
  for (std::size_t i = 0; i < s.size(); ++i) out[lead + i] = s[i] == 1 ? 0 : st[i];
  return out;
}

Tensor make_view(const Tensor& base, Shape shape, Shape strides, std::int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.impl()->storage;
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

void check_same_dtype(const Tensor& a, const Tensor& b, std::string_view op) {
  XG_CHECK(a.dtype() == b.dtype(), "{}: dtype mismatch: {} {} vs {} {}; convert one with .to(xg::{})", op,
           dtype_name(a.dtype()), shape_str(a.shape()), dtype_name(b.dtype()), shape_str(b.shape()),
           dtype_name(a.dtype()));
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------------------
// Tensor accessors

const TensorImpl& Tensor::checked() const {
  if (!impl_) throw Error("xgrad: use of an undefined Tensor (default-constructed, or a gradient that was never computed)");
  return *impl_;
}
DType Tensor::dtype() const { return checked().dtype; }
const Shape& Tensor::shape() const { return checked().shape; }
const Shape& Tensor::strides() const { return checked().strides; }
std::int64_t Tensor::offset() const { return checked().offset; }
std::int64_t Tensor::size(std::int64_t d) const { return shape()[wrap_dim(d, dim(), "size", shape())]; }
std::int64_t Tensor::numel() const { return numel_of(shape()); }
bool Tensor::is_contiguous() const {
  const auto& s = shape();
  const auto& st = strides();
  std::int64_t expect = 1;
  for (std::size_t i = s.size(); i-- > 0;) {
    if (s[i] == 1) continue;
    if (st[i] != expect) return false;
    expect *= s[i];
  }
  return true;
}

template <class T>
T* Tensor::data_ptr() const {
  XG_CHECK(dtype() == dtype_of<T>(), "data_ptr: tensor {} is {}, not {}", shape_str(shape()), dtype_name(dtype()),
           dtype_name(dtype_of<T>()));
  return ptr<T>(*this);
}
template float* Tensor::data_ptr<float>() const;
template double* Tensor::data_ptr<double>() const;
template std::int64_t* Tensor::data_ptr<std::int64_t>() const;

template <class T>
std::vector<T> Tensor::to_vector() const {
  std::vector<T> out(static_cast<std::size_t>(numel()));
  dispatch_all(dtype(), [&]<class S>() {
    std::vector<S> tmp(out.size());
    if (!tmp.empty()) copy_to_contiguous<S>(*this, tmp.data());
    for (std::size_t i = 0; i < tmp.size(); ++i) out[i] = static_cast<T>(tmp[i]);
  });
  return out;
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<std::int64_t> Tensor::to_vector<std::int64_t>() const;

double Tensor::item() const { return item<double>(); }
template <class T>
T Tensor::item() const {
  XG_CHECK(numel() == 1, "item: only a one-element tensor converts to a number; got shape {}", shape_str(shape()));
  return dispatch_all(dtype(), [&]<class S>() { return static_cast<T>(*ptr<S>(*this)); });
}
template double Tensor::item<double>() const;
template float Tensor::item<float>() const;
template std::int64_t Tensor::item<std::int64_t>() const;

bool Tensor::requires_grad() const { return checked().requires_grad || impl_->grad_fn != nullptr; }
Tensor& Tensor::requires_grad_(bool value) {
  const auto& im = checked();
  XG_CHECK(!im.grad_fn, "requires_grad_: only leaf tensors can change requires_grad (tensor {} has grad_fn {}); use "
           "detach() for a new leaf", shape_str(im.shape), im.grad_fn->name());
  XG_CHECK(!value || is_floating(im.dtype), "requires_grad_: only floating-point tensors can require gradients, got {} {}",
           dtype_name(im.dtype), shape_str(im.shape));
  impl_->requires_grad = value;
  return *this;
}
Tensor Tensor::grad() const { return Tensor(checked().grad); }
void Tensor::set_grad(const Tensor& g) const {
  checked();
  if (g.defined())
    XG_CHECK(g.shape() == shape() && g.dtype() == dtype(), "set_grad: gradient {} {} does not match tensor {} {}",
             dtype_name(g.dtype()), shape_str(g.shape()), dtype_name(dtype()), shape_str(shape()));
  impl_->grad = g.impl();
}
bool Tensor::is_leaf() const { return checked().grad_fn == nullptr; }
void Tensor::retain_grad() const {
  XG_CHECK(requires_grad(), "retain_grad: tensor {} does not require grad", shape_str(shape()));
  impl_->retains_grad = true;
  if (impl_->grad_fn) impl_->grad_fn->retain_output(impl_);
}
bool Tensor::retains_grad() const { return checked().retains_grad; }
const std::shared_ptr<autograd::Node>& Tensor::grad_fn() const { return checked().grad_fn; }
std::uint32_t Tensor::version() const { return checked().storage->version; }
const std::string& Tensor::name() const { return checked().name; }
Tensor& Tensor::set_name(std::string n) {
  checked();
  impl_->name = std::move(n);
  return *this;
}
void Tensor::backward(const Tensor& gradient, bool retain_graph, bool create_graph) const {
  std::vector<Tensor> grads;
  if (gradient.defined()) grads.push_back(gradient);
  autograd::backward({*this}, grads, retain_graph, create_graph);
}

void Tensor::set_data(const Tensor& other) const {
  checked();
  const TensorImpl& o = other.checked();
  XG_CHECK(is_floating(o.dtype) || !requires_grad(), "set_data: a tensor that requires grad cannot hold {} data",
           dtype_name(o.dtype));
  impl_->storage = o.storage;
  impl_->shape = o.shape;
  impl_->strides = o.strides;
  impl_->offset = o.offset;
  impl_->dtype = o.dtype;
  impl_->grad.reset();
}

Tensor Tensor::detach() const {
  Tensor t = make_view(*this, shape(), strides(), offset());
  t.impl()->name = impl_->name;
  return t;
}

// ---------------------------------------------------------------------------------------------------------
// Creation

Tensor empty(const Shape& shape, TensorOptions o) {
  for (auto d : shape)
    XG_CHECK(d >= 0, "empty: negative dimension in shape {}", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  std::int64_t n = numel_of(shape);
  impl->storage = std::make_shared<Storage>(static_cast<std::size_t>(n) * dtype_size(o.dtype));
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = o.dtype;
  Tensor t(std::move(impl));
  if (o.requires_grad) t.requires_grad_(true);
  return t;
}

Tensor full(const Shape& shape, double value, TensorOptions o) {
  bool rg = o.requires_grad;
  o.requires_grad = false;
  Tensor t = empty(shape, o);
  dispatch_all(o.dtype, [&]<class T>() { std::fill_n(ptr<T>(t), t.numel(), static_cast<T>(value)); });
  if (rg) t.requires_grad_(true);
  return t;
}
Tensor zeros(const Shape& shape, TensorOptions o) { return full(shape, 0.0, o); }
Tensor ones(const Shape& shape, TensorOptions o) { return full(shape, 1.0, o); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), {t.dtype()}); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), {t.dtype()}); }
Tensor full_like(const Tensor& t, double v) { return full(t.shape(), v, {t.dtype()}); }
Tensor scalar_tensor(double value, DType dtype) { return full({}, value, {dtype}); }

Tensor arange(double start, double end, double step, TensorOptions o) {
  XG_CHECK(step != 0.0, "arange: step must be nonzero");
  XG_CHECK(std::isfinite(start) && std::isfinite(end), "arange: bounds must be finite, got {} and {}", start, end);
  auto n = static_cast<std::int64_t>(std::ceil((end - start) / step));
  if (n < 0) n = 0;
  bool rg = o.requires_grad;
  o.requires_grad = false;
  Tensor t = empty({n}, o);
  dispatch_all(o.dtype, [&]<class T>() {
    T* p = ptr<T>(t);
    for (std::int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(start + static_cast<double>(i) * step);
  });
  if (rg) t.requires_grad_(true);
  return t;
}
Tensor arange(double end, TensorOptions o) { return arange(0.0, end, 1.0, o); }

Tensor eye(std::int64_t n, std::int64_t m, TensorOptions o) {
  if (m < 0) m = n;
  XG_CHECK(n >= 0, "eye: n must be non-negative, got {}", n);
  bool rg = o.requires_grad;
  o.requires_grad = false;
  Tensor t = zeros({n, m}, o);
  dispatch_all(o.dtype, [&]<class T>() {
    T* p = ptr<T>(t);
    for (std::int64_t i = 0; i < std::min(n, m); ++i) p[i * m + i] = T(1);
  });
  if (rg) t.requires_grad_(true);
  return t;
}

namespace {
template <class S>
Tensor from_values(const S* values, std::size_t count, const Shape& shape_in, TensorOptions o) {
  Shape shape = shape_in.empty() ? Shape{static_cast<std::int64_t>(count)} : shape_in;
  XG_CHECK(numel_of(shape) == static_cast<std::int64_t>(count), "tensor: {} values do not fill shape {} ({} elements)",
           count, shape_str(shape), numel_of(shape));
  bool rg = o.requires_grad;
  o.requires_grad = false;
  Tensor t = empty(shape, o);
  dispatch_all(o.dtype, [&]<class T>() {
    T* p = ptr<T>(t);
    for (std::size_t i = 0; i < count; ++i) p[i] = static_cast<T>(values[i]);
  });
  if (rg) t.requires_grad_(true);
  return t;
}
}  // namespace

Tensor tensor(const std::vector<double>& v, const Shape& s, TensorOptions o) { return from_values(v.data(), v.size(), s, o); }
Tensor tensor(const std::vector<float>& v, const Shape& s, TensorOptions o) { return from_values(v.data(), v.size(), s, o); }
Tensor tensor(const std::vector<std::int64_t>& v, const Shape& s, TensorOptions o) {
  return from_values(v.data(), v.size(), s, o);
}
Tensor tensor(std::initializer_list<double> v, const Shape& s, TensorOptions o) {
  return from_values(v.begin(), v.size(), s, o);
}
Tensor index_tensor(const std::vector<std::int64_t>& v, const Shape& s) { return tensor(v, s, {DType::int64}); }

// ---------------------------------------------------------------------------------------------------------
// Random numbers: xoshiro256** seeded by splitmix64, Box-Muller normals. Written out here rather than
// taken from <random> so the same seed gives the same numbers with every standard library.

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
Tensor randint(std::int64_t low, std::int64_t high, const Shape& shape, Generator* gen) {
  XG_CHECK(high > low, "randint: empty range [{}, {})", low, high);
  Tensor t = empty(shape, {DType::int64});
  std::unique_lock<std::mutex> lock;
  if (!gen) {
    lock = std::unique_lock(gen_mutex());
    gen = &default_generator();
  }
  auto range = static_cast<std::uint64_t>(high - low);
  auto* p = ptr<std::int64_t>(t);
  for (std::int64_t i = 0, n = t.numel(); i < n; ++i)
    p[i] = low + static_cast<std::int64_t>(gen->next_u64() % range);
  return t;
}

// ---------------------------------------------------------------------------------------------------------
// dtype conversion, contiguous, clone

namespace {
Tensor convert(const Tensor& x, DType to) {
  Tensor out = empty(x.shape(), {to});
  if (out.numel() == 0) return out;
  dispatch_all(x.dtype(), [&]<class S>() {
    dispatch_all(to, [&]<class D>() {
      D* o = ptr<D>(out);
      const S* s = static_cast<const S*>(x.impl()->storage->data);
      Shape cs = contiguous_strides(x.shape());
      strided_loop<2>(x.shape(), {&x.strides(), &cs}, {x.offset(), 0},
                      [&](const auto& off, std::int64_t n, const auto& in) {
                        for (std::int64_t i = 0; i < n; ++i) o[off[1] + i] = static_cast<D>(s[off[0] + i * in[0]]);
                      });
    });
  });
  return out;
}
}  // namespace

Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return *this;
  XG_CHECK(!(requires_grad() && autograd::is_grad_enabled() && dt == DType::int64),
           "to: cannot convert a tensor that requires grad to int64 (shape {}); detach() it first", shape_str(shape()));
  Tensor out = convert(*this, dt);
  DType from = dtype();
  return autograd::record("to", {*this}, out, [from](const Tensor& g) {
    return std::vector<Tensor>{g.to(from)};  // d/dx cast(x) = 1
  });
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), {dtype()});
  if (out.numel() > 0) dispatch_all(dtype(), [&]<class T>() { copy_to_contiguous<T>(*this, ptr<T>(out)); });
  return autograd::record("clone", {*this}, out, [](const Tensor& g) { return std::vector<Tensor>{g}; });
}

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

// ---------------------------------------------------------------------------------------------------------
// Printing, like PyTorch: aligned columns, 4 decimals, long dims summarised with "...".

namespace {
void format_values(std::string& out, const std::vector<double>& v, const Shape& shape, std::size_t dim,
                   std::int64_t base, int width, bool integral, std::size_t indent) {
  const std::int64_t n = shape[dim];
  std::int64_t inner = 1;
  for (std::size_t d = dim + 1; d < shape.size(); ++d) inner *= shape[d];
  const bool summarise = n > 6 && static_cast<std::int64_t>(v.size()) > 1000;
  out += '[';
  for (std::int64_t i = 0; i < n; ++i) {
    if (summarise && i == 3) {
      out += dim + 1 == shape.size() ? "..., " : "...,\n" + std::string(indent + 1, ' ');
      i = n - 3;
    }
    if (dim + 1 == shape.size()) {
      double x = v[base + i];
      out += integral ? fmt::format("{:>{}}", static_cast<long long>(x), width) : fmt::format("{:>{}.4f}", x, width);
    } else {
      format_values(out, v, shape, dim + 1, base + i * inner, width, integral, indent + 1);
    }
    if (i + 1 < n) out += dim + 1 == shape.size() ? ", " : ",\n" + std::string(shape.size() - dim - 2, '\n') + std::string(indent + 1, ' ');
  }
  out += ']';
}
}  // namespace

std::string to_string(const Tensor& t) {
  if (!t.defined()) return "tensor(undefined)";
  std::vector<double> v = t.to_vector<double>();
  const bool integral = t.dtype() == DType::int64;
  int width = 1;
  for (double x : v)
    width = std::max<int>(width, static_cast<int>(integral ? fmt::format("{}", static_cast<long long>(x)).size()
                                                           : fmt::format("{:.4f}", x).size()));
  std::string out = "tensor(";
  if (t.dim() == 0) {
    out += integral ? fmt::format("{}", static_cast<long long>(v[0])) : fmt::format("{:.4f}", v[0]);
  } else {
    format_values(out, v, t.shape(), 0, 0, width, integral, 7);
  }
  out += fmt::format(", shape={}, dtype={}", shape_str(t.shape()), dtype_name(t.dtype()));
  if (t.grad_fn()) {
    out += fmt::format(", grad_fn=<{}>", t.grad_fn()->name());
  } else if (t.requires_grad()) {
    out += ", requires_grad=true";
  }
  if (!t.name().empty()) out += fmt::format(", name=\"{}\"", t.name());
  return out + ")";
}
std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << to_string(t); }

void set_num_threads(int n) {
  XG_CHECK(n >= 1, "set_num_threads: need at least 1 thread, got {}", n);
  openblas_set_num_threads(n);
}
int get_num_threads() { return openblas_get_num_threads(); }

}  // namespace xg

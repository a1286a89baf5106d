// xgrad: the Tensor handle. This header is xtensor-free on purpose: it holds only std types, so code
// that includes it compiles in well under a second. Kernels live in .cpp files.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace xg {

/// Element type of a tensor. int64 holds indices and is never differentiable.
enum class DType : std::uint8_t { float32, float64, int64 };
inline constexpr DType float32 = DType::float32;
inline constexpr DType float64 = DType::float64;
inline constexpr DType int64 = DType::int64;

/// "float32", "float64" or "int64".
std::string_view dtype_name(DType dtype);
/// Size of one element in bytes.
std::size_t dtype_size(DType dtype);
inline bool is_floating(DType dtype) { return dtype != DType::int64; }

using Shape = std::vector<std::int64_t>;
/// "[2, 3]": the form every error message uses.
std::string shape_str(const Shape& shape);

/// Every error xgrad raises: the message names the op, the shapes or dtypes involved and, where it can, the fix.
/// Control characters and bytes that are not UTF-8 in the message are written as \\xNN: a name or value read
/// from a file or a flag can never move a terminal's cursor or run one of its escape sequences.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message);
  explicit Error(const char* message) : Error(std::string(message)) {}
};

/// `text` with control characters (C0, DEL, C1) and bytes that are not part of valid UTF-8 written as
/// \\xNN (\\n and \\t as such): safe to print on a terminal, and on one line.
std::string escape_control_chars(std::string_view text);

namespace autograd {
class Node;
struct LeafHooks;
}
class Tensor;
struct TensorImpl;

/// Owns one aligned buffer; every view of it shares the storage and so its version counter.
struct Storage {
  explicit Storage(std::size_t nbytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data = nullptr;
  std::size_t nbytes = 0;
  std::atomic<std::uint32_t> version{0};  // bumped by every in-place write; saved tensors compare against it
  // Under autocast, a float32 weight's bf16 copy that an optimizer writes in its update's pass, so that the
  // next forward need not round the weight again (kernel::Bf16Operand::of_weight); current while
  // bf16_version == version. bf16_wanted: a forward under autocast rounded this storage since the last update.
  std::shared_ptr<Storage> bf16;
  std::uint32_t bf16_version = 0;
  std::atomic<bool> bf16_wanted{false};
};

/// The state a Tensor handle points to. Users rarely touch it directly.
struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;  // in elements
  std::int64_t offset = 0;  // in elements
  DType dtype = DType::float32;
  bool requires_grad = false;  // only meaningful for leaves
  bool retains_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<autograd::Node> grad_fn;
  std::weak_ptr<autograd::Node> grad_accumulator;  // leaves: the node that accumulates into .grad (cached weakly)
  std::shared_ptr<autograd::LeafHooks> hooks;       // leaves: post-accumulate-grad hooks (autograd.hpp)
  std::string name;
};

/// A cheap handle to shared tensor state: copying a Tensor aliases it, as with torch::Tensor.
class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  DType dtype() const;
  const Shape& shape() const;
  const Shape& strides() const;
  std::int64_t offset() const;
  /// Number of dimensions.
  std::int64_t dim() const { return static_cast<std::int64_t>(shape().size()); }
  /// Size of dimension d (negative d counts from the end).
  std::int64_t size(std::int64_t d) const;
  std::int64_t numel() const;
  bool is_contiguous() const;

  /// Pointer to the first element; T must match dtype() (checked).
  template <class T> T* data_ptr() const;
  /// The value of a one-element tensor.
  double item() const;
  template <class T> T item() const;
  /// The elements in row-major order, converted to T.
  template <class T> std::vector<T> to_vector() const;

  /// A copy in another dtype (differentiable between float32 and float64).
  Tensor to(DType dtype) const;
  /// This tensor if already contiguous, else a contiguous copy (differentiable).
  Tensor contiguous() const;
  /// A contiguous copy (differentiable).
  Tensor clone() const;
  /// A new leaf sharing this tensor's storage, cut from the graph.
  Tensor detach() const;
  /// Makes this tensor hold `other`'s data (storage, shape, dtype) in place, like `t.data = other` in
  /// PyTorch: every handle to this tensor sees the change. Used to convert a module's parameters.
  void set_data(const Tensor& other) const;

  // ---- autograd ----
  bool requires_grad() const;
  /// Marks a leaf as needing gradients. Returns *this for chaining.
  Tensor& requires_grad_(bool value = true);
  /// The accumulated gradient (undefined until a backward reaches this tensor).
  Tensor grad() const;
  void set_grad(const Tensor& grad) const;
  bool is_leaf() const;
  /// Keeps the gradient of a non-leaf tensor in .grad() after backward.
  void retain_grad() const;
  bool retains_grad() const;
  const std::shared_ptr<autograd::Node>& grad_fn() const;
  /// Backpropagates from this tensor. `gradient` may be omitted only for one-element tensors.
  void backward(const Tensor& gradient = {}, bool retain_graph = false, bool create_graph = false) const;
  /// Counts in-place modifications of the storage.
  std::uint32_t version() const;
  const std::string& name() const;
  /// Names the tensor; the name appears in error messages and printing.
  Tensor& set_name(std::string name);

  // ---- shape (views where possible) ----
  Tensor reshape(const Shape& shape) const;
  Tensor view(const Shape& shape) const;
  Tensor flatten(std::int64_t start_dim = 0, std::int64_t end_dim = -1) const;
  Tensor transpose(std::int64_t dim0, std::int64_t dim1) const;
  /// Transpose of a 2-D tensor.
  Tensor t() const;
  Tensor permute(const Shape& dims) const;
  Tensor squeeze() const;
  Tensor squeeze(std::int64_t dim) const;
  Tensor unsqueeze(std::int64_t dim) const;
  Tensor expand(const Shape& shape) const;
  Tensor narrow(std::int64_t dim, std::int64_t start, std::int64_t length) const;
  Tensor slice(std::int64_t dim, std::int64_t start, std::int64_t end, std::int64_t step = 1) const;
  Tensor select(std::int64_t dim, std::int64_t index) const;

  // ---- reductions ----
  Tensor sum() const;
  Tensor sum(const Shape& dims, bool keepdim = false) const;
  Tensor mean() const;
  Tensor mean(const Shape& dims, bool keepdim = false) const;

  // ---- in-place (bump the version; refused on tensors the graph needs) ----
  Tensor& add_(const Tensor& other, double alpha = 1.0);
  Tensor& sub_(const Tensor& other);
  Tensor& mul_(const Tensor& other);
  Tensor& div_(const Tensor& other);
  Tensor& add_(double value);
  Tensor& mul_(double value);
  Tensor& fill_(double value);
  Tensor& zero_();
  Tensor& copy_(const Tensor& src);

  const std::shared_ptr<TensorImpl>& impl() const { return impl_; }
  /// True when both handles point to the same tensor.
  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }

 private:
  const TensorImpl& checked() const;
  std::shared_ptr<TensorImpl> impl_;
};

// ---- creation ----
/// Options for creating tensors: dtype and requires_grad.
struct TensorOptions {
  DType dtype = DType::float32;
  bool requires_grad = false;
};

Tensor empty(const Shape& shape, TensorOptions options = {});
Tensor zeros(const Shape& shape, TensorOptions options = {});
Tensor ones(const Shape& shape, TensorOptions options = {});
Tensor full(const Shape& shape, double value, TensorOptions options = {});
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor full_like(const Tensor& t, double value);
/// A 0-d tensor holding one value.
Tensor scalar_tensor(double value, DType dtype = DType::float32);
/// start, start+step, ... below end (like torch.arange).
Tensor arange(double start, double end, double step = 1.0, TensorOptions options = {});
Tensor arange(double end, TensorOptions options = {});
/// n x n identity.
Tensor eye(std::int64_t n, TensorOptions options = {});
/// n x m: ones on the main diagonal.
Tensor eye(std::int64_t n, std::int64_t m, TensorOptions options = {});
/// `steps` values evenly spaced from start to end, both included (like torch.linspace).
Tensor linspace(double start, double end, std::int64_t steps, TensorOptions options = {});
/// Copies values into a new tensor of the given shape (1-D with the values' length if shape is empty).
Tensor tensor(const std::vector<double>& values, const Shape& shape = {}, TensorOptions options = {});
Tensor tensor(const std::vector<float>& values, const Shape& shape = {}, TensorOptions options = {});
/// Integers make an int64 tensor unless options say otherwise, as torch.tensor infers from the values.
Tensor tensor(const std::vector<std::int64_t>& values, const Shape& shape = {},
              TensorOptions options = {.dtype = DType::int64});
Tensor tensor(std::initializer_list<double> values, const Shape& shape = {}, TensorOptions options = {});
/// Index tensors (int64) from a list of integers.
Tensor index_tensor(const std::vector<std::int64_t>& values, const Shape& shape = {});

/// A seedable random generator: the same seed gives the same numbers on every machine.
class Generator {
 public:
  explicit Generator(std::uint64_t seed = 0x5eed) { manual_seed(seed); }
  void manual_seed(std::uint64_t seed);
  std::uint64_t next_u64();
  /// Uniform in [0, 1).
  double uniform();
  /// Standard normal.
  double normal();
  /// The full state, for checkpoints.
  std::vector<std::uint64_t> state() const;
  void set_state(const std::vector<std::uint64_t>& state);

 private:
  std::uint64_t s_[4] = {};
  double spare_ = 0.0;
  bool has_spare_ = false;
};

/// The process-wide default generator used when none is passed.
Generator& default_generator();
/// Seeds the default generator.
void manual_seed(std::uint64_t seed);

Tensor rand(const Shape& shape, TensorOptions options = {}, Generator* gen = nullptr);
Tensor randn(const Shape& shape, TensorOptions options = {}, Generator* gen = nullptr);
/// Uniform integers in [low, high), int64.
Tensor randint(std::int64_t low, std::int64_t high, const Shape& shape, Generator* gen = nullptr);
/// A random permutation of 0 .. n-1 (int64), uniform over all n! orders (Fisher-Yates).
Tensor randperm(std::int64_t n, Generator* gen = nullptr);

/// PyTorch-like text: values, shape, dtype and grad_fn.
std::string to_string(const Tensor& t);
std::ostream& operator<<(std::ostream& os, const Tensor& t);

/// Tensor memory is recycled through a cache (freed buffers are reused for tensors of the same size).
/// Returns every cached buffer to the system.
void empty_cache();
/// Bytes held in the cache, not in use by any tensor.
std::size_t cached_bytes();
/// Largest number of bytes the cache keeps (default 4 GiB); buffers freed beyond it go back to the system.
void set_cache_limit(std::size_t bytes);

/// bf16 mixed precision on this thread for its scope (like torch.autocast("cpu", dtype=torch.bfloat16)):
/// float32 matrix products (matmul, nn::Linear, attention) multiply operands rounded to bfloat16 and
/// accumulate in float32 (oneDNN's bf16 GEMM: AVX512-BF16 or AMX where the CPU has them). An op recorded
/// under autocast also runs its backward products in bf16, wherever backward is called. Tensors, weights,
/// optimizer state, softmax, layer norm and cross-entropy stay float32.
///
///   { xg::autocast bf16; loss = model.loss(x, y); }   // forward in bf16
///   loss.backward();                                    // its products in bf16 too
class autocast {
 public:
  explicit autocast(bool enabled = true);
  ~autocast();
  autocast(const autocast&) = delete;
  autocast& operator=(const autocast&) = delete;

 private:
  bool prev_;
};
bool is_autocast_enabled();

/// Threads used by BLAS and xgrad's kernels.
void set_num_threads(int n);
int get_num_threads();

}  // namespace xg

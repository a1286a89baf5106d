// Creating tensors: empty, full, arange, eye, and tensors from values.
#include <algorithm>
#include <cmath>

#include "xgrad/kernel.hpp"


namespace xg {
using namespace kernel;

Tensor empty(const Shape& shape, TensorOptions o) {
  for (auto d : shape)
    XG_CHECK(d >= 0, "empty: negative dimension in shape {}", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  const std::int64_t bytes = checked_mul(numel_of(shape), static_cast<std::int64_t>(dtype_size(o.dtype)), "empty");
  impl->storage = std::make_shared<Storage>(static_cast<std::size_t>(bytes));
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
  dispatch_all(o.dtype, [&]<class T>() {
    T* p = ptr<T>(t);
    const T v = convert_value<T>(value, "full / fill_ of an int64 tensor");
    parallel_for_elements(t.numel(), [&](std::int64_t b, std::int64_t e) { std::fill(p + b, p + e, v); });
  });
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
  XG_CHECK(step != 0.0 && std::isfinite(step), "arange: step must be finite and nonzero, got {}", step);
  XG_CHECK(std::isfinite(start) && std::isfinite(end), "arange: bounds must be finite, got {} and {}", start, end);
  // As torch.arange: an end on the other side of start from where step goes is an error, not an empty tensor.
  XG_CHECK(start == end || (end > start) == (step > 0),
           "arange: the bounds [{}, {}) are inconsistent with the sign of step {}", start, end, step);
  const double len = std::ceil((end - start) / step);
  XG_CHECK(len < 0x1p62, "arange: [{}, {}) in steps of {} has {} elements, more than any memory holds", start, end,
           step, len);
  const auto n = len > 0 ? static_cast<std::int64_t>(len) : std::int64_t{0};
  bool rg = o.requires_grad;
  o.requires_grad = false;
  Tensor t = empty({n}, o);
  dispatch_all(o.dtype, [&]<class T>() {
    T* p = ptr<T>(t);
    for (std::int64_t i = 0; i < n; ++i) p[i] = convert_value<T>(start + static_cast<double>(i) * step, "arange");
  });
  if (rg) t.requires_grad_(true);
  return t;
}
Tensor arange(double end, TensorOptions o) { return arange(0.0, end, 1.0, o); }

Tensor linspace(double start, double end, std::int64_t steps, TensorOptions o) {
  XG_CHECK(steps >= 0, "linspace: steps must be >= 0, got {}", steps);
  XG_CHECK(std::isfinite(start) && std::isfinite(end), "linspace: bounds must be finite, got {} and {}", start, end);
  bool rg = o.requires_grad;
  o.requires_grad = false;
  Tensor t = empty({steps}, o);
  const double step = steps > 1 ? (end - start) / static_cast<double>(steps - 1) : 0.0;
  dispatch_all(o.dtype, [&]<class T>() {
    T* p = ptr<T>(t);
    // The second half counts back from the end, as torch.linspace does, so the last value is end exactly.
    for (std::int64_t i = 0; i < steps; ++i)
      p[i] = convert_value<T>(i < steps / 2 || steps == 1 ? start + step * static_cast<double>(i)
                                            : end - step * static_cast<double>(steps - 1 - i), "linspace");
  });
  if (rg) t.requires_grad_(true);
  return t;
}

Tensor eye(std::int64_t n, TensorOptions o) { return eye(n, n, o); }
Tensor eye(std::int64_t n, std::int64_t m, TensorOptions o) {
  XG_CHECK(n >= 0 && m >= 0, "eye: n and m must be non-negative, got {} and {}", n, m);
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
    for (std::size_t i = 0; i < count; ++i) p[i] = convert_value<T>(values[i], "tensor of int64");
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
}  // namespace xg

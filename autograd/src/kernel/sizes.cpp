// Sizes, shapes, dims and dtypes: the checked arithmetic every op goes through.
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "xgrad/kernel.hpp"

namespace xg {

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

namespace kernel {

std::int64_t checked_mul(std::int64_t a, std::int64_t b, std::string_view what) {
  std::int64_t r = 0;
  XG_CHECK(a >= 0 && b >= 0 && !__builtin_mul_overflow(a, b, &r), "{}: {} x {} is negative or overflows 64 bits", what,
           a, b);
  return r;
}

std::int64_t numel_of(const Shape& s) {
  std::int64_t n = 1;
  for (auto d : s) {
    XG_CHECK(d >= 0, "shape {} has a negative size", shape_str(s));
    XG_CHECK(!__builtin_mul_overflow(n, d, &n), "shape {} has more elements than fit in 64 bits", shape_str(s));
  }
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  std::int64_t acc = 1;
  for (std::size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    if (__builtin_mul_overflow(acc, s[i] > 0 ? s[i] : 1, &acc)) {
      // A tensor with no elements never steps through its strides: [0, 2^40, 2^40] exists (as in PyTorch),
      // with unit strides where the row-major ones would not fit.
      XG_CHECK(numel_of(s) == 0, "strides: shape {} has more elements than fit in 64 bits", shape_str(s));
      return Shape(s.size(), 1);
    }
  }
  return st;
}

std::pair<std::int64_t, std::int64_t> rows_of(const Tensor& x) {
  std::int64_t n = x.dim() == 0 ? 1 : x.shape().back();
  return {n == 0 ? 0 : x.numel() / n, n};
}


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


std::int64_t checked_int64(double v, std::string_view what) {
  // [-2^63, 2^63): every double in it converts exactly (after truncation); 2^63 itself does not fit.
  XG_CHECK(std::isfinite(v) && v >= -0x1p63 && v < 0x1p63, "{}: {} cannot be an int64 value", what, v);
  return static_cast<std::int64_t>(v);
}

void check_same_dtype(const Tensor& a, const Tensor& b, std::string_view op) {
  if (a.dtype() == b.dtype()) return;
  // Suggest the dtype that loses nothing: floating over int64, float64 over float32.
  const DType to = !is_floating(a.dtype()) ? b.dtype() : !is_floating(b.dtype()) ? a.dtype()
                 : (a.dtype() == DType::float64 ? a.dtype() : b.dtype());
  const Tensor& from = a.dtype() == to ? b : a;
  fail("{}: dtype mismatch: {} {} vs {} {}; convert the {} one with .to(xg::{})", op, dtype_name(a.dtype()),
       shape_str(a.shape()), dtype_name(b.dtype()), shape_str(b.shape()), dtype_name(from.dtype()), dtype_name(to));
}

}  // namespace kernel

}  // namespace xg

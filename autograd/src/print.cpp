// Printing, like PyTorch: aligned columns, 4 decimals, long dims summarised with "...".
#include <fmt/ranges.h>

#include <algorithm>
#include <ostream>

#include "xgrad/kernel.hpp"


namespace xg {
using namespace kernel;

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
}  // namespace xg

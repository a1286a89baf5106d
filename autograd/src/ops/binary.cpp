// Binary elementwise ops with NumPy broadcasting, comparisons, where, and the in-place forms. Each op:
// checks, forward kernel, then its backward rule in Tensor ops with the derivative in a one-line comment.
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "elementwise_kernels.hpp"

namespace xg {
using namespace kernel;
using autograd::record;
using autograd::Saved;
using Grads = std::vector<Tensor>;

namespace {
/// x / y; integer division by zero and INT64_MIN / -1 (undefined in C++, a crash on x86) are errors.
constexpr auto divide = [](auto x, auto y) {
  if constexpr (std::is_integral_v<decltype(x)>) {
    if (y == 0) fail("div: integer division by zero");
    if (y == -1 && x == std::numeric_limits<decltype(x)>::min()) fail("div: {} / -1 overflows int64", x);
  }
  return x / y;
};
}  // namespace

Tensor kernel::contiguous_data(const Tensor& x) { return x.is_contiguous() ? x : x.detach().clone(); }

// ---- binary arithmetic ---------------------------------------------------------------------------------

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(a, b, "add", false, [](auto x, auto y) { return x + y; });
  bool ga = a.requires_grad(), gb = b.requires_grad();
  return record("add", {a, b}, out, [sa = a.shape(), sb = b.shape(), ga, gb](const Tensor& g) {
    return Grads{ga ? sum_to(g, sa) : Tensor(), gb ? sum_to(g, sb) : Tensor()};  // d/da = 1, d/db = 1
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(a, b, "sub", false, [](auto x, auto y) { return x - y; });
  bool ga = a.requires_grad(), gb = b.requires_grad();
  return record("sub", {a, b}, out, [sa = a.shape(), sb = b.shape(), ga, gb](const Tensor& g) {
    return Grads{ga ? sum_to(g, sa) : Tensor(), gb ? sum_to(neg(g), sb) : Tensor()};  // d/da = 1, d/db = -1
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(a, b, "mul", false, [](auto x, auto y) { return x * y; });
  bool ga = a.requires_grad(), gb = b.requires_grad();
  return record("mul", {a, b}, out, [sa = Saved(a), sb = Saved(b), ga, gb](const Tensor& g) {
    const Tensor &x = sa.get(), &y = sb.get();
    return Grads{ga ? sum_to(g * y, x.shape()) : Tensor(),  // d/da = b
                 gb ? sum_to(g * x, y.shape()) : Tensor()};  // d/db = a
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(a, b, "div", false, divide);
  bool ga = a.requires_grad(), gb = b.requires_grad();
  return record("div", {a, b}, out, [sa = Saved(a), sb = Saved(b), ga, gb](const Tensor& g) {
    const Tensor &x = sa.get(), &y = sb.get();
    return Grads{ga ? sum_to(g / y, x.shape()) : Tensor(),                   // d/da = 1/b
                 gb ? sum_to(neg(g) * x / (y * y), y.shape()) : Tensor()};  // d/db = -a/b^2
  });
}

Tensor pow(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(a, b, "pow", true, [](auto x, auto y) { return std::pow(x, y); });
  bool ga = a.requires_grad(), gb = b.requires_grad();
  return record("pow", {a, b}, out, [sa = Saved(a), sb = Saved(b), so = Saved::output(out), ga, gb](const Tensor& g) {
    const Tensor &x = sa.get(), &y = sb.get();
    Tensor gx, gy;
    if (ga) gx = sum_to(g * y * pow(x, y - 1.0), x.shape());  // d/da = b a^(b-1)
    if (gb) {
      Tensor o = output_or(so, [&] { return pow(x, y); });
      gy = sum_to(g * o * log(x), y.shape());  // d/db = a^b log a
    }
    return Grads{gx, gy};
  });
}

Tensor pow(const Tensor& a, double p) {
  Tensor out = dispatch_float(a.dtype(), "pow", [&]<class T>() {
    return unary_kernel<T>(a, [p](const auto& x) { return xt::pow(x, static_cast<T>(p)); });
  });
  return record("pow", {a}, out, [sa = Saved(a), p](const Tensor& g) {
    if (p == 0.0) return Grads{zeros_like(g)};  // not 0 * a^-1, which is NaN at a = 0
    return Grads{g * p * pow(sa.get(), p - 1.0)};  // d/da = p a^(p-1)
  });
}

Tensor pow(double base, const Tensor& e) { return pow(full(e.shape(), base, {e.dtype()}), e); }

Tensor maximum(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(a, b, "maximum", false, [](auto x, auto y) { return x > y ? x : y; });
  return record("maximum", {a, b}, out, [sa = Saved(a), sb = Saved(b)](const Tensor& g) {
    const Tensor &x = sa.get(), &y = sb.get();
    Tensor wa = gt(x, y) + eq(x, y) * 0.5;  // d/da = [a > b] (half each on ties)
    return Grads{sum_to(g * wa, x.shape()), sum_to(g * (1.0 - wa), y.shape())};
  });
}

Tensor minimum(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(a, b, "minimum", false, [](auto x, auto y) { return x < y ? x : y; });
  return record("minimum", {a, b}, out, [sa = Saved(a), sb = Saved(b)](const Tensor& g) {
    const Tensor &x = sa.get(), &y = sb.get();
    Tensor wa = lt(x, y) + eq(x, y) * 0.5;  // d/da = [a < b] (half each on ties)
    return Grads{sum_to(g * wa, x.shape()), sum_to(g * (1.0 - wa), y.shape())};
  });
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_same_dtype(a, b, "where");
  Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor out = empty(shape, {a.dtype()});
  dispatch_all(a.dtype(), [&]<class T>() {
    dispatch_all(cond.dtype(), [&]<class C>() {
      Shape sc = broadcast_strides(cond, shape), sa = broadcast_strides(a, shape), sb = broadcast_strides(b, shape);
      Shape so = out.strides();
      const C* pc = static_cast<const C*>(cond.impl()->storage->data);
      const T* pa = static_cast<const T*>(a.impl()->storage->data);
      const T* pb = static_cast<const T*>(b.impl()->storage->data);
      T* po = ptr<T>(out);
      strided_loop<4>(shape, {&sc, &sa, &sb, &so}, {cond.offset(), a.offset(), b.offset(), 0},
                      [&](const auto& o, std::int64_t n, const auto& in) {
                        for (std::int64_t i = 0; i < n; ++i)
                          po[o[3] + i] = pc[o[0] + i * in[0]] != C(0) ? pa[o[1] + i * in[1]] : pb[o[2] + i * in[2]];
                      });
    });
  });
  bool ga = a.requires_grad(), gb = b.requires_grad();
  return record("where", {a, b}, out, [c = Saved(cond), sa = a.shape(), sb = b.shape(), ga, gb](const Tensor& g) {
    Tensor zero = scalar_like(g, 0.0);
    // d/da = [cond], d/db = [!cond]
    return Grads{ga ? sum_to(where(c.get(), g, zero), sa) : Tensor(), gb ? sum_to(where(c.get(), zero, g), sb) : Tensor()};
  });
}
Tensor where(const Tensor& cond, const Tensor& a, double b) { return where(cond, a, scalar_like(a, b)); }
Tensor where(const Tensor& cond, double a, const Tensor& b) { return where(cond, scalar_like(b, a), b); }

// ---- comparisons (no gradient) -------------------------------------------------------------------------

#define XG_COMPARISON(name, expr)                                                                        \
  Tensor name(const Tensor& a, const Tensor& b) {                                                        \
    return binary_forward(a, b, #name, false, [](auto x, auto y) { return decltype(x)((expr) ? 1 : 0); }); \
  }                                                                                                      \
  Tensor name(const Tensor& a, double b) { return name(a, scalar_like(a, b)); }
XG_COMPARISON(eq, x == y)
XG_COMPARISON(ne, x != y)
XG_COMPARISON(lt, x < y)
XG_COMPARISON(le, x <= y)
XG_COMPARISON(gt, x > y)
XG_COMPARISON(ge, x >= y)
#undef XG_COMPARISON

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  XG_CHECK(broadcast_shapes(x.shape(), mask.shape(), "masked_fill") == x.shape(),
           "masked_fill: mask of shape {} must broadcast to the tensor's shape {}", shape_str(mask.shape()),
           shape_str(x.shape()));
  return where(mask, value, x);
}

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  if (a.shape() != b.shape()) return false;
  auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  for (std::size_t i = 0; i < va.size(); ++i) {
    if (std::isnan(va[i]) || std::isnan(vb[i])) return false;
    if (std::abs(va[i] - vb[i]) > atol + rtol * std::abs(vb[i])) return false;
  }
  return true;
}

// ---- operators ------------------------------------------------------------------------------------------

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& a) { return neg(a); }
Tensor operator+(const Tensor& a, double b) { return add(a, scalar_like(a, b)); }
Tensor operator-(const Tensor& a, double b) { return sub(a, scalar_like(a, b)); }
Tensor operator*(const Tensor& a, double b) { return mul(a, scalar_like(a, b)); }
Tensor operator/(const Tensor& a, double b) { return div(a, scalar_like(a, b)); }
Tensor operator+(double a, const Tensor& b) { return add(scalar_like(b, a), b); }
Tensor operator-(double a, const Tensor& b) { return sub(scalar_like(b, a), b); }
Tensor operator*(double a, const Tensor& b) { return mul(scalar_like(b, a), b); }
Tensor operator/(double a, const Tensor& b) { return div(scalar_like(b, a), b); }

// ---- in-place -------------------------------------------------------------------------------------------

namespace {
/// Refuses in-place writes that would silently break the graph, or write one element through two indices.
void check_inplace(const Tensor& self, std::string_view op, const Tensor* other = nullptr) {
  if (autograd::is_grad_enabled()) {
    XG_CHECK(!(self.requires_grad() && self.is_leaf()),
             "{}: a leaf tensor that requires grad (shape {}) cannot be modified in place while recording. Hint: do "
             "the update under xg::autograd::NoGradGuard",
             op, shape_str(self.shape()));
    XG_CHECK(!self.requires_grad(),
             "{}: tensor of shape {} is part of a graph ({}); in-place changes would invalidate its gradient. Use "
             "the out-of-place op",
             op, shape_str(self.shape()), self.grad_fn()->name());
    XG_CHECK(!(other && other->requires_grad()),
             "{}: the operand (shape {}) requires grad, but in-place ops are not recorded. Use the out-of-place op",
             op, shape_str(other->shape()));
  }
  for (std::size_t i = 0; i < self.shape().size(); ++i)
    XG_CHECK(!(self.strides()[i] == 0 && self.shape()[i] > 1),
             "{}: tensor of shape {} is an expanded view (several elements share memory); clone() it first", op,
             shape_str(self.shape()));
  if (other)
    XG_CHECK(broadcast_shapes(self.shape(), other->shape(), op) == self.shape(),
             "{}: operand of shape {} does not broadcast to the tensor's shape {}", op, shape_str(other->shape()),
             shape_str(self.shape()));
}

/// Whether writing `self` while reading `other` (broadcast to self's shape) element by element would read
/// some element after writing it at another index: the two are views of one buffer in different layouts
/// (x.add_(x.t()), a.slice(0, 1, 5).copy_(a.slice(0, 0, 4))). The same layout (x.add_(x)) is safe.
bool partially_overlaps(const Tensor& self, const Tensor& other) {
  if (self.impl()->storage != other.impl()->storage || self.numel() == 0) return false;
  const Shape& shape = self.shape();
  const Shape ss = self.strides(), so = broadcast_strides(other, shape);
  const std::size_t nd = shape.size();
  bool same = self.offset() == other.offset();
  for (std::size_t i = 0; i < nd; ++i) same = same && (shape[i] == 1 || ss[i] == so[i]);
  if (same) return false;
  auto span = [&](std::int64_t offset, const Shape& st) {
    std::int64_t lo = offset, hi = offset;
    for (std::size_t i = 0; i < nd; ++i) (st[i] < 0 ? lo : hi) += (shape[i] - 1) * st[i];
    return std::pair{lo, hi};
  };
  // Plain variables, not structured bindings: the lambdas below capture them (clang 14 refuses bindings).
  const std::pair<std::int64_t, std::int64_t> self_span = span(self.offset(), ss), other_span = span(other.offset(), so);
  const std::int64_t lo_s = self_span.first, hi_s = self_span.second, lo_o = other_span.first, hi_o = other_span.second;
  if (hi_s < lo_o || hi_o < lo_s) return false;
  // Views of one buffer whose spans meet: element by element (rare, linear in the size, and one bit per
  // element of the written span, which lies inside the buffer).
  std::vector<bool> written(static_cast<std::size_t>(hi_s - lo_s + 1));
  std::vector<std::int64_t> index(nd, 0);
  auto each = [&](auto&& visit) {
    std::fill(index.begin(), index.end(), 0);
    std::int64_t a = self.offset(), b = other.offset();
    for (std::int64_t n = 0; n < self.numel(); ++n) {
      if (visit(a, b)) return true;
      for (std::size_t d = nd; d-- > 0;) {
        a += ss[d];
        b += so[d];
        if (++index[d] < shape[d]) break;
        a -= ss[d] * shape[d];
        b -= so[d] * shape[d];
        index[d] = 0;
      }
    }
    return false;
  };
  each([&](std::int64_t a, std::int64_t) {
    written[static_cast<std::size_t>(a - lo_s)] = true;
    return false;
  });
  return each([&](std::int64_t a, std::int64_t b) {
    return b != a && b >= lo_s && b <= hi_s && written[static_cast<std::size_t>(b - lo_s)];
  });
}

template <class F>
Tensor& inplace_binary(Tensor& self, const Tensor& other_in, std::string_view op, F f) {
  check_inplace(self, op, &other_in);
  Tensor other = other_in.dtype() == self.dtype() ? other_in : other_in.detach().to(self.dtype());
  if (partially_overlaps(self, other)) {
    // As PyTorch does: copy_ reads its source through a temporary; other ops refuse.
    XG_CHECK(op == "copy_",
             "{}: the operand (shape {}) shares memory with the tensor written to (shape {}) in another layout, so "
             "some elements would be read after being overwritten. Pass a copy: .clone() the operand",
             op, shape_str(other_in.shape()), shape_str(self.shape()));
    other = other.detach().clone();
  }
  dispatch_all(self.dtype(), [&]<class T>() { inplace_kernel<T>(self, other, f); });
  ++self.impl()->storage->version;  // the kernel writes through strides, not through write_ptr
  return self;
}
}  // namespace

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  if (alpha == 1.0) return inplace_binary(*this, other, "add_", [](auto x, auto y) { return x + y; });
  return inplace_binary(*this, other, "add_", [alpha](auto x, auto y) { return x + static_cast<decltype(x)>(alpha) * y; });
}
Tensor& Tensor::sub_(const Tensor& other) { return inplace_binary(*this, other, "sub_", [](auto x, auto y) { return x - y; }); }
Tensor& Tensor::mul_(const Tensor& other) { return inplace_binary(*this, other, "mul_", [](auto x, auto y) { return x * y; }); }
Tensor& Tensor::div_(const Tensor& other) { return inplace_binary(*this, other, "div_", divide); }
Tensor& Tensor::add_(double v) { return add_(scalar_tensor(v, dtype())); }
Tensor& Tensor::mul_(double v) { return mul_(scalar_tensor(v, dtype())); }
Tensor& Tensor::fill_(double v) {
  return inplace_binary(*this, scalar_tensor(v, dtype()), "fill_", [](auto, auto y) { return y; });
}
Tensor& Tensor::zero_() {
  return inplace_binary(*this, scalar_tensor(0.0, dtype()), "zero_", [](auto, auto y) { return y; });
}
Tensor& Tensor::copy_(const Tensor& src) { return inplace_binary(*this, src, "copy_", [](auto, auto y) { return y; }); }

}  // namespace xg

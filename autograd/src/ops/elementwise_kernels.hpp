// Elementwise kernels shared by autograd's op files: broadcasting binary loops over strides, and unary
// loops as one xsimd-vectorised xtensor expression over contiguous data. Private to autograd.
#pragma once

// GCC 12 reports a false -Wuninitialized inside its own AVX-512 intrinsics (_mm512_undefined_*) when
// xsimd's double exp is inlined; the warning is attributed to the header's lines, so it is silenced for
// the lines of these includes only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <xtensor/xadapt.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xnoalias.hpp>
#pragma GCC diagnostic pop

#include <cmath>

#include "../internal.hpp"

namespace xg::kernel {

/// strided_loop over `shape`, split across the thread pool along its outermost dim of size > 1 when the
/// work is large enough (each chunk walks its own slab of that dim).
template <std::size_t K, class F>
void parallel_strided_loop(const Shape& shape, const std::array<const Shape*, K>& strides,
                           const std::array<std::int64_t, K>& base, F&& f) {
  std::size_t d = 0;
  while (d < shape.size() && shape[d] == 1) ++d;
  std::int64_t numel = 1;
  for (auto v : shape) numel *= v;  // shapes of existing tensors: their product is checked at creation
  if (d == shape.size() || numel <= kElementwiseGrain) return strided_loop<K>(shape, strides, base, f);
  const std::int64_t inner = numel / shape[d];
  parallel_for(shape[d], std::max<std::int64_t>(1, kElementwiseGrain / std::max<std::int64_t>(inner, 1)),
               [&](std::int64_t b, std::int64_t e) {
                 Shape sub = shape;
                 sub[d] = e - b;
                 std::array<std::int64_t, K> off = base;
                 for (std::size_t k = 0; k < K; ++k) off[k] += b * (*strides[k])[d];
                 strided_loop<K>(sub, strides, off, f);
               });
}

/// out = f(a, b) with NumPy broadcasting; out has dtype `out_dtype` (a's unless a comparison says otherwise).
template <class T, class F>
inline Tensor binary_kernel(const Tensor& a, const Tensor& b, const Shape& shape, F f) {
  Tensor out = empty(shape, {a.dtype()});
  // Fast paths without stride bookkeeping: same-shape contiguous operands, or one of them a single value.
  if (a.is_contiguous() && b.is_contiguous() && (a.shape() == shape || a.numel() == 1) &&
      (b.shape() == shape || b.numel() == 1)) {
    const T* x = ptr<T>(a);
    const T* y = ptr<T>(b);
    T* z = ptr<T>(out);
    const std::int64_t n = out.numel();
    const bool full_a = a.numel() == n, full_b = b.numel() == n;
    parallel_for_elements(n, [&](std::int64_t begin, std::int64_t end) {
      if (full_a && full_b) {
        for (std::int64_t i = begin; i < end; ++i) z[i] = f(x[i], y[i]);
      } else if (full_a) {
        const T yv = *y;
        for (std::int64_t i = begin; i < end; ++i) z[i] = f(x[i], yv);
      } else {
        const T xv = *x;
        for (std::int64_t i = begin; i < end; ++i) z[i] = f(xv, y[i]);
      }
    });
    return out;
  }
  Shape sa = broadcast_strides(a, shape), sb = broadcast_strides(b, shape), so = out.strides();
  const T* pa = static_cast<const T*>(a.impl()->storage->data);
  const T* pb = static_cast<const T*>(b.impl()->storage->data);
  T* po = ptr<T>(out);
  parallel_strided_loop<3>(shape, {&sa, &sb, &so}, {a.offset(), b.offset(), 0},
                  [&](const std::array<std::int64_t, 3>& o, std::int64_t n, const std::array<std::int64_t, 3>& in) {
                    const T* x = pa + o[0];
                    const T* y = pb + o[1];
                    T* z = po + o[2];
                    // Separate loops for the common stride patterns so each one vectorises.
                    if (in[0] == 1 && in[1] == 1) {
                      for (std::int64_t i = 0; i < n; ++i) z[i] = f(x[i], y[i]);
                    } else if (in[0] == 1 && in[1] == 0) {
                      const T yv = *y;
                      for (std::int64_t i = 0; i < n; ++i) z[i] = f(x[i], yv);
                    } else if (in[0] == 0 && in[1] == 1) {
                      const T xv = *x;
                      for (std::int64_t i = 0; i < n; ++i) z[i] = f(xv, y[i]);
                    } else {
                      for (std::int64_t i = 0; i < n; ++i) z[i] = f(x[i * in[0]], y[i * in[1]]);
                    }
                  });
  return out;
}

/// self[i] = f(self[i], other[i]) with `other` broadcast to self's shape, through self's strides.
template <class T, class F>
void inplace_kernel(const Tensor& self, const Tensor& other, F f) {
  Shape so = self.strides(), sb = broadcast_strides(other, self.shape());
  T* ps = static_cast<T*>(self.impl()->storage->data);
  const T* pb = static_cast<const T*>(other.impl()->storage->data);
  parallel_strided_loop<2>(self.shape(), {&so, &sb}, {self.offset(), other.offset()},
                  [&](const std::array<std::int64_t, 2>& o, std::int64_t n, const std::array<std::int64_t, 2>& in) {
                    T* x = ps + o[0];
                    const T* y = pb + o[1];
                    if (in[0] == 1 && in[1] == 1) {
                      for (std::int64_t i = 0; i < n; ++i) x[i] = f(x[i], y[i]);
                    } else if (in[0] == 1 && in[1] == 0) {
                      const T yv = *y;
                      for (std::int64_t i = 0; i < n; ++i) x[i] = f(x[i], yv);
                    } else {
                      for (std::int64_t i = 0; i < n; ++i) x[i * in[0]] = f(x[i * in[0]], y[i * in[1]]);
                    }
                  });
}

/// An xtensor view of n values at p (n >= 0).
template <class T>
auto flat_view(const T* p, std::int64_t n) {
  const auto len = static_cast<std::size_t>(n);
  return xt::adapt(const_cast<T*>(p), len, xt::no_ownership(), std::array<std::size_t, 1>{len});
}
/// xtensor views of [begin, end) of flat contiguous data.
template <class T>
auto flat_view(const Tensor& t, std::int64_t begin, std::int64_t end) {
  return flat_view(ptr<T>(t) + begin, end - begin);
}

/// out = expr(x) elementwise, as one xtensor expression over the flat contiguous data (xsimd-vectorised),
/// in chunks across the thread pool.
template <class T, class E>
Tensor unary_kernel(const Tensor& x, E expr) {
  Tensor xc = contiguous_data(x);
  Tensor out = empty(x.shape(), {x.dtype()});
  parallel_for_elements(x.numel(), [&](std::int64_t b, std::int64_t e) {
    auto a = flat_view<T>(xc, b, e);
    auto o = flat_view<T>(out, b, e);
    xt::noalias(o) = expr(a);
  });
  return out;
}

/// Same for two same-shape inputs (used by fused backward kernels).
template <class T, class E>
Tensor unary2_kernel(const Tensor& x, const Tensor& y, E expr) {
  Tensor xc = contiguous_data(x), yc = contiguous_data(y);
  Tensor out = empty(x.shape(), {x.dtype()});
  parallel_for_elements(x.numel(), [&](std::int64_t b, std::int64_t e) {
    auto a = flat_view<T>(xc, b, e);
    auto c = flat_view<T>(yc, b, e);
    auto o = flat_view<T>(out, b, e);
    xt::noalias(o) = expr(a, c);
  });
  return out;
}

/// A 0-d tensor of t's dtype holding v; for int64 tensors v must be a whole number (no silent truncation).
inline Tensor scalar_like(const Tensor& t, double v) {
  XG_CHECK(is_floating(t.dtype()) || (v == std::trunc(v) && std::abs(v) <= 0x1p63),
           "an int64 tensor {} cannot be combined with the scalar {}: it is not a whole number; convert the tensor "
           "with .to(xg::float64)", shape_str(t.shape()), v);
  return scalar_tensor(v, t.dtype());
}

/// Forward of a binary op: dtype check, broadcast shape, kernel dispatch.
template <class Op>
Tensor binary_forward(const Tensor& a, const Tensor& b, std::string_view name, bool float_only, Op op) {
  check_same_dtype(a, b, name);
  Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  if (float_only) return dispatch_float(a.dtype(), name, [&]<class T>() { return binary_kernel<T>(a, b, shape, op); });
  return dispatch_all(a.dtype(), [&]<class T>() { return binary_kernel<T>(a, b, shape, op); });
}

/// The saved output when only first-order gradients are wanted, else the output recomputed from its input
/// so that the rule stays differentiable (an op must not hold its own output with a grad_fn).
template <class F>
Tensor output_or(const autograd::Saved& out, F recompute) {
  return autograd::is_grad_enabled() ? recompute() : out.get();
}

}  // namespace xg::kernel

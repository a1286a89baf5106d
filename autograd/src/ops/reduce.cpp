// Reductions: sum, mean, var, logsumexp, max/min with indices, argmax/argmin, and sum_to.
// Kernels are loops over the contiguous input (xtensor's lazy reducers are 5-50x slower, see XTENSOR.md).
#include <algorithm>
#include <cmath>
#include <limits>

#include "../internal.hpp"

namespace xg {
using namespace kernel;
using autograd::record;
using Grads = std::vector<Tensor>;

namespace {

/// Which dims are reduced: `dims` wrapped and deduplicated; an empty list means all of them.
std::vector<bool> reduce_mask(const Tensor& x, const Shape& dims, std::string_view op) {
  std::vector<bool> mask(x.shape().size(), dims.empty());
  for (auto d : dims) {
    auto w = wrap_dim(d, x.dim(), op, x.shape());
    if (x.dim() == 0) continue;
    XG_CHECK(!mask[w], "{}: dim {} appears more than once in the dims list", op, w);
    mask[w] = true;
  }
  return mask;
}

Shape keepdim_shape(const Shape& s, const std::vector<bool>& mask) {
  Shape out = s;
  for (std::size_t i = 0; i < s.size(); ++i)
    if (mask[i]) out[i] = 1;
  return out;
}
Shape squeezed_shape(const Shape& s, const std::vector<bool>& mask) {
  Shape out;
  for (std::size_t i = 0; i < s.size(); ++i)
    if (!mask[i]) out.push_back(s[i]);
  return out;
}

/// Sum over the masked dims; result has the keepdim shape. One pass: each input element is added to
/// the output element it reduces into (the output is read with stride 0 along reduced dims).
template <class T>
Tensor sum_kernel(const Tensor& x, const std::vector<bool>& mask) {
  Shape kshape = keepdim_shape(x.shape(), mask);
  Tensor out = zeros(kshape, {x.dtype()});
  Tensor xc = contiguous_data(x);
  Shape sx = xc.strides();
  Shape so = broadcast_strides(out, x.shape());
  const T* px = ptr<T>(xc);
  T* po = ptr<T>(out);
  strided_loop<2>(x.shape(), {&sx, &so}, {0, 0}, [&](const auto& o, std::int64_t n, const auto& in) {
    const T* a = px + o[0];
    T* b = po + o[1];
    if (in[1] == 0) {  // reducing along the inner run
      T s = 0;
#pragma omp simd reduction(+ : s)
      for (std::int64_t i = 0; i < n; ++i) s += a[i * in[0]];
      *b += s;
    } else {
      for (std::int64_t i = 0; i < n; ++i) b[i * in[1]] += a[i * in[0]];
    }
  });
  return out;
}

/// Values and indices of the max (or min) along one dim; keepdim shapes.
template <class T>
std::pair<Tensor, Tensor> extremum_kernel(const Tensor& x, std::int64_t dim, bool is_max) {
  const Shape& s = x.shape();
  std::int64_t outer = 1, inner = 1, r = x.dim() == 0 ? 1 : s[dim];
  for (std::int64_t i = 0; i < dim; ++i) outer *= s[i];
  for (std::int64_t i = dim + 1; i < x.dim(); ++i) inner *= s[i];
  Shape ks = s;
  if (x.dim() > 0) ks[dim] = 1;
  Tensor vals = empty(ks, {x.dtype()});
  Tensor idx = empty(ks, {DType::int64});
  Tensor xc = contiguous_data(x);
  const T* px = ptr<T>(xc);
  T* pv = ptr<T>(vals);
  auto* pi = ptr<std::int64_t>(idx);
  for (std::int64_t o = 0; o < outer; ++o) {
    const T* base = px + o * r * inner;
    T* bv = pv + o * inner;
    std::int64_t* bi = pi + o * inner;
    for (std::int64_t i = 0; i < inner; ++i) {
      bv[i] = base[i];
      bi[i] = 0;
    }
    for (std::int64_t k = 1; k < r; ++k) {
      const T* row = base + k * inner;
      for (std::int64_t i = 0; i < inner; ++i) {
        T v = row[i];
        // NaN wins, like PyTorch: once a NaN is kept, nothing compares past it.
        bool better = is_max ? (v > bv[i]) : (v < bv[i]);
        if ((better && !std::isnan(bv[i])) || (std::isnan(v) && !std::isnan(bv[i]))) {
          bv[i] = v;
          bi[i] = k;
        }
      }
    }
  }
  return {vals, idx};
}

std::pair<Tensor, Tensor> extremum(const Tensor& x, std::int64_t dim_in, bool keepdim, bool is_max) {
  std::string_view op = is_max ? "max" : "min";
  std::int64_t dim = wrap_dim(dim_in, x.dim(), op, x.shape());
  XG_CHECK(x.dim() == 0 || x.shape()[dim] > 0,
           "{}: cannot reduce over dim {} of size 0 (shape {}): the extremum of nothing is undefined", op, dim,
           shape_str(x.shape()));
  const auto [vals, idx] = dispatch_all(x.dtype(), [&]<class T>() { return extremum_kernel<T>(x, dim, is_max); });
  Shape xshape = x.shape();
  // The indices are handed to the caller, who may change them in place: saved, so backward notices.
  Tensor out = record(op, {x}, vals, [si = autograd::Saved(idx), dim, xshape](const Tensor& g) {
    // d/dx = 1 at the arg-extremum, 0 elsewhere: scatter the gradient back to where the value came from.
    return Grads{gather_backward(g, xshape, dim, si.get())};
  });
  if (!keepdim && x.dim() > 0) return {squeeze(out, dim), squeeze(idx, dim)};
  return {out, idx};
}

}  // namespace

Tensor sum(const Tensor& x, const Shape& dims, bool keepdim) {
  auto mask = reduce_mask(x, dims, "sum");
  Tensor out = dispatch_all(x.dtype(), [&]<class T>() { return sum_kernel<T>(x, mask); });
  if (!keepdim) out = make_view(out, squeezed_shape(x.shape(), mask), contiguous_strides(squeezed_shape(x.shape(), mask)), 0);
  Shape xshape = x.shape(), kshape = keepdim_shape(x.shape(), mask);
  return record("sum", {x}, out, [xshape, kshape](const Tensor& g) {
    return Grads{expand(reshape(g, kshape), xshape)};  // d/dx = 1 for every element summed
  });
}
Tensor sum(const Tensor& x) { return sum(x, {}, false); }

Tensor mean(const Tensor& x, const Shape& dims, bool keepdim) {
  XG_CHECK(is_floating(x.dtype()), "mean: needs a floating-point tensor, got {} {}; convert with .to(xg::float64)",
           dtype_name(x.dtype()), shape_str(x.shape()));
  auto mask = reduce_mask(x, dims, "mean");
  std::int64_t n = 1;
  for (std::size_t i = 0; i < mask.size(); ++i)
    if (mask[i]) n *= x.shape()[i];  // a factor of x.numel(), which is checked
  Tensor out;
  {
    autograd::NoGradGuard ng;
    out = sum(x, dims, keepdim) / static_cast<double>(n);  // NaN for an empty reduction, like PyTorch
  }
  Shape xshape = x.shape(), kshape = keepdim_shape(x.shape(), mask);
  return record("mean", {x}, out, [xshape, kshape, n](const Tensor& g) {
    return Grads{expand(reshape(g, kshape), xshape) / static_cast<double>(n)};  // d/dx = 1/n
  });
}
Tensor mean(const Tensor& x) { return mean(x, {}, false); }

Tensor var(const Tensor& x, const Shape& dims, std::int64_t correction, bool keepdim) {
  XG_CHECK(is_floating(x.dtype()), "var: needs a floating-point tensor, got {} {}; convert with .to(xg::float64)",
           dtype_name(x.dtype()), shape_str(x.shape()));
  auto mask = reduce_mask(x, dims, "var");
  std::int64_t n = 1;
  for (std::size_t i = 0; i < mask.size(); ++i)
    if (mask[i]) n *= x.shape()[i];
  Tensor d = x - mean(x, dims, true);
  return sum(d * d, dims, keepdim) / static_cast<double>(std::max<std::int64_t>(n - correction, 0));
}

Tensor logsumexp(const Tensor& x, const Shape& dims, bool keepdim) {
  auto mask = reduce_mask(x, dims, "logsumexp");
  Tensor m;
  {
    // The shift only keeps exp() finite; it is a constant for the gradient, which is softmax(x) either way.
    autograd::NoGradGuard ng;
    m = x.detach();
    for (std::size_t i = 0; i < mask.size(); ++i)
      if (mask[i]) m = extremum(m, static_cast<std::int64_t>(i), true, true).first;
    m = where(eq(abs(m), std::numeric_limits<double>::infinity()), 0.0, m);
  }
  Tensor out = log(sum(exp(x - m), dims, true)) + m;
  return keepdim ? out : reshape(out, squeezed_shape(x.shape(), mask));
}

std::pair<Tensor, Tensor> max_with_indices(const Tensor& x, std::int64_t dim, bool keepdim) {
  return extremum(x, dim, keepdim, true);
}
std::pair<Tensor, Tensor> min_with_indices(const Tensor& x, std::int64_t dim, bool keepdim) {
  return extremum(x, dim, keepdim, false);
}
Tensor max(const Tensor& x, std::int64_t dim, bool keepdim) { return extremum(x, dim, keepdim, true).first; }
Tensor min(const Tensor& x, std::int64_t dim, bool keepdim) { return extremum(x, dim, keepdim, false).first; }
Tensor max(const Tensor& x) { return extremum(reshape(x, {-1}), 0, false, true).first; }
Tensor min(const Tensor& x) { return extremum(reshape(x, {-1}), 0, false, false).first; }
Tensor argmax(const Tensor& x, std::int64_t dim, bool keepdim) {
  autograd::NoGradGuard ng;
  return extremum(x, dim, keepdim, true).second;
}
Tensor argmin(const Tensor& x, std::int64_t dim, bool keepdim) {
  autograd::NoGradGuard ng;
  return extremum(x, dim, keepdim, false).second;
}
Tensor argmax(const Tensor& x) { return argmax(reshape(x.detach(), {-1}), 0, false); }

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const Shape& s = x.shape();
  XG_CHECK(shape.size() <= s.size(), "sum_to: cannot sum shape {} to the larger-rank shape {}", shape_str(s),
           shape_str(shape));
  std::size_t lead = s.size() - shape.size();
  Shape dims;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i < lead) {
      dims.push_back(static_cast<std::int64_t>(i));
      continue;
    }
    std::int64_t want = shape[i - lead];
    XG_CHECK(want == s[i] || want == 1, "sum_to: shape {} does not broadcast to {}", shape_str(shape), shape_str(s));
    if (want == 1 && s[i] != 1) dims.push_back(static_cast<std::int64_t>(i));
  }
  if (dims.empty()) return reshape(x, shape);
  return reshape(sum(x, dims, true), shape);
}


// ---- cumsum ----------------------------------------------------------------------------------------------

Tensor cumsum(const Tensor& x, std::int64_t dim) {
  const std::int64_t d = wrap_dim(dim, x.dim(), "cumsum", x.shape());
  if (x.dim() == 0) return x * 1.0;
  const std::int64_t n = x.shape()[d];
  // Along dim as the last axis of a copy (clone: contiguous() would alias x when dim is already last): each
  // row a running sum.
  Tensor rows = transpose(x.detach(), d, -1).clone();
  dispatch_all(x.dtype(), [&]<class T>() {
    T* p = ptr<T>(rows);
    const std::int64_t count = n == 0 ? 0 : rows.numel() / n;
    parallel_for(count, row_grain(n), [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t r = b; r < e; ++r)
        for (std::int64_t i = 1; i < n; ++i) p[r * n + i] += p[r * n + i - 1];
    });
  });
  Tensor out = transpose(rows, d, -1).contiguous();
  return record("cumsum", {x}, out, [d](const Tensor& g) {
    // d out[j] / d x[i] = 1 for j >= i: the gradient is the sum of g from i on, = total - cumsum(g) + g.
    return Grads{sum(g, {d}, true) - cumsum(g, d) + g};
  });
}

}  // namespace xg

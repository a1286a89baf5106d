// Shape ops. Views (reshape of contiguous data, permute, transpose, squeeze, expand, slicing) share the
// input's storage and copy nothing; cat, tril and triu copy.
#include <algorithm>
#include <numeric>
#include <optional>

#include "../internal.hpp"

namespace xg {
using namespace kernel;
using autograd::record;
using Grads = std::vector<Tensor>;

namespace {

/// Copies src into dst (same shape) through both tensors' strides, recording nothing.
void copy_into(const Tensor& dst, const Tensor& src) {
  dispatch_all(dst.dtype(), [&]<class T>() {
    T* pd = static_cast<T*>(dst.impl()->storage->data);
    const T* ps = static_cast<const T*>(src.impl()->storage->data);
    strided_loop<2>(dst.shape(), {&dst.strides(), &src.strides()}, {dst.offset(), src.offset()},
                    [&](const auto& o, std::int64_t n, const auto& in) {
                      if (in[0] == 1 && in[1] == 1) {
                        std::copy_n(ps + o[1], n, pd + o[0]);
                      } else {
                        for (std::int64_t i = 0; i < n; ++i) pd[o[0] + i * in[0]] = ps[o[1] + i * in[1]];
                      }
                    });
  });
}

Shape infer_shape(const Shape& shape, std::int64_t numel, std::string_view op, const Shape& from) {
  Shape out = shape;
  std::int64_t known = 1, infer = -1;
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      XG_CHECK(infer < 0, "{}: only one dimension can be -1, got {}", op, shape_str(shape));
      infer = static_cast<std::int64_t>(i);
    } else {
      XG_CHECK(out[i] >= 0, "{}: invalid size {} in shape {}", op, out[i], shape_str(shape));
      known = checked_mul(known, out[i], op);
    }
  }
  if (infer >= 0) {
    XG_CHECK(known != 0 && numel % known == 0, "{}: shape {} is invalid for input of shape {} ({} elements)", op,
             shape_str(shape), shape_str(from), numel);
    out[infer] = numel / known;
  }
  XG_CHECK(numel_of(out) == numel, "{}: shape {} is invalid for input of shape {} ({} elements)", op, shape_str(shape),
           shape_str(from), numel);
  return out;
}

/// The zero tensor of `full` shape with g written into the region x[dim][start::step] (narrow/slice backward).
Tensor slice_backward(const Tensor& g, const Shape& full, std::int64_t dim, std::int64_t start, std::int64_t step) {
  Tensor out = zeros(full, {g.dtype()});
  Shape st = out.strides();
  std::int64_t off = start * st[dim];
  st[dim] *= step;
  copy_into(make_view(out, g.shape(), st, off), g);
  std::int64_t len = g.shape()[dim];
  return record("slice_backward", {g}, out, [dim, start, step, len](const Tensor& gg) {
    return Grads{slice(gg, dim, start, start + (len - 1) * step + 1, step)};  // the adjoint of scattering is slicing
  });
}

/// Strides that show x's memory with a new shape, when no copy is needed: each run of input dims that is
/// contiguous in memory may be split or merged freely (the rule PyTorch's view() follows).
std::optional<Shape> view_strides(const Tensor& x, const Shape& shape) {
  const Shape& os = x.shape();
  const Shape& ost = x.strides();
  if (x.numel() == 0 || os.empty()) return contiguous_strides(shape);
  Shape st(shape.size());
  auto view_d = static_cast<std::int64_t>(shape.size()) - 1;
  std::int64_t chunk_stride = ost.back(), tensor_numel = 1, view_numel = 1;
  for (auto d = static_cast<std::int64_t>(os.size()) - 1; d >= 0; --d) {
    tensor_numel *= os[d];
    if (d == 0 || (os[d - 1] != 1 && ost[d - 1] != tensor_numel * chunk_stride)) {  // end of a contiguous run
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        st[view_d] = view_numel * chunk_stride;
        view_numel *= shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_stride = ost[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return st;
}

}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape_in) {
  Shape shape = infer_shape(shape_in, x.numel(), "reshape", x.shape());
  Tensor out;
  if (auto st = view_strides(x, shape)) {
    out = make_view(x, shape, *st, x.offset());
  } else {
    Tensor base = contiguous_data(x);  // the one case that copies
    out = make_view(base, shape, contiguous_strides(shape), base.offset());
  }
  return record("reshape", {x}, out, [xs = x.shape()](const Tensor& g) { return Grads{reshape(g, xs)}; });
}

Tensor view(const Tensor& x, const Shape& shape) {
  XG_CHECK(view_strides(x, infer_shape(shape, x.numel(), "view", x.shape())).has_value(),
           "view: the memory of a tensor of shape {} with strides {} cannot be seen as {} without a copy. Hint: use "
           "reshape(), or contiguous().view()", shape_str(x.shape()), shape_str(x.strides()), shape_str(shape));
  return reshape(x, shape);
}

Tensor flatten(const Tensor& x, std::int64_t start_dim, std::int64_t end_dim) {
  if (x.dim() == 0) return reshape(x, {1});
  std::int64_t s = wrap_dim(start_dim, x.dim(), "flatten", x.shape());
  std::int64_t e = wrap_dim(end_dim, x.dim(), "flatten", x.shape());
  XG_CHECK(s <= e, "flatten: start_dim {} comes after end_dim {}", start_dim, end_dim);
  Shape shape(x.shape().begin(), x.shape().begin() + s);
  std::int64_t n = 1;
  for (std::int64_t i = s; i <= e; ++i) n *= x.shape()[i];
  shape.push_back(n);
  shape.insert(shape.end(), x.shape().begin() + e + 1, x.shape().end());
  return reshape(x, shape);
}

Tensor permute(const Tensor& x, const Shape& dims) {
  XG_CHECK(static_cast<std::int64_t>(dims.size()) == x.dim(), "permute: got {} dims {} for a tensor of shape {}",
           dims.size(), shape_str(dims), shape_str(x.shape()));
  Shape shape(dims.size()), strides(dims.size()), inverse(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (std::size_t i = 0; i < dims.size(); ++i) {
    std::int64_t d = wrap_dim(dims[i], x.dim(), "permute", x.shape());
    XG_CHECK(!seen[d], "permute: dim {} repeats in {}", d, shape_str(dims));
    seen[d] = true;
    shape[i] = x.shape()[d];
    strides[i] = x.strides()[d];
    inverse[d] = static_cast<std::int64_t>(i);
  }
  Tensor out = make_view(x, shape, strides, x.offset());
  return record("permute", {x}, out, [inverse](const Tensor& g) { return Grads{permute(g, inverse)}; });
}

Tensor transpose(const Tensor& x, std::int64_t dim0, std::int64_t dim1) {
  if (x.dim() == 0) return permute(x, {});
  Shape dims(x.dim());
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[wrap_dim(dim0, x.dim(), "transpose", x.shape())], dims[wrap_dim(dim1, x.dim(), "transpose", x.shape())]);
  return permute(x, dims);
}

Tensor squeeze(const Tensor& x) {
  Shape shape, strides;
  for (std::size_t i = 0; i < x.shape().size(); ++i)
    if (x.shape()[i] != 1) {
      shape.push_back(x.shape()[i]);
      strides.push_back(x.strides()[i]);
    }
  Tensor out = make_view(x, shape, strides, x.offset());
  return record("squeeze", {x}, out, [xs = x.shape()](const Tensor& g) { return Grads{reshape(g, xs)}; });
}

Tensor squeeze(const Tensor& x, std::int64_t dim) {
  std::int64_t d = wrap_dim(dim, x.dim(), "squeeze", x.shape());
  Shape shape = x.shape(), strides = x.strides();
  if (x.dim() > 0 && shape[d] == 1) {
    shape.erase(shape.begin() + d);
    strides.erase(strides.begin() + d);
  }
  Tensor out = make_view(x, shape, strides, x.offset());
  return record("squeeze", {x}, out, [xs = x.shape()](const Tensor& g) { return Grads{reshape(g, xs)}; });
}

Tensor unsqueeze(const Tensor& x, std::int64_t dim) {
  std::int64_t n = x.dim();
  XG_CHECK(dim >= -(n + 1) && dim <= n, "unsqueeze: dim {} is out of range for a tensor of shape {} (valid: {} to {})",
           dim, shape_str(x.shape()), -(n + 1), n);
  if (dim < 0) dim += n + 1;
  Shape shape = x.shape(), strides = x.strides();
  std::int64_t st = dim < n ? shape[dim] * strides[dim] : 1;
  shape.insert(shape.begin() + dim, 1);
  strides.insert(strides.begin() + dim, st);
  Tensor out = make_view(x, shape, strides, x.offset());
  return record("unsqueeze", {x}, out, [xs = x.shape()](const Tensor& g) { return Grads{reshape(g, xs)}; });
}

Tensor expand(const Tensor& x, const Shape& shape_in) {
  XG_CHECK(shape_in.size() >= x.shape().size(), "expand: cannot expand shape {} to fewer dims {}", shape_str(x.shape()),
           shape_str(shape_in));
  std::size_t lead = shape_in.size() - x.shape().size();
  Shape shape(shape_in.size()), strides(shape_in.size(), 0);
  for (std::size_t i = 0; i < shape_in.size(); ++i) {
    if (i < lead) {
      XG_CHECK(shape_in[i] >= 0, "expand: -1 is not allowed for a new leading dim (shape {})", shape_str(shape_in));
      shape[i] = shape_in[i];
      continue;
    }
    std::int64_t have = x.shape()[i - lead], want = shape_in[i] == -1 ? have : shape_in[i];
    XG_CHECK(want >= 0, "expand: invalid size {} in shape {}", shape_in[i], shape_str(shape_in));
    XG_CHECK(have == want || have == 1,
             "expand: the size {} of dim {} must match the target size {} or be 1 (shape {} to {})", have, i - lead,
             want, shape_str(x.shape()), shape_str(shape_in));
    shape[i] = want;
    strides[i] = have == want ? x.strides()[i - lead] : 0;
  }
  if (shape == x.shape()) return x;
  numel_of(shape);  // refuses a shape whose element count overflows
  Tensor out = make_view(x, shape, strides, x.offset());
  return record("expand", {x}, out, [xs = x.shape()](const Tensor& g) { return Grads{sum_to(g, xs)}; });  // d/dx: sum copies
}
Tensor broadcast_to(const Tensor& x, const Shape& shape) { return expand(x, shape); }

Tensor slice(const Tensor& x, std::int64_t dim, std::int64_t start, std::int64_t end, std::int64_t step) {
  XG_CHECK(x.dim() > 0, "slice: cannot slice a 0-d tensor");
  std::int64_t d = wrap_dim(dim, x.dim(), "slice", x.shape());
  XG_CHECK(step > 0, "slice: step must be positive, got {}", step);
  std::int64_t n = x.shape()[d];
  auto clampi = [n](std::int64_t i) { return std::clamp<std::int64_t>(i < 0 ? i + n : i, 0, n); };
  start = clampi(start);
  end = clampi(end);
  std::int64_t len = end > start ? (end - start - 1) / step + 1 : 0;
  Shape shape = x.shape(), strides = x.strides();
  shape[d] = len;
  strides[d] *= step;
  Tensor out = make_view(x, shape, strides, x.offset() + start * x.strides()[d]);
  return record("slice", {x}, out, [xs = x.shape(), d, start, step](const Tensor& g) {
    return Grads{slice_backward(g, xs, d, start, step)};
  });
}

Tensor narrow(const Tensor& x, std::int64_t dim, std::int64_t start, std::int64_t length) {
  XG_CHECK(x.dim() > 0, "narrow: cannot narrow a 0-d tensor");
  std::int64_t d = wrap_dim(dim, x.dim(), "narrow", x.shape());
  std::int64_t n = x.shape()[d];
  if (start < 0) start += n;
  XG_CHECK(start >= 0 && start <= n && length >= 0 && length <= n - start,
           "narrow: start {} and length {} are out of bounds for dim {} of size {} (shape {})", start, length, d, n,
           shape_str(x.shape()));
  return slice(x, d, start, start + length, 1);
}

Tensor select(const Tensor& x, std::int64_t dim, std::int64_t index) {
  XG_CHECK(x.dim() > 0, "select: cannot index a 0-d tensor");
  std::int64_t d = wrap_dim(dim, x.dim(), "select", x.shape());
  std::int64_t n = x.shape()[d];
  XG_CHECK(index >= -n && index < n, "select: index {} is out of range for dim {} of size {} (shape {})", index, d, n,
           shape_str(x.shape()));
  if (index < 0) index += n;
  return squeeze(narrow(x, d, index, 1), d);
}

Tensor cat(const std::vector<Tensor>& ts, std::int64_t dim) {
  XG_CHECK(!ts.empty(), "cat: expected a non-empty list of tensors");
  const Tensor& first = ts[0];
  std::int64_t d = wrap_dim(dim, first.dim(), "cat", first.shape());
  XG_CHECK(first.dim() > 0, "cat: zero-dimensional tensors cannot be concatenated; unsqueeze them or use stack()");
  Shape shape = first.shape();
  shape[d] = 0;
  for (std::size_t i = 0; i < ts.size(); ++i) {
    const Tensor& t = ts[i];
    check_same_dtype(first, t, "cat");
    bool ok = t.dim() == first.dim();
    for (std::int64_t k = 0; ok && k < t.dim(); ++k)
      if (k != d && t.shape()[k] != first.shape()[k]) ok = false;
    XG_CHECK(ok, "cat: tensor {} has shape {}, but tensor 0 has shape {}; all sizes except dim {} must match", i,
             shape_str(t.shape()), shape_str(first.shape()), d);
    shape[d] += t.shape()[d];
  }
  Tensor out = empty(shape, {first.dtype()});
  std::vector<std::int64_t> sizes;
  std::int64_t off = 0;
  for (const auto& t : ts) {
    Shape part = shape;
    part[d] = t.shape()[d];
    copy_into(make_view(out, part, out.strides(), off * out.strides()[d]), t);
    off += t.shape()[d];
    sizes.push_back(t.shape()[d]);
  }
  return record("cat", ts, out, [sizes, d](const Tensor& g) {
    Grads gs;
    std::int64_t o = 0;
    for (auto s : sizes) {  // d/dx_i = the slice of the output that x_i filled
      gs.push_back(narrow(g, d, o, s));
      o += s;
    }
    return gs;
  });
}

Tensor stack(const std::vector<Tensor>& ts, std::int64_t dim) {
  XG_CHECK(!ts.empty(), "stack: expected a non-empty list of tensors");
  std::int64_t n = ts[0].dim();
  XG_CHECK(dim >= -(n + 1) && dim <= n, "stack: dim {} is out of range for tensors of shape {}", dim,
           shape_str(ts[0].shape()));
  if (dim < 0) dim += n + 1;
  std::vector<Tensor> parts;
  for (std::size_t i = 0; i < ts.size(); ++i) {
    XG_CHECK(ts[i].shape() == ts[0].shape(), "stack: tensor {} has shape {}, but tensor 0 has shape {}", i,
             shape_str(ts[i].shape()), shape_str(ts[0].shape()));
    parts.push_back(unsqueeze(ts[i], dim));
  }
  return cat(parts, dim);
}

std::vector<Tensor> split(const Tensor& x, const std::vector<std::int64_t>& sizes, std::int64_t dim) {
  XG_CHECK(x.dim() > 0, "split: cannot split a 0-d tensor");
  std::int64_t d = wrap_dim(dim, x.dim(), "split", x.shape());
  std::int64_t total = 0;
  for (auto s : sizes) {
    XG_CHECK(s >= 0 && s <= x.shape()[d] - total, "split: sizes {} do not add up to dim {} of size {} (shape {})",
             shape_str(sizes), d, x.shape()[d], shape_str(x.shape()));
    total += s;
  }
  XG_CHECK(total == x.shape()[d], "split: sizes add up to {}, but dim {} has size {} (shape {})", total, d,
           x.shape()[d], shape_str(x.shape()));
  std::vector<Tensor> out;
  std::int64_t o = 0;
  for (auto s : sizes) {
    out.push_back(narrow(x, d, o, s));
    o += s;
  }
  return out;
}

std::vector<Tensor> split(const Tensor& x, std::int64_t split_size, std::int64_t dim) {
  XG_CHECK(split_size > 0, "split: split_size must be positive, got {}", split_size);
  XG_CHECK(x.dim() > 0, "split: cannot split a 0-d tensor");
  std::int64_t d = wrap_dim(dim, x.dim(), "split", x.shape());
  std::vector<std::int64_t> sizes;
  for (std::int64_t o = 0; o < x.shape()[d];) {
    sizes.push_back(std::min(split_size, x.shape()[d] - o));
    o += sizes.back();
  }
  return split(x, sizes, d);
}

std::vector<Tensor> chunk(const Tensor& x, std::int64_t chunks, std::int64_t dim) {
  XG_CHECK(chunks > 0, "chunk: the number of chunks must be positive, got {}", chunks);
  XG_CHECK(x.dim() > 0, "chunk: cannot chunk a 0-d tensor");
  std::int64_t d = wrap_dim(dim, x.dim(), "chunk", x.shape());
  std::int64_t n = x.shape()[d];
  return split(x, std::max<std::int64_t>(n / chunks + (n % chunks != 0), 1), d);
}

namespace {
Tensor triangle(const Tensor& x, std::int64_t k, bool lower) {
  std::string_view op = lower ? "tril" : "triu";
  XG_CHECK(x.dim() >= 2, "{}: expected a tensor with at least 2 dims, got shape {}", op, shape_str(x.shape()));
  Tensor out = contiguous_data(x).detach().clone();
  std::int64_t r = x.shape()[x.dim() - 2], c = x.shape()[x.dim() - 1];
  std::int64_t batch = r * c == 0 ? 0 : out.numel() / (r * c);
  dispatch_all(x.dtype(), [&]<class T>() {
    T* p = ptr<T>(out);
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t i = 0; i < r; ++i)
        for (std::int64_t j = 0; j < c; ++j)
          if (lower ? (j - i > k) : (j - i < k)) p[(b * r + i) * c + j] = T(0);
  });
  return record(op, {x}, out, [k, lower](const Tensor& g) {
    return Grads{lower ? tril(g, k) : triu(g, k)};  // d/dx keeps the same triangle
  });
}
}  // namespace

Tensor tril(const Tensor& x, std::int64_t k) { return triangle(x, k, true); }
Tensor triu(const Tensor& x, std::int64_t k) { return triangle(x, k, false); }

// ---- Tensor methods -------------------------------------------------------------------------------------

Tensor Tensor::reshape(const Shape& s) const { return xg::reshape(*this, s); }
Tensor Tensor::view(const Shape& s) const { return xg::view(*this, s); }
Tensor Tensor::flatten(std::int64_t a, std::int64_t b) const { return xg::flatten(*this, a, b); }
Tensor Tensor::transpose(std::int64_t a, std::int64_t b) const { return xg::transpose(*this, a, b); }
Tensor Tensor::t() const {
  XG_CHECK(dim() <= 2, "t: expects a tensor with at most 2 dims, got shape {}; use transpose(dim0, dim1)",
           shape_str(shape()));
  return dim() < 2 ? *this : xg::transpose(*this, 0, 1);
}
Tensor Tensor::permute(const Shape& dims) const { return xg::permute(*this, dims); }
Tensor Tensor::squeeze() const { return xg::squeeze(*this); }
Tensor Tensor::squeeze(std::int64_t d) const { return xg::squeeze(*this, d); }
Tensor Tensor::unsqueeze(std::int64_t d) const { return xg::unsqueeze(*this, d); }
Tensor Tensor::expand(const Shape& s) const { return xg::expand(*this, s); }
Tensor Tensor::narrow(std::int64_t d, std::int64_t s, std::int64_t l) const { return xg::narrow(*this, d, s, l); }
Tensor Tensor::slice(std::int64_t d, std::int64_t s, std::int64_t e, std::int64_t st) const {
  return xg::slice(*this, d, s, e, st);
}
Tensor Tensor::select(std::int64_t d, std::int64_t i) const { return xg::select(*this, d, i); }
Tensor Tensor::sum() const { return xg::sum(*this); }
Tensor Tensor::sum(const Shape& dims, bool keepdim) const { return xg::sum(*this, dims, keepdim); }
Tensor Tensor::mean() const { return xg::mean(*this); }
Tensor Tensor::mean(const Shape& dims, bool keepdim) const { return xg::mean(*this, dims, keepdim); }


// ---- pad -------------------------------------------------------------------------------------------------

Tensor pad(const Tensor& x, const std::vector<std::int64_t>& pads, double value) {
  XG_CHECK(pads.size() % 2 == 0 && static_cast<std::int64_t>(pads.size()) <= 2 * x.dim(),
           "pad: {} amounts for a tensor of {} dims; give (before, after) pairs from the last dim, at most {}",
           pads.size(), x.dim(), 2 * x.dim());
  Tensor y = x;
  for (std::size_t i = 0; i < pads.size() / 2; ++i) {
    const std::int64_t d = x.dim() - 1 - static_cast<std::int64_t>(i);
    std::int64_t before = pads[2 * i], after = pads[2 * i + 1];
    // Negative amounts crop; what is left must not be negative.
    const std::int64_t size = y.shape()[d];
    XG_CHECK(size + std::min<std::int64_t>(before, 0) + std::min<std::int64_t>(after, 0) >= 0,
             "pad: cropping {} and {} from dim {} of size {} leaves nothing", before, after, d, size);
    if (before < 0 || after < 0) {
      const std::int64_t start = before < 0 ? -before : 0, stop = size - (after < 0 ? -after : 0);
      y = narrow(y, d, start, stop - start);
      before = std::max<std::int64_t>(before, 0), after = std::max<std::int64_t>(after, 0);
    }
    if (before == 0 && after == 0) continue;
    std::vector<Tensor> parts;
    Shape s = y.shape();
    if (before > 0) {
      s[static_cast<std::size_t>(d)] = before;
      parts.push_back(full(s, value, {y.dtype()}));
    }
    parts.push_back(y);
    if (after > 0) {
      s[static_cast<std::size_t>(d)] = after;
      parts.push_back(full(s, value, {y.dtype()}));
    }
    y = cat(parts, d);
  }
  return y;
}

}  // namespace xg

// Indexing ops: index_select / index_add (embedding lookup and its gradient), gather / scatter_add.
// Each pair is the other's backward rule.
#include <algorithm>
#include <numeric>

#include "../internal.hpp"

namespace xg {
using namespace kernel;
using autograd::record;
using autograd::Saved;
using Grads = std::vector<Tensor>;

namespace {

void check_index(const Tensor& index, std::string_view op) {
  XG_CHECK(index.dtype() == DType::int64, "{}: index must be an int64 tensor, got {} {}. Hint: build it with "
           "xg::index_tensor or .to(xg::int64)", op, dtype_name(index.dtype()), shape_str(index.shape()));
}

/// Throws on the first index outside [0, size).
void check_range(const Tensor& index, std::int64_t size, std::string_view op, std::int64_t dim, const Shape& shape) {
  for (auto v : index.to_vector<std::int64_t>())
    XG_CHECK(v >= 0 && v < size, "{}: index {} is out of range for dim {} of size {} (input shape {})", op, v, dim,
             size, shape_str(shape));
}

/// outer = product of dims before `dim`, inner = product after.
std::pair<std::int64_t, std::int64_t> outer_inner(const Shape& s, std::int64_t dim) {
  std::int64_t outer = 1, inner = 1;
  for (std::int64_t i = 0; i < dim; ++i) outer *= s[i];
  for (std::size_t i = dim + 1; i < s.size(); ++i) inner *= s[i];
  return {outer, inner};
}

/// Shape and strides for reading `t` at the positions of an index tensor, with `dim` replaced by the index.
Shape strides_without(const Tensor& t, std::int64_t dim) {
  Shape st = t.strides();
  st[dim] = 0;
  return st;
}

}  // namespace

namespace {
Tensor index_select_backward(const Tensor& g, const Shape& xs, std::int64_t d, const Tensor& index);
void index_add_kernel(const Tensor& out, std::int64_t d, const Tensor& index, const Tensor& src);
}

Tensor index_select(const Tensor& x, std::int64_t dim, const Tensor& index) {
  check_index(index, "index_select");
  XG_CHECK(index.dim() <= 1, "index_select: index must be 1-D, got shape {}", shape_str(index.shape()));
  XG_CHECK(x.dim() > 0, "index_select: cannot index a 0-d tensor");
  std::int64_t d = wrap_dim(dim, x.dim(), "index_select", x.shape());
  check_range(index, x.shape()[d], "index_select", d, x.shape());
  Shape shape = x.shape();
  shape[d] = index.numel();
  Tensor out = empty(shape, {x.dtype()});
  Tensor xc = contiguous_data(x);
  auto idx = index.to_vector<std::int64_t>();
  const auto oi = outer_inner(x.shape(), d);
  const std::int64_t outer = oi.first, inner = oi.second;
  std::int64_t n = x.shape()[d], m = index.numel();
  dispatch_all(x.dtype(), [&]<class T>() {
    const T* px = ptr<T>(xc);
    T* po = ptr<T>(out);
    for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t j = 0; j < m; ++j) std::copy_n(px + (o * n + idx[j]) * inner, inner, po + (o * m + j) * inner);
  });
  return record("index_select", {x}, out, [xs = x.shape(), d, si = Saved(index)](const Tensor& g) {
    // d/dx: each picked row gets its gradient back, added in place where a sum is already there (a tied
    // embedding table after the output layer's gradient): only the picked rows are touched.
    if (autograd::accumulate_into_grad(0, [&](const Tensor& sum) { index_add_kernel(sum, d, si.get(), g); }))
      return Grads{Tensor()};
    return Grads{index_select_backward(g, xs, d, si.get())};
  });
}

namespace {
/// out[.., index[j], ..] += src[.., j, ..] along dim, in place (out contiguous).
void index_add_kernel(const Tensor& out, std::int64_t d, const Tensor& index, const Tensor& src) {
  Tensor sc = contiguous_data(src);
  auto idx = index.to_vector<std::int64_t>();
  const auto oi = outer_inner(out.shape(), d);
  const std::int64_t outer = oi.first, inner = oi.second;
  std::int64_t n = out.shape()[d], m = index.numel();
  dispatch_all(out.dtype(), [&]<class T>() {
    T* po = ptr<T>(out);
    const T* ps = ptr<T>(sc);
    for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t j = 0; j < m; ++j) {
        T* dst = po + (o * n + idx[j]) * inner;
        const T* s = ps + (o * m + j) * inner;
        for (std::int64_t i = 0; i < inner; ++i) dst[i] += s[i];
      }
  });
}

/// index_select's backward: the rows of g added into zeros of the input's shape. One pass, no copy of
/// the zeros (an embedding table's gradient is as large as the table).
Tensor index_select_backward(const Tensor& g, const Shape& xs, std::int64_t d, const Tensor& index) {
  Tensor out = zeros(xs, {g.dtype()});
  index_add_kernel(out, d, index, g);
  return record("index_select_backward", {g}, out, [d, si = Saved(index)](const Tensor& gg) {
    return Grads{index_select(gg, d, si.get())};  // the adjoint of scattering rows is gathering them
  });
}
}  // namespace

Tensor index_add(const Tensor& x, std::int64_t dim, const Tensor& index, const Tensor& src) {
  check_index(index, "index_add");
  check_same_dtype(x, src, "index_add");
  XG_CHECK(index.dim() <= 1, "index_add: index must be 1-D, got shape {}", shape_str(index.shape()));
  XG_CHECK(x.dim() > 0, "index_add: cannot index a 0-d tensor");
  std::int64_t d = wrap_dim(dim, x.dim(), "index_add", x.shape());
  Shape want = x.shape();
  want[d] = index.numel();
  XG_CHECK(src.shape() == want, "index_add: source of shape {} does not match {} (input shape {} with dim {} sized "
           "like the index)", shape_str(src.shape()), shape_str(want), shape_str(x.shape()), d);
  check_range(index, x.shape()[d], "index_add", d, x.shape());
  Tensor out = x.detach().clone();
  index_add_kernel(out, d, index, src);
  return record("index_add", {x, src}, out, [d, si = Saved(index)](const Tensor& g) {
    return Grads{g, index_select(g, d, si.get())};  // d/dx = 1, d/dsrc = the rows it was added into
  });
}

Tensor gather(const Tensor& x, std::int64_t dim, const Tensor& index) {
  check_index(index, "gather");
  std::int64_t d = wrap_dim(dim, x.dim(), "gather", x.shape());
  XG_CHECK(index.dim() == x.dim(), "gather: index has {} dims but the input has {} (index {}, input {})", index.dim(),
           x.dim(), shape_str(index.shape()), shape_str(x.shape()));
  for (std::int64_t k = 0; k < x.dim(); ++k)
    XG_CHECK(k == d || index.shape()[k] <= x.shape()[k],
             "gather: index shape {} is larger than input shape {} in dim {}", shape_str(index.shape()),
             shape_str(x.shape()), k);
  std::int64_t size = x.dim() == 0 ? 1 : x.shape()[d];
  check_range(index, size, "gather", d, x.shape());
  Tensor out = empty(index.shape(), {x.dtype()});
  if (out.numel() == 0) return record("gather", {x}, out, [xs = x.shape()](const Tensor& g) { return Grads{zeros(xs, {g.dtype()})}; });  // nothing gathered
  std::int64_t xstride = x.dim() == 0 ? 0 : x.strides()[d];
  Shape sx = x.dim() == 0 ? Shape{} : strides_without(x, d);
  dispatch_all(x.dtype(), [&]<class T>() {
    const T* px = static_cast<const T*>(x.impl()->storage->data);
    const auto* pi = static_cast<const std::int64_t*>(index.impl()->storage->data);
    T* po = ptr<T>(out);
    strided_loop<3>(index.shape(), {&index.strides(), &sx, &out.strides()}, {index.offset(), x.offset(), 0},
                    [&](const auto& o, std::int64_t n, const auto& in) {
                      for (std::int64_t i = 0; i < n; ++i)
                        po[o[2] + i * in[2]] = px[o[1] + i * in[1] + pi[o[0] + i * in[0]] * xstride];
                    });
  });
  return record("gather", {x}, out, [xs = x.shape(), d, si = Saved(index)](const Tensor& g) {
    return Grads{gather_backward(g, xs, d, si.get())};  // d/dx: each gathered element gets its gradient
  });
}

namespace {
/// out[pos with pos[dim] = index[pos]] += src[pos] for every position of index, in place.
void scatter_add_kernel(const Tensor& out, std::int64_t d, const Tensor& index, const Tensor& src) {
  if (index.numel() == 0) return;
  std::int64_t ostride = out.dim() == 0 ? 0 : out.strides()[d];
  Shape so = out.dim() == 0 ? Shape{} : strides_without(out, d);
  dispatch_all(out.dtype(), [&]<class T>() {
    T* po = static_cast<T*>(out.impl()->storage->data);
    const T* ps = static_cast<const T*>(src.impl()->storage->data);
    const auto* pi = static_cast<const std::int64_t*>(index.impl()->storage->data);
    strided_loop<3>(index.shape(), {&index.strides(), &so, &src.strides()}, {index.offset(), out.offset(), src.offset()},
                    [&](const auto& o, std::int64_t n, const auto& in) {
                      for (std::int64_t i = 0; i < n; ++i)
                        po[o[1] + i * in[1] + pi[o[0] + i * in[0]] * ostride] += ps[o[2] + i * in[2]];
                    });
  });
}

void check_scatter(const Tensor& x, std::int64_t d, const Tensor& index, const Tensor& src) {
  XG_CHECK(index.shape() == src.shape(), "scatter_add: index shape {} must equal source shape {}",
           shape_str(index.shape()), shape_str(src.shape()));
  XG_CHECK(index.dim() == x.dim(), "scatter_add: index has {} dims but the input has {} (index {}, input {})",
           index.dim(), x.dim(), shape_str(index.shape()), shape_str(x.shape()));
  for (std::int64_t k = 0; k < x.dim(); ++k)
    XG_CHECK(k == d || index.shape()[k] <= x.shape()[k],
             "scatter_add: index shape {} is larger than input shape {} in dim {}", shape_str(index.shape()),
             shape_str(x.shape()), k);
  check_range(index, x.dim() == 0 ? 1 : x.shape()[d], "scatter_add", d, x.shape());
}
}  // namespace

Tensor scatter_add(const Tensor& x, std::int64_t dim, const Tensor& index, const Tensor& src) {
  check_index(index, "scatter_add");
  check_same_dtype(x, src, "scatter_add");
  std::int64_t d = wrap_dim(dim, x.dim(), "scatter_add", x.shape());
  check_scatter(x, d, index, src);
  Tensor out = x.detach().clone();
  scatter_add_kernel(out, d, index, src);
  return record("scatter_add", {x, src}, out, [d, si = Saved(index)](const Tensor& g) {
    return Grads{g, gather(g, d, si.get())};  // d/dx = 1, d/dsrc = the element it was added into
  });
}

/// gather's backward: g scattered into zeros of the input's shape, without copying the zeros first.
Tensor kernel::gather_backward(const Tensor& g, const Shape& xs, std::int64_t d, const Tensor& index) {
  Tensor out = zeros(xs, {g.dtype()});
  scatter_add_kernel(out, d, index, g);
  return record("gather_backward", {g}, out, [d, si = Saved(index)](const Tensor& gg) {
    return Grads{gather(gg, d, si.get())};  // the adjoint of scattering is gathering
  });
}


// ---- one_hot, topk --------------------------------------------------------------------------------------

Tensor one_hot(const Tensor& indices, std::int64_t num_classes) {
  check_index(indices, "one_hot");
  const auto ids = contiguous_data(indices).to_vector<std::int64_t>();
  std::int64_t top = -1;
  for (auto i : ids) {
    XG_CHECK(i >= 0, "one_hot: index {} is negative", i);
    top = std::max(top, i);
  }
  if (num_classes == -1) num_classes = top + 1;
  XG_CHECK(num_classes >= 0 && top < num_classes, "one_hot: index {} is out of range for {} classes", top, num_classes);
  Shape shape = indices.shape();
  shape.push_back(num_classes);
  Tensor out = zeros(shape, {DType::int64});
  auto* p = ptr<std::int64_t>(out);
  for (std::size_t r = 0; r < ids.size(); ++r) p[static_cast<std::int64_t>(r) * num_classes + ids[r]] = 1;
  return out;
}

std::pair<Tensor, Tensor> topk(const Tensor& x, std::int64_t k, std::int64_t dim, bool largest) {
  XG_CHECK(x.dim() >= 1, "topk: needs a tensor with at least one dim, got a 0-d tensor");
  const std::int64_t d = wrap_dim(dim, x.dim(), "topk", x.shape());
  const std::int64_t n = x.shape()[d];
  XG_CHECK(k >= 0 && k <= n, "topk: k = {} is out of range for a dim of size {} (input {})", k, n, shape_str(x.shape()));
  // Rows along dim, last: each row's k best positions, ties to the lower index (a stable order).
  const Tensor rows = transpose(x.detach(), d, -1).contiguous();
  const std::int64_t count = n == 0 ? 0 : rows.numel() / n;
  Shape idx_shape = rows.shape();
  idx_shape.back() = k;
  Tensor idx = empty(idx_shape, {DType::int64});
  auto* pi = ptr<std::int64_t>(idx);
  dispatch_all(x.dtype(), [&]<class T>() {
    const T* pr = ptr<T>(rows);
    std::vector<std::int64_t> order(static_cast<std::size_t>(n));
    for (std::int64_t r = 0; r < count; ++r) {
      const T* row = pr + r * n;
      std::iota(order.begin(), order.end(), 0);
      auto better = [&](std::int64_t a, std::int64_t b) {
        // NaN counts as the largest value, as in PyTorch.
        const bool na = row[a] != row[a], nb = row[b] != row[b];
        if (na || nb) return largest ? (na && !nb) : (!na && nb);
        return largest ? row[a] > row[b] : row[a] < row[b];
      };
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](std::int64_t a, std::int64_t b) { return better(a, b) || (!better(b, a) && a < b); });
      std::copy(order.begin(), order.begin() + k, pi + r * k);
    }
  });
  Tensor indices = transpose(idx, d, -1).contiguous();
  return {gather(x, d, indices), indices};
}

}  // namespace xg

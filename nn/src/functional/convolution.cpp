// Convolution and pooling on im2col: unfold gathers every kernel window of x [N, C, H, W] into the columns of
// [N, C kh kw, L] and fold scatters columns back, adding where windows overlap; each is the other's
// gradient, so the ops built on them (conv2d, conv_transpose2d, pooling) are differentiable to any order.
// conv2d is one GEMM per group over the columns, as PyTorch's CPU convolution without oneDNN.
#include <algorithm>
#include <cmath>

#include "xgrad/autograd.hpp"
#include "xgrad/kernel.hpp"
#include "xgrad/nn/functional.hpp"

namespace xg::nn::functional {
using namespace xg::kernel;
using Grads = std::vector<Tensor>;

namespace {

/// Output positions along one dim: floor((in + 2 pad - dilation (k - 1) - 1) / stride) + 1.
std::int64_t out_size(std::int64_t in, std::int64_t k, std::int64_t stride, std::int64_t pad, std::int64_t dilation) {
  return (in + 2 * pad - dilation * (k - 1) - 1) / stride + 1;
}

void check_geometry(const Window2d& w, std::string_view op) {
  XG_CHECK(w.kernel[0] > 0 && w.kernel[1] > 0, "{}: kernel size must be positive, got ({}, {})", op, w.kernel[0], w.kernel[1]);
  XG_CHECK(w.stride[0] > 0 && w.stride[1] > 0, "{}: stride must be positive, got ({}, {})", op, w.stride[0], w.stride[1]);
  XG_CHECK(w.padding[0] >= 0 && w.padding[1] >= 0, "{}: padding must be >= 0, got ({}, {})", op, w.padding[0], w.padding[1]);
  XG_CHECK(w.dilation[0] > 0 && w.dilation[1] > 0, "{}: dilation must be positive, got ({}, {})", op, w.dilation[0],
           w.dilation[1]);
}

/// The output columns xx of one kernel column whose input column xx stride + off lies in [0, w): [x0, x1).
std::pair<std::int64_t, std::int64_t> valid_columns(std::int64_t off, std::int64_t stride, std::int64_t w, std::int64_t ow) {
  const std::int64_t x0 = off >= 0 ? 0 : std::min(ow, (-off + stride - 1) / stride);
  const std::int64_t x1 = w - 1 - off < 0 ? 0 : std::min(ow, (w - 1 - off) / stride + 1);
  return {x0, std::max(x0, x1)};
}

/// x [N, C, H, W] (contiguous) -> cols [N, C kh kw, oh ow], zeros where a window reaches into the padding.
/// Row by row: each output row of a kernel position is a strided copy (contiguous for stride 1) between
/// two runs of padding zeros, with the bounds worked out once per row instead of per element.
template <class T>
void im2col(const T* x, T* cols, std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w, const Window2d& g,
            std::int64_t oh, std::int64_t ow) {
  const std::int64_t kh = g.kernel[0], kw = g.kernel[1], rows = c * kh * kw, l = oh * ow;
  parallel_for(n * rows, std::max<std::int64_t>(1, 16384 / std::max<std::int64_t>(l, 1)), [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t r = b; r < e; ++r) {
      const std::int64_t img = r / rows, row = r % rows, ch = row / (kh * kw), i = (row / kw) % kh, j = row % kw;
      const T* src = x + (img * c + ch) * h * w;
      T* dst = cols + r * l;
      const std::int64_t off = j * g.dilation[1] - g.padding[1], st = g.stride[1];
      const auto [x0, x1] = valid_columns(off, st, w, ow);
      for (std::int64_t y = 0; y < oh; ++y) {
        const std::int64_t sy = y * g.stride[0] - g.padding[0] + i * g.dilation[0];
        T* d = dst + y * ow;
        if (sy < 0 || sy >= h) {
          std::fill(d, d + ow, T(0));
          continue;
        }
        const T* s = src + sy * w + off;
        std::fill(d, d + x0, T(0));
        if (st == 1) {
          std::copy(s + x0, s + x1, d + x0);
        } else {
          for (std::int64_t xx = x0; xx < x1; ++xx) d[xx] = s[xx * st];
        }
        std::fill(d + x1, d + ow, T(0));
      }
    }
  });
}

/// cols [N, C kh kw, oh ow] -> x [N, C, H, W], adding every window's values into the positions it covers.
template <class T>
void col2im(const T* cols, T* x, std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w, const Window2d& g,
            std::int64_t oh, std::int64_t ow) {
  const std::int64_t kh = g.kernel[0], kw = g.kernel[1], l = oh * ow;
  // One image plane per task: the windows of different planes never meet.
  parallel_for(n * c, 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t plane = b; plane < e; ++plane) {
      T* dst = x + plane * h * w;
      std::fill(dst, dst + h * w, T(0));
      for (std::int64_t i = 0; i < kh; ++i)
        for (std::int64_t j = 0; j < kw; ++j) {
          const T* src = cols + ((plane * kh + i) * kw + j) * l;
          const std::int64_t off = j * g.dilation[1] - g.padding[1], st = g.stride[1];
          const auto [x0, x1] = valid_columns(off, st, w, ow);
          for (std::int64_t y = 0; y < oh; ++y) {
            const std::int64_t sy = y * g.stride[0] - g.padding[0] + i * g.dilation[0];
            if (sy < 0 || sy >= h) continue;
            T* d = dst + sy * w + off;
            const T* s = src + y * ow;
            for (std::int64_t xx = x0; xx < x1; ++xx) d[xx * st] += s[xx];
          }
        }
    }
  });
}

/// For each output position of a max pooling window over each [H, W] plane, the flat index (y W + x) of the
/// window's largest value (NaN wins, as in PyTorch; ties go to the first); padding is never chosen.
template <class T>
void max_pool_indices(const T* x, std::int64_t* idx, T* values, std::int64_t planes, std::int64_t h, std::int64_t w,
                      const std::array<std::int64_t, 2>& k, const std::array<std::int64_t, 2>& st,
                      const std::array<std::int64_t, 2>& pad, std::int64_t oh, std::int64_t ow) {
  parallel_for(planes, std::max<std::int64_t>(1, 16384 / std::max<std::int64_t>(h * w, 1)), [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t p = b; p < e; ++p) {
      const T* src = x + p * h * w;
      std::int64_t* out = idx + p * oh * ow;
      T* val = values + p * oh * ow;
      for (std::int64_t y = 0; y < oh; ++y) {
        const std::int64_t y0 = std::max<std::int64_t>(0, y * st[0] - pad[0]), y1 = std::min(h, y * st[0] - pad[0] + k[0]);
        for (std::int64_t xx = 0; xx < ow; ++xx) {
          const std::int64_t x0 = std::max<std::int64_t>(0, xx * st[1] - pad[1]), x1 = std::min(w, xx * st[1] - pad[1] + k[1]);
          std::int64_t best = y0 * w + x0;
          for (std::int64_t sy = y0; sy < y1; ++sy)
            for (std::int64_t sx = x0; sx < x1; ++sx) {
              const T v = src[sy * w + sx], m = src[best];
              if (v > m || (v != v && m == m)) best = sy * w + sx;
            }
          out[y * ow + xx] = best;
          val[y * ow + xx] = src[best];
        }
      }
    }
  });
}

}  // namespace

Tensor unfold(const Tensor& x, const Window2d& g) {
  check_geometry(g, "unfold");
  XG_CHECK(x.dim() == 4 && is_floating(x.dtype()), "unfold: expected a float input [N, C, H, W], got {} {}",
           dtype_name(x.dtype()), shape_str(x.shape()));
  const std::int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const std::int64_t oh = out_size(h, g.kernel[0], g.stride[0], g.padding[0], g.dilation[0]),
                     ow = out_size(w, g.kernel[1], g.stride[1], g.padding[1], g.dilation[1]);
  XG_CHECK(oh > 0 && ow > 0, "unfold: a kernel of ({}, {}) with dilation ({}, {}) does not fit the padded input {}",
           g.kernel[0], g.kernel[1], g.dilation[0], g.dilation[1], shape_str(x.shape()));
  const std::int64_t rows = checked_mul(c, checked_mul(g.kernel[0], g.kernel[1], "unfold"), "unfold");
  Tensor cols = empty({n, rows, checked_mul(oh, ow, "unfold")}, {x.dtype()});
  dispatch_float(x.dtype(), "unfold", [&]<class T>() {
    Tensor xc = contiguous_data(x);
    im2col<T>(ptr<T>(xc), ptr<T>(cols), n, c, h, w, g, oh, ow);
  });
  return autograd::record("unfold", {x}, cols, [g, h, w](const Tensor& grad) {
    return Grads{fold(grad, {h, w}, g)};  // each element's gradient: the sum over the windows it appears in
  });
}

Tensor fold(const Tensor& cols, std::array<std::int64_t, 2> output_size, const Window2d& g) {
  check_geometry(g, "fold");
  const std::int64_t h = output_size[0], w = output_size[1];
  XG_CHECK(cols.dim() == 3 && is_floating(cols.dtype()), "fold: expected float columns [N, C kh kw, L], got {} {}",
           dtype_name(cols.dtype()), shape_str(cols.shape()));
  const std::int64_t kk = g.kernel[0] * g.kernel[1];
  XG_CHECK(h > 0 && w > 0 && cols.size(1) % kk == 0, "fold: {} rows are not channels x a ({}, {}) kernel, or output ({}, {}) is empty",
           cols.size(1), g.kernel[0], g.kernel[1], h, w);
  const std::int64_t oh = out_size(h, g.kernel[0], g.stride[0], g.padding[0], g.dilation[0]),
                     ow = out_size(w, g.kernel[1], g.stride[1], g.padding[1], g.dilation[1]);
  XG_CHECK(oh > 0 && ow > 0 && cols.size(2) == oh * ow, "fold: {} columns, but an output of ({}, {}) has {} windows",
           cols.size(2), h, w, std::max<std::int64_t>(oh, 0) * std::max<std::int64_t>(ow, 0));
  const std::int64_t n = cols.size(0), c = cols.size(1) / kk;
  Tensor x = empty({n, c, h, w}, {cols.dtype()});
  dispatch_float(cols.dtype(), "fold", [&]<class T>() {
    Tensor cc = contiguous_data(cols);
    col2im<T>(ptr<T>(cc), ptr<T>(x), n, c, h, w, g, oh, ow);
  });
  return autograd::record("fold", {cols}, x, [g](const Tensor& grad) { return Grads{unfold(grad, g)}; });
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvOptions& o) {
  XG_CHECK(x.dim() == 4, "conv2d: expected input [N, C, H, W], got {}", shape_str(x.shape()));
  XG_CHECK(weight.dim() == 4, "conv2d: expected weight [out, in / groups, kh, kw], got {}", shape_str(weight.shape()));
  XG_CHECK(o.groups > 0 && x.size(1) % o.groups == 0 && weight.size(0) % o.groups == 0,
           "conv2d: groups {} must divide the input channels {} and the output channels {}", o.groups, x.size(1),
           weight.size(0));
  XG_CHECK(weight.size(1) * o.groups == x.size(1), "conv2d: weight {} expects {} input channels, the input {} has {}",
           shape_str(weight.shape()), weight.size(1) * o.groups, shape_str(x.shape()), x.size(1));
  check_same_dtype(x, weight, "conv2d");
  const std::int64_t n = x.size(0), out = weight.size(0), groups = o.groups;
  const Window2d g{{weight.size(2), weight.size(3)}, o.stride, o.padding, o.dilation};
  Tensor cols = unfold(x, g);  // [N, C kh kw, L]
  const std::int64_t l = cols.size(2);
  const std::int64_t oh = out_size(x.size(2), g.kernel[0], g.stride[0], g.padding[0], g.dilation[0]);
  Tensor y;
  if (groups == 1) {
    y = matmul(weight.reshape({out, -1}), cols);  // [out, C kh kw] @ [N, C kh kw, L] -> [N, out, L]
  } else {
    // Group k: its output channels from its input channels' rows of the columns.
    auto col_groups = chunk(cols, groups, 1);
    auto w_groups = chunk(weight.reshape({out, -1}), groups, 0);
    std::vector<Tensor> parts;
    for (std::int64_t k = 0; k < groups; ++k) parts.push_back(matmul(w_groups[static_cast<std::size_t>(k)], col_groups[static_cast<std::size_t>(k)]));
    y = cat(parts, 1);
  }
  if (bias.defined()) {
    XG_CHECK(bias.shape() == Shape{out}, "conv2d: bias {} must be [{}]", shape_str(bias.shape()), out);
    y = y + bias.reshape({out, 1});
  }
  return y.reshape({n, out, oh, l / oh});
}

Tensor conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv1dOptions& o) {
  XG_CHECK(x.dim() == 3 && weight.dim() == 3, "conv1d: expected input [N, C, L] and weight [out, in / groups, k], got {} and {}",
           shape_str(x.shape()), shape_str(weight.shape()));
  Tensor y = conv2d(unsqueeze(x, 2), unsqueeze(weight, 2), bias,
                    {.stride = {1, o.stride}, .padding = {0, o.padding}, .dilation = {1, o.dilation}, .groups = o.groups});
  return squeeze(y, 2);
}

Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvTransposeOptions& o) {
  XG_CHECK(x.dim() == 4, "conv_transpose2d: expected input [N, C, H, W], got {}", shape_str(x.shape()));
  XG_CHECK(weight.dim() == 4, "conv_transpose2d: expected weight [in, out / groups, kh, kw], got {}", shape_str(weight.shape()));
  XG_CHECK(o.groups > 0 && weight.size(0) == x.size(1) && x.size(1) % o.groups == 0,
           "conv_transpose2d: weight {} expects {} input channels in {} groups, the input {} has {}",
           shape_str(weight.shape()), weight.size(0), o.groups, shape_str(x.shape()), x.size(1));
  for (int d = 0; d < 2; ++d)
    XG_CHECK(o.output_padding[d] >= 0 && o.output_padding[d] < std::max(o.stride[d], o.dilation[d]),
             "conv_transpose2d: output_padding {} must be smaller than stride or dilation", o.output_padding[d]);
  check_same_dtype(x, weight, "conv_transpose2d");
  const std::int64_t n = x.size(0), cin = x.size(1), h = x.size(2), w = x.size(3), groups = o.groups;
  const std::int64_t cout = weight.size(1) * groups, kh = weight.size(2), kw = weight.size(3);
  // The gradient of conv2d with respect to its input: columns W^T x, folded onto the larger output.
  const std::int64_t oh = (h - 1) * o.stride[0] - 2 * o.padding[0] + o.dilation[0] * (kh - 1) + o.output_padding[0] + 1;
  const std::int64_t ow = (w - 1) * o.stride[1] - 2 * o.padding[1] + o.dilation[1] * (kw - 1) + o.output_padding[1] + 1;
  XG_CHECK(oh > 0 && ow > 0, "conv_transpose2d: the output would be empty ({} x {})", oh, ow);
  Tensor xs = x.reshape({n, cin, h * w});
  Tensor cols;
  if (groups == 1) {
    cols = matmul(weight.reshape({cin, -1}).t(), xs);  // [cout kh kw, cin] @ [N, cin, L]
  } else {
    auto x_groups = chunk(xs, groups, 1);
    auto w_groups = chunk(weight.reshape({cin, -1}), groups, 0);
    std::vector<Tensor> parts;
    for (std::int64_t k = 0; k < groups; ++k)
      parts.push_back(matmul(w_groups[static_cast<std::size_t>(k)].t(), x_groups[static_cast<std::size_t>(k)]));
    cols = cat(parts, 1);
  }
  Tensor y = fold(cols, {oh, ow}, {{kh, kw}, o.stride, o.padding, o.dilation});
  if (bias.defined()) {
    XG_CHECK(bias.shape() == Shape{cout}, "conv_transpose2d: bias {} must be [{}]", shape_str(bias.shape()), cout);
    y = y + bias.reshape({1, cout, 1, 1});
  }
  return y;
}

namespace {
/// Pooling windows as columns [N, C, kh kw, L] (padding filled with `fill`), and the output's spatial size.
std::pair<Tensor, std::array<std::int64_t, 2>> windows(const Tensor& x, const PoolOptions& o, double fill, std::string_view op) {
  XG_CHECK(x.dim() == 4, "{}: expected input [N, C, H, W], got {}", op, shape_str(x.shape()));
  const std::array<std::int64_t, 2> stride = o.stride[0] > 0 ? o.stride : o.kernel;  // PyTorch: stride = kernel
  for (int d = 0; d < 2; ++d)
    XG_CHECK(o.padding[d] >= 0 && 2 * o.padding[d] <= o.kernel[d], "{}: padding {} must be at most half the kernel {}", op,
             o.padding[d], o.kernel[d]);
  const std::int64_t n = x.size(0), c = x.size(1);
  // Padding by `fill` (-inf for max, 0 for mean) first, then windows without padding.
  Tensor xp = (o.padding[0] || o.padding[1]) ? pad(x, {o.padding[1], o.padding[1], o.padding[0], o.padding[0]}, fill) : x;
  const Window2d g{o.kernel, stride, {0, 0}, {1, 1}};
  Tensor cols = unfold(xp.reshape({n * c, 1, xp.size(2), xp.size(3)}), g);  // [N C, kh kw, L]
  const std::int64_t oh = out_size(xp.size(2), o.kernel[0], stride[0], 0, 1), ow = out_size(xp.size(3), o.kernel[1], stride[1], 0, 1);
  return {cols.reshape({n, c, o.kernel[0] * o.kernel[1], oh * ow}), {oh, ow}};
}
}  // namespace

Tensor max_pool2d(const Tensor& x, const PoolOptions& o) {
  XG_CHECK(x.dim() == 4 && is_floating(x.dtype()), "max_pool2d: expected a float input [N, C, H, W], got {} {}",
           dtype_name(x.dtype()), shape_str(x.shape()));
  const std::array<std::int64_t, 2> stride = o.stride[0] > 0 ? o.stride : o.kernel;
  for (int d = 0; d < 2; ++d) {
    XG_CHECK(o.kernel[d] > 0 && stride[d] > 0, "max_pool2d: kernel and stride must be positive");
    XG_CHECK(o.padding[d] >= 0 && 2 * o.padding[d] <= o.kernel[d], "max_pool2d: padding {} must be at most half the kernel {}",
             o.padding[d], o.kernel[d]);
  }
  const std::int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const std::int64_t oh = out_size(h, o.kernel[0], stride[0], o.padding[0], 1), ow = out_size(w, o.kernel[1], stride[1], o.padding[1], 1);
  XG_CHECK(oh > 0 && ow > 0, "max_pool2d: a ({}, {}) window does not fit the input {}", o.kernel[0], o.kernel[1], shape_str(x.shape()));
  // The maxima and their positions by a plain loop; the gradient is scattered to those positions by
  // scatter_add, whose own gradient (a gather) carries every higher order.
  Tensor idx = empty({n, c, oh * ow}, {DType::int64}), out = empty({n, c, oh, ow}, {x.dtype()});
  dispatch_float(x.dtype(), "max_pool2d", [&]<class T>() {
    Tensor xc = contiguous_data(x);
    max_pool_indices<T>(ptr<T>(xc), ptr<std::int64_t>(idx), ptr<T>(out), n * c, h, w, o.kernel, stride, o.padding, oh, ow);
  });
  return autograd::record("max_pool2d", {x}, out, [idx, n, c, h, w, oh, ow](const Tensor& g) {
    // d out / d x: 1 at each window's maximum, 0 elsewhere.
    return Grads{scatter_add(zeros({n, c, h * w}, {g.dtype()}), 2, idx, g.reshape({n, c, oh * ow})).reshape({n, c, h, w})};
  });
}

Tensor avg_pool2d(const Tensor& x, const PoolOptions& o) {
  // count_include_pad, PyTorch's default: padded zeros count in the mean.
  auto [cols, size] = windows(x, o, 0.0, "avg_pool2d");
  return mean(cols, {2}).reshape({x.size(0), x.size(1), size[0], size[1]});
}

Tensor adaptive_avg_pool2d(const Tensor& x, std::array<std::int64_t, 2> output_size) {
  XG_CHECK(x.dim() == 4, "adaptive_avg_pool2d: expected input [N, C, H, W], got {}", shape_str(x.shape()));
  const std::int64_t h = x.size(2), w = x.size(3), oh = output_size[0], ow = output_size[1];
  XG_CHECK(oh > 0 && ow > 0 && h > 0 && w > 0, "adaptive_avg_pool2d: output size ({}, {}) and input {} must be non-empty",
           oh, ow, shape_str(x.shape()));
  if (h % oh == 0 && w % ow == 0) return avg_pool2d(x, {.kernel = {h / oh, w / ow}});
  // PyTorch's cells: rows floor(i h / oh) .. ceil((i + 1) h / oh), and the same for columns.
  std::vector<Tensor> rows;
  for (std::int64_t i = 0; i < oh; ++i) {
    const std::int64_t r0 = i * h / oh, r1 = ((i + 1) * h + oh - 1) / oh;
    std::vector<Tensor> cells;
    for (std::int64_t j = 0; j < ow; ++j) {
      const std::int64_t c0 = j * w / ow, c1 = ((j + 1) * w + ow - 1) / ow;
      cells.push_back(mean(x.narrow(2, r0, r1 - r0).narrow(3, c0, c1 - c0), {2, 3}));
    }
    rows.push_back(stack(cells, -1));
  }
  return stack(rows, -2);
}

}  // namespace xg::nn::functional

// gradcheck / gradgradcheck: analytic gradients against float64 central differences.
#include "xgrad/gradcheck.hpp"

#include <algorithm>
#include <cmath>

#include "internal.hpp"

namespace xg::autograd {
using namespace xg::kernel;

namespace {

double dot(const Tensor& a, const std::vector<double>& v) {
  auto x = a.to_vector<double>();
  double s = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) s += x[i] * v[i];
  return s;
}

/// Storage offset of each logical element (row-major order) of t.
std::vector<std::int64_t> element_offsets(const Tensor& t) {
  std::vector<std::int64_t> offs;
  offs.reserve(static_cast<std::size_t>(t.numel()));
  strided_loop<1>(t.shape(), {&t.strides()}, {t.offset()}, [&](const auto& o, std::int64_t n, const auto& in) {
    for (std::int64_t i = 0; i < n; ++i) offs.push_back(o[0] + i * in[0]);
  });
  return offs;
}

std::string index_str(std::int64_t flat, const Shape& shape) {
  Shape idx(shape.size());
  for (std::size_t d = shape.size(); d-- > 0;) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  return shape_str(idx);
}

}  // namespace

namespace {

/// The inputs that require grad (float64, no element aliasing another), with their positions.
std::pair<std::vector<Tensor>, std::vector<std::size_t>> checked_inputs(const std::vector<Tensor>& inputs) {
  std::vector<Tensor> diff;
  std::vector<std::size_t> which;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (!t.defined() || !t.requires_grad()) continue;
    XG_CHECK(t.dtype() == DType::float64,
             "gradcheck: input {} (shape {}) is {}; finite differences are only meaningful in float64. Convert with "
             ".to(xg::float64)", i, shape_str(t.shape()), dtype_name(t.dtype()));
    auto sorted = element_offsets(t);
    std::sort(sorted.begin(), sorted.end());
    XG_CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end(),
             "gradcheck: input {} (shape {}) has elements sharing memory (an expanded view); pass a contiguous copy",
             i, shape_str(t.shape()));
    diff.push_back(t);
    which.push_back(i);
  }
  XG_CHECK(!diff.empty(), "gradcheck: no input requires grad; call requires_grad_() on the inputs to check");
  return {diff, which};
}

/// <v, d f / d x[e]> by central differences, for each element e of x in row-major order.
std::vector<double> numeric_grad(const TensorFunction& f, const std::vector<Tensor>& inputs, const Tensor& x,
                                 const std::vector<double>& v, double eps) {
  auto* data = static_cast<double*>(x.impl()->storage->data);
  std::vector<double> out;
  for (auto off : element_offsets(x)) {
    const double orig = data[off];
    data[off] = orig + eps;
    const double plus = dot(f(inputs), v);
    data[off] = orig - eps;
    const double minus = dot(f(inputs), v);
    data[off] = orig;
    out.push_back((plus - minus) / (2.0 * eps));
  }
  return out;
}

}  // namespace

bool gradcheck(const TensorFunction& f, const std::vector<Tensor>& inputs, GradcheckOptions opt) {
  const auto [diff, which] = checked_inputs(inputs);
  Tensor out = f(inputs);
  XG_CHECK(out.defined() && is_floating(out.dtype()), "gradcheck: the function must return a floating-point tensor");
  Generator gen(opt.seed);
  const std::vector<double> v = randn(out.shape(), {DType::float64}, &gen).to_vector<double>();
  std::vector<Tensor> analytic(diff.size());
  if (out.requires_grad()) {
    // tensor() reads an empty shape as "1-D", so build flat and reshape (outputs may be 0-d).
    Tensor cot = reshape(tensor(v, {static_cast<std::int64_t>(v.size())}, {out.dtype()}), out.shape());
    analytic = grad({out}, diff, {cot}, {.allow_unused = true});
  }
  for (std::size_t k = 0; k < diff.size(); ++k) {
    const Tensor& x = diff[k];
    if (analytic[k].defined())
      XG_CHECK(analytic[k].shape() == x.shape(), "gradcheck: gradient for input {} has shape {}, expected {}",
               which[k], shape_str(analytic[k].shape()), shape_str(x.shape()));
    const std::vector<double> a = analytic[k].defined() ? analytic[k].to_vector<double>()
                                                        : std::vector<double>(static_cast<std::size_t>(x.numel()), 0.0);
    const std::vector<double> numeric = numeric_grad(f, inputs, x, v, opt.eps);
    for (std::size_t e = 0; e < numeric.size(); ++e) {
      const double tol = opt.atol + opt.rtol * std::abs(numeric[e]);
      if (std::abs(a[e] - numeric[e]) <= tol && std::isfinite(a[e]) == std::isfinite(numeric[e])) continue;
      if (!opt.raise) return false;
      fail("gradcheck failed for input {}{} (shape {}) at element {} (index {}): analytic {:.10g}, numeric "
           "{:.10g}, difference {:.3g} > tolerance {:.3g}",
           which[k], x.name().empty() ? "" : " \"" + x.name() + "\"", shape_str(x.shape()), e,
           index_str(static_cast<std::int64_t>(e), x.shape()), a[e], numeric[e], std::abs(a[e] - numeric[e]), tol);
    }
  }
  return true;
}

bool gradgradcheck(const TensorFunction& f, const std::vector<Tensor>& inputs, GradcheckOptions opt) {
  std::vector<Tensor> diff;
  for (const auto& t : inputs)
    if (t.defined() && t.requires_grad()) diff.push_back(t);
  XG_CHECK(!diff.empty(), "gradgradcheck: no input requires grad");
  Tensor out0 = f(inputs);
  Generator gen(opt.seed + 1);
  Tensor v = randn(out0.shape(), {DType::float64}, &gen).requires_grad_();
  std::vector<Tensor> w;
  for (const auto& x : diff) w.push_back(randn(x.shape(), {DType::float64}, &gen));

  // h(x..., v) = sum_i <w_i, d<v, f(x)>/dx_i>: its gradient holds every second derivative of f along v, w.
  const std::size_t n = inputs.size();
  TensorFunction h = [&](const std::vector<Tensor>& xs) {
    std::vector<Tensor> in(xs.begin(), xs.begin() + static_cast<std::ptrdiff_t>(n));
    std::vector<Tensor> d;
    for (const auto& x : in)
      if (x.defined() && x.requires_grad()) d.push_back(x);
    Tensor out = f(in);
    Tensor total = zeros({}, {DType::float64});
    if (!out.requires_grad()) return total;
    auto g = grad({out}, d, {xs[n]}, {.create_graph = true, .allow_unused = true});
    for (std::size_t i = 0; i < g.size(); ++i)
      if (g[i].defined()) total = total + sum(g[i] * w[i]);
    return total;
  };
  std::vector<Tensor> all = inputs;
  all.push_back(v);
  return gradcheck(h, all, opt);
}

}  // namespace xg::autograd

// Functional transforms: every one is a few reverse passes over the tape that f records.
#include "xgrad/func.hpp"

#include "xgrad/autograd.hpp"
#include "xgrad/check.hpp"
#include "xgrad/kernel.hpp"
#include "xgrad/ops.hpp"

#include <unordered_set>

namespace xg::func {
namespace {

using autograd::GradOptions;

/// The inputs as f will see them: an input that already takes part in an outer differentiation (it
/// requires grad, grad mode is on) is used as it is, so the transform's result stays connected to it;
/// any other becomes a fresh leaf that requires grad.
struct Prepared {
  std::vector<Tensor> xs;
  std::vector<Tensor> fresh;  // the leaves made here
  bool outer = false;         // grad mode was on when the transform was called
  bool create_graph = false;

  /// Once f has run: the graph is also kept when f's result depends on a tensor outside the inputs that
  /// requires grad (a weight f closes over: a gradient penalty), so an outer backward reaches it.
  void saw(const Tensor& out) {
    if (!create_graph && outer && out.requires_grad()) create_graph = reaches_outside(out);
  }

 private:
  bool reaches_outside(const Tensor& out) const {
    std::unordered_set<const autograd::Node*> mine, seen;
    for (const auto& x : fresh) mine.insert(autograd::grad_accumulator(x).get());
    std::vector<const autograd::Node*> todo;
    if (out.grad_fn()) todo.push_back(out.grad_fn().get());
    else if (out.requires_grad()) todo.push_back(autograd::grad_accumulator(out).get());
    while (!todo.empty()) {
      const autograd::Node* n = todo.back();
      todo.pop_back();
      if (!n || !seen.insert(n).second) continue;
      if (n->is_accumulator() && !mine.count(n)) return true;
      for (const auto& e : n->inputs()) todo.push_back(e.node.get());
    }
    return false;
  }
};

Prepared prepare(const std::vector<Tensor>& inputs, Options options, std::string_view op) {
  XG_CHECK(!inputs.empty(), "{}: no inputs", op);
  Prepared p;
  p.outer = autograd::is_grad_enabled();
  const bool outer = p.outer;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    XG_CHECK(x.defined(), "{}: input {} is undefined", op, i);
    XG_CHECK(is_floating(x.dtype()), "{}: input {} is {} (shape {}); derivatives need float32 or float64", op, i,
             dtype_name(x.dtype()), shape_str(x.shape()));
    if (outer && x.requires_grad()) {
      p.xs.push_back(x);
      p.create_graph = true;
    } else {
      p.xs.push_back(x.detach().requires_grad_(true));
      p.fresh.push_back(p.xs.back());
    }
  }
  p.create_graph = p.create_graph || options.create_graph;
  return p;
}

Tensor call(const Function& f, const std::vector<Tensor>& xs, std::string_view op) {
  Tensor out = f(xs);
  XG_CHECK(out.defined(), "{}: f returned an undefined tensor", op);
  XG_CHECK(is_floating(out.dtype()), "{}: f returned {} (shape {}); derivatives need a floating-point result", op,
           dtype_name(out.dtype()), shape_str(out.shape()));
  return out;
}

/// What the caller gets: connected to the tape when the graph is kept, else plain values.
Tensor finish(const Tensor& t, bool create_graph) { return create_graph ? t : t.detach(); }

/// The gradients of `outputs` (with cotangents `cotangents`) with respect to xs; zeros where an output does
/// not depend on an input, as torch.func does.
std::vector<Tensor> grads(const std::vector<Tensor>& outputs, const std::vector<Tensor>& xs,
                          const std::vector<Tensor>& cotangents, bool create_graph) {
  std::vector<Tensor> connected_out, connected_cot;
  for (std::size_t i = 0; i < outputs.size(); ++i)
    if (outputs[i].defined() && outputs[i].requires_grad()) {
      connected_out.push_back(outputs[i]);
      if (!cotangents.empty()) connected_cot.push_back(cotangents[i]);
    }
  std::vector<Tensor> g(xs.size());
  if (!connected_out.empty())
    g = autograd::grad(connected_out, xs, connected_cot,
                       GradOptions{.retain_graph = true, .create_graph = create_graph, .allow_unused = true});
  for (std::size_t i = 0; i < xs.size(); ++i)
    g[i] = g[i].defined() ? finish(g[i], create_graph) : zeros(xs[i].shape(), {xs[i].dtype()});
  return g;
}

/// One-hot tensor of `shape` with a one at flat position k.
Tensor one_hot(const Shape& shape, DType dtype, std::int64_t k) {
  Tensor e = zeros({kernel::numel_of(shape)}, {dtype});
  {
    autograd::NoGradGuard ng;
    e.select(0, k).fill_(1.0);
  }
  return e.reshape(shape);
}

/// f linearised at xs: out = f(xs) and J^T u for a dummy cotangent u, recorded so that d/du <J^T u, v> = J v
/// can be taken for any tangent v (the double-vjp construction).
struct Linearized {
  Tensor out, u;
  std::vector<Tensor> jt_u;  // undefined where f does not depend on that input

  Linearized(const Function& f, const std::vector<Tensor>& xs, std::string_view op) {
    out = call(f, xs, op);
    u = zeros(out.shape(), {out.dtype()}).requires_grad_(true);
    if (out.requires_grad())
      jt_u = autograd::grad({out}, xs, {u}, GradOptions{.retain_graph = true, .create_graph = true, .allow_unused = true});
    else
      jt_u.assign(xs.size(), Tensor());
  }

  /// J v, v one tangent per input.
  Tensor jvp(const std::vector<Tensor>& v, bool create_graph) const {
    std::vector<Tensor> outs, tangents;
    for (std::size_t i = 0; i < jt_u.size(); ++i)
      if (jt_u[i].defined() && jt_u[i].requires_grad()) {
        outs.push_back(jt_u[i]);
        tangents.push_back(v[i]);
      }
    return grads(outs, {u}, tangents, create_graph)[0];
  }
};

void check_tangents(const std::vector<Tensor>& v, const std::vector<Tensor>& xs, std::string_view op) {
  XG_CHECK(v.size() == xs.size(), "{}: {} tangents for {} inputs; give one per input", op, v.size(), xs.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    XG_CHECK(v[i].defined() && v[i].shape() == xs[i].shape(), "{}: tangent {} has shape {}, but input {} has {}", op, i,
             v[i].defined() ? shape_str(v[i].shape()) : std::string("undefined"), i, shape_str(xs[i].shape()));
  }
}

Tensor scalar_output(const Function& f, const std::vector<Tensor>& xs, std::string_view op) {
  Tensor out = call(f, xs, op);
  XG_CHECK(out.numel() == 1, "{}: f must return one value, but returned shape {}", op, shape_str(out.shape()));
  return out;
}

/// Rows d outputs[k] / d xs[j] stacked into outputs.shape + xs[j].shape, for every j.
std::vector<Tensor> reverse_jacobian(const Tensor& out, const std::vector<Tensor>& xs, bool create_graph) {
  const std::int64_t m = out.numel();
  std::vector<std::vector<Tensor>> rows(xs.size());
  for (std::int64_t k = 0; k < m; ++k) {
    auto g = grads({out}, xs, {one_hot(out.shape(), out.dtype(), k)}, create_graph);
    for (std::size_t j = 0; j < xs.size(); ++j) rows[j].push_back(g[j]);
  }
  std::vector<Tensor> jac;
  for (std::size_t j = 0; j < xs.size(); ++j) {
    Shape shape = out.shape();
    shape.insert(shape.end(), xs[j].shape().begin(), xs[j].shape().end());
    jac.push_back(m == 0 ? zeros(shape, {xs[j].dtype()}) : stack(rows[j], 0).reshape(shape));
  }
  return jac;
}

}  // namespace

std::pair<Tensor, std::vector<Tensor>> vjp(const Function& f, const std::vector<Tensor>& inputs, const Tensor& v,
                                           Options options) {
  autograd::GradModeGuard on(true);
  Prepared p = prepare(inputs, options, "vjp");
  Tensor out = call(f, p.xs, "vjp");
  p.saw(out);
  XG_CHECK(v.defined() && v.shape() == out.shape(), "vjp: v has shape {}, but f returned shape {}",
           v.defined() ? shape_str(v.shape()) : std::string("undefined"), shape_str(out.shape()));
  auto g = grads({out}, p.xs, {v.to(out.dtype())}, p.create_graph);
  return {finish(out, p.create_graph), std::move(g)};
}

std::pair<Tensor, Tensor> jvp(const Function& f, const std::vector<Tensor>& inputs, const std::vector<Tensor>& v,
                              Options options) {
  autograd::GradModeGuard on(true);
  Prepared p = prepare(inputs, options, "jvp");
  check_tangents(v, p.xs, "jvp");
  Linearized lin(f, p.xs, "jvp");
  p.saw(lin.out);
  std::vector<Tensor> tangents;
  for (std::size_t i = 0; i < v.size(); ++i) tangents.push_back(v[i].to(p.xs[i].dtype()));
  Tensor jv = lin.jvp(tangents, p.create_graph);
  return {finish(lin.out, p.create_graph), jv};
}

std::vector<Tensor> jacobian(const Function& f, const std::vector<Tensor>& inputs, Mode mode, Options options) {
  autograd::GradModeGuard on(true);
  Prepared p = prepare(inputs, options, "jacobian");
  if (mode == Mode::reverse) {
    Tensor out = call(f, p.xs, "jacobian");
    p.saw(out);
    return reverse_jacobian(out, p.xs, p.create_graph);
  }
  // Forward: one jvp per input element, all on one linearisation of f.
  Linearized lin(f, p.xs, "jacobian");
  p.saw(lin.out);
  std::vector<Tensor> jac;
  for (std::size_t j = 0; j < p.xs.size(); ++j) {
    std::vector<Tensor> columns;
    const std::int64_t n = p.xs[j].numel();
    for (std::int64_t k = 0; k < n; ++k) {
      std::vector<Tensor> tangents;
      for (std::size_t i = 0; i < p.xs.size(); ++i)
        tangents.push_back(i == j ? one_hot(p.xs[i].shape(), p.xs[i].dtype(), k) : zeros(p.xs[i].shape(), {p.xs[i].dtype()}));
      columns.push_back(lin.jvp(tangents, p.create_graph).reshape({lin.out.numel()}));
    }
    Shape shape = lin.out.shape();
    shape.insert(shape.end(), p.xs[j].shape().begin(), p.xs[j].shape().end());
    jac.push_back(n == 0 || lin.out.numel() == 0 ? zeros(shape, {p.xs[j].dtype()}) : stack(columns, 1).reshape(shape));
  }
  return jac;
}

Tensor jacobian(const UnaryFunction& f, const Tensor& x, Mode mode, Options options) {
  return jacobian([&](const std::vector<Tensor>& v) { return f(v[0]); }, std::vector<Tensor>{x}, mode, options)[0];
}

std::vector<std::vector<Tensor>> hessian(const Function& f, const std::vector<Tensor>& inputs, Options options) {
  autograd::GradModeGuard on(true);
  Prepared p = prepare(inputs, options, "hessian");
  Tensor out = scalar_output(f, p.xs, "hessian");
  p.saw(out);
  // The gradient, recorded, then one reverse pass per element of it.
  std::vector<Tensor> g = grads({out}, p.xs, {}, true);
  std::vector<std::vector<Tensor>> h;
  for (std::size_t i = 0; i < p.xs.size(); ++i) h.push_back(reverse_jacobian(g[i], p.xs, p.create_graph));
  return h;
}

Tensor hessian(const UnaryFunction& f, const Tensor& x, Options options) {
  return hessian([&](const std::vector<Tensor>& v) { return f(v[0]); }, std::vector<Tensor>{x}, options)[0][0];
}

std::pair<Tensor, std::vector<Tensor>> hvp(const Function& f, const std::vector<Tensor>& inputs,
                                           const std::vector<Tensor>& v, Options options) {
  autograd::GradModeGuard on(true);
  Prepared p = prepare(inputs, options, "hvp");
  check_tangents(v, p.xs, "hvp");
  Tensor out = scalar_output(f, p.xs, "hvp");
  p.saw(out);
  // H v = d/dx <grad f, v>: the gradient recorded, then one more reverse pass.
  std::vector<Tensor> g = grads({out}, p.xs, {}, true);
  std::vector<Tensor> connected, tangents;
  for (std::size_t i = 0; i < g.size(); ++i)
    if (g[i].requires_grad()) {
      connected.push_back(g[i]);
      tangents.push_back(v[i].to(g[i].dtype()));
    }
  return {finish(out, p.create_graph), grads(connected, p.xs, tangents, p.create_graph)};
}

std::function<std::pair<Tensor, std::vector<Tensor>>(const std::vector<Tensor>&)> value_and_grad(
    Function f, std::vector<int> argnums) {
  XG_CHECK(!argnums.empty(), "value_and_grad: argnums is empty; name the inputs to differentiate");
  return [f = std::move(f), argnums = std::move(argnums)](const std::vector<Tensor>& inputs) {
    for (int a : argnums)
      XG_CHECK(a >= 0 && static_cast<std::size_t>(a) < inputs.size(),
               "grad: argnum {} is out of range for {} inputs", a, inputs.size());
    autograd::GradModeGuard on(true);
    std::vector<Tensor> chosen;
    for (int a : argnums) chosen.push_back(inputs[static_cast<std::size_t>(a)]);
    Prepared p = prepare(chosen, {}, "grad");
    std::vector<Tensor> all = inputs;
    for (std::size_t i = 0; i < argnums.size(); ++i) all[static_cast<std::size_t>(argnums[i])] = p.xs[i];
    Tensor out = scalar_output(f, all, "grad");
    p.saw(out);
    auto g = grads({out}, p.xs, {}, p.create_graph);
    return std::make_pair(finish(out, p.create_graph), std::move(g));
  };
}

std::function<std::vector<Tensor>(const std::vector<Tensor>&)> grad(Function f, std::vector<int> argnums) {
  auto vg = value_and_grad(std::move(f), std::move(argnums));
  return [vg](const std::vector<Tensor>& inputs) { return vg(inputs).second; };
}

UnaryFunction grad(UnaryFunction f) {
  auto g = grad([f = std::move(f)](const std::vector<Tensor>& v) { return f(v[0]); }, {0});
  return [g](const Tensor& x) { return g({x})[0]; };
}

}  // namespace xg::func

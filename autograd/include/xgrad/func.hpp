// xgrad::func: functional transforms over functions of several tensors, as torch.func and
// torch.autograd.functional offer them: vjp, jvp, jacobian (reverse and forward), hessian, hvp, and grad /
// value_and_grad returning callables.
//
//   auto rosenbrock = [](const std::vector<xg::Tensor>& v) {
//     xg::Tensor x = v[0].select(0, 0), y = v[0].select(0, 1);
//     return (1.0 - x) * (1.0 - x) + 100.0 * (y - x * x) * (y - x * x);
//   };
//   auto H = xg::func::hessian(rosenbrock, {xg::tensor({1.0, 1.0}, {}, {xg::float64})})[0][0];  // [[802, -400], [-400, 200]]
//   auto d2 = xg::func::grad(xg::func::grad(f));  // second derivative, for a function of one tensor
//
// Every transform differentiates through the tape: f is any composition of differentiable ops, and the
// results are themselves differentiable (they compose, and an outer backward() reaches the inputs) when an
// input requires grad while grad mode is on, or when create_graph is set. jvp is exact, computed by the
// double-vjp construction: J v = d/du <J^T u, v> for a dummy cotangent u (two reverse passes).
#pragma once

#include <functional>
#include <utility>
#include <vector>

#include "xgrad/tensor.hpp"

namespace xg::func {

/// A function of several tensors with one tensor as its result.
using Function = std::function<Tensor(const std::vector<Tensor>&)>;
/// A function of one tensor.
using UnaryFunction = std::function<Tensor(const Tensor&)>;

/// Options shared by the transforms.
struct Options {
  /// Record the transform's own backward, so its results can be differentiated again. On by itself when
  /// an input requires grad and grad mode is on (the transform is then part of an outer computation).
  bool create_graph = false;
};

/// How jacobian builds the matrix: one reverse pass per output element, or one forward (jvp) product per
/// input element. Reverse is cheaper for few outputs, forward for few inputs; both give the same values.
enum class Mode { reverse, forward };

/// (f(inputs), J^T v): the vector-Jacobian product, one tensor per input (zeros where f does not depend on
/// it). v has f's output shape.
std::pair<Tensor, std::vector<Tensor>> vjp(const Function& f, const std::vector<Tensor>& inputs, const Tensor& v,
                                           Options options = {});

/// (f(inputs), J v): the Jacobian-vector product (forward-mode derivative along v), exact. v holds one
/// tangent per input, each of that input's shape.
std::pair<Tensor, Tensor> jvp(const Function& f, const std::vector<Tensor>& inputs, const std::vector<Tensor>& v,
                              Options options = {});

/// d f / d inputs[i] for each input, of shape f.shape + inputs[i].shape.
std::vector<Tensor> jacobian(const Function& f, const std::vector<Tensor>& inputs, Mode mode = Mode::reverse,
                             Options options = {});
/// d f / d x, of shape f.shape + x.shape.
Tensor jacobian(const UnaryFunction& f, const Tensor& x, Mode mode = Mode::reverse, Options options = {});

/// The second derivatives of a function with one value: H[i][j] = d^2 f / d inputs[i] d inputs[j], of shape
/// inputs[i].shape + inputs[j].shape.
std::vector<std::vector<Tensor>> hessian(const Function& f, const std::vector<Tensor>& inputs, Options options = {});
/// d^2 f / dx^2, of shape x.shape + x.shape.
Tensor hessian(const UnaryFunction& f, const Tensor& x, Options options = {});

/// (f(inputs), H v): the Hessian-vector product of a function with one value, without forming H; v holds
/// one tensor per input.
std::pair<Tensor, std::vector<Tensor>> hvp(const Function& f, const std::vector<Tensor>& inputs,
                                           const std::vector<Tensor>& v, Options options = {});

/// grad(f): the function inputs -> d f / d inputs[argnums] of a function with one value, one tensor per
/// argnum. Differentiable again when called inside another transform or on inputs that require grad.
std::function<std::vector<Tensor>(const std::vector<Tensor>&)> grad(Function f, std::vector<int> argnums = {0});
/// grad(f) for a function of one tensor: x -> df/dx; grad(grad(f)) is the second derivative.
UnaryFunction grad(UnaryFunction f);

/// value_and_grad(f): inputs -> (f(inputs), d f / d inputs[argnums]).
std::function<std::pair<Tensor, std::vector<Tensor>>(const std::vector<Tensor>&)> value_and_grad(
    Function f, std::vector<int> argnums = {0});

}  // namespace xg::func

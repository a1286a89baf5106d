// xgrad: numerical gradient checking, the one-line proof of a backward rule.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "xgrad/tensor.hpp"

namespace xg::autograd {

/// Tolerances as in torch.autograd.gradcheck. A failure is reported when |analytic - numeric| exceeds
/// atol + rtol * |numeric| for any element.
struct GradcheckOptions {
  double eps = 1e-6;   // central-difference step
  double atol = 1e-5;
  double rtol = 1e-3;
  std::uint64_t seed = 0;  // for the random cotangent
  bool raise = true;       // throw an Error describing the first mismatch (else return false)
};

/// A function of several tensors with one tensor output.
using TensorFunction = std::function<Tensor(const std::vector<Tensor>&)>;

/// Checks the gradients of f at `inputs` (float64 leaves; those with requires_grad are checked) against
/// central differences, projected on a random cotangent v: analytic d<v, f(x)>/dx vs
/// (<v, f(x + eps e_i)> - <v, f(x - eps e_i)>) / 2 eps. Non-contiguous inputs are perturbed in place
/// through their strides.
///
///   EXPECT(gradcheck([](auto& v) { return xg::tanh(v[0]); }, {xg::randn({3, 4}, {xg::float64, true})}));
bool gradcheck(const TensorFunction& f, const std::vector<Tensor>& inputs, GradcheckOptions options = {});

/// Checks second derivatives: gradcheck of x, v -> <w, d<v, f(x)>/dx> with random v and w, the first
/// derivative computed with create_graph.
bool gradgradcheck(const TensorFunction& f, const std::vector<Tensor>& inputs, GradcheckOptions options = {});

}  // namespace xg::autograd

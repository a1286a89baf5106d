// What autograd's own op files share beyond the public kernel header. Not installed.
#pragma once

#include <span>
#include <string>
#include <utility>

#include "xgrad/kernel.hpp"

namespace xg::kernel {
/// g scattered (added) into zeros of shape xs at index along d: gather's backward, itself differentiable.
Tensor gather_backward(const Tensor& g, const Shape& xs, std::int64_t d, const Tensor& index);
}  // namespace xg::kernel

namespace xg::autograd {
// Anomaly detection (anomaly.cpp), called by the engine when it is on.
/// Index of the first NaN or inf in t, or -1.
std::int64_t first_non_finite(const Tensor& t);
/// "float32 [2, 3] \"name\"".
std::string describe(const Tensor& t);
/// The named parameter fewest ops away from an op's inputs, with that distance.
std::pair<std::string, int> origin_of(std::span<const Tensor> inputs);
/// Throws if an op's output is not finite, saying whether an input already was not.
void check_forward(std::string_view op, std::span<const Tensor> inputs, const Tensor& result, const std::string& origin);
}  // namespace xg::autograd

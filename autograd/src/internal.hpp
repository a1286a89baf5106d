// What autograd's own op files share beyond the public kernel header. Not installed.
#pragma once

#include "xgrad/kernel.hpp"

namespace xg::kernel {
/// g scattered (added) into zeros of shape xs at index along d: gather's backward, itself differentiable.
Tensor gather_backward(const Tensor& g, const Shape& xs, std::int64_t d, const Tensor& index);
}  // namespace xg::kernel

// Gradient clipping.
#pragma once

#include <limits>
#include <vector>

#include "xgrad/tensor.hpp"

namespace xg::optim {

/// Scales all gradients together so their global norm (L2 by default; norm_type = inf for the max) is at
/// most max_norm, and returns the norm before clipping. A non-finite norm (a NaN or inf gradient) throws
/// when error_if_nonfinite; otherwise the gradients are left untouched and the norm is returned, so the
/// caller can skip the step.
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0,
                       bool error_if_nonfinite = false);
/// Clamps every gradient element to [-clip_value, clip_value].
void clip_grad_value_(const std::vector<Tensor>& params, double clip_value);

}  // namespace xg::optim

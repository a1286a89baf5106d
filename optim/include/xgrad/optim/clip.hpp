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
/// The total norm of all gradients taken together (torch.nn.utils.get_total_norm): L2 by default,
/// norm_type = inf for the largest magnitude. Non-finite (a NaN or inf gradient): thrown when
/// error_if_nonfinite, else returned.
double get_total_norm(const std::vector<Tensor>& params, double norm_type = 2.0, bool error_if_nonfinite = false);
/// The factor clip_grad_norm_ scales the gradients by: min(1, max_norm / (total_norm + 1e-6)). Pass it to
/// Optimizer::step(grad_scale) to clip without a pass over the gradients of its own:
///   opt.step(clip_coef(get_total_norm(params), 1.0));   // the same update as clip_grad_norm_ then step
double clip_coef(double total_norm, double max_norm);
/// Clamps every gradient element to [-clip_value, clip_value].
void clip_grad_value_(const std::vector<Tensor>& params, double clip_value);

}  // namespace xg::optim

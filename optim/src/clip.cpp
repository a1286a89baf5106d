#include "xgrad/optim/clip.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "xgrad/kernel.hpp"

namespace xg::optim {
using namespace xg::kernel;

namespace {
/// The total norm and the gradients it was taken over; `who` names the caller in errors.
double total_norm(const std::vector<Tensor>& params, double norm_type, bool error_if_nonfinite, const char* who,
                  std::vector<Tensor>* grads_out) {
  XG_CHECK(norm_type > 0, "{}: norm_type must be positive, got {}", who, norm_type);
  const bool inf_norm = std::isinf(norm_type);
  double total = 0.0;
  std::vector<Tensor> grads;
  for (const auto& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    XG_CHECK(g.is_contiguous(), "{}: gradient of shape {} is not contiguous", who, shape_str(g.shape()));
    grads.push_back(g);
    dispatch_float(g.dtype(), who, [&]<class T>() {
      const T* x = ptr<T>(g);
      const std::int64_t n = g.numel();
      double s = 0.0;
      if (!inf_norm && norm_type == 2.0) {
        // The common case, vectorised: sums of squares in blocks of T, accumulated in double in block
        // order (the same sum whatever the thread count).
        constexpr std::int64_t kBlock = 4096;
        std::vector<double> parts(static_cast<std::size_t>((n + kBlock - 1) / kBlock));
        parallel_for(static_cast<std::int64_t>(parts.size()), kElementwiseGrain / kBlock, [&](std::int64_t b0, std::int64_t b1) {
          for (std::int64_t blk = b0; blk < b1; ++blk) {
            const T* xb = x + blk * kBlock;
            const std::int64_t len = std::min<std::int64_t>(n - blk * kBlock, kBlock);
            parts[static_cast<std::size_t>(blk)] = static_cast<double>(row_dot(xb, xb, len));
          }
        });
        for (double part : parts) s += part;
      } else {
        for (std::int64_t i = 0; i < n; ++i) {
          double a = std::abs(static_cast<double>(x[i]));
          if (inf_norm) {
            s = (a > s || std::isnan(a)) ? a : s;
          } else {
            s += std::pow(a, norm_type);
          }
        }
      }
      total = inf_norm ? ((s > total || std::isnan(s)) ? s : total) : total + s;
    });
  }
  const double norm = inf_norm ? total : std::pow(total, 1.0 / norm_type);
  XG_CHECK(std::isfinite(norm) || !error_if_nonfinite, "{}: the total norm of the gradients is {}: some gradient "
           "holds NaN or inf; do not take this step (a lower learning rate may help)", who, norm);
  if (grads_out) *grads_out = std::move(grads);
  return norm;
}
}  // namespace

double get_total_norm(const std::vector<Tensor>& params, double norm_type, bool error_if_nonfinite) {
  return total_norm(params, norm_type, error_if_nonfinite, "get_total_norm", nullptr);
}

double clip_coef(double total_norm, double max_norm) {
  XG_CHECK(max_norm >= 0, "clip_coef: max_norm must be non-negative, got {}", max_norm);
  XG_CHECK(std::isfinite(total_norm) && total_norm >= 0, "clip_coef: the total norm must be finite and non-negative, got {}",
           total_norm);
  return std::min(1.0, max_norm / (total_norm + 1e-6));
}

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type, bool error_if_nonfinite) {
  XG_CHECK(max_norm >= 0, "clip_grad_norm_: max_norm must be non-negative, got {}", max_norm);
  std::vector<Tensor> grads;
  const double norm = total_norm(params, norm_type, error_if_nonfinite, "clip_grad_norm_", &grads);
  if (!std::isfinite(norm)) return norm;  // gradients left as they are: scaling by a NaN factor would destroy all of them
  const double coef = clip_coef(norm, max_norm);
  if (coef < 1.0) {
    autograd::NoGradGuard ng;
    for (auto& g : grads) g.mul_(coef);
  }
  return norm;
}

void clip_grad_value_(const std::vector<Tensor>& params, double clip_value) {
  XG_CHECK(clip_value >= 0, "clip_grad_value_: clip_value must be non-negative, got {}", clip_value);
  autograd::NoGradGuard ng;
  for (const auto& p : params) {
    Tensor g = p.grad();
    if (g.defined()) g.copy_(clamp(g, -clip_value, clip_value));
  }
}

}  // namespace xg::optim

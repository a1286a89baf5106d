// Anomaly detection: NaN and inf in op outputs and backward gradients, traced to the nearest named
// parameter.
#include <climits>
#include <cmath>

#include "internal.hpp"

namespace xg::autograd {
using namespace xg::kernel;

namespace {
thread_local bool anomaly_enabled = false;
}  // namespace

/// Index of the first NaN or inf in t, or -1.
std::int64_t first_non_finite(const Tensor& t) {
  if (!t.defined() || !is_floating(t.dtype())) return -1;
  std::int64_t i = 0;
  for (double v : t.to_vector<double>()) {
    if (!std::isfinite(v)) return i;
    ++i;
  }
  return -1;
}

std::string describe(const Tensor& t) {
  return fmt::format("{} {}{}", dtype_name(t.dtype()), shape_str(t.shape()), t.name().empty() ? "" : " \"" + t.name() + "\"");
}

/// The named parameter fewest ops away from an op's inputs (a weight used through a transpose beats the
/// bias three layers back that the activations came through), with that distance.
std::pair<std::string, int> origin_of(std::span<const Tensor> inputs) {
  std::pair<std::string, int> best{{}, INT_MAX};
  for (const auto& in : inputs) {
    if (!in.defined()) continue;
    if (!in.name().empty()) return {in.name(), 1};
    const auto& n = in.grad_fn();
    if (n && !n->origin().empty() && n->origin_distance() + 1 < best.second) best = {n->origin(), n->origin_distance() + 1};
  }
  return best;
}

/// Anomaly detection at record time: the op's output must be finite; if an input already was not, say so.
void check_forward(std::string_view op, std::span<const Tensor> inputs, const Tensor& result, const std::string& origin) {
  const std::int64_t at = first_non_finite(result);
  if (at < 0) return;
  std::string cause = "its inputs are finite";
  for (std::size_t i = 0; i < inputs.size(); ++i)
    if (first_non_finite(inputs[i]) >= 0) {
      cause = fmt::format("input {} ({}) was already non-finite", i, describe(inputs[i]));
      break;
    }
  const double v = result.to_vector<double>()[static_cast<std::size_t>(at)];
  fail("anomaly: {} produced {} at element {} of its output {} (near {}); {}", op,
       std::isnan(v) ? "nan" : v > 0 ? "inf" : "-inf", at, describe(result), origin.empty() ? "unnamed tensors" : origin,
       cause);
}
DetectAnomalyGuard::DetectAnomalyGuard() : prev_(anomaly_enabled) { anomaly_enabled = true; }
DetectAnomalyGuard::~DetectAnomalyGuard() { anomaly_enabled = prev_; }
bool is_anomaly_enabled() { return anomaly_enabled; }

}  // namespace xg::autograd

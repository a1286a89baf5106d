// Dropout.
#include "xgrad/nn/layers.hpp"

#include <fmt/format.h>

#include "xgrad/check.hpp"

namespace xg::nn {

Dropout::Dropout(double p, Generator* gen) : Module("Dropout"), p_(p), gen_(gen) {
  if (p < 0.0 || p > 1.0) fail("Dropout: probability must be in [0, 1], got {}", p);
}
Tensor Dropout::forward(const Tensor& x) { return functional::dropout(x, p_, is_training(), gen_); }
std::string Dropout::extra_repr() const { return fmt::format("p={}", p_); }

}  // namespace xg::nn

// dropout: inverted dropout, written with other ops.
#include "xgrad/nn/functional.hpp"

#include "xgrad/check.hpp"
#include "xgrad/ops.hpp"

namespace xg::nn::functional {

Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  XG_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability must be in [0, 1], got {}", p);
  if (!training || p == 0.0) return x;
  if (p == 1.0) return x * 0.0;
  // The kept elements are scaled by 1/(1-p) so the expected value is unchanged (inverted dropout).
  Tensor keep = ge(rand(x.shape(), {x.dtype()}, gen), p) * (1.0 / (1.0 - p));
  return x * keep;
}

}  // namespace xg::nn::functional

#include "xgrad/nn/functional.hpp"

#include <fmt/format.h>

namespace xg::nn::functional {

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (weight.dim() != 2 || x.dim() < 1 || x.size(-1) != weight.size(1))
    throw Error(fmt::format("linear: input {} does not match weight {} (expected [..., {}])", shape_str(x.shape()),
                            shape_str(weight.shape()), weight.dim() == 2 ? weight.size(1) : -1));
  Tensor y = matmul(x, weight.t());
  return bias.defined() ? y + bias : y;
}

Tensor log_softmax(const Tensor& x, std::int64_t dim) { return x - logsumexp(x, {dim}, true); }

Tensor softmax(const Tensor& x, std::int64_t dim) { return exp(log_softmax(x, dim)); }

Tensor cross_entropy(const Tensor& logits, const Tensor& targets) {
  if (logits.dim() != 2 || targets.dim() != 1 || targets.size(0) != logits.size(0))
    throw Error(fmt::format("cross_entropy: expected logits [N, C] and targets [N], got {} and {}",
                            shape_str(logits.shape()), shape_str(targets.shape())));
  Tensor picked = gather(log_softmax(logits, 1), 1, unsqueeze(targets, 1));
  return -mean(picked);
}

}  // namespace xg::nn::functional

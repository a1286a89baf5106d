// xgrad::nn::functional: the stateless ops that layers are thin shells over.
#pragma once

#include <cstdint>

#include "xgrad/ops.hpp"
#include "xgrad/tensor.hpp"

namespace xg::nn::functional {

/// y = x W^T + b, with W of shape [out, in] as in PyTorch; bias may be undefined.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = {});
/// softmax along dim, computed as exp(x - logsumexp(x)) so large logits do not overflow.
Tensor softmax(const Tensor& x, std::int64_t dim = -1);
Tensor log_softmax(const Tensor& x, std::int64_t dim = -1);
/// Mean cross-entropy of logits [N, C] against int64 class targets [N].
Tensor cross_entropy(const Tensor& logits, const Tensor& targets);

}  // namespace xg::nn::functional

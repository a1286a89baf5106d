// The simple functional ops, written with other ops: linear, dropout, embedding. The fused ones have
// their own files (softmax, layer_norm, cross_entropy, attention).
#include "xgrad/nn/functional.hpp"

#include "xgrad/kernel.hpp"

namespace xg::nn::functional {
using namespace xg::kernel;

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  XG_CHECK(weight.dim() == 2 && x.dim() >= 1 && x.shape().back() == weight.shape()[1],
           "linear: input {} does not match weight {} (expected input [..., {}])", shape_str(x.shape()),
           shape_str(weight.shape()), weight.dim() == 2 ? weight.shape()[1] : -1);
  XG_CHECK(!bias.defined() || bias.shape() == Shape{weight.shape()[0]}, "linear: bias {} does not match weight {}",
           shape_str(bias.shape()), shape_str(weight.shape()));
  Tensor y = matmul(x, weight.t());
  return bias.defined() ? y + bias : y;
}

// ---- dropout, embedding -------------------------------------------------------------------------------

Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  XG_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability must be in [0, 1], got {}", p);
  if (!training || p == 0.0) return x;
  if (p == 1.0) return x * 0.0;
  // The kept elements are scaled by 1/(1-p) so the expected value is unchanged (inverted dropout).
  Tensor keep = ge(rand(x.shape(), {x.dtype()}, gen), p) * (1.0 / (1.0 - p));
  return x * keep;
}

Tensor embedding(const Tensor& ids, const Tensor& weight) {
  XG_CHECK(ids.dtype() == DType::int64, "embedding: ids must be int64, got {} {}", dtype_name(ids.dtype()),
           shape_str(ids.shape()));
  XG_CHECK(weight.dim() == 2, "embedding: weight must be [num_embeddings, dim], got {}", shape_str(weight.shape()));
  const std::int64_t v = weight.shape()[0];
  for (auto id : ids.to_vector<std::int64_t>())
    XG_CHECK(id >= 0 && id < v, "embedding: token id {} is out of range for {} embeddings (weight {})", id, v,
             shape_str(weight.shape()));
  Shape shape = ids.shape();
  shape.push_back(weight.shape()[1]);
  return reshape(index_select(weight, 0, reshape(ids, {-1})), shape);
}

}  // namespace xg::nn::functional

// embedding: rows of the table picked by index_select, whose backward adds rows in place.
#include "xgrad/nn/functional.hpp"

#include "xgrad/check.hpp"
#include "xgrad/ops.hpp"

namespace xg::nn::functional {

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

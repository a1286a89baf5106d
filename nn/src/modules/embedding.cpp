// Embedding.
#include "xgrad/nn/layers.hpp"

#include <fmt/format.h>

#include "xgrad/check.hpp"
#include "xgrad/nn/init.hpp"

namespace xg::nn {

Embedding::Embedding(const EmbeddingOptions& o, Generator* gen) : Module("Embedding"), options_(o) {
  if (o.num_ <= 0 || o.dim_ <= 0)
    fail("Embedding: sizes must be positive, got {} x {}", o.num_, o.dim_);
  weight = register_parameter("weight", empty({o.num_, o.dim_}, {o.dtype_}));
  init::normal_(weight, 0.0, 1.0, gen);
}
Tensor Embedding::forward(const Tensor& ids) { return functional::embedding(ids, weight); }
std::string Embedding::extra_repr() const { return fmt::format("{}, {}", options_.num_, options_.dim_); }

}  // namespace xg::nn

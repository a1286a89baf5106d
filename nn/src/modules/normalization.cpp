// LayerNorm.
#include "xgrad/nn/layers.hpp"

#include <fmt/format.h>

#include "xgrad/check.hpp"

namespace xg::nn {

LayerNorm::LayerNorm(const LayerNormOptions& o) : Module("LayerNorm"), options_(o) {
  if (o.size_ <= 0) fail("LayerNorm: normalized size must be positive, got {}", o.size_);
  if (o.elementwise_affine_) {
    weight = register_parameter("weight", ones({o.size_}, {o.dtype_}));
    if (o.bias_) bias = register_parameter("bias", zeros({o.size_}, {o.dtype_}));
  }
}
void LayerNorm::check_input(const Tensor& x) const {
  if (x.dim() == 0 || x.shape().back() != options_.size_)
    fail("LayerNorm: input {} does not end in the normalized size {}", shape_str(x.shape()), options_.size_);
}
Tensor LayerNorm::forward(const Tensor& x) {
  check_input(x);
  return functional::layer_norm(x, weight, bias, options_.eps_);
}
std::pair<Tensor, Tensor> LayerNorm::forward(const Tensor& x, const Tensor& residual) {
  check_input(x);
  return functional::add_layer_norm(x, residual, weight, bias, options_.eps_);
}
std::string LayerNorm::extra_repr() const {
  return fmt::format("({},), eps={}, elementwise_affine={}, bias={}", options_.size_, options_.eps_,
                     options_.elementwise_affine_, options_.elementwise_affine_ && options_.bias_);
}

}  // namespace xg::nn

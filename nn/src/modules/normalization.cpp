// LayerNorm, RMSNorm, GroupNorm, BatchNorm1d / BatchNorm2d.
#include "xgrad/nn/layers.hpp"

#include <fmt/format.h>

#include "xgrad/autograd.hpp"
#include "xgrad/check.hpp"

#include <algorithm>
#include <cmath>

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


RMSNorm::RMSNorm(const RMSNormOptions& o) : Module("RMSNorm"), options_(o) {
  if (o.size_ <= 0) fail("RMSNorm: normalized size must be positive, got {}", o.size_);
  if (o.eps_ && !(*o.eps_ >= 0 && std::isfinite(*o.eps_))) fail("RMSNorm: eps must be finite and >= 0, got {}", *o.eps_);
  if (o.elementwise_affine_) weight = register_parameter("weight", ones({o.size_}, {o.dtype_}));
}
Tensor RMSNorm::forward(const Tensor& x) {
  if (x.dim() == 0 || x.shape().back() != options_.size_)
    fail("RMSNorm: input {} does not end in the normalized size {}", shape_str(x.shape()), options_.size_);
  return functional::rms_norm(x, weight, options_.eps_);
}
std::string RMSNorm::extra_repr() const {
  return fmt::format("({},), eps={}, elementwise_affine={}", options_.size_,
                     options_.eps_ ? fmt::format("{}", *options_.eps_) : std::string("None"), options_.elementwise_affine_);
}

GroupNorm::GroupNorm(const GroupNormOptions& o) : Module("GroupNorm"), options_(o) {
  if (o.groups_ <= 0 || o.channels_ <= 0 || o.channels_ % o.groups_ != 0)
    fail("GroupNorm: {} channels cannot be split into {} groups", o.channels_, o.groups_);
  if (o.affine_) {
    weight = register_parameter("weight", ones({o.channels_}, {o.dtype_}));
    bias = register_parameter("bias", zeros({o.channels_}, {o.dtype_}));
  }
}
Tensor GroupNorm::forward(const Tensor& x) {
  if (x.dim() < 2 || x.size(1) != options_.channels_)
    fail("GroupNorm: expected input [N, {}, *], got {}", options_.channels_, shape_str(x.shape()));
  return functional::group_norm(x, options_.groups_, weight, bias, options_.eps_);
}
std::string GroupNorm::extra_repr() const {
  return fmt::format("{}, {}, eps={}, affine={}", options_.groups_, options_.channels_, options_.eps_, options_.affine_);
}

BatchNorm::BatchNorm(std::string name, const BatchNormOptions& o, std::vector<std::int64_t> input_dims)
    : Module(std::move(name)), options_(o), input_dims_(std::move(input_dims)) {
  if (o.features_ <= 0) fail("{}: num_features must be positive, got {}", type_name(), o.features_);
  if (!(o.eps_ >= 0 && std::isfinite(o.eps_))) fail("{}: eps must be finite and >= 0, got {}", type_name(), o.eps_);
  if (o.momentum_ && !(*o.momentum_ >= 0 && *o.momentum_ <= 1))
    fail("{}: momentum must be in [0, 1], got {}", type_name(), *o.momentum_);
  if (o.affine_) {
    weight = register_parameter("weight", ones({o.features_}, {o.dtype_}));
    bias = register_parameter("bias", zeros({o.features_}, {o.dtype_}));
  }
  if (o.track_running_stats_) {
    running_mean = register_buffer("running_mean", zeros({o.features_}, {o.dtype_}));
    running_var = register_buffer("running_var", ones({o.features_}, {o.dtype_}));
    num_batches_tracked = register_buffer("num_batches_tracked", zeros({}, {DType::int64}));
  }
}

Tensor BatchNorm::forward(const Tensor& x) {
  if (std::find(input_dims_.begin(), input_dims_.end(), x.dim()) == input_dims_.end() || x.size(1) != options_.features_)
    fail("{}: expected input [N, {}{}], got {}", type_name(), options_.features_,
         input_dims_.back() == 4 ? ", H, W" : "] or [N, " + std::to_string(options_.features_) + ", L", shape_str(x.shape()));
  double momentum = options_.momentum_.value_or(0.0);
  const bool update = is_training() && options_.track_running_stats_;
  if (update) {
    autograd::NoGradGuard ng;
    num_batches_tracked.add_(1.0);
    // momentum = None: the cumulative average over every batch so far.
    if (!options_.momentum_) momentum = 1.0 / static_cast<double>(num_batches_tracked.item());
  }
  functional::BatchNormOptions fo;
  fo.running_mean = running_mean;
  fo.running_var = running_var;
  fo.weight = weight;
  fo.bias = bias;
  fo.training = is_training() || !options_.track_running_stats_;
  fo.momentum = momentum;
  fo.eps = options_.eps_;
  return functional::batch_norm(x, fo);
}

std::string BatchNorm::extra_repr() const {
  return fmt::format("{}, eps={}, momentum={}, affine={}, track_running_stats={}", options_.features_, options_.eps_,
                     options_.momentum_ ? fmt::format("{}", *options_.momentum_) : std::string("None"), options_.affine_,
                     options_.track_running_stats_);
}

}  // namespace xg::nn

// xgrad::optim::RMSprop.
#pragma once

#include "xgrad/optim/optimizer.hpp"

namespace xg::optim {

/// torch.optim.RMSprop's settings (lr and weight_decay are the groups' defaults).
struct RMSpropOptions {
  double lr = 1e-2;
  double alpha = 0.99;  // smoothing of the squared-gradient average
  double eps = 1e-8;
  double weight_decay = 0.0;
  double momentum = 0.0;
  bool centered = false;  // divide by an estimate of the gradient's variance instead of its second moment
};

/// RMSprop with torch.optim.RMSprop's algorithm: v = alpha v + (1 - alpha) g^2 (centered: minus the squared
/// running mean of g), p -= lr g / (sqrt(v) + eps), with optional momentum. State "square_avg", and
/// "momentum_buffer" and "grad_avg" when used, as PyTorch names them.
class RMSprop : public Optimizer {
 public:
  RMSprop(std::vector<ParamGroup> groups, RMSpropOptions options = {});
  RMSprop(const NamedTensors& params, RMSpropOptions options = {}) : RMSprop(std::vector<ParamGroup>{{params}}, options) {}
  RMSprop(const std::vector<Tensor>& params, RMSpropOptions options = {}) : RMSprop(name_params(params), options) {}
  void step() override { step(1.0); }
  void step(double grad_scale) override;

 protected:
  std::optional<std::vector<std::string>> state_buffers() const override;

 private:
  RMSpropOptions options_;
};

}  // namespace xg::optim

// xgrad::optim::SGD.
#pragma once

#include "xgrad/optim/optimizer.hpp"

namespace xg::optim {

/// torch.optim.SGD's settings (lr and weight_decay are the groups' defaults).
struct SGDOptions {
  double lr = 1e-2;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

/// Stochastic gradient descent with torch.optim.SGD's algorithm: g += wd p; b = mu b + (1 - dampening) g
/// (b = g on the first step); g = nesterov ? g + mu b : b; p -= lr g. One fused pass per parameter.
class SGD : public Optimizer {
 public:
  SGD(std::vector<ParamGroup> groups, SGDOptions options = {});
  SGD(const NamedTensors& params, SGDOptions options = {}) : SGD(std::vector<ParamGroup>{{params}}, options) {}
  SGD(const std::vector<Tensor>& params, SGDOptions options = {}) : SGD(name_params(params), options) {}
  void step() override { step(1.0); }
  void step(double grad_scale) override;

 protected:
  std::optional<std::vector<std::string>> state_buffers() const override;

 private:
  SGDOptions options_;
};

}  // namespace xg::optim

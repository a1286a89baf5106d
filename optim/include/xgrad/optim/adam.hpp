// xgrad::optim::Adam and AdamW.
#pragma once

#include <utility>

#include "xgrad/optim/optimizer.hpp"

namespace xg::optim {

/// torch.optim.Adam / AdamW settings (lr and weight_decay are the groups' defaults).
struct AdamOptions {
  double lr = 1e-3;
  std::pair<double, double> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool amsgrad = false;
};
/// AdamW's default weight decay is 0.01, as in PyTorch.
struct AdamWOptions {
  double lr = 1e-3;
  std::pair<double, double> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 1e-2;
  bool amsgrad = false;
};

/// Adam with L2 weight decay added to the gradient, bias correction and optional AMSGrad, following
/// torch.optim.Adam's documented algorithm. One fused pass per parameter, no allocation once warm.
class Adam : public Optimizer {
 public:
  Adam(std::vector<ParamGroup> groups, AdamOptions options = {});
  Adam(const NamedTensors& params, AdamOptions options = {}) : Adam(std::vector<ParamGroup>{{params}}, options) {}
  Adam(const std::vector<Tensor>& params, AdamOptions options = {}) : Adam(name_params(params), options) {}
  void step() override { step(1.0); }
  void step(double grad_scale) override;

 protected:
  Adam(std::string name, std::vector<ParamGroup> groups, AdamOptions options, bool decoupled);
  std::optional<std::vector<std::string>> state_buffers() const override;

 private:
  AdamOptions options_;
  bool decoupled_;
};

/// Adam with decoupled weight decay (p -= lr wd p before the Adam update), as torch.optim.AdamW.
class AdamW : public Adam {
 public:
  AdamW(std::vector<ParamGroup> groups, AdamWOptions options = {});
  AdamW(const NamedTensors& params, AdamWOptions options = {}) : AdamW(std::vector<ParamGroup>{{params}}, options) {}
  AdamW(const std::vector<Tensor>& params, AdamWOptions options = {}) : AdamW(name_params(params), options) {}
};

}  // namespace xg::optim

// xgrad::optim::Adagrad.
#pragma once

#include "xgrad/optim/optimizer.hpp"

namespace xg::optim {

/// torch.optim.Adagrad's settings (lr and weight_decay are the groups' defaults).
struct AdagradOptions {
  double lr = 1e-2;
  double lr_decay = 0.0;  // step t uses lr / (1 + (t - 1) lr_decay)
  double weight_decay = 0.0;
  double initial_accumulator_value = 0.0;
  double eps = 1e-10;
};

/// Adagrad with torch.optim.Adagrad's algorithm: s += g^2, p -= lr_t g / (sqrt(s) + eps). State "sum".
class Adagrad : public Optimizer {
 public:
  Adagrad(std::vector<ParamGroup> groups, AdagradOptions options = {});
  Adagrad(const NamedTensors& params, AdagradOptions options = {}) : Adagrad(std::vector<ParamGroup>{{params}}, options) {}
  Adagrad(const std::vector<Tensor>& params, AdagradOptions options = {}) : Adagrad(name_params(params), options) {}
  void step() override { step(1.0); }
  void step(double grad_scale) override;

 protected:
  std::optional<std::vector<std::string>> state_buffers() const override;

 private:
  AdagradOptions options_;
};

}  // namespace xg::optim

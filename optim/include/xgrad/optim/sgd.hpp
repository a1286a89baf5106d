// xgrad::optim::SGD.
#pragma once

#include <vector>

#include "xgrad/tensor.hpp"

namespace xg::optim {

/// torch.optim.SGD's settings.
struct SGDOptions {
  double lr = 1e-2;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

/// Stochastic gradient descent with optional momentum, dampening, Nesterov and L2 weight decay, following
/// torch.optim.SGD's algorithm: g += wd p; b = mu b + (1 - dampening) g; g = nesterov ? g + mu b : b; p -= lr g.
class SGD {
 public:
  SGD(std::vector<Tensor> params, SGDOptions options);
  /// One update of every parameter that has a gradient.
  void step();
  /// Drops the gradients (set_to_none, as PyTorch does by default).
  void zero_grad();
  SGDOptions& options() { return options_; }

 private:
  std::vector<Tensor> params_;
  std::vector<Tensor> momentum_;
  SGDOptions options_;
};

}  // namespace xg::optim

#include "xgrad/optim/sgd.hpp"

#include <fmt/format.h>

#include "xgrad/autograd.hpp"
#include "xgrad/ops.hpp"

namespace xg::optim {

SGD::SGD(std::vector<Tensor> params, SGDOptions o) : params_(std::move(params)), momentum_(params_.size()), options_(o) {
  if (o.lr < 0) throw Error(fmt::format("SGD: invalid learning rate {}", o.lr));
  if (o.momentum < 0) throw Error(fmt::format("SGD: invalid momentum {}", o.momentum));
  if (o.nesterov && (o.momentum <= 0 || o.dampening != 0))
    throw Error("SGD: nesterov momentum requires a momentum > 0 and zero dampening");
  for (std::size_t i = 0; i < params_.size(); ++i)
    if (!params_[i].defined() || !params_[i].is_leaf() || !params_[i].requires_grad())
      throw Error(fmt::format("SGD: parameter {} is not a leaf tensor that requires grad", i));
}

void SGD::step() {
  autograd::NoGradGuard ng;
  const auto& o = options_;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (o.weight_decay != 0) g = g + p * o.weight_decay;
    if (o.momentum != 0) {
      Tensor& buf = momentum_[i];
      if (!buf.defined()) {
        buf = g.clone();
      } else {
        buf.mul_(o.momentum).add_(g, 1.0 - o.dampening);
      }
      g = o.nesterov ? g + buf * o.momentum : buf;
    }
    p.add_(g, -o.lr);
  }
}

void SGD::zero_grad() {
  for (auto& p : params_) p.set_grad(Tensor());
}

}  // namespace xg::optim

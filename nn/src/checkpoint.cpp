#include "xgrad/nn/checkpoint.hpp"

#include "xgrad/autograd.hpp"
#include "xgrad/check.hpp"

namespace xg::nn {

Tensor checkpoint(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& inputs) {
  if (!autograd::needs_grad(inputs)) return f(inputs);  // nothing to differentiate through the inputs
  const std::vector<std::uint64_t> rng = default_generator().state();
  Tensor out;
  {
    autograd::NoGradGuard ng;
    out = f(inputs);
  }
  XG_CHECK(out.defined() && is_floating(out.dtype()), "checkpoint: the block must return a floating-point tensor");
  std::vector<autograd::Saved> saved(inputs.begin(), inputs.end());
  std::vector<bool> wants;
  for (const auto& in : inputs) wants.push_back(in.defined() && in.requires_grad());
  return autograd::record("checkpoint", inputs, out, [f, saved, wants, rng](const Tensor& g) {
    XG_CHECK(!autograd::is_grad_enabled(),
             "checkpoint: higher-order gradients (create_graph) through a checkpointed block are not supported");
    XG_CHECK(!autograd::is_computing_grad(),
             "checkpoint: autograd::grad cannot go through a checkpointed block (its backward accumulates the block's "
             "parameters' .grad); use backward()");
    // The block again, recorded this time, on fresh leaves standing for its inputs.
    std::vector<Tensor> xs;
    for (std::size_t i = 0; i < saved.size(); ++i) {
      Tensor x = saved[i].get().defined() ? saved[i].get().detach() : Tensor();
      if (wants[i]) x.requires_grad_();
      xs.push_back(x);
    }
    const std::vector<std::uint64_t> now = default_generator().state();
    default_generator().set_state(rng);
    Tensor y;
    try {
      autograd::GradModeGuard on(true);
      y = f(xs);
    } catch (...) {
      default_generator().set_state(now);
      throw;
    }
    default_generator().set_state(now);
    // Parameters used inside the block get their gradients from this backward; the inputs' come back out.
    if (y.requires_grad()) autograd::backward({y}, {g});
    std::vector<Tensor> grads;
    for (std::size_t i = 0; i < xs.size(); ++i) grads.push_back(wants[i] ? xs[i].grad() : Tensor());
    return grads;
  });
}

}  // namespace xg::nn

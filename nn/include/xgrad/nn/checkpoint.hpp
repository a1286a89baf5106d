// xgrad: activation checkpointing, as torch.utils.checkpoint.
#pragma once

#include <functional>
#include <vector>

#include "xgrad/tensor.hpp"

namespace xg::nn {

/// A block of computation whose activations are not kept: the forward runs without recording, and backward
/// runs `f` again (with the random generator as it was, so dropout repeats) to get them, then
/// backpropagates through the recomputed block. Gradients equal those without checkpointing, bit for bit,
/// for parameters used only inside the block; memory drops to the block's inputs and output, for one more
/// forward of the block in backward.
///
///   x = xg::nn::checkpoint([&](const auto& in) { return block->forward(in[0]); }, {x});
///
/// At least one input must require grad (else `f` simply runs as usual); `f` must be deterministic given
/// its inputs and the default generator, and every tensor it reads that needs a gradient, other than
/// parameters (leaves), must be passed as an input. Backward through it runs with backward(): autograd::grad
/// and higher-order gradients (create_graph) are refused.
Tensor checkpoint(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& inputs);

}  // namespace xg::nn

// xgrad::distributed::ZeroRedundancyOptimizer: optimizer state sharded over the ranks (ZeRO stage 1).
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "xgrad/distributed/communicator.hpp"
#include "xgrad/optim/optimizer.hpp"

namespace xg::distributed {

/// Makes the optimizer that updates one rank's shard, e.g.
///   [](std::vector<xg::optim::ParamGroup> g) { return std::make_unique<xg::optim::AdamW>(std::move(g), opts); }
using OptimizerFactory = std::function<std::unique_ptr<optim::Optimizer>(std::vector<optim::ParamGroup>)>;

/// ZeRO stage 1, as in DeepSpeed and llm.c: the parameters, laid end to end, are cut into one equal
/// contiguous shard per rank. Each rank keeps optimizer state (AdamW's moments) for its shard only and
/// updates only its shard; then the updated parameters are all-gathered, so every rank holds the whole
/// model again. Gradients must already be averaged over the ranks (DistributedDataParallel does that).
/// The update equals the wrapped optimizer's on the whole model. state_dict() gathers the state under
/// the wrapped optimizer's names ("<param>.exp_avg", ...), so a checkpoint loads whatever the number of
/// ranks, and into the plain optimizer too. state_dict, load_state_dict and step are collectives.
class ZeroRedundancyOptimizer : public optim::Optimizer {
 public:
  ZeroRedundancyOptimizer(std::vector<optim::ParamGroup> groups, std::shared_ptr<Communicator> comm,
                          const OptimizerFactory& make);
  ~ZeroRedundancyOptimizer() override;

  void step() override { step(1.0); }
  /// The wrapped optimizer's step(grad_scale) on this rank's shard.
  void step(double grad_scale) override;
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

  /// Elements of the parameters this rank updates (and keeps state for).
  std::int64_t shard_numel() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace xg::distributed

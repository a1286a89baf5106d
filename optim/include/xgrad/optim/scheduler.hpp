// Learning-rate schedules. Like PyTorch's: the constructor sets the step-0 learning rate, and each
// step() advances one step and sets the next.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "xgrad/optim/optimizer.hpp"

namespace xg::optim {

class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  /// Advances one step and sets every group's learning rate.
  void step();
  std::int64_t last_step() const { return step_; }
  /// The learning rate the schedule gives a group with base learning rate `base` at `step`.
  virtual double lr_at(std::int64_t step, double base) const = 0;
  /// {"step": n} as a 0-d tensor, for checkpoints.
  StateDict state_dict() const;
  void load_state_dict(const StateDict& state);

 protected:
  explicit LRScheduler(Optimizer& opt);
  void apply();

 private:
  Optimizer& opt_;
  std::vector<double> base_;
  std::int64_t step_ = 0;
};

/// The base learning rate throughout.
class ConstantLR : public LRScheduler {
 public:
  explicit ConstantLR(Optimizer& opt) : LRScheduler(opt) { apply(); }
  double lr_at(std::int64_t, double base) const override { return base; }
};

/// base * gamma^(step / step_size).
class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& opt, std::int64_t step_size, double gamma = 0.1);
  double lr_at(std::int64_t step, double base) const override;

 private:
  std::int64_t step_size_;
  double gamma_;
};

/// Linear warmup over `warmup` steps, base * (step + 1) / (warmup + 1), then the base rate.
class LinearWarmupLR : public LRScheduler {
 public:
  LinearWarmupLR(Optimizer& opt, std::int64_t warmup);
  double lr_at(std::int64_t step, double base) const override;

 private:
  std::int64_t warmup_;
};

/// nanoGPT's schedule: linear warmup for `warmup` steps, cosine decay to min_lr at decay_steps, then min_lr.
class CosineWarmupLR : public LRScheduler {
 public:
  CosineWarmupLR(Optimizer& opt, std::int64_t warmup, std::int64_t decay_steps, double min_lr);
  double lr_at(std::int64_t step, double base) const override;

 private:
  std::int64_t warmup_, decay_;
  double min_lr_;
};

/// Options for OneCycleLR, as torch.optim.lr_scheduler.OneCycleLR names them.
struct OneCycleOptions {
  double pct_start = 0.3;          // the share of the steps spent rising to max_lr
  bool cos_anneal = true;          // cosine annealing between the phases' ends (false: linear)
  double div_factor = 25.0;        // the first lr is max_lr / div_factor
  double final_div_factor = 1e4;   // the last lr is the first / final_div_factor
  bool three_phase = false;        // rise, fall back to the first lr, then anneal to the last
};

/// The one-cycle policy (Smith and Topin, as torch's OneCycleLR with cycle_momentum=False): every group's
/// learning rate rises from max_lr / div_factor to max_lr over pct_start of total_steps, then anneals to
/// the first lr / final_div_factor at the last step. Stepping past total_steps is an error, as in PyTorch.
class OneCycleLR : public LRScheduler {
 public:
  OneCycleLR(Optimizer& opt, double max_lr, std::int64_t total_steps, OneCycleOptions options = {});
  double lr_at(std::int64_t step, double base) const override;

 private:
  double max_lr_;
  std::int64_t total_;
  OneCycleOptions o_;
};

/// base * factor(step).
class LambdaLR : public LRScheduler {
 public:
  LambdaLR(Optimizer& opt, std::function<double(std::int64_t)> factor);
  double lr_at(std::int64_t step, double base) const override { return base * factor_(step); }

 private:
  std::function<double(std::int64_t)> factor_;
};

}  // namespace xg::optim

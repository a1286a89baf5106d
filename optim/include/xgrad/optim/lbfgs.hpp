// xgrad::optim::LBFGS.
#pragma once

#include <deque>
#include <functional>

#include "xgrad/optim/optimizer.hpp"

namespace xg::optim {

/// torch.optim.LBFGS's settings.
struct LBFGSOptions {
  double lr = 1.0;
  std::int64_t max_iter = 20;          // iterations per step()
  std::int64_t max_eval = 0;           // function evaluations per step(); 0: max_iter * 5 / 4
  double tolerance_grad = 1e-7;        // stop when every |gradient| is at most this
  double tolerance_change = 1e-9;      // stop when the loss or the step changes less than this
  std::int64_t history_size = 100;     // curvature pairs kept
  bool strong_wolfe = false;           // line search with the strong Wolfe conditions (else a fixed step lr)
};

/// L-BFGS with torch.optim.LBFGS's algorithm, its strong-Wolfe line search included: the optimizer that
/// physics-informed and other smooth full-batch problems finish with. One parameter group. step(closure)
/// calls closure() (which zeroes the gradients, computes the loss, runs backward and returns the loss) as
/// often as the iterations and line search need, and returns the first loss. The search runs in float64
/// whatever the parameters' dtype. Its state (directions, curvature pairs, counters) is saved and resumed
/// with state_dict / load_state_dict.
class LBFGS : public Optimizer {
 public:
  LBFGS(const NamedTensors& params, LBFGSOptions options = {});
  LBFGS(const std::vector<Tensor>& params, LBFGSOptions options = {}) : LBFGS(name_params(params), options) {}
  /// Runs up to max_iter iterations; returns the loss closure() gave first.
  double step(const std::function<double()>& closure);
  /// Without a closure L-BFGS cannot re-evaluate the loss: errors that say so.
  void step() override;
  void step(double grad_scale) override;
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

 private:
  std::vector<double> flat_grad() const;
  void add_to_params(double step, const std::vector<double>& direction);
  std::vector<double> flat_params() const;
  void set_params(const std::vector<double>& values);
  std::pair<double, std::vector<double>> evaluate_at(const std::function<double()>& closure,
                                                     const std::vector<double>& x, double t,
                                                     const std::vector<double>& d);

  LBFGSOptions options_;
  std::int64_t n_iter_ = 0, func_evals_ = 0;
  double t_ = 0, h_diag_ = 1, prev_loss_ = 0;
  std::vector<double> d_, prev_flat_grad_;
  std::deque<std::vector<double>> old_dirs_, old_stps_;
  std::deque<double> ro_;
};

}  // namespace xg::optim

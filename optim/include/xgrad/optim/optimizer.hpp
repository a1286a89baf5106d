// xgrad::optim: the Optimizer base, over parameter groups, with state kept by parameter name.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "xgrad/serialize.hpp"
#include "xgrad/tensor.hpp"

namespace xg::optim {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

/// Parameters that share hyperparameters. A negative lr or weight_decay means the optimizer's default.
struct ParamGroup {
  NamedTensors params;
  double lr = -1.0;
  double weight_decay = -1.0;
};

/// nanoGPT's two groups: tensors with dim >= 2 (weights, embeddings) get weight decay; biases and norm
/// weights get none.
std::vector<ParamGroup> decay_groups(const NamedTensors& params, double weight_decay);

/// Unnamed parameters become "0", "1", ...
NamedTensors name_params(const std::vector<Tensor>& params);

/// The base of every optimizer: groups, zero_grad, learning rates, and state that can be saved and resumed.
class Optimizer {
 public:
  struct Group {
    NamedTensors params;
    double lr;
    double weight_decay;
  };
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  /// Updates every parameter that has a gradient.
  virtual void step() = 0;
  /// The same update with every gradient multiplied by grad_scale (finite, >= 0) first, e.g. clip_coef's
  /// clipping factor. Adam, AdamW and SGD apply it in their update's own pass, as PyTorch's fused optimizers
  /// take a gradient scale, leaving the gradients as they are; this default scales the gradients in place,
  /// then steps.
  virtual void step(double grad_scale);
  /// Drops the gradients (set_to_none, PyTorch's default) or fills them with zeros.
  void zero_grad(bool set_to_none = true);

  const std::vector<Group>& groups() const { return groups_; }
  double lr(std::size_t group = 0) const { return groups_.at(group).lr; }
  /// Sets the learning rate of one group, or of all groups.
  void set_lr(std::size_t group, double lr) { groups_.at(group).lr = lr; }
  void set_lr(double lr);
  double weight_decay(std::size_t group = 0) const { return groups_.at(group).weight_decay; }
  void set_weight_decay(std::size_t group, double weight_decay) { groups_.at(group).weight_decay = weight_decay; }

  /// The optimizer's state as tensors: per parameter "<name>.<buffer>" (e.g. "fc1.weight.exp_avg") and
  /// "<name>.step", and per group "group.<i>.lr" / "group.<i>.weight_decay".
  virtual StateDict state_dict() const;
  /// Restores a state_dict(); the parameter names and shapes must match.
  virtual void load_state_dict(const StateDict& state);
  void save(const std::string& path) const;
  void load(const std::string& path);

 protected:
  Optimizer(std::string name, std::vector<ParamGroup> groups, double default_lr, double default_weight_decay);
  /// The named state buffer of a parameter, created as zeros like the parameter on first use.
  Tensor& buffer(const std::string& param, const std::string& key, const Tensor& like);
  /// Increments and returns the parameter's step count.
  std::int64_t next_step(const std::string& param);
  const std::string& name() const { return name_; }
  /// Refuses a grad_scale that is negative or not finite.
  void check_grad_scale(double grad_scale) const;
  /// One parameter's update: its group, its name, the parameter, its gradient (contiguous, of the
  /// parameter's shape and dtype) and its step count, this step included.
  struct Update {
    const Group& group;
    const std::string& name;
    const Tensor& param;
    const Tensor& grad;
    std::int64_t step;
  };
  /// The loop every built-in update shares: checks grad_scale, turns grad mode off, and calls `update`
  /// for each parameter that has a gradient, after incrementing its step count.
  void for_each_update(double grad_scale, const std::function<void(const Update&)>& update);
  /// The buffers every parameter with a step count keeps ("exp_avg", ...), which load_state_dict requires
  /// all of and nothing else; nullopt (the default, for optimizers written by users): not checked.
  virtual std::optional<std::vector<std::string>> state_buffers() const { return std::nullopt; }

 private:
  std::string name_;
  std::vector<Group> groups_;
  std::map<std::string, std::map<std::string, Tensor>> state_;
  std::map<std::string, std::int64_t> steps_;
};

/// The value of a one-element tensor of saved state (a step, a learning rate), which must be finite;
/// errors name `who` and the key. For load_state_dict of optimizers and schedules, built-in or not.
double state_scalar(std::string_view who, const std::string& key, const Tensor& t);

}  // namespace xg::optim

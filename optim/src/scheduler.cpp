#include "xgrad/optim/scheduler.hpp"

#include <cmath>

#include "xgrad/kernel.hpp"

namespace xg::optim {
using namespace xg::kernel;

LRScheduler::LRScheduler(Optimizer& opt) : opt_(opt) {
  for (const auto& g : opt.groups()) base_.push_back(g.lr);
}
void LRScheduler::apply() {
  for (std::size_t i = 0; i < base_.size(); ++i) opt_.set_lr(i, lr_at(step_, base_[i]));
}
void LRScheduler::step() {
  ++step_;
  apply();
}
StateDict LRScheduler::state_dict() const {
  StateDict out{{"step", scalar_tensor(static_cast<double>(step_), DType::float64)}};
  for (std::size_t i = 0; i < base_.size(); ++i)
    out.emplace_back(fmt::format("base_lr.{}", i), scalar_tensor(base_[i], DType::float64));
  return out;
}
void LRScheduler::load_state_dict(const StateDict& state) {
  bool found = false;
  for (const auto& [k, t] : state) {
    if (k == "step") {
      step_ = static_cast<std::int64_t>(t.item());
      found = true;
    } else if (k.rfind("base_lr.", 0) == 0) {
      std::size_t i = std::stoul(k.substr(8));
      XG_CHECK(i < base_.size(), "LRScheduler: load_state_dict: base_lr for group {}, but the optimizer has {} groups", i,
               base_.size());
      base_[i] = t.item();
    }
  }
  XG_CHECK(found, "LRScheduler: load_state_dict: no \"step\" entry");
  apply();
}

StepLR::StepLR(Optimizer& opt, std::int64_t step_size, double gamma) : LRScheduler(opt), step_size_(step_size), gamma_(gamma) {
  XG_CHECK(step_size > 0, "StepLR: step_size must be positive, got {}", step_size);
  apply();
}
double StepLR::lr_at(std::int64_t step, double base) const {
  return base * std::pow(gamma_, static_cast<double>(step / step_size_));
}

LinearWarmupLR::LinearWarmupLR(Optimizer& opt, std::int64_t warmup) : LRScheduler(opt), warmup_(warmup) {
  XG_CHECK(warmup >= 0, "LinearWarmupLR: warmup must be non-negative, got {}", warmup);
  apply();
}
double LinearWarmupLR::lr_at(std::int64_t step, double base) const {
  if (step < warmup_) return base * static_cast<double>(step + 1) / static_cast<double>(warmup_ + 1);
  return base;
}

CosineWarmupLR::CosineWarmupLR(Optimizer& opt, std::int64_t warmup, std::int64_t decay_steps, double min_lr)
    : LRScheduler(opt), warmup_(warmup), decay_(decay_steps), min_lr_(min_lr) {
  XG_CHECK(warmup >= 0 && decay_steps > warmup, "CosineWarmupLR: need 0 <= warmup < decay_steps, got {} and {}", warmup,
           decay_steps);
  apply();
}
double CosineWarmupLR::lr_at(std::int64_t step, double base) const {
  if (step < warmup_) return base * static_cast<double>(step + 1) / static_cast<double>(warmup_ + 1);
  if (step > decay_) return min_lr_;
  double ratio = static_cast<double>(step - warmup_) / static_cast<double>(decay_ - warmup_);
  return min_lr_ + 0.5 * (1.0 + std::cos(M_PI * ratio)) * (base - min_lr_);
}

LambdaLR::LambdaLR(Optimizer& opt, std::function<double(std::int64_t)> factor) : LRScheduler(opt), factor_(std::move(factor)) {
  XG_CHECK(static_cast<bool>(factor_), "LambdaLR: the factor function is empty");
  apply();
}

}  // namespace xg::optim

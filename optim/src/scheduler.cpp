#include "xgrad/optim/scheduler.hpp"

#include <array>
#include <charconv>
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
  // Read and checked in full before anything changes.
  double step = -1;
  std::vector<double> base = base_;
  for (const auto& [k, t] : state) {
    if (k == "step") {
      step = state_scalar("LRScheduler", k, t);
      XG_CHECK(step >= 0 && step <= 0x1p53 && step == std::floor(step),
               "LRScheduler: load_state_dict: step is {}, expected a whole number >= 0", step);
    } else if (k.rfind("base_lr.", 0) == 0) {
      std::size_t i = 0;
      const std::string digits = k.substr(8);
      auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), i);
      XG_CHECK(ec == std::errc() && end == digits.data() + digits.size() && !digits.empty() && i < base.size(),
               "LRScheduler: load_state_dict: {} does not name one of the optimizer's {} groups", k, base.size());
      base[i] = state_scalar("LRScheduler", k, t);
      XG_CHECK(base[i] >= 0, "LRScheduler: load_state_dict: {} is {}, expected >= 0", k, base[i]);
    } else {
      fail("LRScheduler: load_state_dict: unexpected entry {}", k);
    }
  }
  XG_CHECK(step >= 0, "LRScheduler: load_state_dict: no \"step\" entry");
  step_ = static_cast<std::int64_t>(step);
  base_ = std::move(base);
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

OneCycleLR::OneCycleLR(Optimizer& opt, double max_lr, std::int64_t total_steps, OneCycleOptions o)
    : LRScheduler(opt), max_lr_(max_lr), total_(total_steps), o_(o) {
  XG_CHECK(max_lr > 0 && std::isfinite(max_lr), "OneCycleLR: max_lr must be finite and positive, got {}", max_lr);
  XG_CHECK(total_steps > 0, "OneCycleLR: total_steps must be positive, got {}", total_steps);
  XG_CHECK(o.pct_start >= 0 && o.pct_start <= 1, "OneCycleLR: pct_start must be in [0, 1], got {}", o.pct_start);
  XG_CHECK(o.div_factor > 0 && std::isfinite(o.div_factor) && o.final_div_factor > 0 && std::isfinite(o.final_div_factor),
           "OneCycleLR: div_factor and final_div_factor must be finite and positive, got {} and {}", o.div_factor,
           o.final_div_factor);
  apply();
}
double OneCycleLR::lr_at(std::int64_t step, double) const {
  XG_CHECK(step <= total_, "OneCycleLR: stepped {} times, but total_steps is {}", step, total_);
  const double initial = max_lr_ / o_.div_factor, last = initial / o_.final_div_factor;
  const double up_end = o_.pct_start * static_cast<double>(total_) - 1;
  // Phases as PyTorch lays them out: (end step, start lr, end lr).
  std::vector<std::array<double, 3>> phases;
  if (o_.three_phase) {
    phases = {{up_end, initial, max_lr_}, {2 * o_.pct_start * static_cast<double>(total_) - 2, max_lr_, initial},
              {static_cast<double>(total_) - 1, initial, last}};
  } else {
    phases = {{up_end, initial, max_lr_}, {static_cast<double>(total_) - 1, max_lr_, last}};
  }
  double start = 0;
  const double s = static_cast<double>(step);
  for (std::size_t i = 0; i < phases.size(); ++i) {
    const auto [end, from, to] = phases[i];
    if (s <= end || i + 1 == phases.size()) {
      const double pct = (s - start) / (end - start);
      return o_.cos_anneal ? to + (from - to) / 2.0 * (std::cos(M_PI * pct) + 1) : (to - from) * pct + from;
    }
    start = end;
  }
  return last;
}

LambdaLR::LambdaLR(Optimizer& opt, std::function<double(std::int64_t)> factor) : LRScheduler(opt), factor_(std::move(factor)) {
  XG_CHECK(static_cast<bool>(factor_), "LambdaLR: the factor function is empty");
  apply();
}

}  // namespace xg::optim

#include "xgrad/optim/optimizer.hpp"

#include <fmt/format.h>

#include <cmath>
#include <set>
#include <tuple>

#include "xgrad/autograd.hpp"
#include "xgrad/check.hpp"
#include "xgrad/kernel.hpp"
#include "xgrad/ops.hpp"

namespace xg::optim {

std::vector<ParamGroup> decay_groups(const NamedTensors& params, double weight_decay) {
  ParamGroup decay, no_decay;
  for (const auto& [n, p] : params) {
    if (!p.requires_grad()) continue;  // frozen tensors need no optimizer state
    (p.dim() >= 2 ? decay : no_decay).params.emplace_back(n, p);
  }
  decay.weight_decay = weight_decay;
  no_decay.weight_decay = 0.0;
  return {decay, no_decay};
}

NamedTensors name_params(const std::vector<Tensor>& params) {
  NamedTensors out;
  for (std::size_t i = 0; i < params.size(); ++i) out.emplace_back(std::to_string(i), params[i]);
  return out;
}

Optimizer::Optimizer(std::string name, std::vector<ParamGroup> groups, double default_lr, double default_wd)
    : name_(std::move(name)) {
  if (!(default_lr >= 0) || !std::isfinite(default_lr)) fail("{}: invalid learning rate {}", name_, default_lr);
  if (!(default_wd >= 0) || !std::isfinite(default_wd)) fail("{}: invalid weight decay {}", name_, default_wd);
  std::size_t count = 0;
  for (const auto& g : groups) {
    count += g.params.size();
    if (g.lr >= 0 || std::isnan(g.lr))
      XG_CHECK(std::isfinite(g.lr), "{}: invalid learning rate {} in a parameter group", name_, g.lr);
    if (g.weight_decay >= 0 || std::isnan(g.weight_decay))
      XG_CHECK(std::isfinite(g.weight_decay), "{}: invalid weight decay {} in a parameter group", name_, g.weight_decay);
  }
  // As PyTorch: a module that forgot register_module / register_parameter would otherwise train nothing.
  if (count == 0) fail("{}: optimizer got an empty parameter list", name_);
  std::set<std::string> names;
  std::set<const TensorImpl*> seen;
  for (auto& g : groups) {
    for (auto& [n, p] : g.params) {
      if (!p.defined() || !p.is_leaf() || !p.requires_grad() || !is_floating(p.dtype()))
        fail("{}: parameter \"{}\" is not a floating-point leaf tensor that requires grad", name_, n);
      if (!p.is_contiguous())
        fail("{}: parameter \"{}\" (shape {}) is not contiguous", name_, n, shape_str(p.shape()));
      if (!names.insert(n).second) fail("{}: two parameters are named \"{}\"", name_, n);
      if (!seen.insert(p.impl().get()).second)
        fail("{}: parameter \"{}\" appears twice (tied weights belong in one group once)", name_, n);
    }
    groups_.push_back({g.params, g.lr >= 0 ? g.lr : default_lr, g.weight_decay >= 0 ? g.weight_decay : default_wd});
  }
}

void Optimizer::step(double grad_scale) {
  check_grad_scale(grad_scale);
  if (grad_scale != 1.0) {
    autograd::NoGradGuard ng;
    for (auto& g : groups_)
      for (auto& [_, p] : g.params)
        if (Tensor gr = p.grad(); gr.defined()) gr.mul_(grad_scale);
  }
  step();
}

void Optimizer::check_grad_scale(double grad_scale) const {
  XG_CHECK(std::isfinite(grad_scale) && grad_scale >= 0, "{}: step: grad_scale must be finite and non-negative, got {}",
           name_, grad_scale);
}

void Optimizer::zero_grad(bool set_to_none) {
  autograd::NoGradGuard ng;
  for (auto& g : groups_)
    for (auto& [_, p] : g.params) {
      if (set_to_none) {
        p.set_grad(Tensor());
      } else if (Tensor gr = p.grad(); gr.defined()) {
        gr.zero_();
      }
    }
}

void Optimizer::set_lr(double lr) {
  for (auto& g : groups_) g.lr = lr;
}

Tensor& Optimizer::buffer(const std::string& param, const std::string& key, const Tensor& like) {
  Tensor& t = state_[param][key];
  if (!t.defined()) t = zeros(like.shape(), {like.dtype()});
  // The parameter may have changed under the optimizer (module.to(), set_data): its state no longer fits.
  XG_CHECK(t.shape() == like.shape() && t.dtype() == like.dtype(),
           "{}: the {} of \"{}\" is {} {}, but the parameter is now {} {}; create the optimizer after converting the "
           "model, or load a matching state", name_, key, param, dtype_name(t.dtype()), shape_str(t.shape()),
           dtype_name(like.dtype()), shape_str(like.shape()));
  XG_CHECK(like.is_contiguous(), "{}: parameter \"{}\" (shape {}) is not contiguous; optimizers update parameters "
           "in place over contiguous data", name_, param, shape_str(like.shape()));
  return t;
}

std::int64_t Optimizer::next_step(const std::string& param) { return ++steps_[param]; }

void Optimizer::for_each_update(double grad_scale, const std::function<void(const Update&)>& update) {
  check_grad_scale(grad_scale);
  autograd::NoGradGuard ng;
  for (const auto& group : groups_)
    for (const auto& [name, p] : group.params) {
      Tensor g = p.grad();
      if (!g.defined()) continue;
      XG_CHECK(g.shape() == p.shape() && g.dtype() == p.dtype(),
               "{}: the gradient of \"{}\" is {} {}, but the parameter is {} {}", name_, name, dtype_name(g.dtype()),
               shape_str(g.shape()), dtype_name(p.dtype()), shape_str(p.shape()));
      g = kernel::contiguous_data(g);
      update({group, name, p, g, next_step(name)});
    }
}

StateDict Optimizer::state_dict() const {
  StateDict out;
  for (std::size_t i = 0; i < groups_.size(); ++i) {
    out.emplace_back(fmt::format("group.{}.lr", i), scalar_tensor(groups_[i].lr, DType::float64));
    out.emplace_back(fmt::format("group.{}.weight_decay", i), scalar_tensor(groups_[i].weight_decay, DType::float64));
  }
  for (const auto& [param, n] : steps_) out.emplace_back(param + ".step", scalar_tensor(static_cast<double>(n), DType::float64));
  for (const auto& [param, bufs] : state_)
    for (const auto& [key, t] : bufs) out.emplace_back(param + "." + key, t);
  return out;
}

double state_scalar(std::string_view who, const std::string& key, const Tensor& t) {
  XG_CHECK(t.numel() == 1, "{}: load_state_dict: {} has shape {}, expected one value", who, key, shape_str(t.shape()));
  const double v = t.item();
  XG_CHECK(std::isfinite(v), "{}: load_state_dict: {} is {}, expected a finite number", who, key, v);
  return v;
}

void Optimizer::load_state_dict(const StateDict& state) {
  std::map<std::string, Tensor> given(state.begin(), state.end());
  std::map<std::string, const Tensor*> params;
  for (auto& g : groups_)
    for (auto& [n, p] : g.params) params[n] = &p;
  // Everything is read and checked first; the optimizer changes only once the whole state is valid.
  std::vector<std::pair<double, double>> settings;
  for (std::size_t i = 0; i < groups_.size(); ++i) {
    auto lr = given.find(fmt::format("group.{}.lr", i));
    auto wd = given.find(fmt::format("group.{}.weight_decay", i));
    if (lr == given.end() || wd == given.end())
      fail("{}: load_state_dict: no settings for parameter group {} (the checkpoint has fewer groups)", name_, i);
    settings.emplace_back(state_scalar(name_, lr->first, lr->second), state_scalar(name_, wd->first, wd->second));
    XG_CHECK(settings.back().first >= 0 && settings.back().second >= 0,
             "{}: load_state_dict: group {} has lr {} and weight_decay {}; both must be >= 0", name_, i,
             settings.back().first, settings.back().second);
    given.erase(lr);
    given.erase(wd);
  }
  decltype(state_) new_state;
  decltype(steps_) new_steps;
  for (const auto& [key, t] : given) {
    if (key.rfind("group.", 0) == 0)
      fail("{}: load_state_dict: the checkpoint has settings for more groups ({})", name_, key);
    auto dot = key.find_last_of('.');
    std::string param = dot == std::string::npos ? key : key.substr(0, dot);
    std::string what = dot == std::string::npos ? "" : key.substr(dot + 1);
    auto it = params.find(param);
    if (it == params.end())
      fail("{}: load_state_dict: state for unknown parameter \"{}\"", name_, param);
    if (what == "step") {
      const double step = state_scalar(name_, key, t);
      XG_CHECK(step >= 1 && step <= 0x1p53 && step == std::floor(step),
               "{}: load_state_dict: {} is {}, not a step count (a whole number >= 1)", name_, key, step);
      new_steps[param] = static_cast<std::int64_t>(step);
    } else {
      XG_CHECK(is_floating(t.dtype()), "{}: load_state_dict: {} is {}, expected a floating-point tensor", name_, key,
               dtype_name(t.dtype()));
      if (t.shape() != it->second->shape())
        fail("{}: load_state_dict: {} has shape {}, but the parameter has {}", name_, key,
                                shape_str(t.shape()), shape_str(it->second->shape()));
      new_state[param][what] = t.to(it->second->dtype()).contiguous().detach().clone();
    }
  }
  if (const auto want = state_buffers()) {
    // A state missing a buffer (exp_avg without exp_avg_sq) or holding a foreign one would resume as a
    // different optimizer without a word.
    std::set<std::string> params_with_state;
    for (const auto& [param, _] : new_state) params_with_state.insert(param);
    for (const auto& [param, _] : new_steps) params_with_state.insert(param);
    const std::set<std::string> wanted(want->begin(), want->end());
    for (const auto& param : params_with_state) {
      XG_CHECK(new_steps.count(param), "{}: load_state_dict: {} has state but no step count", name_, param);
      std::set<std::string> have;
      if (auto it = new_state.find(param); it != new_state.end())
        for (const auto& [what, _] : it->second) have.insert(what);
      for (const auto& w : wanted)
        XG_CHECK(have.count(w), "{}: load_state_dict: {}.{} is missing", name_, param, w);
      for (const auto& h : have)
        XG_CHECK(wanted.count(h), "{}: load_state_dict: {}.{} is not state of {}", name_, param, h, name_);
    }
  }
  for (std::size_t i = 0; i < groups_.size(); ++i) std::tie(groups_[i].lr, groups_[i].weight_decay) = settings[i];
  state_ = std::move(new_state);
  steps_ = std::move(new_steps);
}

void Optimizer::save(const std::string& path) const { save_safetensors(path, state_dict(), {{"optimizer", name_}}); }

void Optimizer::load(const std::string& path) {
  auto file = load_safetensors(path);
  auto it = file.metadata.find("optimizer");
  if (it != file.metadata.end() && it->second != name_)
    fail("{}: {} holds the state of a {} optimizer", name_, path, it->second);
  load_state_dict(file.tensors);
}

}  // namespace xg::optim

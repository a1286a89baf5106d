#include "xgrad/nn/module.hpp"

#include <fmt/format.h>

#include <set>

#include <fmt/ranges.h>

#include <map>

#include "xgrad/autograd.hpp"
#include "xgrad/check.hpp"

namespace xg::nn {

namespace {
void check_name(const std::string& kind, const std::string& name, const Module& m) {
  if (name.empty() || name.find('.') != std::string::npos)
    fail("register_{}: name \"{}\" must be non-empty and contain no '.' (in {})", kind, name,
                            m.type_name());
}
template <class List>
bool has(const List& list, const std::string& name) {
  for (const auto& [n, _] : list)
    if (n == name) return true;
  return false;
}
}  // namespace

Tensor Module::register_parameter(const std::string& name, Tensor value, bool requires_grad) {
  check_name("parameter", name, *this);
  if (has(params_, name) || has(buffers_, name) || has(modules_, name))
    fail("register_parameter: \"{}\" is already registered in {}", name, type_name_);
  if (!value.is_leaf()) value = value.detach();
  if (requires_grad) value.requires_grad_(true);
  params_.emplace_back(name, value);
  return value;
}

void Module::set_parameter(const std::string& name, const Tensor& value) {
  for (auto& [n, t] : params_)
    if (n == name) {
      if (value.shape() != t.shape())
        fail("set_parameter: {} \"{}\" has shape {}, the new tensor {}", type_name_, name,
                                shape_str(t.shape()), shape_str(value.shape()));
      t = value;
      return;
    }
  fail("set_parameter: {} has no parameter \"{}\"", type_name_, name);
}

Tensor Module::register_buffer(const std::string& name, Tensor value) {
  check_name("buffer", name, *this);
  if (has(params_, name) || has(buffers_, name) || has(modules_, name))
    fail("register_buffer: \"{}\" is already registered in {}", name, type_name_);
  buffers_.emplace_back(name, value.detach());
  return buffers_.back().second;
}

void Module::add_module(const std::string& name, std::shared_ptr<Module> module) {
  check_name("module", name, *this);
  if (!module) fail("register_module: module \"{}\" is null", name);
  if (has(params_, name) || has(buffers_, name) || has(modules_, name))
    fail("register_module: \"{}\" is already registered in {}", name, type_name_);
  modules_.emplace_back(name, std::move(module));
}

void Module::collect(const std::string& prefix, bool recurse, bool params, NamedTensors& out) const {
  for (const auto& [n, t] : params ? params_ : buffers_) out.emplace_back(prefix + n, t);
  if (!recurse) return;
  for (const auto& [n, m] : modules_) m->collect(prefix + n + ".", true, params, out);
}

namespace {
Module::NamedTensors dedupe(const Module::NamedTensors& all) {
  Module::NamedTensors out;
  std::set<const TensorImpl*> seen;
  for (const auto& [n, t] : all)
    if (seen.insert(t.impl().get()).second) out.emplace_back(n, t);
  return out;
}
}  // namespace

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [_, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}
Module::NamedTensors Module::named_parameters(bool recurse) const {
  NamedTensors out;
  collect("", recurse, true, out);
  return dedupe(out);
}
Module::NamedTensors Module::named_buffers(bool recurse) const {
  NamedTensors out;
  collect("", recurse, false, out);
  return out;
}

Module::NamedModules Module::named_modules() {
  NamedModules out;
  // Pre-order, iterative; the root is returned without taking ownership of it.
  out.emplace_back("", std::shared_ptr<Module>(std::shared_ptr<Module>{}, this));
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> pending;
  for (auto it = modules_.rbegin(); it != modules_.rend(); ++it) pending.emplace_back(it->first, it->second);
  while (!pending.empty()) {
    auto [name, m] = pending.back();
    pending.pop_back();
    out.emplace_back(name, m);
    for (auto it = m->modules_.rbegin(); it != m->modules_.rend(); ++it) pending.emplace_back(name + "." + it->first, it->second);
  }
  return out;
}

Tensor Module::forward(const Tensor&) {
  fail("{}: this module has no single-input forward(); call its own forward", type_name_);
}

StateDict Module::state_dict() const {
  StateDict out;
  collect("", true, true, out);
  collect("", true, false, out);
  return out;
}

void Module::load_state_dict(const StateDict& state, bool strict) {
  // Every key is matched and checked before any value is copied: a failed load leaves the model as it was.
  StateDict mine = state_dict();
  std::map<std::string, const Tensor*> given;
  for (const auto& [n, t] : state) {
    XG_CHECK(given.emplace(n, &t).second, "load_state_dict: the checkpoint has {} twice", n);
    XG_CHECK(t.defined(), "load_state_dict: {} is an undefined tensor", n);
  }
  std::vector<std::pair<Tensor, const Tensor*>> copies;
  std::set<const TensorImpl*> loaded;
  for (const auto& [n, t] : mine) {
    auto it = given.find(n);
    if (it == given.end()) continue;
    const Tensor& src = *it->second;
    XG_CHECK(src.shape() == t.shape(), "load_state_dict: size mismatch for {}: the checkpoint has {}, the model {} ({})",
             n, shape_str(src.shape()), shape_str(t.shape()), type_name_);
    XG_CHECK(is_floating(src.dtype()) == is_floating(t.dtype()),
             "load_state_dict: {} is {} in the checkpoint but {} in the model ({})", n, dtype_name(src.dtype()),
             dtype_name(t.dtype()), type_name_);
    copies.emplace_back(t, &src);
    loaded.insert(t.impl().get());
  }
  std::vector<std::string> missing, unexpected;
  for (const auto& [n, t] : mine)
    if (!given.count(n) && !loaded.count(t.impl().get())) missing.push_back(n);
  std::set<std::string> known;
  for (const auto& [n, _] : mine) known.insert(n);
  for (const auto& [n, _] : state)
    if (!known.count(n)) unexpected.push_back(n);
  if (strict && (!missing.empty() || !unexpected.empty())) {
    std::string msg = fmt::format("load_state_dict: the checkpoint does not match {}", type_name_);
    if (!missing.empty()) msg += fmt::format("; missing keys: {}", fmt::join(missing, ", "));
    if (!unexpected.empty()) msg += fmt::format("; unexpected keys: {}", fmt::join(unexpected, ", "));
    fail("{}. Hint: load_state_dict(state, /*strict=*/false) loads the keys that match", msg);
  }
  autograd::NoGradGuard ng;
  for (auto& [dst, src] : copies) dst.copy_(*src);
}

void Module::save(const std::string& path, const std::map<std::string, std::string>& metadata) const {
  // Tied tensors are written once, under their first name; loading re-ties them because the model
  // already shares the tensor and load_state_dict counts the tied name as present.
  StateDict all = state_dict();
  StateDict unique;
  std::map<const TensorImpl*, std::string> first;
  std::map<std::string, std::string> meta = metadata;
  for (const auto& [n, t] : all) {
    auto [it, fresh] = first.emplace(t.impl().get(), n);
    if (fresh) {
      unique.emplace_back(n, t);
    } else {
      meta["tied:" + n] = it->second;
    }
  }
  save_safetensors(path, unique, meta);
}

void Module::load(const std::string& path, bool strict) { load_state_dict(load_safetensors(path).tensors, strict); }

void Module::to(DType dtype) {
  autograd::NoGradGuard ng;
  for (auto& [_, t] : state_dict())
    if (t.dtype() != dtype && is_floating(t.dtype())) t.set_data(t.detach().to(dtype));
}

void Module::requires_grad_(bool on) {
  for (auto& p : parameters()) p.requires_grad_(on);
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [_, m] : modules_) m->train(on);
}

void Module::zero_grad() {
  for (auto& p : parameters()) p.set_grad(Tensor());
}

std::string Module::to_string() const {
  std::string out = type_name_ + "(" + extra_repr();
  if (!modules_.empty()) {
    out += "\n";
    for (const auto& [n, m] : modules_) {
      std::string child = m->to_string();
      std::string indented;
      for (char c : child) {
        indented += c;
        if (c == '\n') indented += "  ";
      }
      out += "  (" + n + "): " + indented + "\n";
    }
  }
  return out + ")";
}

}  // namespace xg::nn

#include "xgrad/nn/module.hpp"

#include <fmt/format.h>

#include "xgrad/autograd.hpp"

namespace xg::nn {

namespace {
void check_name(const std::string& kind, const std::string& name, const Module& m) {
  if (name.empty() || name.find('.') != std::string::npos)
    throw Error(fmt::format("register_{}: name \"{}\" must be non-empty and contain no '.' (in {})", kind, name,
                            m.type_name()));
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
    throw Error(fmt::format("register_parameter: \"{}\" is already registered in {}", name, type_name_));
  if (!value.is_leaf()) value = value.detach();
  if (requires_grad) value.requires_grad_(true);
  params_.emplace_back(name, value);
  return value;
}

Tensor Module::register_buffer(const std::string& name, Tensor value) {
  check_name("buffer", name, *this);
  if (has(params_, name) || has(buffers_, name) || has(modules_, name))
    throw Error(fmt::format("register_buffer: \"{}\" is already registered in {}", name, type_name_));
  buffers_.emplace_back(name, value.detach());
  return buffers_.back().second;
}

void Module::add_module(const std::string& name, std::shared_ptr<Module> module) {
  check_name("module", name, *this);
  if (!module) throw Error(fmt::format("register_module: module \"{}\" is null", name));
  if (has(params_, name) || has(buffers_, name) || has(modules_, name))
    throw Error(fmt::format("register_module: \"{}\" is already registered in {}", name, type_name_));
  modules_.emplace_back(name, std::move(module));
}

void Module::collect(const std::string& prefix, bool recurse, bool params, NamedTensors& out) const {
  for (const auto& [n, t] : params ? params_ : buffers_) out.emplace_back(prefix + n, t);
  if (!recurse) return;
  for (const auto& [n, m] : modules_) m->collect(prefix + n + ".", true, params, out);
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [_, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}
Module::NamedTensors Module::named_parameters(bool recurse) const {
  NamedTensors out;
  collect("", recurse, true, out);
  return out;
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
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> todo;
  for (auto it = modules_.rbegin(); it != modules_.rend(); ++it) todo.emplace_back(it->first, it->second);
  while (!todo.empty()) {
    auto [name, m] = todo.back();
    todo.pop_back();
    out.emplace_back(name, m);
    for (auto it = m->modules_.rbegin(); it != m->modules_.rend(); ++it) todo.emplace_back(name + "." + it->first, it->second);
  }
  return out;
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

// Sequential, ModuleList, ModuleDict.
#include "xgrad/nn/layers.hpp"

#include <fmt/format.h>

#include "xgrad/check.hpp"

namespace xg::nn {

std::string Flatten::extra_repr() const { return fmt::format("start_dim={}, end_dim={}", start_, end_); }

Sequential& Sequential::push_back(std::shared_ptr<Module> m) {
  add_module(std::to_string(children().size()), std::move(m));
  return *this;
}
Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& [_, m] : children()) h = m->forward(h);
  return h;
}

ModuleList& ModuleList::push_back(std::shared_ptr<Module> m) {
  add_module(std::to_string(children().size()), std::move(m));
  return *this;
}

ModuleDict& ModuleDict::insert(const std::string& name, std::shared_ptr<Module> m) {
  add_module(name, std::move(m));
  return *this;
}
bool ModuleDict::contains(const std::string& name) const {
  for (auto& [n, _] : children())
    if (n == name) return true;
  return false;
}
const std::shared_ptr<Module>& ModuleDict::operator[](const std::string& name) const {
  for (auto& [n, m] : children())
    if (n == name) return m;
  fail("ModuleDict: no module named \"{}\"", name);
}

}  // namespace xg::nn

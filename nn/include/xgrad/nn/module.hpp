// xgrad::nn: Module, the base of every layer, with PyTorch's registration and naming.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "xgrad/tensor.hpp"

namespace xg::nn {

/// A layer or a model: it owns named parameters, buffers and submodules, in registration order.
///
///   struct MLP : xg::nn::Module {
///     std::shared_ptr<xg::nn::Linear> fc1, fc2;
///     MLP() {
///       fc1 = register_module("fc1", std::make_shared<xg::nn::Linear>(2, 64));
///       fc2 = register_module("fc2", std::make_shared<xg::nn::Linear>(64, 3));
///     }
///     xg::Tensor forward(const xg::Tensor& x) { return fc2->forward(xg::relu(fc1->forward(x))); }
///   };
class Module {
 public:
  using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
  using NamedModules = std::vector<std::pair<std::string, std::shared_ptr<Module>>>;

  explicit Module(std::string type_name = "Module") : type_name_(std::move(type_name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// Adds a parameter (a leaf that requires grad unless requires_grad is false) and returns it.
  Tensor register_parameter(const std::string& name, Tensor value, bool requires_grad = true);
  /// Adds a buffer: state saved with the module that is not trained (e.g. a running mean).
  Tensor register_buffer(const std::string& name, Tensor value);
  /// Adds a submodule and returns it, so it can be assigned to a member in one line.
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_module(name, module);
    return module;
  }

  /// Parameters of this module and (with recurse) of all submodules, in registration order.
  std::vector<Tensor> parameters(bool recurse = true) const;
  /// Parameters with dotted names: "fc1.weight".
  NamedTensors named_parameters(bool recurse = true) const;
  NamedTensors named_buffers(bool recurse = true) const;
  /// Direct submodules.
  const NamedModules& children() const { return modules_; }
  /// This module ("" name) and every descendant, with dotted names.
  NamedModules named_modules();

  /// Training mode (dropout active); propagates to every submodule.
  virtual void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  /// Drops the gradients of all parameters.
  void zero_grad();

  /// The class name shown when printing.
  const std::string& type_name() const { return type_name_; }
  /// Layer settings shown when printing, e.g. "in_features=2, out_features=64, bias=true".
  virtual std::string extra_repr() const { return ""; }
  /// The module tree, printed like PyTorch does.
  std::string to_string() const;

 protected:
  void add_module(const std::string& name, std::shared_ptr<Module> module);

 private:
  void collect(const std::string& prefix, bool recurse, bool params, NamedTensors& out) const;
  std::string type_name_;
  bool training_ = true;
  NamedTensors params_;
  NamedTensors buffers_;
  NamedModules modules_;
};

}  // namespace xg::nn

// xgrad::nn: Module, the base of every layer, with PyTorch's registration and naming.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "xgrad/serialize.hpp"
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
  /// Replaces an already registered parameter by another tensor, e.g. to tie two layers' weights:
  /// `lm_head->set_parameter("weight", wte->weight)`. Keep the layer's own member in step with it.
  void set_parameter(const std::string& name, const Tensor& value);
  /// Adds a buffer: state saved with the module that is not trained (e.g. a running mean).
  Tensor register_buffer(const std::string& name, Tensor value);
  /// Adds a submodule and returns it, so it can be assigned to a member in one line.
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_module(name, module);
    return module;
  }

  /// Parameters of this module and (with recurse) of all submodules, in registration order. A tensor
  /// registered twice (tied weights) appears once, under its first name.
  std::vector<Tensor> parameters(bool recurse = true) const;
  /// Parameters with dotted names: "fc1.weight".
  NamedTensors named_parameters(bool recurse = true) const;
  NamedTensors named_buffers(bool recurse = true) const;

  /// The module's single-input computation. Layers override it; containers such as Sequential call it.
  virtual Tensor forward(const Tensor& x);

  /// Parameters and buffers by dotted name (tied tensors under each of their names), for saving.
  StateDict state_dict() const;
  /// Copies values into this module's parameters and buffers. With strict, missing and unexpected keys
  /// are errors (a key whose tensor is tied to a loaded one counts as present); a shape mismatch always is.
  void load_state_dict(const StateDict& state, bool strict = true);
  /// Saves state_dict() to a safetensors file, tied tensors stored once; written atomically.
  void save(const std::string& path, const std::map<std::string, std::string>& metadata = {}) const;
  /// Loads a file written by save() (or any safetensors file with matching names and shapes).
  void load(const std::string& path, bool strict = true);
  /// Converts every parameter and buffer to dtype in place (e.g. float64 for gradcheck of a whole model).
  void to(DType dtype);
  /// Turns gradients on or off for every parameter (off freezes the module).
  void requires_grad_(bool requires_grad);
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

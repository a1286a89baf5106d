// xgrad::nn::Linear, with optional low-rank adapters (LoRA).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "xgrad/nn/functional.hpp"
#include "xgrad/nn/module.hpp"

namespace xg::nn {

/// Options for Linear: required sizes in the constructor, the rest as chainable setters.
struct LinearOptions {
  LinearOptions(std::int64_t in_features, std::int64_t out_features) : in_(in_features), out_(out_features) {}
  LinearOptions& bias(bool on) {
    bias_ = on;
    return *this;
  }
  LinearOptions& dtype(DType dt) {
    dtype_ = dt;
    return *this;
  }
  std::int64_t in_;
  std::int64_t out_;
  bool bias_ = true;
  DType dtype_ = DType::float32;
};

/// Options for a low-rank adapter.
struct LoRAOptions {
  explicit LoRAOptions(std::int64_t rank) : rank_(rank) {}
  LoRAOptions& alpha(double a) {
    alpha_ = a;
    return *this;
  }
  LoRAOptions& dropout(double p) {
    dropout_ = p;
    return *this;
  }
  std::int64_t rank_;
  double alpha_ = 1.0;    // the update is scaled by alpha / rank
  double dropout_ = 0.0;  // on the adapter's input, in training only
};

/// y = x W^T + b with W [out_features, in_features], initialised like PyTorch: U(-1/sqrt(in), 1/sqrt(in)).
class Linear : public Module {
 public:
  explicit Linear(const LinearOptions& options, Generator* gen = nullptr);
  Linear(std::int64_t in_features, std::int64_t out_features) : Linear(LinearOptions(in_features, out_features)) {}
  Tensor forward(const Tensor& x) override;
  /// activation(forward(x)), fused into the linear op (functional::linear) unless an unmerged LoRA adapter
  /// adds to the output first.
  Tensor forward(const Tensor& x, functional::Activation activation);
  std::string extra_repr() const override;

  /// Adds a LoRA adapter: y = x W^T + b + (dropout(x) A^T B^T) alpha / r, with A [r, in] Kaiming-uniform
  /// and B [out, r] zero (so the output is unchanged until B trains). Freezes weight and bias.
  void add_lora(const LoRAOptions& options, Generator* gen = nullptr);
  bool has_lora() const { return lora_A.defined(); }
  /// Folds B A * alpha / r into the weight (the forward output stays the same); unmerge_lora() undoes it.
  void merge_lora();
  void unmerge_lora();
  bool lora_merged() const { return merged_; }

  Tensor weight;
  Tensor bias;            // undefined without bias
  Tensor lora_A, lora_B;  // undefined without an adapter

 private:
  LinearOptions options_;
  LoRAOptions lora_{0};
  Generator* gen_ = nullptr;
  bool merged_ = false;
};

/// Adds a LoRA adapter to every Linear under `root` whose dotted name ends with one of `targets` (every
/// Linear when empty), freezes all other parameters, and returns how many layers got one. A Linear whose
/// weight is tied to another parameter (GPT's lm_head) is refused when named, left out when targets is empty:
/// merging would change the parameter it is tied to.
int apply_lora(Module& root, const LoRAOptions& options, const std::vector<std::string>& targets = {},
               Generator* gen = nullptr);
/// The adapter parameters only ("...lora_A", "...lora_B"), for saving and loading adapters alone.
StateDict lora_state_dict(Module& root);
/// Merges (or unmerges) every adapter under root into its base weight.
void merge_lora(Module& root);
void unmerge_lora(Module& root);

}  // namespace xg::nn

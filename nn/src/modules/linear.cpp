#include "xgrad/nn/linear.hpp"

#include <fmt/format.h>

#include <cmath>
#include <map>

#include "xgrad/autograd.hpp"
#include "xgrad/check.hpp"
#include "xgrad/nn/functional.hpp"
#include "xgrad/nn/init.hpp"

namespace xg::nn {

Linear::Linear(const LinearOptions& o, Generator* gen) : Module("Linear"), options_(o), gen_(gen) {
  if (o.in_ <= 0 || o.out_ <= 0)
    fail("Linear: in_features and out_features must be positive, got {} and {}", o.in_, o.out_);
  // U(-k, k) with k = 1/sqrt(in_features), PyTorch's default for both weight and bias.
  double k = 1.0 / std::sqrt(static_cast<double>(o.in_));
  weight = register_parameter("weight", empty({o.out_, o.in_}, {o.dtype_}));
  init::uniform_(weight, -k, k, gen);
  if (o.bias_) {
    bias = register_parameter("bias", empty({o.out_}, {o.dtype_}));
    init::uniform_(bias, -k, k, gen);
  }
}

Tensor Linear::forward(const Tensor& x) {
  Tensor y = functional::linear(x, weight, bias);
  if (lora_A.defined() && !merged_) {
    Tensor h = functional::dropout(x, lora_.dropout_, is_training(), gen_);
    y = y + matmul(matmul(h, lora_A.t()), lora_B.t()) * (lora_.alpha_ / static_cast<double>(lora_.rank_));
  }
  return y;
}

Tensor Linear::forward(const Tensor& x, functional::Activation activation) {
  if (activation == functional::Activation::none) return forward(x);
  if (!lora_A.defined() || merged_) return functional::linear(x, weight, bias, activation);
  return gelu(forward(x), activation == functional::Activation::gelu_tanh);
}

std::string Linear::extra_repr() const {
  std::string s = fmt::format("in_features={}, out_features={}, bias={}", options_.in_, options_.out_, options_.bias_);
  if (lora_A.defined()) s += fmt::format(", lora_rank={}, lora_alpha={}", lora_.rank_, lora_.alpha_);
  return s;
}

void Linear::add_lora(const LoRAOptions& o, Generator* gen) {
  if (lora_A.defined()) fail("Linear::add_lora: this layer already has an adapter");
  if (o.rank_ <= 0 || o.rank_ > std::min(options_.in_, options_.out_))
    fail("Linear::add_lora: rank {} must be in [1, {}] for a {}x{} layer", o.rank_,
                            std::min(options_.in_, options_.out_), options_.out_, options_.in_);
  lora_ = o;
  gen_ = gen;
  DType dt = weight.dtype();
  lora_A = register_parameter("lora_A", empty({o.rank_, options_.in_}, {dt}));
  init::kaiming_uniform_(lora_A, std::sqrt(5.0), "fan_in", "leaky_relu", gen);  // as nn.Linear's weight
  lora_B = register_parameter("lora_B", zeros({options_.out_, o.rank_}, {dt}));
  weight.requires_grad_(false);
  if (bias.defined()) bias.requires_grad_(false);
}

void Linear::merge_lora() {
  if (!lora_A.defined() || merged_) return;
  autograd::NoGradGuard ng;
  weight.add_(matmul(lora_B, lora_A), lora_.alpha_ / static_cast<double>(lora_.rank_));
  merged_ = true;
}

void Linear::unmerge_lora() {
  if (!lora_A.defined() || !merged_) return;
  autograd::NoGradGuard ng;
  weight.add_(matmul(lora_B, lora_A), -lora_.alpha_ / static_cast<double>(lora_.rank_));
  merged_ = false;
}

namespace {
bool name_matches(const std::string& name, const std::vector<std::string>& targets) {
  if (targets.empty()) return true;
  for (const auto& t : targets)
    if (name.size() >= t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0) return true;
  return false;
}
}  // namespace

int apply_lora(Module& root, const LoRAOptions& options, const std::vector<std::string>& targets, Generator* gen) {
  // Which parameter names each buffer is reachable by: a weight tied to another parameter (GPT's lm_head and
  // its token embedding) cannot take an adapter, since merging it would change the other parameter too.
  std::map<const Storage*, std::string> owner;
  for (auto& [n, p] : root.named_parameters()) owner.emplace(p.impl()->storage.get(), n);
  std::vector<std::pair<std::string, Linear*>> chosen;
  for (auto& [name, m] : root.named_modules()) {
    auto* lin = dynamic_cast<Linear*>(m.get());
    if (!lin || !name_matches(name, targets)) continue;
    const std::string own = name.empty() ? "weight" : name + ".weight";
    const auto it = owner.find(lin->weight.impl()->storage.get());
    if (it != owner.end() && it->second != own) {
      if (targets.empty()) continue;  // "every Linear": the tied ones are left as they are
      fail("apply_lora: {} is tied to {}; merging an adapter into it would change {} too. Leave {} out of the targets",
           own, it->second, it->second, name);
    }
    chosen.emplace_back(name, lin);
  }
  if (chosen.empty()) fail("apply_lora: no Linear layer matched the target names");
  root.requires_grad_(false);
  int count = 0;
  for (auto& [name, lin] : chosen) {
    lin->add_lora(options, gen);
    ++count;
  }
  return count;
}

StateDict lora_state_dict(Module& root) {
  StateDict out;
  for (auto& [n, t] : root.state_dict())
    if (n.find("lora_") != std::string::npos) out.emplace_back(n, t);
  return out;
}

void merge_lora(Module& root) {
  for (auto& [_, m] : root.named_modules())
    if (auto* lin = dynamic_cast<Linear*>(m.get())) lin->merge_lora();
}
void unmerge_lora(Module& root) {
  for (auto& [_, m] : root.named_modules())
    if (auto* lin = dynamic_cast<Linear*>(m.get())) lin->unmerge_lora();
}

}  // namespace xg::nn

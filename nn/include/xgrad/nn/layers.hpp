// xgrad::nn layers: thin shells over nn::functional, each with an options struct (required arguments in
// the constructor, the rest as chainable setters), plus the Sequential / ModuleList / ModuleDict containers.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "xgrad/nn/functional.hpp"
#include "xgrad/nn/linear.hpp"
#include "xgrad/nn/module.hpp"

namespace xg::nn {

/// A (height, width) pair of a 2-d layer's geometry.
using Pair2d = std::array<std::int64_t, 2>;

#define XG_OPTION(type, name)  \
  auto& name(type value) {     \
    name##_ = std::move(value); \
    return *this;              \
  }                            \
  type name##_

struct LayerNormOptions {
  explicit LayerNormOptions(std::int64_t normalized_size) : size_(normalized_size) {}
  std::int64_t size_;
  XG_OPTION(double, eps) = 1e-5;
  XG_OPTION(bool, elementwise_affine) = true;
  XG_OPTION(bool, bias) = true;
  XG_OPTION(DType, dtype) = DType::float32;
};

/// Normalises the last dim: weight [C] initialised to 1, bias [C] to 0.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(const LayerNormOptions& options);
  explicit LayerNorm(std::int64_t size) : LayerNorm(LayerNormOptions(size)) {}
  Tensor forward(const Tensor& x) override;
  /// {x + residual, forward(x + residual)} in one pass (functional::add_layer_norm): a pre-norm block's
  /// residual add and this norm.
  std::pair<Tensor, Tensor> forward(const Tensor& x, const Tensor& residual);
  std::string extra_repr() const override;
  Tensor weight, bias;  // undefined when switched off

 private:
  void check_input(const Tensor& x) const;
  LayerNormOptions options_;
};

struct RMSNormOptions {
  explicit RMSNormOptions(std::int64_t normalized_size) : size_(normalized_size) {}
  std::int64_t size_;
  XG_OPTION(std::optional<double>, eps) = std::nullopt;  // the dtype's machine epsilon, as in PyTorch
  XG_OPTION(bool, elementwise_affine) = true;
  XG_OPTION(DType, dtype) = DType::float32;
};

/// torch.nn.RMSNorm over the last dim: x / rms(x) * weight, weight [C] initialised to 1.
class RMSNorm : public Module {
 public:
  explicit RMSNorm(const RMSNormOptions& options);
  explicit RMSNorm(std::int64_t size) : RMSNorm(RMSNormOptions(size)) {}
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Tensor weight;  // undefined without elementwise_affine

 private:
  RMSNormOptions options_;
};

struct GroupNormOptions {
  GroupNormOptions(std::int64_t num_groups, std::int64_t num_channels) : groups_(num_groups), channels_(num_channels) {}
  std::int64_t groups_, channels_;
  XG_OPTION(double, eps) = 1e-5;
  XG_OPTION(bool, affine) = true;
  XG_OPTION(DType, dtype) = DType::float32;
};

/// torch.nn.GroupNorm: x [N, C, *], channels in groups normalised together; weight and bias [C].
class GroupNorm : public Module {
 public:
  explicit GroupNorm(const GroupNormOptions& options);
  GroupNorm(std::int64_t num_groups, std::int64_t num_channels) : GroupNorm(GroupNormOptions(num_groups, num_channels)) {}
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Tensor weight, bias;

 private:
  GroupNormOptions options_;
};

struct BatchNormOptions {
  explicit BatchNormOptions(std::int64_t num_features) : features_(num_features) {}
  std::int64_t features_;
  XG_OPTION(double, eps) = 1e-5;
  /// nullopt: the running statistics are the cumulative average of every batch, as momentum=None in PyTorch.
  XG_OPTION(std::optional<double>, momentum) = 0.1;
  XG_OPTION(bool, affine) = true;
  XG_OPTION(bool, track_running_stats) = true;
  XG_OPTION(DType, dtype) = DType::float32;
};

/// torch.nn.BatchNorm1d / BatchNorm2d: per-channel normalisation by the batch's statistics in training,
/// by the running ones in eval. Parameters weight, bias and buffers running_mean, running_var,
/// num_batches_tracked, named as PyTorch names them, so state_dicts load both ways.
class BatchNorm : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 protected:
  BatchNorm(std::string name, const BatchNormOptions& options, std::vector<std::int64_t> input_dims);

 private:
  BatchNormOptions options_;
  std::vector<std::int64_t> input_dims_;
};
/// Input [N, C] or [N, C, L].
class BatchNorm1d : public BatchNorm {
 public:
  explicit BatchNorm1d(const BatchNormOptions& options) : BatchNorm("BatchNorm1d", options, {2, 3}) {}
  explicit BatchNorm1d(std::int64_t num_features) : BatchNorm1d(BatchNormOptions(num_features)) {}
};
/// Input [N, C, H, W].
class BatchNorm2d : public BatchNorm {
 public:
  explicit BatchNorm2d(const BatchNormOptions& options) : BatchNorm("BatchNorm2d", options, {4}) {}
  explicit BatchNorm2d(std::int64_t num_features) : BatchNorm2d(BatchNormOptions(num_features)) {}
};

struct EmbeddingOptions {
  EmbeddingOptions(std::int64_t num_embeddings, std::int64_t dim) : num_(num_embeddings), dim_(dim) {}
  std::int64_t num_, dim_;
  XG_OPTION(DType, dtype) = DType::float32;
};

/// A lookup table [num_embeddings, dim], initialised N(0, 1) like PyTorch.
class Embedding : public Module {
 public:
  explicit Embedding(const EmbeddingOptions& options, Generator* gen = nullptr);
  Embedding(std::int64_t num, std::int64_t dim) : Embedding(EmbeddingOptions(num, dim)) {}
  /// ids: int64 of any shape; returns ids.shape + [dim].
  Tensor forward(const Tensor& ids) override;
  std::string extra_repr() const override;
  Tensor weight;

 private:
  EmbeddingOptions options_;
};

/// Inverted dropout, active only in training mode.
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

 private:
  double p_;
  Generator* gen_;
};

/// GELU, exact (x Phi(x)) or with GPT-2's tanh approximation.
class GELU : public Module {
 public:
  explicit GELU(bool tanh_approximation = false) : Module("GELU"), approx_(tanh_approximation) {}
  Tensor forward(const Tensor& x) override { return gelu(x, approx_); }
  std::string extra_repr() const override { return approx_ ? "approximate=tanh" : ""; }

 private:
  bool approx_;
};

/// max(x, 0).
class ReLU : public Module {
 public:
  ReLU() : Module("ReLU") {}
  Tensor forward(const Tensor& x) override { return relu(x); }
};
/// tanh(x).
class Tanh : public Module {
 public:
  Tanh() : Module("Tanh") {}
  Tensor forward(const Tensor& x) override { return tanh(x); }
};
/// 1 / (1 + exp(-x)).
class Sigmoid : public Module {
 public:
  Sigmoid() : Module("Sigmoid") {}
  Tensor forward(const Tensor& x) override { return sigmoid(x); }
};
/// x sigmoid(x) (swish).
class SiLU : public Module {
 public:
  SiLU() : Module("SiLU") {}
  Tensor forward(const Tensor& x) override { return silu(x); }
};
/// Flattens dims start_dim .. end_dim into one (by default all but the batch dim), as torch.nn.Flatten.
class Flatten : public Module {
 public:
  explicit Flatten(std::int64_t start_dim = 1, std::int64_t end_dim = -1) : Module("Flatten"), start_(start_dim), end_(end_dim) {}
  Tensor forward(const Tensor& x) override { return flatten(x, start_, end_); }
  std::string extra_repr() const override;

 private:
  std::int64_t start_, end_;
};

/// Runs its modules one after another.
class Sequential : public Module {
 public:
  Sequential() : Module("Sequential") {}
  /// Appends a module (named by its position) and returns *this for chaining.
  Sequential& push_back(std::shared_ptr<Module> m);
  Tensor forward(const Tensor& x) override;
  std::size_t size() const { return children().size(); }
  const std::shared_ptr<Module>& operator[](std::size_t i) const { return children().at(i).second; }
};

/// Holds modules by position ("0", "1", ...), so their parameters are registered and named.
class ModuleList : public Module {
 public:
  ModuleList() : Module("ModuleList") {}
  ModuleList& push_back(std::shared_ptr<Module> m);
  std::size_t size() const { return children().size(); }
  const std::shared_ptr<Module>& operator[](std::size_t i) const { return children().at(i).second; }
  /// The module at i as its concrete type.
  template <class M>
  std::shared_ptr<M> at(std::size_t i) const {
    return std::dynamic_pointer_cast<M>(children().at(i).second);
  }
};

/// Holds modules by name.
class ModuleDict : public Module {
 public:
  ModuleDict() : Module("ModuleDict") {}
  ModuleDict& insert(const std::string& name, std::shared_ptr<Module> m);
  bool contains(const std::string& name) const;
  const std::shared_ptr<Module>& operator[](const std::string& name) const;
  std::size_t size() const { return children().size(); }
};

struct MultiHeadAttentionOptions {
  MultiHeadAttentionOptions(std::int64_t embed_dim, std::int64_t num_heads) : embed_dim_(embed_dim), num_heads_(num_heads) {}
  std::int64_t embed_dim_, num_heads_;
  XG_OPTION(bool, bias) = true;           // biases of the fused qkv and the output projections
  XG_OPTION(bool, causal) = false;
  XG_OPTION(std::int64_t, window) = 0;    // > 0: sliding-window attention over the last `window` positions
  XG_OPTION(double, dropout) = 0.0;       // on attention weights and on the output (training only)
  XG_OPTION(DType, dtype) = DType::float32;
  /// Grouped-query attention: heads of keys and values, each shared by num_heads / n_kv_heads query heads
  /// (0: num_heads, plain multi-head attention; 1: multi-query attention).
  XG_OPTION(std::int64_t, n_kv_heads) = 0;
  XG_OPTION(bool, rope) = false;          // rotary position embeddings on queries and keys
  XG_OPTION(double, rope_theta) = 10000.0;
};

/// Keys and values of the positions seen so far, [B, H, S, D] each, for incremental decoding.
struct KVCache {
  Tensor k, v;
  /// Positions held.
  std::int64_t size() const { return k.defined() ? k.shape()[2] : 0; }
  void clear() { k = v = Tensor(); }
};

/// Multi-head self-attention with a fused query/key/value projection `c_attn` [3C, C] and an output
/// projection `c_proj` [C, C] (nanoGPT's names and layouts). Heads are split from the projection,
/// attended with scaled_dot_product_attention, and merged back.
class MultiHeadAttention : public Module {
 public:
  explicit MultiHeadAttention(const MultiHeadAttentionOptions& options, Generator* gen = nullptr);
  /// x [B, T, C] -> [B, T, C]. `padding_mask` (optional) broadcasts to [B, H, T, S]; nonzero = may attend.
  /// With a cache, x holds only the new positions: their keys and values are appended to the cache and
  /// the queries attend to everything cached (causal and window masks aligned at the newest position).
  Tensor forward(const Tensor& x, const Tensor& padding_mask, KVCache* cache = nullptr);
  Tensor forward(const Tensor& x) override { return forward(x, Tensor()); }
  std::string extra_repr() const override;
  std::shared_ptr<Linear> c_attn, c_proj;
  const MultiHeadAttentionOptions& options() const { return options_; }

 private:
  MultiHeadAttentionOptions options_;
  Generator* gen_;
};

struct Conv2dOptions {
  Conv2dOptions(std::int64_t in_channels, std::int64_t out_channels, std::array<std::int64_t, 2> kernel_size)
      : in_(in_channels), out_(out_channels), kernel_(kernel_size) {}
  Conv2dOptions(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel_size)
      : Conv2dOptions(in_channels, out_channels, {kernel_size, kernel_size}) {}
  std::int64_t in_, out_;
  std::array<std::int64_t, 2> kernel_;
  XG_OPTION(Pair2d, stride) = {1, 1};
  XG_OPTION(Pair2d, padding) = {0, 0};
  XG_OPTION(Pair2d, dilation) = {1, 1};
  XG_OPTION(Pair2d, output_padding) = {0, 0};  // ConvTranspose2d only
  XG_OPTION(std::int64_t, groups) = 1;
  XG_OPTION(bool, bias) = true;
  XG_OPTION(DType, dtype) = DType::float32;
};

/// torch.nn.Conv2d: weight [out, in / groups, kh, kw] and bias [out], initialised as PyTorch does
/// (uniform in +-1/sqrt(fan_in)); input [N, in, H, W].
class Conv2d : public Module {
 public:
  explicit Conv2d(const Conv2dOptions& options, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Tensor weight, bias;

 private:
  Conv2dOptions options_;
};

/// torch.nn.Conv1d: weight [out, in / groups, k]; input [N, in, L]. Kernel, stride, padding and dilation are
/// the second of each pair in the options (Conv1dOptions(in, out, k) sets them so).
class Conv1d : public Module {
 public:
  Conv1d(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel_size, std::int64_t stride = 1,
         std::int64_t padding = 0, std::int64_t dilation = 1, std::int64_t groups = 1, bool bias = true,
         DType dtype = DType::float32, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Tensor weight, bias;

 private:
  functional::Conv1dOptions options_;
};

/// torch.nn.ConvTranspose2d: weight [in, out / groups, kh, kw] and bias [out]; input [N, in, H, W].
class ConvTranspose2d : public Module {
 public:
  explicit ConvTranspose2d(const Conv2dOptions& options, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Tensor weight, bias;

 private:
  Conv2dOptions options_;
};

/// torch.nn.MaxPool2d / AvgPool2d over [N, C, H, W] (stride defaults to the kernel size).
class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(functional::PoolOptions options) : Module("MaxPool2d"), options_(options) {}
  explicit MaxPool2d(std::int64_t kernel) : MaxPool2d(functional::PoolOptions{.kernel = {kernel, kernel}}) {}
  Tensor forward(const Tensor& x) override { return functional::max_pool2d(x, options_); }
  std::string extra_repr() const override;

 private:
  functional::PoolOptions options_;
};
class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(functional::PoolOptions options) : Module("AvgPool2d"), options_(options) {}
  explicit AvgPool2d(std::int64_t kernel) : AvgPool2d(functional::PoolOptions{.kernel = {kernel, kernel}}) {}
  Tensor forward(const Tensor& x) override { return functional::avg_pool2d(x, options_); }
  std::string extra_repr() const override;

 private:
  functional::PoolOptions options_;
};
/// torch.nn.AdaptiveAvgPool2d: the mean over cells that divide the input into output_size.
class AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(std::array<std::int64_t, 2> output_size) : Module("AdaptiveAvgPool2d"), size_(output_size) {}
  Tensor forward(const Tensor& x) override { return functional::adaptive_avg_pool2d(x, size_); }
  std::string extra_repr() const override;

 private:
  std::array<std::int64_t, 2> size_;
};

struct RNNOptions {
  RNNOptions(std::int64_t input_size, std::int64_t hidden_size) : input_(input_size), hidden_(hidden_size) {}
  std::int64_t input_, hidden_;
  XG_OPTION(std::int64_t, num_layers) = 1;
  XG_OPTION(bool, bias) = true;
  XG_OPTION(bool, batch_first) = false;  // input and output [B, T, *] instead of [T, B, *]
  XG_OPTION(double, dropout) = 0.0;      // on the outputs of every layer but the last (training only)
  XG_OPTION(bool, relu) = false;         // RNN only: relu instead of tanh
  XG_OPTION(DType, dtype) = DType::float32;
};

/// The recurrent layers of torch.nn (RNN, LSTM, GRU), with PyTorch's parameter names and gate layouts
/// (weight_ih_l{k} [gates H, in], weight_hh_l{k} [gates H, H], bias_ih_l{k}, bias_hh_l{k}; LSTM gates i, f, g,
/// o; GRU gates r, z, n), so weights load both ways. Input [T, B, in] ([B, T, in] with batch_first, or
/// [T, in] unbatched); initial states [num_layers, B, H], zeros when undefined. Written with Tensor ops: every
/// derivative of any order comes with them.
class RecurrentBase : public Module {
 public:
  std::string extra_repr() const override;
  const RNNOptions& options() const { return options_; }

 protected:
  RecurrentBase(std::string name, const RNNOptions& options, std::int64_t gates, Generator* gen);
  /// Runs every layer over the sequence; `cell` maps (input projection of step t, states) to new states,
  /// states[0] being h. Returns the last layer's outputs and each layer's final states.
  std::pair<Tensor, std::vector<std::vector<Tensor>>> run(
      const Tensor& x, std::vector<std::vector<Tensor>> initial,
      const std::function<std::vector<Tensor>(std::int64_t layer, const Tensor& xw, const std::vector<Tensor>& state)>& cell);
  Tensor hidden_projection(std::int64_t layer, const Tensor& h) const;
  std::vector<Tensor> weight_ih_, weight_hh_, bias_ih_, bias_hh_;
  RNNOptions options_;
  Generator* gen_;
};

/// torch.nn.RNN: h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu).
class RNN : public RecurrentBase {
 public:
  explicit RNN(const RNNOptions& options, Generator* gen = nullptr);
  /// {output [T, B, H], h_n [num_layers, B, H]}.
  std::pair<Tensor, Tensor> forward(const Tensor& x, const Tensor& h0);
  Tensor forward(const Tensor& x) override { return forward(x, Tensor()).first; }
};

/// torch.nn.LSTM: gates i, f, g, o; c' = f c + i g, h' = o tanh(c').
class LSTM : public RecurrentBase {
 public:
  explicit LSTM(const RNNOptions& options, Generator* gen = nullptr);
  /// {output [T, B, H], h_n, c_n [num_layers, B, H]}.
  std::tuple<Tensor, Tensor, Tensor> forward(const Tensor& x, const Tensor& h0, const Tensor& c0);
  Tensor forward(const Tensor& x) override { return std::get<0>(forward(x, Tensor(), Tensor())); }
};

/// torch.nn.GRU: r, z gates, n = tanh(x W_in^T + b_in + r (h W_hn^T + b_hn)), h' = (1 - z) n + z h.
class GRU : public RecurrentBase {
 public:
  explicit GRU(const RNNOptions& options, Generator* gen = nullptr);
  /// {output [T, B, H], h_n [num_layers, B, H]}.
  std::pair<Tensor, Tensor> forward(const Tensor& x, const Tensor& h0);
  Tensor forward(const Tensor& x) override { return forward(x, Tensor()).first; }
};

struct SwiGLUOptions {
  SwiGLUOptions(std::int64_t dim, std::int64_t hidden_dim) : dim_(dim), hidden_(hidden_dim) {}
  std::int64_t dim_, hidden_;
  XG_OPTION(bool, bias) = false;
  XG_OPTION(DType, dtype) = DType::float32;
};

/// The gated MLP of Llama and PaLM: down_proj(silu(gate_proj(x)) * up_proj(x)), with Hugging Face's
/// parameter names (gate_proj and up_proj [hidden, dim], down_proj [dim, hidden]).
class SwiGLU : public Module {
 public:
  explicit SwiGLU(const SwiGLUOptions& options, Generator* gen = nullptr);
  SwiGLU(std::int64_t dim, std::int64_t hidden_dim) : SwiGLU(SwiGLUOptions(dim, hidden_dim)) {}
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<Linear> gate_proj, up_proj, down_proj;
};

#undef XG_OPTION

}  // namespace xg::nn

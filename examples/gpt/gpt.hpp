// The reference GPT: a decoder-only transformer written with xgrad's nn modules the way nanoGPT's
// model.py writes it in PyTorch, with the same parameter names and layouts, so checkpoints move
// between the two without conversion.
#pragma once

#include <xgrad/xgrad.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace gpt {

/// The model's shape. Defaults are nanoGPT's CPU "baby GPT" for character-level Shakespeare.
struct GPTConfig {
  std::int64_t vocab_size = 65;
  std::int64_t block_size = 64;
  std::int64_t n_layer = 4;
  std::int64_t n_head = 4;
  std::int64_t n_embd = 128;
  double dropout = 0.0;
  bool bias = true;           // biases in Linear and LayerNorm layers
  bool gelu_tanh = false;     // GPT-2's tanh GELU instead of the exact one (nanoGPT uses exact)
  std::int64_t window = 0;    // sliding-window size for windowed layers
  std::string attention = "dense";  // "dense", "window" (every layer), or "alternating" (dense, window, ...)

  /// The window of layer i (0 = dense causal).
  std::int64_t layer_window(std::int64_t i) const;
  /// Throws on settings out of range or inconsistent, naming the setting and its flag.
  void validate() const;
  /// Parameters, counting the tied head once (valid configs only).
  std::uint64_t parameter_count() const;
  /// About how many bytes training at this batch size takes: weights, gradients, AdamW state, activations.
  std::uint64_t training_bytes(std::int64_t batch) const;
  /// Refuses, with the size in bytes, a model and batch that cannot fit in this machine's memory.
  void check_fits(std::int64_t batch) const;
  std::string to_json() const;
  static GPTConfig from_json(const std::string& json);
};

/// nanoGPT's MLP: c_fc [4C, C], GELU, c_proj [C, 4C], dropout.
struct MLP : xg::nn::Module {
  MLP(const GPTConfig& c);
  xg::Tensor forward(const xg::Tensor& x) override;
  std::shared_ptr<xg::nn::Linear> c_fc, c_proj;
  bool gelu_tanh;
  double dropout;
};

/// Pre-LayerNorm block: x + attn(ln_1(x)), then + mlp(ln_2(x)).
struct Block : xg::nn::Module {
  Block(const GPTConfig& c, std::int64_t layer);
  xg::Tensor forward(const xg::Tensor& x) override { return forward(x, nullptr); }
  xg::Tensor forward(const xg::Tensor& x, xg::nn::KVCache* cache);
  std::shared_ptr<xg::nn::LayerNorm> ln_1, ln_2;
  std::shared_ptr<xg::nn::MultiHeadAttention> attn;
  std::shared_ptr<MLP> mlp;
};

/// transformer.{wte, wpe, h, ln_f}, as in nanoGPT.
struct Transformer : xg::nn::Module {
  explicit Transformer(const GPTConfig& c);
  std::shared_ptr<xg::nn::Embedding> wte, wpe;
  std::shared_ptr<xg::nn::ModuleList> h;
  std::shared_ptr<xg::nn::LayerNorm> ln_f;
};

class GPT : public xg::nn::Module {
 public:
  explicit GPT(const GPTConfig& config);
  /// Logits [B, T, V] for int64 token ids [B, T] (T <= block_size).
  xg::Tensor forward(const xg::Tensor& idx) override;
  /// Incremental decoding: logits for the new tokens idx [B, T_new], which sit at positions
  /// cache.size() ... onwards; their keys and values are appended to the per-layer caches (an empty
  /// vector: no cache). With last_only, only the last position's logits are computed ([B, 1, V]), which
  /// is all sampling needs.
  xg::Tensor forward(const xg::Tensor& idx, std::vector<xg::nn::KVCache>& cache, bool last_only = false);
  /// Mean cross-entropy of forward(idx) against targets [B, T].
  xg::Tensor loss(const xg::Tensor& idx, const xg::Tensor& targets);
  const GPTConfig& config() const { return config_; }
  /// Recompute each block's activations in backward instead of keeping them (nn::checkpoint): less
  /// memory for one more forward pass; the same gradients.
  void set_activation_checkpointing(bool on) { checkpoint_blocks_ = on; }
  /// Parameters without the tied lm_head (nanoGPT's count).
  std::int64_t num_parameters(bool non_embedding = true) const;

  std::shared_ptr<Transformer> transformer;
  std::shared_ptr<xg::nn::Linear> lm_head;  // weight tied to transformer.wte.weight

 private:
  GPTConfig config_;
  bool checkpoint_blocks_ = false;
};

/// Sampling settings.
struct SampleOptions {
  std::int64_t max_new_tokens = 200;
  double temperature = 1.0;
  std::int64_t top_k = 0;   // 0: off
  double top_p = 1.0;       // nucleus sampling; 1: off
  std::uint64_t seed = 1337;
  bool use_cache = true;    // incremental decoding with a key/value cache (same tokens, faster)
};

/// Appends max_new_tokens sampled tokens to `prompt`; the context slides when it exceeds block_size. With
/// use_cache, each step feeds only the new token through the model; once the context is full, positions
/// shift, so each step recomputes the window, exactly as the uncached path does.
std::vector<std::int64_t> generate(GPT& model, std::vector<std::int64_t> prompt, const SampleOptions& options);

/// Picks one token id from logits [V] with temperature, top-k and top-p, using gen.
std::int64_t sample_token(const std::vector<float>& logits, const SampleOptions& options, xg::Generator& gen);

}  // namespace gpt

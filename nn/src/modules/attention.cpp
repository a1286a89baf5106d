// MultiHeadAttention over functional::packed_self_attention, with a key/value cache for decoding.
#include "xgrad/nn/layers.hpp"

#include <fmt/format.h>

#include "xgrad/check.hpp"
#include "xgrad/ops.hpp"

#include <cmath>

namespace xg::nn {

MultiHeadAttention::MultiHeadAttention(const MultiHeadAttentionOptions& o, Generator* gen)
    : Module("MultiHeadAttention"), options_(o), gen_(gen) {
  if (o.embed_dim_ <= 0 || o.num_heads_ <= 0 || o.embed_dim_ % o.num_heads_ != 0)
    fail("MultiHeadAttention: embed_dim {} must be a positive multiple of num_heads {}",
                            o.embed_dim_, o.num_heads_);
  if (o.n_kv_heads_ < 0 || (o.n_kv_heads_ > 0 && o.num_heads_ % o.n_kv_heads_ != 0))
    fail("MultiHeadAttention: n_kv_heads {} must divide num_heads {}", o.n_kv_heads_, o.num_heads_);
  if (o.rope_ && (o.embed_dim_ / o.num_heads_) % 2 != 0)
    fail("MultiHeadAttention: rotary embeddings need an even head dim, got {}", o.embed_dim_ / o.num_heads_);
  if (o.rope_ && !(o.rope_theta_ > 0 && std::isfinite(o.rope_theta_)))
    fail("MultiHeadAttention: rope_theta must be finite and positive, got {}", o.rope_theta_);
  options_.n_kv_heads_ = o.n_kv_heads_ > 0 ? o.n_kv_heads_ : o.num_heads_;
  // [q | k | v]: C query columns, then the keys' and the values' n_kv_heads heads.
  const std::int64_t kv = options_.n_kv_heads_ * (o.embed_dim_ / o.num_heads_);
  c_attn = register_module("c_attn", std::make_shared<Linear>(LinearOptions(o.embed_dim_, o.embed_dim_ + 2 * kv).bias(o.bias_).dtype(o.dtype_), gen));
  c_proj = register_module("c_proj", std::make_shared<Linear>(LinearOptions(o.embed_dim_, o.embed_dim_).bias(o.bias_).dtype(o.dtype_), gen));
}

Tensor MultiHeadAttention::forward(const Tensor& x, const Tensor& padding_mask, KVCache* cache) {
  const std::int64_t c = options_.embed_dim_, h = options_.num_heads_;
  if (x.dim() != 3 || x.shape()[2] != c)
    fail("MultiHeadAttention: expected input [B, T, {}], got {}", c, shape_str(x.shape()));
  const std::int64_t b = x.shape()[0], t = x.shape()[1];
  functional::AttentionOptions ao;
  ao.causal = options_.causal_;
  ao.window = options_.window_;
  ao.mask = padding_mask;
  ao.dropout_p = is_training() ? options_.dropout_ : 0.0;
  ao.generator = gen_;
  Tensor proj = c_attn->forward(x);  // [B, T, C + 2 kv]
  const std::int64_t hkv = options_.n_kv_heads_, d = c / h;
  if (!cache && hkv == h && !options_.rope_) {
    Tensor y = functional::packed_self_attention(proj, h, ao);
    return functional::dropout(c_proj->forward(y), options_.dropout_, is_training(), gen_);
  }
  auto qkv = split(proj, std::vector<std::int64_t>{c, hkv * d, hkv * d}, 2);
  auto heads = [&](const Tensor& z, std::int64_t n) { return transpose(reshape(z, {b, t, n, d}), 1, 2); };  // [B, n, T, D]
  Tensor q = heads(qkv[0], h), k = heads(qkv[1], hkv), v = heads(qkv[2], hkv);
  if (options_.rope_) {
    // The new positions start after the cached ones.
    auto [cos, sin] = functional::rope_cos_sin(t, d, options_.rope_theta_, cache ? cache->size() : 0, x.dtype());
    q = functional::apply_rotary_emb(q, cos, sin);
    k = functional::apply_rotary_emb(k, cos, sin);
  }
  // With a cache: the new keys and values are appended to the cached ones, which the queries see too.
  if (cache) {
    if (cache->k.defined()) {
      k = cat({cache->k, k}, 2);
      v = cat({cache->v, v}, 2);
    }
    cache->k = k;
    cache->v = v;
  }
  if (hkv != h) {
    // Each key/value head serves h / hkv query heads, adjacent ones (as Llama's repeat_kv).
    auto repeat = [&](const Tensor& z) {
      const std::int64_t s = z.size(2);
      return unsqueeze(z, 2).expand({b, hkv, h / hkv, s, d}).reshape({b, h, s, d});
    };
    k = repeat(k);
    v = repeat(v);
  }
  Tensor y = functional::scaled_dot_product_attention(q, k, v, ao);
  y = reshape(transpose(y, 1, 2), {b, t, c});  // merge heads
  return functional::dropout(c_proj->forward(y), options_.dropout_, is_training(), gen_);
}

std::string MultiHeadAttention::extra_repr() const {
  std::string s = fmt::format("embed_dim={}, num_heads={}, causal={}", options_.embed_dim_, options_.num_heads_,
                              options_.causal_);
  if (options_.window_ > 0) s += fmt::format(", window={}", options_.window_);
  if (options_.n_kv_heads_ != options_.num_heads_) s += fmt::format(", n_kv_heads={}", options_.n_kv_heads_);
  if (options_.rope_) s += fmt::format(", rope_theta={}", options_.rope_theta_);
  return s;
}

SwiGLU::SwiGLU(const SwiGLUOptions& o, Generator* gen) : Module("SwiGLU") {
  if (o.dim_ <= 0 || o.hidden_ <= 0) fail("SwiGLU: sizes must be positive, got {} and {}", o.dim_, o.hidden_);
  gate_proj = register_module("gate_proj", std::make_shared<Linear>(LinearOptions(o.dim_, o.hidden_).bias(o.bias_).dtype(o.dtype_), gen));
  up_proj = register_module("up_proj", std::make_shared<Linear>(LinearOptions(o.dim_, o.hidden_).bias(o.bias_).dtype(o.dtype_), gen));
  down_proj = register_module("down_proj", std::make_shared<Linear>(LinearOptions(o.hidden_, o.dim_).bias(o.bias_).dtype(o.dtype_), gen));
}

Tensor SwiGLU::forward(const Tensor& x) { return down_proj->forward(silu(gate_proj->forward(x)) * up_proj->forward(x)); }

}  // namespace xg::nn

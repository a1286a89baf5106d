// MultiHeadAttention over functional::packed_self_attention, with a key/value cache for decoding.
#include "xgrad/nn/layers.hpp"

#include <fmt/format.h>

#include "xgrad/check.hpp"
#include "xgrad/ops.hpp"

namespace xg::nn {

MultiHeadAttention::MultiHeadAttention(const MultiHeadAttentionOptions& o, Generator* gen)
    : Module("MultiHeadAttention"), options_(o), gen_(gen) {
  if (o.embed_dim_ <= 0 || o.num_heads_ <= 0 || o.embed_dim_ % o.num_heads_ != 0)
    fail("MultiHeadAttention: embed_dim {} must be a positive multiple of num_heads {}",
                            o.embed_dim_, o.num_heads_);
  c_attn = register_module("c_attn", std::make_shared<Linear>(LinearOptions(o.embed_dim_, 3 * o.embed_dim_).bias(o.bias_).dtype(o.dtype_), gen));
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
  Tensor proj = c_attn->forward(x);  // [B, T, 3C]
  if (!cache) {
    Tensor y = functional::packed_self_attention(proj, h, ao);
    return functional::dropout(c_proj->forward(y), options_.dropout_, is_training(), gen_);
  }
  auto qkv = split(proj, c, 2);  // 3 x [B, T, C]
  auto heads = [&](const Tensor& z) { return transpose(reshape(z, {b, t, h, c / h}), 1, 2); };  // [B, H, T, D]
  // With a cache: the new keys and values are appended to the cached ones, which the queries see too.
  Tensor k = heads(qkv[1]), v = heads(qkv[2]);
  if (cache->k.defined()) {
    k = cat({cache->k, k}, 2);
    v = cat({cache->v, v}, 2);
  }
  cache->k = k;
  cache->v = v;
  Tensor y = functional::scaled_dot_product_attention(heads(qkv[0]), k, v, ao);
  y = reshape(transpose(y, 1, 2), {b, t, c});  // merge heads
  return functional::dropout(c_proj->forward(y), options_.dropout_, is_training(), gen_);
}

std::string MultiHeadAttention::extra_repr() const {
  std::string s = fmt::format("embed_dim={}, num_heads={}, causal={}", options_.embed_dim_, options_.num_heads_,
                              options_.causal_);
  if (options_.window_ > 0) s += fmt::format(", window={}", options_.window_);
  return s;
}

}  // namespace xg::nn

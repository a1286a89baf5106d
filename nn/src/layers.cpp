#include "xgrad/nn/layers.hpp"

#include <fmt/format.h>

#include <cmath>

#include "xgrad/autograd.hpp"
#include "xgrad/check.hpp"
#include "xgrad/nn/init.hpp"

namespace xg::nn {

LayerNorm::LayerNorm(const LayerNormOptions& o) : Module("LayerNorm"), options_(o) {
  if (o.size_ <= 0) fail("LayerNorm: normalized size must be positive, got {}", o.size_);
  if (o.elementwise_affine_) {
    weight = register_parameter("weight", ones({o.size_}, {o.dtype_}));
    if (o.bias_) bias = register_parameter("bias", zeros({o.size_}, {o.dtype_}));
  }
}
void LayerNorm::check_input(const Tensor& x) const {
  if (x.dim() == 0 || x.shape().back() != options_.size_)
    fail("LayerNorm: input {} does not end in the normalized size {}", shape_str(x.shape()), options_.size_);
}
Tensor LayerNorm::forward(const Tensor& x) {
  check_input(x);
  return functional::layer_norm(x, weight, bias, options_.eps_);
}
std::pair<Tensor, Tensor> LayerNorm::forward(const Tensor& x, const Tensor& residual) {
  check_input(x);
  return functional::add_layer_norm(x, residual, weight, bias, options_.eps_);
}
std::string LayerNorm::extra_repr() const {
  return fmt::format("({},), eps={}, elementwise_affine={}, bias={}", options_.size_, options_.eps_,
                     options_.elementwise_affine_, options_.elementwise_affine_ && options_.bias_);
}

Embedding::Embedding(const EmbeddingOptions& o, Generator* gen) : Module("Embedding"), options_(o) {
  if (o.num_ <= 0 || o.dim_ <= 0)
    fail("Embedding: sizes must be positive, got {} x {}", o.num_, o.dim_);
  weight = register_parameter("weight", empty({o.num_, o.dim_}, {o.dtype_}));
  init::normal_(weight, 0.0, 1.0, gen);
}
Tensor Embedding::forward(const Tensor& ids) { return functional::embedding(ids, weight); }
std::string Embedding::extra_repr() const { return fmt::format("{}, {}", options_.num_, options_.dim_); }

Dropout::Dropout(double p, Generator* gen) : Module("Dropout"), p_(p), gen_(gen) {
  if (p < 0.0 || p > 1.0) fail("Dropout: probability must be in [0, 1], got {}", p);
}
Tensor Dropout::forward(const Tensor& x) { return functional::dropout(x, p_, is_training(), gen_); }
std::string Dropout::extra_repr() const { return fmt::format("p={}", p_); }

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

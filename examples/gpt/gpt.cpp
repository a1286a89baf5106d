#include "gpt.hpp"

#include <unistd.h>

#include <xgrad/check.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace gpt {
namespace nn = xg::nn;
namespace F = xg::nn::functional;
using xg::Tensor;

std::int64_t GPTConfig::layer_window(std::int64_t i) const {
  if (attention == "window") return window;
  if (attention == "alternating") return i % 2 == 1 ? window : 0;  // dense first, like GPT-3's banded layers
  return 0;
}

namespace {
/// Fails unless lo <= v <= hi, naming the setting and its flag.
void in_range(const char* key, std::int64_t v, std::int64_t lo, std::int64_t hi) {
  if (v < lo || v > hi) {
    std::string flag = std::string("--") + key;
    std::replace(flag.begin(), flag.end(), '_', '-');
    xg::fail("GPT config: {} is {}, outside [{}, {}] ({})", key, v, lo, hi, flag);
  }
}

/// Physical memory in bytes (0 if unknown).
std::uint64_t physical_memory() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page) : 0;
}
}  // namespace

void GPTConfig::validate() const {
  in_range("vocab_size", vocab_size, 1, std::int64_t(1) << 24);
  in_range("block_size", block_size, 1, std::int64_t(1) << 20);
  in_range("n_layer", n_layer, 1, 1024);
  in_range("n_head", n_head, 1, 1024);
  in_range("n_embd", n_embd, 1, std::int64_t(1) << 16);
  in_range("window", window, 0, std::int64_t(1) << 20);
  auto bad = [](const std::string& why) { xg::fail("GPT config: {}", why); };
  if (n_embd % n_head != 0) bad(fmt::format("n_embd {} must be a multiple of n_head {}", n_embd, n_head));
  if (!(dropout >= 0 && dropout < 1)) bad(fmt::format("dropout must be in [0, 1), got {} (--dropout)", dropout));
  if (attention != "dense" && attention != "window" && attention != "alternating")
    bad(fmt::format("attention must be dense, window or alternating, got \"{}\"", attention));
  if (attention != "dense" && window <= 0) bad("a windowed attention pattern needs --window > 0");
}

std::uint64_t GPTConfig::parameter_count() const {
  const auto v = static_cast<std::uint64_t>(vocab_size), t = static_cast<std::uint64_t>(block_size),
             c = static_cast<std::uint64_t>(n_embd), l = static_cast<std::uint64_t>(n_layer);
  return v * c + t * c + l * (12 * c * c + 13 * c) + 2 * c;  // validate() bounds keep this far below 2^64
}

std::uint64_t GPTConfig::training_bytes(std::int64_t batch) const {
  const auto b = static_cast<std::uint64_t>(batch), t = static_cast<std::uint64_t>(block_size),
             c = static_cast<std::uint64_t>(n_embd), l = static_cast<std::uint64_t>(n_layer),
             h = static_cast<std::uint64_t>(n_head), v = static_cast<std::uint64_t>(vocab_size);
  // Weights, gradients and two AdamW moments; per layer about 20 saved [B, T, C] activations and the
  // [B, H, T, T] attention block; logits, their gradient and the softmax.
  const long double floats = 4.0L * parameter_count() + static_cast<long double>(b) * t * (20.0L * c * l + 3.0L * v) +
                             static_cast<long double>(b) * h * t * t;
  return floats * 4 > 1.8e19L ? UINT64_MAX : static_cast<std::uint64_t>(floats * 4);
}

void GPTConfig::check_fits(std::int64_t batch) const {
  const std::uint64_t need = training_bytes(batch), have = physical_memory();
  if (have > 0 && need > have)
    xg::fail("a GPT of {} parameters at batch {} x {} needs about {} bytes ({:.1f} GiB), more than this machine's {} "
             "bytes; make the model or --batch-size smaller", parameter_count(), batch, block_size, need,
             static_cast<double>(need) / (1 << 30), have);
}

std::string GPTConfig::to_json() const {
  nlohmann::ordered_json j = {{"vocab_size", vocab_size}, {"block_size", block_size}, {"n_layer", n_layer},
                              {"n_head", n_head},         {"n_embd", n_embd},         {"dropout", dropout},
                              {"bias", bias},             {"gelu_tanh", gelu_tanh},   {"window", window},
                              {"attention", attention}};
  return j.dump();
}

GPTConfig GPTConfig::from_json(const std::string& text) {
  GPTConfig c;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    xg::fail("GPT config: the stored config is not valid JSON ({})", e.what());
  }
  if (!j.is_object()) xg::fail("GPT config: the stored config is not a JSON object");
  auto integer = [&](const char* key, std::int64_t& out, bool required) {
    if (!j.contains(key)) {
      if (required) xg::fail("GPT config: the stored config has no \"{}\"", key);
      return;
    }
    if (!j[key].is_number_integer()) xg::fail("GPT config: \"{}\" must be an integer, got {}", key, j[key].type_name());
    out = j[key].get<std::int64_t>();
  };
  integer("vocab_size", c.vocab_size, true);
  integer("block_size", c.block_size, true);
  integer("n_layer", c.n_layer, true);
  integer("n_head", c.n_head, true);
  integer("n_embd", c.n_embd, true);
  integer("window", c.window, false);
  if (!j.contains("dropout") || !j["dropout"].is_number()) xg::fail("GPT config: \"dropout\" must be a number");
  c.dropout = j["dropout"].get<double>();
  if (!j.contains("bias") || !j["bias"].is_boolean()) xg::fail("GPT config: \"bias\" must be true or false");
  c.bias = j["bias"].get<bool>();
  if (j.contains("gelu_tanh")) {
    if (!j["gelu_tanh"].is_boolean()) xg::fail("GPT config: \"gelu_tanh\" must be true or false");
    c.gelu_tanh = j["gelu_tanh"].get<bool>();
  }
  if (j.contains("attention")) {
    if (!j["attention"].is_string()) xg::fail("GPT config: \"attention\" must be a string");
    c.attention = j["attention"].get<std::string>();
  }
  c.validate();
  return c;
}

MLP::MLP(const GPTConfig& c) : Module("MLP"), gelu_tanh(c.gelu_tanh), dropout(c.dropout) {
  c_fc = register_module("c_fc", std::make_shared<nn::Linear>(nn::LinearOptions(c.n_embd, 4 * c.n_embd).bias(c.bias)));
  c_proj = register_module("c_proj", std::make_shared<nn::Linear>(nn::LinearOptions(4 * c.n_embd, c.n_embd).bias(c.bias)));
}
Tensor MLP::forward(const Tensor& x) {
  auto act = gelu_tanh ? F::Activation::gelu_tanh : F::Activation::gelu;
  return F::dropout(c_proj->forward(c_fc->forward(x, act)), dropout, is_training());
}

Block::Block(const GPTConfig& c, std::int64_t layer) : Module("Block") {
  ln_1 = register_module("ln_1", std::make_shared<nn::LayerNorm>(nn::LayerNormOptions(c.n_embd).bias(c.bias)));
  attn = register_module("attn", std::make_shared<nn::MultiHeadAttention>(nn::MultiHeadAttentionOptions(c.n_embd, c.n_head)
                                                                              .bias(c.bias)
                                                                              .causal(true)
                                                                              .window(c.layer_window(layer))
                                                                              .dropout(c.dropout)));
  ln_2 = register_module("ln_2", std::make_shared<nn::LayerNorm>(nn::LayerNormOptions(c.n_embd).bias(c.bias)));
  mlp = register_module("mlp", std::make_shared<MLP>(c));
}
Tensor Block::forward(const Tensor& x, nn::KVCache* cache) {
  // h = x + attn(...) (the residual: the gradient passes straight through) and ln_2(h), in one pass.
  auto [h, normed] = ln_2->forward(x, attn->forward(ln_1->forward(x), Tensor(), cache));
  return h + mlp->forward(normed);
}

Transformer::Transformer(const GPTConfig& c) : Module("ModuleDict") {
  wte = register_module("wte", std::make_shared<nn::Embedding>(c.vocab_size, c.n_embd));
  wpe = register_module("wpe", std::make_shared<nn::Embedding>(c.block_size, c.n_embd));
  h = register_module("h", std::make_shared<nn::ModuleList>());
  for (std::int64_t i = 0; i < c.n_layer; ++i) h->push_back(std::make_shared<Block>(c, i));
  ln_f = register_module("ln_f", std::make_shared<nn::LayerNorm>(nn::LayerNormOptions(c.n_embd).bias(c.bias)));
}

GPT::GPT(const GPTConfig& c) : Module("GPT"), config_(c) {
  c.validate();
  transformer = register_module("transformer", std::make_shared<Transformer>(c));
  lm_head = register_module("lm_head", std::make_shared<nn::Linear>(nn::LinearOptions(c.n_embd, c.vocab_size).bias(false)));
  // Weight tying (https://paperswithcode.com/method/weight-tying): one tensor serves both.
  lm_head->weight = transformer->wte->weight;
  lm_head->set_parameter("weight", transformer->wte->weight);
  // nanoGPT's init: N(0, 0.02) for weights and embeddings, zero biases, and the residual projections
  // scaled by 1/sqrt(2 n_layer) (GPT-2).
  const double proj_std = 0.02 / std::sqrt(2.0 * static_cast<double>(c.n_layer));
  for (auto& [name, p] : named_parameters()) {
    bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    bool is_norm = name.find(".ln_") != std::string::npos || name.find("ln_f") != std::string::npos;
    if (is_norm) continue;  // LayerNorm: weight 1, bias 0
    if (is_bias) {
      nn::init::zeros_(p);
    } else if (name.size() >= 13 && name.compare(name.size() - 13, 13, "c_proj.weight") == 0) {
      nn::init::normal_(p, 0.0, proj_std);
    } else {
      nn::init::normal_(p, 0.0, 0.02);
    }
  }
}

Tensor GPT::forward(const Tensor& idx) {
  std::vector<nn::KVCache> none;
  return forward(idx, none);
}

Tensor GPT::forward(const Tensor& idx, std::vector<nn::KVCache>& cache, bool last_only) {
  if (idx.dtype() != xg::int64 || idx.dim() != 2)
    xg::fail("GPT: expected int64 token ids [B, T], got {} {}", xg::dtype_name(idx.dtype()),
                                xg::shape_str(idx.shape()));
  const bool cached = !cache.empty();
  if (cached && cache.size() != transformer->h->size())
    xg::fail("GPT: the cache has {} layers, the model {}", cache.size(), transformer->h->size());
  const std::int64_t past = cached ? cache[0].size() : 0, t = idx.shape()[1];
  if (past + t > config_.block_size)
    xg::fail("GPT: a sequence of {} tokens is longer than block_size {}", past + t, config_.block_size);
  Tensor pos = xg::arange(static_cast<double>(past), static_cast<double>(past + t), 1.0, {xg::int64});
  Tensor x = transformer->wte->forward(idx) + transformer->wpe->forward(pos);  // [B, T, C] + [T, C]
  x = F::dropout(x, config_.dropout, is_training());
  for (std::size_t i = 0; i < transformer->h->size(); ++i) {
    auto block = transformer->h->at<Block>(i);
    if (checkpoint_blocks_ && !cached) {
      // The block is held by value: backward runs it again after this loop is gone.
      x = nn::checkpoint([block](const std::vector<Tensor>& in) { return block->forward(in[0], nullptr); }, {x});
    } else {
      x = block->forward(x, cached ? &cache[i] : nullptr);
    }
  }
  if (last_only) x = xg::narrow(x, 1, t - 1, 1);  // the head is per position: skip the ones not needed
  return lm_head->forward(transformer->ln_f->forward(x));
}

Tensor GPT::loss(const Tensor& idx, const Tensor& targets) {
  Tensor logits = forward(idx);
  return F::cross_entropy(logits, targets, {.ignore_index = -1});
}

std::int64_t GPT::num_parameters(bool non_embedding) const {
  std::int64_t n = 0;
  for (auto& p : parameters()) n += p.numel();
  if (non_embedding) n -= transformer->wpe->weight.numel();
  return n;
}

std::int64_t sample_token(const std::vector<float>& logits, const SampleOptions& o, xg::Generator& gen) {
  const std::size_t v = logits.size();
  if (v == 0) xg::fail("sample: the model gave no logits");
  for (std::size_t i = 0; i < v; ++i)
    if (!std::isfinite(logits[i]))
      xg::fail("sample: the model's logit for token {} is {}: the checkpoint's weights (or what they compute) are "
               "not finite, so there is no distribution to sample from",
               i, logits[i]);
  auto greedy = [&] { return std::max_element(logits.begin(), logits.end()) - logits.begin(); };
  if (o.temperature <= 0.0) return greedy();
  std::vector<double> z(v);
  for (std::size_t i = 0; i < v; ++i) {
    z[i] = logits[i] / o.temperature;
    // A temperature so small that a logit divided by it overflows: the limit of sampling is greedy.
    if (!std::isfinite(z[i])) return greedy();
  }
  std::vector<std::size_t> order(v);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return z[a] > z[b]; });
  std::size_t keep = v;
  if (o.top_k > 0) keep = std::min<std::size_t>(keep, static_cast<std::size_t>(o.top_k));
  double m = z[order[0]], total = 0.0;
  std::vector<double> p(keep);
  for (std::size_t i = 0; i < keep; ++i) total += p[i] = std::exp(z[order[i]] - m);
  if (o.top_p < 1.0) {  // the smallest prefix whose probability reaches top_p
    double acc = 0.0;
    std::size_t n = 0;
    while (n < keep && acc < o.top_p * total) acc += p[n++];
    keep = std::max<std::size_t>(n, 1);
    total = 0.0;
    for (std::size_t i = 0; i < keep; ++i) total += p[i];
  }
  double r = gen.uniform() * total;
  for (std::size_t i = 0; i < keep; ++i) {
    r -= p[i];
    if (r < 0.0) return static_cast<std::int64_t>(order[i]);
  }
  return static_cast<std::int64_t>(order[keep - 1]);
}

std::vector<std::int64_t> generate(GPT& model, std::vector<std::int64_t> tokens, const SampleOptions& o) {
  xg::autograd::NoGradGuard ng;
  model.eval();
  const auto& c = model.config();
  for (auto t : tokens)
    if (t < 0 || t >= c.vocab_size)
      xg::fail("generate: token id {} is outside the vocabulary of {}", t, c.vocab_size);
  if (tokens.empty()) xg::fail("generate: the prompt is empty; give at least one token");
  xg::Generator gen(o.seed);
  std::vector<nn::KVCache> cache(static_cast<std::size_t>(c.n_layer));
  for (std::int64_t i = 0; i < o.max_new_tokens; ++i) {
    std::size_t start = tokens.size() > static_cast<std::size_t>(c.block_size) ? tokens.size() - c.block_size : 0;
    Tensor logits;
    if (o.use_cache && start == 0 && cache[0].size() > 0) {
      // Only the newest token goes through the model; the cache holds every earlier position.
      logits = model.forward(xg::index_tensor({tokens.back()}, {1, 1}), cache, true);
    } else {
      std::vector<std::int64_t> ctx(tokens.begin() + static_cast<std::ptrdiff_t>(start), tokens.end());
      const auto t = static_cast<std::int64_t>(ctx.size());
      Tensor idx = xg::index_tensor(ctx, {1, t});
      if (o.use_cache && start == 0) {
        logits = model.forward(idx, cache, true);  // prefill
      } else {
        std::vector<nn::KVCache> none;  // the window slid: every position moved, so a cache no longer applies
        logits = model.forward(idx, none, true);
      }
    }
    std::vector<float> last = logits.select(1, logits.shape()[1] - 1).reshape({-1}).to_vector<float>();
    tokens.push_back(sample_token(last, o, gen));
  }
  return tokens;
}

}  // namespace gpt

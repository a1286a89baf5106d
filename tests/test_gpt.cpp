// The reference GPT: nanoGPT's parameter names and shapes, weight tying, gradients, sampling, tokenizer.
#include <set>

#include "gpt.hpp"
#include "helpers.hpp"
#include "tokenizer.hpp"

using xg::Tensor;

namespace {
gpt::GPTConfig tiny() {
  gpt::GPTConfig c;
  c.vocab_size = 7;
  c.block_size = 5;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 8;
  return c;
}
}  // namespace

TEST_CASE("GPT parameters have nanoGPT's names, shapes and order", "[gpt]") {
  gpt::GPTConfig c = tiny();
  gpt::GPT model(c);
  std::vector<std::pair<std::string, xg::Shape>> want = {{"transformer.wte.weight", {7, 8}}, {"transformer.wpe.weight", {5, 8}}};
  for (int i = 0; i < 2; ++i) {
    std::string p = "transformer.h." + std::to_string(i) + ".";
    for (auto& e : std::vector<std::pair<std::string, xg::Shape>>{
             {"ln_1.weight", {8}}, {"ln_1.bias", {8}}, {"attn.c_attn.weight", {24, 8}}, {"attn.c_attn.bias", {24}},
             {"attn.c_proj.weight", {8, 8}}, {"attn.c_proj.bias", {8}}, {"ln_2.weight", {8}}, {"ln_2.bias", {8}},
             {"mlp.c_fc.weight", {32, 8}}, {"mlp.c_fc.bias", {32}}, {"mlp.c_proj.weight", {8, 32}}, {"mlp.c_proj.bias", {8}}})
      want.emplace_back(p + e.first, e.second);
  }
  want.emplace_back("transformer.ln_f.weight", xg::Shape{8});
  want.emplace_back("transformer.ln_f.bias", xg::Shape{8});
  want.emplace_back("lm_head.weight", xg::Shape{7, 8});
  auto sd = model.state_dict();
  REQUIRE(sd.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    CHECK(sd[i].first == want[i].first);
    CHECK(sd[i].second.shape() == want[i].second);
  }
  CHECK(model.lm_head->weight.is_same(model.transformer->wte->weight));  // tied
  CHECK(model.parameters().size() == want.size() - 1);                  // and counted once
  gpt::GPTConfig nb = c;
  nb.bias = false;
  for (auto& [n, _] : gpt::GPT(nb).state_dict()) CHECK(n.find("bias") == std::string::npos);
}

TEST_CASE("GPT logits, loss and bad input", "[gpt]") {
  xg::manual_seed(1);
  gpt::GPT model(tiny());
  Tensor idx = xg::index_tensor({0, 1, 2, 3, 4, 5, 6, 0}, {2, 4});
  Tensor logits = model.forward(idx);
  CHECK(logits.shape() == xg::Shape{2, 4, 7});
  // At initialisation the loss is close to log(vocab): the logits are nearly uniform.
  CHECK(model.loss(idx, idx).item() == Approx(std::log(7.0)).margin(0.1));
  test::require_error([&] { model.forward(xg::zeros({1, 6}, {xg::int64})); }, {"longer than block_size 5"});
  test::require_error([&] { model.forward(xg::index_tensor({9}, {1, 1})); }, {"token id 9"});
  test::require_error([] { gpt::GPTConfig c = tiny(); c.n_head = 3; gpt::GPT m(c); }, {"multiple of n_head"});
}

TEST_CASE("a whole GPT passes gradcheck in float64", "[gpt]") {
  xg::manual_seed(2);
  gpt::GPTConfig c = tiny();
  c.n_layer = 1;
  c.attention = "window";
  c.window = 2;
  gpt::GPT model(c);
  model.to(xg::float64);
  Tensor idx = xg::index_tensor({3, 1, 4, 1, 5, 2, 6, 0}, {2, 4});
  Tensor y = xg::index_tensor({1, 4, 1, 5, 2, 6, 0, 3}, {2, 4});
  auto params = model.parameters();
  CHECK(xg::autograd::gradcheck([&](const std::vector<Tensor>&) { return model.loss(idx, y); }, params));
}

TEST_CASE("a small GPT learns a repeating sequence", "[gpt]") {
  xg::manual_seed(3);
  gpt::GPTConfig c = tiny();
  gpt::GPT model(c);
  xg::optim::AdamW opt(xg::optim::decay_groups(model.named_parameters(), 0.0), {.lr = 1e-2});
  Tensor x = xg::index_tensor({0, 1, 2, 3, 4, 1, 2, 3, 4, 5}, {2, 5});
  Tensor y = xg::index_tensor({1, 2, 3, 4, 5, 2, 3, 4, 5, 6}, {2, 5});
  double first = 0, last = 0;
  for (int i = 0; i < 150; ++i) {
    Tensor loss = model.loss(x, y);
    (i == 0 ? first : last) = loss.item();
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  CHECK(first > 1.5);
  CHECK(last < 0.05);
  gpt::SampleOptions o;
  o.max_new_tokens = 4;
  o.temperature = 0;  // greedy
  CHECK(gpt::generate(model, {0}, o) == std::vector<std::int64_t>{0, 1, 2, 3, 4});
}

TEST_CASE("sampling honours temperature, top-k and top-p", "[gpt]") {
  std::vector<float> logits = {0.0f, 3.0f, 2.9f, -1.0f};
  xg::Generator gen(5);
  gpt::SampleOptions greedy;
  greedy.temperature = 0;
  CHECK(gpt::sample_token(logits, greedy, gen) == 1);
  gpt::SampleOptions k2;
  k2.top_k = 2;
  for (int i = 0; i < 200; ++i) {
    auto t = gpt::sample_token(logits, k2, gen);
    CHECK((t == 1 || t == 2));
  }
  gpt::SampleOptions p;
  p.top_p = 0.3;  // the most likely token alone holds over 30% of the mass
  for (int i = 0; i < 50; ++i) CHECK(gpt::sample_token(logits, p, gen) == 1);
  gpt::SampleOptions all;
  std::vector<int> counts(4);
  for (int i = 0; i < 4000; ++i) ++counts[gpt::sample_token(logits, all, gen)];
  double z = 1 + std::exp(3.0) + std::exp(2.9) + std::exp(-1.0);
  CHECK(counts[1] / 4000.0 == Approx(std::exp(3.0) / z).margin(0.03));
  // The context slides when it exceeds block_size.
  xg::manual_seed(4);
  gpt::GPT model(tiny());
  gpt::SampleOptions o;
  o.max_new_tokens = 12;
  CHECK(gpt::generate(model, {1, 2}, o).size() == 14);
  test::require_error([&] { gpt::generate(model, {8}, o); }, {"token id 8", "vocabulary of 7"});
}

TEST_CASE("sampling refuses non-finite logits and treats an overflowing temperature as greedy", "[gpt]") {
  xg::Generator gen(6);
  gpt::SampleOptions o;
  for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    std::vector<float> logits = {0.5f, bad, 1.0f};
    test::require_error([&] { gpt::sample_token(logits, o, gen); }, {"logit for token 1", "not finite"});
  }
  // 1 / 1e-310 overflows double: every logit divided by it is infinite, and sampling's limit is greedy.
  std::vector<float> logits = {0.5f, 2.0f, 1.99f, -3.0f};
  for (double t : {1e-310, 1e-30}) {
    o.temperature = t;
    for (int i = 0; i < 20; ++i) CHECK(gpt::sample_token(logits, o, gen) == 1);
  }
  // A model whose weights hold NaN: generate says so instead of printing tokens.
  xg::manual_seed(4);
  gpt::GPT model(tiny());
  {
    xg::autograd::NoGradGuard ng;
    model.transformer->ln_f->weight.fill_(std::nan(""));
  }
  o.temperature = 1.0;
  o.max_new_tokens = 3;
  test::require_error([&] { gpt::generate(model, {1, 2}, o); }, {"not finite"});
}

TEST_CASE("LoRA: base + adapter and the merged export give the same logits for every target, tied ones refused", "[gpt]") {
  const Tensor idx = xg::index_tensor({0, 1, 2, 3, 4, 5, 6, 0}, {2, 4});
  for (std::string target : {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}) {
    INFO("target " << target);
    xg::manual_seed(11);
    gpt::GPT model(tiny());
    model.eval();
    xg::Generator gen(3);
    REQUIRE(xg::nn::apply_lora(model, xg::nn::LoRAOptions(2).alpha(4), {target}, &gen) == 2);
    {
      xg::autograd::NoGradGuard ng;  // a trained adapter: B is no longer zero
      for (auto& [n, p] : model.named_parameters())
        if (n.find("lora_B") != std::string::npos) p.copy_(xg::randn(p.shape(), {}, &gen) * 0.5);
    }
    const Tensor with_adapter = model.forward(idx).detach();
    const Tensor embedding = model.transformer->wte->weight.detach().clone();
    xg::nn::merge_lora(model);
    gpt::GPT plain(tiny());
    plain.load_state_dict(model.state_dict(), /*strict=*/false);  // what `finetune` exports
    plain.eval();
    CHECK(xg::allclose(plain.forward(idx), with_adapter, 1e-5, 1e-6));
    CHECK(xg::allclose(plain.transformer->wte->weight, embedding, 0, 0));
    CHECK(plain.lm_head->weight.is_same(plain.transformer->wte->weight));
  }
  // lm_head shares its weight with the token embedding: an adapter merged into it would change both.
  gpt::GPT model(tiny());
  test::require_error([&] { xg::nn::apply_lora(model, xg::nn::LoRAOptions(2), {"lm_head"}); },
                      {"lm_head.weight is tied to transformer.wte.weight", "Leave lm_head out"});
  for (auto& [n, p] : model.named_parameters()) CHECK(n.find("lora") == std::string::npos);  // nothing added
  // With no targets (every Linear), the tied head is left out.
  CHECK(xg::nn::apply_lora(model, xg::nn::LoRAOptions(2)) == 8);
  CHECK_FALSE(model.lm_head->has_lora());
}

TEST_CASE("the char tokenizer round-trips UTF-8 and names unknown characters", "[gpt]") {
  std::string text = "Hello, wörld! ünïcødé → ∑ 😀\nline two";
  auto tok = gpt::CharTokenizer::from_text(text);
  CHECK(tok.decode(tok.encode(text)) == text);
  auto cps = gpt::utf8_decode(text);
  CHECK(tok.vocab_size() == static_cast<std::int64_t>(std::set<char32_t>(cps.begin(), cps.end()).size()));
  auto back = gpt::CharTokenizer::from_json(tok.to_json());
  CHECK(back.encode("wörld") == tok.encode("wörld"));
  test::require_error([&] { tok.encode("xyz"); }, {"\"x\"", "not in the vocabulary"});
  test::require_error([] { gpt::utf8_decode(std::string("a\xff")); }, {"invalid UTF-8", "byte 1"});
}

TEST_CASE("the key/value cache gives the uncached path's logits and tokens", "[gpt]") {
  xg::manual_seed(6);
  gpt::GPTConfig c = tiny();
  c.block_size = 8;
  c.attention = "alternating";
  c.window = 3;
  gpt::GPT model(c);
  model.eval();
  xg::autograd::NoGradGuard ng;
  std::vector<std::int64_t> seq = {1, 5, 2, 6, 3, 0, 4};
  Tensor full = model.forward(xg::index_tensor(seq, {1, 7}));
  std::vector<xg::nn::KVCache> cache(2);
  Tensor first = model.forward(xg::index_tensor({1, 5, 2}, {1, 3}), cache);  // prefill, then one at a time
  CHECK(xg::allclose(first, full.slice(1, 0, 3), 1e-5, 1e-6));
  for (std::int64_t t = 3; t < 7; ++t) {
    Tensor step = model.forward(xg::index_tensor({seq[t]}, {1, 1}), cache);
    CHECK(xg::allclose(step, full.slice(1, t, t + 1), 1e-5, 1e-6));
  }
  CHECK(cache[0].size() == 7);
  test::require_error([&] { model.forward(xg::index_tensor({1, 2}, {1, 2}), cache); }, {"longer than block_size 8"});
  for (double temp : {0.0, 1.0}) {
    gpt::SampleOptions o;
    o.max_new_tokens = 20;  // past block_size: the window slides
    o.temperature = temp;
    o.seed = 9;
    auto cached = gpt::generate(model, {3, 1}, o);
    o.use_cache = false;
    CHECK(gpt::generate(model, {3, 1}, o) == cached);
  }
}

namespace {
/// GPT-2's BPE files, fetched by scripts/setup.sh --bpe; null, with a skip reported, when they are missing
/// (a failure instead under XGRAD_REQUIRE_BPE=1).
std::shared_ptr<gpt::GPT2Tokenizer> gpt2_tokenizer() {
  const std::string dir = std::string(XGRAD_SOURCE_DIR) + "/data/gpt2";
  if (!std::filesystem::exists(dir + "/encoder.json") || !std::filesystem::exists(dir + "/vocab.bpe")) {
    const std::string why = "GPT-2's BPE files are not in " + dir + " (bash scripts/setup.sh --bpe fetches them)";
    if (test::env_flag("XGRAD_REQUIRE_BPE")) FAIL(why << "; XGRAD_REQUIRE_BPE=1 requires them");
    test::skip(why);
    return nullptr;
  }
  static std::shared_ptr<gpt::GPT2Tokenizer> tok = gpt::GPT2Tokenizer::from_dir(dir);
  return tok;
}
}  // namespace

// Expected ids: OpenAI's own encoder (Encoder.js in the npm package gpt-3-encoder 1.1.4, run with node).
TEST_CASE("GPT-2 BPE encodes like OpenAI's encoder", "[gpt][bpe]") {
  auto tok = gpt2_tokenizer();
  if (!tok) return;  // skipped, and reported so
  CHECK(tok->vocab_size() == 50257);
  const std::vector<std::pair<std::string, std::vector<std::int64_t>>> cases = {
      {"Hello world", {15496, 995}},
      {"The quick brown fox", {464, 2068, 7586, 21831}},
      {"I'll say it's 2024, don't you?", {40, 1183, 910, 340, 338, 48609, 11, 836, 470, 345, 30}},
      {"naïve café — ünïcødé 😀!", {2616, 38776, 40304, 851, 6184, 120, 77, 26884, 66, 24172, 67, 2634, 30325, 222, 0}},
      {"  leading spaces\n\n\ttabs and    runs  ", {220, 3756, 9029, 628, 197, 8658, 82, 290, 220, 220, 220, 4539, 220, 220}},
      {"x=3.14159; y+=42", {87, 28, 18, 13, 1415, 19707, 26, 331, 47932, 3682}},
  };
  for (const auto& [text, ids] : cases) {
    INFO(text);
    CHECK(tok->encode(text) == ids);
    CHECK(tok->decode(ids) == text);
  }
}

TEST_CASE("GPT-2 BPE round-trips arbitrary UTF-8", "[gpt][bpe]") {
  auto tok = gpt2_tokenizer();
  if (!tok) return;  // skipped, and reported so
  xg::Generator gen(17);
  for (int trial = 0; trial < 200; ++trial) {
    std::string s;
    for (int i = 0; i < 40; ++i) {
      // Code points from ASCII, Latin, Greek, CJK, emoji and the whitespace set.
      static const char32_t ranges[][2] = {{0x20, 0x7e}, {0xa0, 0x17f}, {0x391, 0x3c9}, {0x4e00, 0x4fff}, {0x1f600, 0x1f64f}, {0x9, 0xd}};
      auto& r = ranges[gen.next_u64() % 6];
      s += gpt::utf8_encode(r[0] + static_cast<char32_t>(gen.next_u64() % (r[1] - r[0] + 1)));
    }
    INFO(s);
    CHECK(tok->decode(tok->encode(s)) == s);
  }
  test::require_error([&] { tok->encode(std::string("ok \xc3")); }, {"invalid UTF-8"});
  test::require_error([&] { tok->decode({50257}); }, {"token id 50257"});
  auto meta = tok->metadata();
  CHECK(gpt::tokenizer_from_metadata(meta)->encode("Hello world") == std::vector<std::int64_t>{15496, 995});
}

TEST_CASE("activation checkpointing gives the same loss and gradients, bit for bit, dropout included", "[gpt]") {
  gpt::GPTConfig c = tiny();
  c.dropout = 0.2;
  auto run = [&](bool checkpointing) {
    xg::manual_seed(21);
    gpt::GPT model(c);
    model.set_activation_checkpointing(checkpointing);
    Tensor x = xg::index_tensor({1, 2, 3, 4, 5, 0, 6, 1, 2, 3}, {2, 5});
    Tensor y = xg::index_tensor({2, 3, 4, 5, 0, 6, 1, 2, 3, 4}, {2, 5});
    Tensor loss = model.loss(x, y);
    loss.backward();
    std::vector<double> out = {loss.item()};
    for (auto& p : model.parameters())
      for (double v : p.grad().to_vector<double>()) out.push_back(v);
    return out;
  };
  const auto plain = run(false), checkpointed = run(true);
  REQUIRE(plain.size() == checkpointed.size());
  CHECK(plain == checkpointed);
}

TEST_CASE("checkpoint recomputes a block in backward and refuses create_graph", "[nn]") {
  Tensor w = test::uniform({3, 3}, -1, 1, 30);
  Tensor x = test::uniform({2, 3}, -1, 1, 31);
  auto block = [&w](const std::vector<Tensor>& in) { return xg::tanh(xg::matmul(in[0], w)) * in[0]; };
  Tensor plain = xg::sum(block({x}) * block({x}));
  auto want = xg::autograd::grad({plain}, {x, w});
  int calls = 0;
  auto counted = [&](const std::vector<Tensor>& in) { ++calls; return block(in); };
  Tensor y = xg::nn::checkpoint(counted, {x});
  CHECK(calls == 1);
  CHECK(!y.grad_fn()->inputs().empty());
  Tensor loss = xg::sum(y * y);
  loss.backward({}, true);
  CHECK(calls == 2);  // the block ran again in backward
  CHECK(xg::allclose(x.grad(), want[0], 1e-14, 1e-14));
  CHECK(xg::allclose(w.grad(), want[1], 1e-14, 1e-14));  // the parameter inside the block gets its gradient
  test::require_error([&] { loss.backward({}, true, /*create_graph=*/true); }, {"checkpoint", "create_graph"});
  test::require_error([&] { xg::autograd::grad({loss}, {x}); }, {"checkpoint", "use backward()"});
}

// Layers and the properties the transformer literature states: gradchecks of every module, fused ops
// against their composite formulas, attention's shift invariance, causality, windows and equivariance,
// per-token layer norm, embedding gradients, LoRA, and a train/save/load/resume round trip.
#include <cstdio>
#include <filesystem>

#include "helpers.hpp"

namespace nn = xg::nn;
namespace F = xg::nn::functional;
using xg::Tensor;
using Inputs = std::vector<Tensor>;

namespace {
std::string temp_path(const std::string& name) { return (std::filesystem::temp_directory_path() / name).string(); }

/// gradcheck and gradgradcheck of module(x) over x and every parameter.
void check_module(nn::Module& m, const Tensor& x, const std::function<Tensor(const Tensor&)>& fwd) {
  Inputs in = {x};
  for (auto& p : m.parameters()) in.push_back(p);
  auto f = [&](const Inputs& v) { return fwd(v[0]); };
  CHECK(xg::autograd::gradcheck(f, in));
  CHECK(xg::autograd::gradgradcheck(f, in));
}

Tensor d(const std::vector<double>& v, const xg::Shape& s) { return xg::tensor(v, s, {xg::float64}); }
}  // namespace

TEST_CASE("every module passes gradcheck and gradgradcheck in float64", "[nn]") {
  xg::manual_seed(5);
  nn::Linear lin(nn::LinearOptions(4, 3).dtype(xg::float64));
  check_module(lin, test::uniform({2, 4}, -1, 1, 1), [&](const Tensor& x) { return lin.forward(x); });
  nn::LayerNorm ln(nn::LayerNormOptions(4).dtype(xg::float64));
  check_module(ln, test::uniform({2, 3, 4}, -1, 1, 2), [&](const Tensor& x) { return ln.forward(x); });
  nn::Embedding emb(nn::EmbeddingOptions(6, 3).dtype(xg::float64));
  Tensor ids = xg::index_tensor({5, 0, 5, 2}, {2, 2});
  check_module(emb, test::uniform({1}, 0, 1, 3), [&](const Tensor& x) { return emb.forward(ids) * x; });
  for (auto [causal, window] : {std::pair{false, 0}, std::pair{true, 0}, std::pair{false, 2}}) {
    nn::MultiHeadAttention mha(nn::MultiHeadAttentionOptions(4, 2).causal(causal).window(window).dtype(xg::float64));
    check_module(mha, test::uniform({2, 3, 4}, -1, 1, 4), [&](const Tensor& x) { return mha.forward(x); });
  }
  nn::MultiHeadAttention padded(nn::MultiHeadAttentionOptions(4, 2).dtype(xg::float64));
  Tensor pad = d({1, 1, 0, 1, 1, 1}, {2, 1, 1, 3});
  check_module(padded, test::uniform({2, 3, 4}, -1, 1, 5), [&](const Tensor& x) { return padded.forward(x, pad); });
  auto seq = std::make_shared<nn::Sequential>();
  seq->push_back(std::make_shared<nn::Linear>(nn::LinearOptions(3, 5).dtype(xg::float64)))
      .push_back(std::make_shared<nn::GELU>(true))
      .push_back(std::make_shared<nn::Dropout>(0.5))
      .push_back(std::make_shared<nn::Linear>(nn::LinearOptions(5, 2).dtype(xg::float64)));
  seq->eval();  // dropout off
  check_module(*seq, test::uniform({4, 3}, -1, 1, 6), [&](const Tensor& x) { return seq->forward(x); });
  auto acts = std::make_shared<nn::Sequential>();
  acts->push_back(std::make_shared<nn::Flatten>())
      .push_back(std::make_shared<nn::Linear>(nn::LinearOptions(6, 5).dtype(xg::float64)))
      .push_back(std::make_shared<nn::Tanh>())
      .push_back(std::make_shared<nn::SiLU>())
      .push_back(std::make_shared<nn::Sigmoid>())
      .push_back(std::make_shared<nn::ReLU>());
  check_module(*acts, test::uniform({4, 2, 3}, -1, 1, 10), [&](const Tensor& x) { return acts->forward(x); });
  CHECK(acts->to_string().find("(0): Flatten(start_dim=1, end_dim=-1)") != std::string::npos);
  nn::LSTM lstm(nn::RNNOptions(3, 2).num_layers(2).dtype(xg::float64));
  check_module(lstm, test::uniform({3, 2, 3}, -1, 1, 18), [&](const Tensor& x) { return lstm.forward(x); });
  nn::GRU gru(nn::RNNOptions(2, 3).batch_first(true).dtype(xg::float64));
  check_module(gru, test::uniform({2, 3, 2}, -1, 1, 19), [&](const Tensor& x) { return gru.forward(x); });
  nn::Conv2d conv(nn::Conv2dOptions(2, 3, 2).padding({1, 0}).dtype(xg::float64));
  check_module(conv, test::uniform({1, 2, 3, 3}, -1, 1, 20), [&](const Tensor& x) { return conv.forward(x); });
  nn::SwiGLU swiglu(nn::SwiGLUOptions(4, 6).dtype(xg::float64));
  check_module(swiglu, test::uniform({2, 3, 4}, -1, 1, 16), [&](const Tensor& x) { return swiglu.forward(x); });
  nn::MultiHeadAttention gqa(nn::MultiHeadAttentionOptions(8, 4).n_kv_heads(2).rope(true).causal(true).dtype(xg::float64));
  check_module(gqa, test::uniform({2, 3, 8}, -1, 1, 17), [&](const Tensor& x) { return gqa.forward(x); });
  nn::RMSNorm rms(nn::RMSNormOptions(4).eps(1e-6).dtype(xg::float64));
  check_module(rms, test::uniform({2, 3, 4}, -1, 1, 11), [&](const Tensor& x) { return rms.forward(x); });
  nn::GroupNorm gn(nn::GroupNormOptions(2, 4).dtype(xg::float64));
  check_module(gn, test::uniform({2, 4, 3}, -1, 1, 12), [&](const Tensor& x) { return gn.forward(x); });
  nn::BatchNorm1d bn1(nn::BatchNormOptions(3).dtype(xg::float64));
  check_module(bn1, test::uniform({4, 3}, -1, 1, 13), [&](const Tensor& x) { return bn1.forward(x); });  // training
  bn1.eval();
  check_module(bn1, test::uniform({4, 3, 2}, -1, 1, 14), [&](const Tensor& x) { return bn1.forward(x); });
  nn::BatchNorm2d bn2(nn::BatchNormOptions(2).dtype(xg::float64));
  check_module(bn2, test::uniform({2, 2, 3, 3}, -1, 1, 15), [&](const Tensor& x) { return bn2.forward(x); });
  nn::Linear lora(nn::LinearOptions(4, 3).dtype(xg::float64));
  lora.add_lora(nn::LoRAOptions(2).alpha(4.0));
  nn::init::normal_(lora.lora_B, 0.0, 0.1);  // non-zero B, so every term is exercised
  check_module(lora, test::uniform({2, 4}, -1, 1, 7), [&](const Tensor& x) { return lora.forward(x); });
}

TEST_CASE("a whole model converted with to(float64) passes gradcheck", "[nn]") {
  xg::manual_seed(8);
  nn::Sequential m;
  m.push_back(std::make_shared<nn::Linear>(3, 4)).push_back(std::make_shared<nn::LayerNorm>(4));
  m.to(xg::float64);
  for (auto& p : m.parameters()) CHECK(p.dtype() == xg::float64);
  Tensor x = test::uniform({2, 3}, -1, 1, 9, false);
  CHECK(xg::autograd::gradcheck([&](const Inputs&) { return m.forward(x); }, m.parameters()));
}

TEST_CASE("attention reads strided operands in place with the values and gradients of copies", "[nn]") {
  // Strided operands (rows spaced out, as heads split from a fused projection) are read in place and
  // give the same values and gradients as contiguous copies.
  Tensor wide = test::uniform({2, 4, 9}, -1, 1, 18);
  Tensor qs = xg::narrow(wide, 2, 0, 3), ks = xg::narrow(wide, 2, 3, 3), vs = xg::narrow(wide, 2, 6, 3);
  Tensor a1 = F::scaled_dot_product_attention(qs, ks, vs, {.causal = true});
  Tensor a2 = F::scaled_dot_product_attention(qs.contiguous(), ks.contiguous(), vs.contiguous(), {.causal = true});
  CHECK(xg::allclose(a1, a2, 1e-14, 1e-15));
  Tensor gs = xg::narrow(test::uniform({2, 4, 5}, -1, 1, 19, false), 2, 1, 3);  // a strided upstream gradient
  Tensor g1 = xg::autograd::grad({a1}, {wide}, {gs}, {.retain_graph = true})[0];  // the slices are shared
  Tensor g2 = xg::autograd::grad({a2}, {wide}, {gs.contiguous()})[0];
  CHECK(xg::allclose(g1, g2, 1e-13, 1e-15));
}

TEST_CASE("the key bias of self-attention gets an identically zero gradient", "[nn][transformer]") {
  xg::manual_seed(18);
  const std::int64_t c = 8;
  nn::MultiHeadAttention mha(nn::MultiHeadAttentionOptions(c, 2).causal(true).dtype(xg::float64));
  Tensor x = test::uniform({2, 5, c}, -1, 1, 19, false);
  xg::sum(xg::sin(mha.forward(x))).backward();
  auto gb = test::values(mha.c_attn->bias.grad());  // [q | k | v] biases
  double key_max = 0, query_max = 0, value_max = 0;
  for (int i = 0; i < c; ++i) {
    query_max = std::max(query_max, std::abs(gb[i]));
    key_max = std::max(key_max, std::abs(gb[c + i]));
    value_max = std::max(value_max, std::abs(gb[2 * c + i]));
  }
  // softmax is shift-invariant: a key bias adds q.b_k to every score of a row, which changes nothing.
  CHECK(key_max < 1e-12);
  CHECK(query_max > 1e-4);
  CHECK(value_max > 1e-4);
}

TEST_CASE("layer norm normalises each token on its own", "[nn][transformer]") {
  nn::LayerNorm ln(nn::LayerNormOptions(6).dtype(xg::float64));
  Tensor x = test::uniform({4, 6}, -2, 2, 20, false);
  Tensor y = ln.forward(x);
  Tensor x2 = x.clone();
  {
    xg::autograd::NoGradGuard ng;
    x2.select(0, 2).add_(xg::arange(6.0, {xg::float64}));  // change token 2 only (not by a constant shift)
  }
  Tensor y2 = ln.forward(x2);
  for (int tok : {0, 1, 3}) CHECK(xg::allclose(y.select(0, tok), y2.select(0, tok), 0, 0));
  CHECK_FALSE(xg::allclose(y.select(0, 2), y2.select(0, 2)));
  // Each row of the output has mean 0 and (biased) variance 1.
  CHECK(xg::allclose(xg::mean(y, {-1}), xg::zeros({4}, {xg::float64}), 0, 1e-12));
  CHECK(xg::allclose(xg::var(y, {-1}, 0), xg::ones({4}, {xg::float64}), 1e-4, 0));

  // With a residual: the sum, and the norm of the sum.
  Tensor r = test::uniform({4, 6}, -2, 2, 21, false);
  auto [sum, normed] = ln.forward(x, r);
  CHECK(xg::allclose(sum, x + r, 0, 0));
  CHECK(xg::allclose(normed, ln.forward(x + r), 1e-12, 1e-12));
  test::require_error([&] { ln.forward(test::uniform({4, 5}, -1, 1, 22, false), test::uniform({4, 5}, -1, 1, 23, false)); },
                      {"LayerNorm", "[4, 5]", "6"});
}

TEST_CASE("attention: permutation-equivariant, causal, and windowed as specified", "[nn][transformer]") {
  xg::manual_seed(21);
  const std::int64_t t = 6, c = 4;
  Tensor x = test::uniform({1, t, c}, -1, 1, 22, false);
  nn::MultiHeadAttention full(nn::MultiHeadAttentionOptions(c, 2).dtype(xg::float64));
  // Permuting the tokens permutes the output the same way.
  Tensor perm = xg::index_tensor({3, 0, 5, 1, 4, 2});
  Tensor y = full.forward(x);
  Tensor yp = full.forward(xg::index_select(x, 1, perm));
  CHECK(xg::allclose(yp, xg::index_select(y, 1, perm), 1e-12, 1e-12));

  // Which inputs each output position depends on: the Jacobian's block structure.
  auto depends = [&](nn::MultiHeadAttention& m, std::int64_t out_pos, std::int64_t in_pos) {
    Tensor xi = x.clone().detach().requires_grad_();
    Tensor yo = m.forward(xi).select(1, out_pos);
    Tensor gx = xg::autograd::grad({xg::sum(yo * yo)}, {xi})[0];
    return xg::max(xg::abs(gx.select(1, in_pos))).item() > 0.0;
  };
  nn::MultiHeadAttention causal(nn::MultiHeadAttentionOptions(c, 2).causal(true).dtype(xg::float64));
  for (std::int64_t o = 0; o < t; ++o)
    for (std::int64_t i = 0; i < t; ++i) CHECK(depends(causal, o, i) == (i <= o));
  const std::int64_t w = 2;
  nn::MultiHeadAttention window(nn::MultiHeadAttentionOptions(c, 2).window(w).dtype(xg::float64));
  for (std::int64_t o = 0; o < t; ++o)
    for (std::int64_t i = 0; i < t; ++i) CHECK(depends(window, o, i) == (i <= o && i > o - w));
}

TEST_CASE("embedding gradients land on the used rows and accumulate for repeats", "[nn][transformer]") {
  nn::Embedding emb(nn::EmbeddingOptions(5, 2).dtype(xg::float64));
  Tensor ids = xg::index_tensor({3, 1, 3, 3});
  xg::sum(emb.forward(ids)).backward();
  CHECK(test::values(emb.weight.grad()) == std::vector<double>{0, 0, 1, 1, 0, 0, 3, 3, 0, 0});
  test::require_error([&] { emb.forward(xg::index_tensor({5})); }, {"embedding", "token id 5", "5 embeddings"});
}

TEST_CASE("cross-entropy's gradient is (softmax - one_hot) / n over the counted targets", "[nn][transformer]") {
  Tensor x = test::uniform({4, 3}, -2, 2, 23);
  Tensor t = xg::index_tensor({2, 0, -100, 2});
  F::cross_entropy(x, t).backward();
  Tensor p = F::softmax(x.detach());
  auto pv = test::values(p), gv = test::values(x.grad());
  std::vector<std::int64_t> tv = {2, 0, -100, 2};
  for (int r = 0; r < 4; ++r)
    for (int j = 0; j < 3; ++j) {
      double want = tv[r] == -100 ? 0.0 : (pv[r * 3 + j] - (j == tv[r] ? 1.0 : 0.0)) / 3.0;
      CHECK(gv[r * 3 + j] == Approx(want).margin(1e-14));
    }
  test::require_error([&] { F::cross_entropy(x, xg::index_tensor({0, 3, 1, 1})); }, {"cross_entropy", "target 3", "3 classes"});
  test::require_error([&] { F::cross_entropy(x, xg::index_tensor({0, 1})); }, {"cross_entropy", "[2]", "[4]"});
}

TEST_CASE("LoRA: frozen base, gradients linear in alpha, merge and unmerge keep outputs", "[nn][lora]") {
  auto grad_B = [](double alpha) {
    xg::manual_seed(24);
    nn::Linear lin(nn::LinearOptions(4, 3).dtype(xg::float64));
    lin.add_lora(nn::LoRAOptions(2).alpha(alpha));
    xg::sum(xg::tanh(lin.forward(test::uniform({5, 4}, -1, 1, 25, false)))).backward();
    CHECK_FALSE(lin.weight.grad().defined());  // frozen
    CHECK_FALSE(lin.bias.grad().defined());
    return test::values(lin.lora_B.grad());
  };
  auto g1 = grad_B(1.0), g3 = grad_B(3.0);
  for (std::size_t i = 0; i < g1.size(); ++i) CHECK(g3[i] == Approx(3.0 * g1[i]).epsilon(1e-10));

  {  // forward with an activation applies it after the adapter, merged or not
    xg::manual_seed(28);
    nn::Linear lin(nn::LinearOptions(4, 3).dtype(xg::float64));
    lin.add_lora(nn::LoRAOptions(2).alpha(2.0));
    nn::init::normal_(lin.lora_B, 0, 0.5);
    Tensor x = test::uniform({5, 4}, -1, 1, 29, false);
    Tensor expect = xg::gelu(lin.forward(x));
    CHECK(xg::allclose(lin.forward(x, F::Activation::gelu), expect, 1e-12, 1e-12));
    lin.merge_lora();
    CHECK(xg::allclose(lin.forward(x, F::Activation::gelu), expect, 1e-12, 1e-12));
    CHECK(xg::allclose(lin.forward(x, F::Activation::none), lin.forward(x), 0, 0));
  }

  xg::manual_seed(26);
  nn::Sequential model;
  model.push_back(std::make_shared<nn::Linear>(nn::LinearOptions(4, 6).dtype(xg::float64)))
      .push_back(std::make_shared<nn::GELU>())
      .push_back(std::make_shared<nn::Linear>(nn::LinearOptions(6, 2).dtype(xg::float64)));
  CHECK(nn::apply_lora(model, nn::LoRAOptions(2).alpha(8.0)) == 2);
  for (auto& [n, p] : model.named_parameters()) CHECK(p.requires_grad() == (n.find("lora_") != std::string::npos));
  for (auto& [n, p] : nn::lora_state_dict(model))
    if (n.find("lora_B") != std::string::npos) nn::init::normal_(p, 0, 0.5);  // as if trained
  Tensor x = test::uniform({3, 4}, -1, 1, 27, false);
  Tensor before = model.forward(x);
  nn::merge_lora(model);
  CHECK(xg::allclose(model.forward(x), before, 1e-12, 1e-12));
  nn::unmerge_lora(model);
  CHECK(xg::allclose(model.forward(x), before, 1e-12, 1e-12));

  // Adapter-only state: 4 tensors, loaded into a fresh copy of the same base gives the same outputs.
  auto adapters = nn::lora_state_dict(model);
  CHECK(adapters.size() == 4);
  std::string path = temp_path("xgrad_lora.safetensors");
  xg::save_safetensors(path, adapters);
  xg::manual_seed(26);
  nn::Sequential fresh;
  fresh.push_back(std::make_shared<nn::Linear>(nn::LinearOptions(4, 6).dtype(xg::float64)))
      .push_back(std::make_shared<nn::GELU>())
      .push_back(std::make_shared<nn::Linear>(nn::LinearOptions(6, 2).dtype(xg::float64)));
  nn::apply_lora(fresh, nn::LoRAOptions(2).alpha(8.0));
  fresh.load_state_dict(xg::load_safetensors(path).tensors, /*strict=*/false);
  CHECK(xg::allclose(fresh.forward(x), before, 1e-12, 1e-12));
  std::remove(path.c_str());
}

TEST_CASE("modules print as a tree and propagate train/eval", "[nn]") {
  nn::Sequential s;
  s.push_back(std::make_shared<nn::Linear>(2, 3)).push_back(std::make_shared<nn::Dropout>(0.1));
  auto dict = std::make_shared<nn::ModuleDict>();
  dict->insert("norm", std::make_shared<nn::LayerNorm>(3));
  s.push_back(dict);
  CHECK(s.to_string() ==
        "Sequential(\n"
        "  (0): Linear(in_features=2, out_features=3, bias=true)\n"
        "  (1): Dropout(p=0.1)\n"
        "  (2): ModuleDict(\n"
        "    (norm): LayerNorm((3,), eps=1e-05, elementwise_affine=true, bias=true)\n"
        "  )\n"
        ")");
  s.eval();
  CHECK_FALSE((*dict)["norm"]->is_training());
  s.train();
  CHECK((*dict)["norm"]->is_training());
  CHECK(s.named_parameters()[2].first == "2.norm.weight");
  nn::ModuleList list;
  list.push_back(std::make_shared<nn::Linear>(2, 2));
  CHECK(list.at<nn::Linear>(0)->weight.shape() == xg::Shape{2, 2});
  test::require_error([&] { (*dict)["missing"]; }, {"ModuleDict", "missing"});
}

TEST_CASE("dropout zeroes in training, scales the rest, and is off in eval", "[nn]") {
  xg::Generator gen(3);
  Tensor x = xg::ones({10000}, {xg::float64});
  Tensor y = F::dropout(x, 0.25, true, &gen);
  auto v = test::values(y);
  int zeros = 0;
  for (double e : v) {
    if (e == 0.0) ++zeros;
    else CHECK(e == Approx(1.0 / 0.75));
  }
  CHECK(std::abs(zeros / 10000.0 - 0.25) < 0.02);
  CHECK(F::dropout(x, 0.25, false).is_same(x));
}

TEST_CASE("train, save, load into a fresh model, and resume the optimizer identically", "[nn][optim]") {
  auto make = [] {
    auto m = std::make_shared<nn::Sequential>();
    m->push_back(std::make_shared<nn::Linear>(2, 16)).push_back(std::make_shared<nn::GELU>()).push_back(std::make_shared<nn::Linear>(16, 2));
    return m;
  };
  xg::Tensor x = xg::tensor({0, 0, 0, 1, 1, 0, 1, 1}, {4, 2});
  xg::Tensor y = xg::index_tensor({0, 1, 1, 0});
  xg::manual_seed(30);
  auto model = make();
  xg::optim::AdamW opt(model->named_parameters(), {.lr = 0.05, .weight_decay = 0.0});
  auto train_step = [&](nn::Module& m, xg::optim::Optimizer& o) {
    Tensor loss = F::cross_entropy(m.forward(x), y);
    o.zero_grad();
    loss.backward();
    o.step();
    return loss.item();
  };
  double loss = 0;
  for (int i = 0; i < 300 && (i == 0 || loss > 0.01); ++i) loss = train_step(*model, opt);
  CHECK(loss < 0.01);
  std::string mpath = temp_path("xgrad_rt_model.safetensors"), opath = temp_path("xgrad_rt_opt.safetensors");
  model->save(mpath);
  opt.save(opath);

  xg::manual_seed(99);
  auto fresh = make();
  fresh->load(mpath);
  CHECK(test::values(fresh->forward(x)) == test::values(model->forward(x)));
  xg::optim::AdamW fresh_opt(fresh->named_parameters(), {.lr = 0.05, .weight_decay = 0.0});
  fresh_opt.load(opath);
  for (int i = 0; i < 3; ++i) CHECK(train_step(*fresh, fresh_opt) == train_step(*model, opt));
  CHECK(test::values(fresh->parameters()[0]) == test::values(model->parameters()[0]));
  std::remove(mpath.c_str());
  std::remove(opath.c_str());
}

TEST_CASE("batch norm keeps PyTorch's running statistics and state_dict names", "[nn]") {
  nn::BatchNorm1d bn(nn::BatchNormOptions(2).dtype(xg::float64));
  std::vector<std::string> names;
  for (auto& [n, _] : bn.state_dict()) names.push_back(n);
  CHECK(names == std::vector<std::string>{"weight", "bias", "running_mean", "running_var", "num_batches_tracked"});
  CHECK(bn.num_batches_tracked.dtype() == xg::int64);
  // Two training batches of 4: by hand, running = 0.9 running + 0.1 batch, with the unbiased variance.
  const std::vector<std::vector<double>> batches = {{1, 2, 3, 4, 5, 6, 7, 8}, {0, -1, 2, 1, 4, 0, -2, 3}};
  double rm[2] = {0, 0}, rv[2] = {1, 1};
  for (const auto& b : batches) {
    Tensor x = d(b, {4, 2});
    Tensor y = bn.forward(x);
    for (int c = 0; c < 2; ++c) {
      double m = 0, v = 0;
      for (int i = 0; i < 4; ++i) m += b[std::size_t(i * 2 + c)] / 4;
      for (int i = 0; i < 4; ++i) v += (b[std::size_t(i * 2 + c)] - m) * (b[std::size_t(i * 2 + c)] - m);
      rm[c] = 0.9 * rm[c] + 0.1 * m;
      rv[c] = 0.9 * rv[c] + 0.1 * v / 3;
      // Training normalises by the batch's biased variance.
      CHECK(y.select(1, c).select(0, 0).item() == Approx((b[std::size_t(c)] - m) / std::sqrt(v / 4 + 1e-5)).epsilon(1e-12));
    }
  }
  CHECK(bn.running_mean.to_vector<double>()[0] == Approx(rm[0]).epsilon(1e-14));
  CHECK(bn.running_mean.to_vector<double>()[1] == Approx(rm[1]).epsilon(1e-14));
  CHECK(bn.running_var.to_vector<double>()[0] == Approx(rv[0]).epsilon(1e-14));
  CHECK(bn.running_var.to_vector<double>()[1] == Approx(rv[1]).epsilon(1e-14));
  CHECK(bn.num_batches_tracked.item() == 2);
  // Eval normalises by the running statistics and changes none of them.
  bn.eval();
  Tensor y = bn.forward(d({1, 1}, {1, 2}));
  CHECK(y.to_vector<double>()[0] == Approx((1 - rm[0]) / std::sqrt(rv[0] + 1e-5)).epsilon(1e-12));
  CHECK(bn.num_batches_tracked.item() == 2);
  // momentum = None: the cumulative average of the batch means.
  nn::BatchNorm1d avg(nn::BatchNormOptions(1).momentum(std::nullopt).dtype(xg::float64));
  for (double v : {2.0, 4.0, 9.0}) avg.forward(d({v - 1, v + 1}, {2, 1}));
  CHECK(avg.running_mean.item() == Approx(5.0).epsilon(1e-14));
  // to(float64/float32) converts the statistics but keeps the batch count an integer.
  avg.to(xg::float32);
  CHECK(avg.running_mean.dtype() == xg::float32);
  CHECK(avg.num_batches_tracked.dtype() == xg::int64);
  // Bad input: a single value per channel in training, a wrong channel count.
  nn::BatchNorm1d one(2);
  test::require_error([&] { one.forward(xg::zeros({1, 2})); }, {"more than one value per channel"});
  test::require_error([&] { one.forward(xg::zeros({4, 3})); }, {"BatchNorm1d", "expected input [N, 2"});
  test::require_error([] { nn::GroupNorm(3, 4); }, {"4 channels cannot be split into 3 groups"});
}

TEST_CASE("rotary embeddings: dot products depend only on the distance between positions", "[nn][transformer]") {
  namespace F = xg::nn::functional;
  Tensor q = test::uniform({1, 8}, -1, 1, 40, false), k = test::uniform({1, 8}, -1, 1, 41, false);
  auto rotated = [](const Tensor& x, std::int64_t pos) {
    auto [c, s] = F::rope_cos_sin(1, 8, 10000.0, pos, xg::float64);
    return F::apply_rotary_emb(x, c, s);
  };
  const double at_3_1 = xg::sum(rotated(q, 3) * rotated(k, 1)).item();
  CHECK(xg::sum(rotated(q, 10) * rotated(k, 8)).item() == Approx(at_3_1).epsilon(1e-12));
  CHECK(xg::sum(rotated(q, 2) * rotated(k, 1)).item() != Approx(at_3_1).epsilon(1e-3));
  // Position 0 is the identity, and a rotation keeps the norm.
  CHECK(xg::allclose(rotated(q, 0), q, 0, 1e-15));
  CHECK(xg::sum(rotated(q, 7) * rotated(q, 7)).item() == Approx(xg::sum(q * q).item()).epsilon(1e-12));
  // Hugging Face's frequencies: pair i turns by position * 10000^(-2i / D) (checked at position 1, i = 1).
  auto [c, s] = F::rope_cos_sin(2, 8, 10000.0, 0, xg::float64);
  CHECK(c.to_vector<double>()[8 + 1] == Approx(std::cos(std::pow(10000.0, -2.0 / 8))).epsilon(1e-14));
  CHECK(s.to_vector<double>()[8 + 1 + 4] == Approx(std::sin(std::pow(10000.0, -2.0 / 8))).epsilon(1e-14));
  test::require_error([] { F::rope_cos_sin(4, 5); }, {"head_dim must be positive and even"});
}

TEST_CASE("grouped-query attention: shared key/value heads, and a cache that decodes as the full pass does", "[nn][transformer]") {
  // n_kv_heads = 1 equals full multi-head attention whose key and value heads are all that one head.
  xg::manual_seed(42);
  nn::MultiHeadAttention mqa(nn::MultiHeadAttentionOptions(8, 4).n_kv_heads(1).causal(true).dtype(xg::float64));
  nn::MultiHeadAttention mha(nn::MultiHeadAttentionOptions(8, 4).causal(true).dtype(xg::float64));
  CHECK(mqa.c_attn->weight.shape() == xg::Shape{8 + 2 * 2, 8});
  {
    xg::autograd::NoGradGuard ng;
    Tensor w = mqa.c_attn->weight, b = mqa.c_attn->bias;
    auto rep = [](const Tensor& t) { return xg::cat({t, t, t, t}, 0); };  // one head of 2 rows, four times
    mha.c_attn->weight.copy_(xg::cat({w.narrow(0, 0, 8), rep(w.narrow(0, 8, 2)), rep(w.narrow(0, 10, 2))}, 0));
    mha.c_attn->bias.copy_(xg::cat({b.narrow(0, 0, 8), rep(b.narrow(0, 8, 2)), rep(b.narrow(0, 10, 2))}, 0));
    mha.c_proj->weight.copy_(mqa.c_proj->weight);
    mha.c_proj->bias.copy_(mqa.c_proj->bias);
  }
  Tensor x = test::uniform({2, 5, 8}, -1, 1, 43, false);
  CHECK(xg::allclose(mqa.forward(x), mha.forward(x), 1e-12, 1e-12));
  // With rotary embeddings and grouped heads, decoding one position at a time with the cache gives the
  // full causal pass's outputs (positions continue after the cached ones).
  nn::MultiHeadAttention llama(nn::MultiHeadAttentionOptions(8, 4).n_kv_heads(2).rope(true).causal(true).dtype(xg::float64));
  llama.eval();
  Tensor full = llama.forward(x);
  nn::KVCache cache;
  std::vector<Tensor> steps;
  for (std::int64_t t = 0; t < 5; ++t) steps.push_back(llama.forward(x.narrow(1, t, 1), Tensor(), &cache));
  CHECK(cache.k.shape() == xg::Shape{2, 2, 5, 2});  // the cache holds the 2 key/value heads only
  CHECK(xg::allclose(xg::cat(steps, 1), full, 1e-12, 1e-12));
  test::require_error([] { nn::MultiHeadAttention(nn::MultiHeadAttentionOptions(8, 4).n_kv_heads(3)); }, {"n_kv_heads 3 must divide"});
  // SwiGLU is down(silu(gate(x)) * up(x)) with Hugging Face's names.
  nn::SwiGLU mlp(nn::SwiGLUOptions(8, 12).dtype(xg::float64));
  std::vector<std::string> names;
  for (auto& [n, _] : mlp.named_parameters()) names.push_back(n);
  CHECK(names == std::vector<std::string>{"gate_proj.weight", "up_proj.weight", "down_proj.weight"});
  Tensor want = xg::matmul(xg::silu(xg::matmul(x, mlp.gate_proj->weight.t())) * xg::matmul(x, mlp.up_proj->weight.t()),
                           mlp.down_proj->weight.t());
  CHECK(xg::allclose(mlp.forward(x), want, 1e-12, 1e-12));
}

TEST_CASE("recurrent layers: states, initial states, unbatched input and PyTorch's names", "[nn]") {
  xg::manual_seed(3);
  nn::LSTM lstm(nn::RNNOptions(3, 4).num_layers(2).dtype(xg::float64));
  std::vector<std::string> names;
  for (auto& [n, p] : lstm.named_parameters()) names.push_back(n + xg::shape_str(p.shape()));
  CHECK(names == std::vector<std::string>{"weight_ih_l0[16, 3]", "weight_hh_l0[16, 4]", "bias_ih_l0[16]", "bias_hh_l0[16]",
                                          "weight_ih_l1[16, 4]", "weight_hh_l1[16, 4]", "bias_ih_l1[16]", "bias_hh_l1[16]"});
  Tensor x = test::uniform({5, 2, 3}, -1, 1, 50, false);
  auto [out, h, c] = lstm.forward(x, Tensor(), Tensor());
  CHECK(out.shape() == xg::Shape{5, 2, 4});
  CHECK(h.shape() == xg::Shape{2, 2, 4});
  CHECK(c.shape() == xg::Shape{2, 2, 4});
  CHECK(xg::allclose(h.select(0, 1), out.select(0, 4), 0, 0));  // the last layer's final h is its last output
  // Running the sequence in two halves, the second from the first's final states, gives the whole run.
  auto [first, h1, c1] = lstm.forward(x.narrow(0, 0, 2), Tensor(), Tensor());
  auto [second, h2, c2] = lstm.forward(x.narrow(0, 2, 3), h1, c1);
  CHECK(xg::allclose(xg::cat({first, second}, 0), out, 1e-14, 1e-14));
  CHECK(xg::allclose(c2, c, 1e-14, 1e-14));
  // Unbatched [T, in] equals a batch of one.
  Tensor one = x.select(1, 1);
  CHECK(xg::allclose(lstm.forward(one), lstm.forward(x).select(1, 1), 1e-14, 1e-14));
  nn::GRU gru(nn::RNNOptions(3, 4).dtype(xg::float64));
  auto [g_out, g_h] = gru.forward(one, Tensor());
  CHECK(g_h.shape() == xg::Shape{1, 4});
  test::require_error([&] { lstm.forward(x, xg::zeros({1, 2, 4}, {xg::float64}), Tensor()); }, {"LSTM", "h0 has shape [1, 2, 4]", "[2, 2, 4]"});
  test::require_error([&] { gru.forward(xg::zeros({5, 2, 7}, {xg::float64})); }, {"GRU", "7 features, expected 3"});
  test::require_error([] { nn::LSTM(nn::RNNOptions(3, 0)); }, {"LSTM", "hidden_size 0"});
}

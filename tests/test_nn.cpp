// The nn and optim pieces the examples use.
#include "helpers.hpp"

namespace nn = xg::nn;
namespace F = xg::nn::functional;
using xg::Tensor;

namespace {
struct TwoLayer : nn::Module {
  std::shared_ptr<nn::Linear> fc1, fc2;
  TwoLayer() : nn::Module("TwoLayer") {
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(nn::LinearOptions(3, 8).dtype(xg::float64)));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(nn::LinearOptions(8, 2).bias(false).dtype(xg::float64)));
  }
  Tensor forward(const Tensor& x) override { return fc2->forward(xg::tanh(fc1->forward(x))); }
};
}  // namespace

TEST_CASE("modules name their parameters with dotted paths", "[nn]") {
  TwoLayer m;
  auto named = m.named_parameters();
  REQUIRE(named.size() == 3);
  CHECK(named[0].first == "fc1.weight");
  CHECK(named[0].second.shape() == xg::Shape{8, 3});
  CHECK(named[1].first == "fc1.bias");
  CHECK(named[2].first == "fc2.weight");
  CHECK(m.named_modules().size() == 3);
  CHECK(m.to_string() ==
        "TwoLayer(\n  (fc1): Linear(in_features=3, out_features=8, bias=true)\n"
        "  (fc2): Linear(in_features=8, out_features=2, bias=false)\n)");
  m.eval();
  CHECK_FALSE(m.fc1->is_training());
  test::require_error([&] { m.register_parameter("fc1", xg::zeros({1})); }, {"already registered"});
}

TEST_CASE("a whole model passes gradcheck in float64", "[nn]") {
  auto m = std::make_shared<TwoLayer>();
  auto params = m->parameters();
  Tensor x = test::uniform({4, 3}, -1, 1, 3, false);
  std::vector<Tensor> inputs = params;
  CHECK(xg::autograd::gradcheck([&](const std::vector<Tensor>&) { return m->forward(x); }, inputs));
}

TEST_CASE("cross_entropy equals the mean negative log-likelihood and its gradient is (softmax - onehot)/n", "[nn]") {
  Tensor logits = test::uniform({3, 4}, -2, 2, 8);
  Tensor y = xg::index_tensor({1, 0, 3});
  Tensor loss = F::cross_entropy(logits, y);
  auto l = test::values(logits);
  double want = 0;
  std::vector<double> grad(12);
  for (int i = 0; i < 3; ++i) {
    double z = 0;
    for (int j = 0; j < 4; ++j) z += std::exp(l[i * 4 + j]);
    want -= std::log(std::exp(l[i * 4 + y.to_vector<std::int64_t>()[i]]) / z) / 3;
    for (int j = 0; j < 4; ++j) grad[i * 4 + j] = (std::exp(l[i * 4 + j]) / z - (j == y.to_vector<std::int64_t>()[i])) / 3;
  }
  CHECK(loss.item() == Approx(want).epsilon(1e-12));
  loss.backward();
  auto g = test::values(logits.grad());
  for (int i = 0; i < 12; ++i) CHECK(g[i] == Approx(grad[i]).margin(1e-12));
}

TEST_CASE("SGD with momentum follows torch.optim.SGD's update", "[optim]") {
  Tensor p = xg::tensor({1.0, -1.0}, {2}, {xg::float64, true});
  xg::optim::SGD opt({p}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01});
  // Hand-run of the documented algorithm on loss = sum(p^2): g = 2p + wd p; b = 0.9 b + g; p -= lr b.
  std::vector<double> ref = {1.0, -1.0}, buf = {0, 0};
  for (int step = 0; step < 3; ++step) {
    opt.zero_grad();
    (p * p).sum().backward();
    opt.step();
    for (int i = 0; i < 2; ++i) {
      double g = 2 * ref[i] + 0.01 * ref[i];
      buf[i] = step == 0 ? g : 0.9 * buf[i] + g;
      ref[i] -= 0.1 * buf[i];
    }
  }
  auto got = test::values(p);
  CHECK(got[0] == Approx(ref[0]).epsilon(1e-12));
  CHECK(got[1] == Approx(ref[1]).epsilon(1e-12));
}

TEST_CASE("an MLP learns XOR", "[nn]") {
  xg::manual_seed(3);
  auto m = std::make_shared<TwoLayer>();
  Tensor x = xg::tensor({0, 0, 1, 0, 1, 0, 1, 1, 1, 0, 0, 1}, {4, 3}, {xg::float64});  // third column: a bias input
  Tensor y = xg::index_tensor({0, 1, 1, 0});
  xg::optim::SGD opt(m->parameters(), {.lr = 0.5, .momentum = 0.9});
  double first = 0, last = 0;
  for (int i = 0; i < 300; ++i) {
    Tensor loss = F::cross_entropy(m->forward(x), y);
    if (i == 0) first = loss.item();
    last = loss.item();
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  CHECK(first > 0.5);
  CHECK(last < 0.05);
  CHECK(xg::argmax(m->forward(x), 1).to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 1, 1, 0});
}

// Trains a small MLP to separate three interleaved spirals: the smallest end-to-end use of xgrad
// (tensors, autograd, nn::Linear, cross-entropy, SGD with momentum).
//
//   ./build/examples/mlp [steps]
#include <xgrad/xgrad.hpp>

#include <cmath>
#include <cstdlib>

namespace nn = xg::nn;
namespace F = xg::nn::functional;

struct MLP : nn::Module {
  std::shared_ptr<nn::Linear> fc1, fc2, fc3;
  MLP() : nn::Module("MLP") {
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(2, 64));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(64, 64));
    fc3 = register_module("fc3", std::make_shared<nn::Linear>(64, 3));
  }
  xg::Tensor forward(const xg::Tensor& x) override {
    return fc3->forward(xg::relu(fc2->forward(xg::relu(fc1->forward(x)))));
  }
};

/// n points per class on three spiral arms with a little noise (the CS231n toy problem).
std::pair<xg::Tensor, xg::Tensor> spirals(int n, xg::Generator& gen) {
  std::vector<float> xs;
  std::vector<std::int64_t> ys;
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < n; ++i) {
      double r = static_cast<double>(i) / n;
      double t = c * 4.0 + 4.0 * r + 0.2 * gen.normal();
      xs.push_back(static_cast<float>(r * std::sin(t)));
      xs.push_back(static_cast<float>(r * std::cos(t)));
      ys.push_back(c);
    }
  return {xg::tensor(xs, {3 * n, 2}), xg::index_tensor(ys)};
}

int main(int argc, char** argv) {
  int steps = argc > 1 ? std::atoi(argv[1]) : 2000;
  if (steps <= 0) {
    fmt::print(stderr, "usage: mlp [steps > 0]\n");
    return 2;
  }
  xg::manual_seed(0);
  xg::Generator data_gen(1);
  auto [x, y] = spirals(200, data_gen);
  auto model = std::make_shared<MLP>();
  fmt::print("{}\n", model->to_string());
  xg::optim::SGD opt(model->parameters(), {.lr = 0.1, .momentum = 0.9});

  auto accuracy = [&] {
    xg::autograd::NoGradGuard ng;
    return xg::mean(xg::eq(xg::argmax(model->forward(x), 1), y).to(xg::float32)).item();
  };
  for (int step = 1; step <= steps; ++step) {
    xg::Tensor loss = F::cross_entropy(model->forward(x), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (step % (steps / 10 > 0 ? steps / 10 : 1) == 0 || step == 1)
      fmt::print("step {:5d}  loss {:.4f}  accuracy {:.1f}%\n", step, loss.item(), 100 * accuracy());
  }
  double acc = accuracy();
  fmt::print("final training accuracy: {:.1f}%\n", 100 * acc);
  return acc > 0.9 ? 0 : 1;
}

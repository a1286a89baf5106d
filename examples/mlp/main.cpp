// Trains a small MLP to separate three interleaved spirals: the smallest end-to-end use of xgrad
// (modules, cross-entropy, AdamW with nanoGPT's parameter groups, a warmup + cosine schedule, gradient
// clipping, and saving/loading the trained model).
//
//   ./build/examples/mlp [steps]
#include <xgrad/xgrad.hpp>

#include <cmath>
#include <cstdlib>

namespace nn = xg::nn;
namespace F = xg::nn::functional;

struct MLP : nn::Module {
  std::shared_ptr<nn::Linear> fc1, fc2, fc3;
  std::shared_ptr<nn::LayerNorm> ln;
  MLP() : nn::Module("MLP") {
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(2, 64));
    ln = register_module("ln", std::make_shared<nn::LayerNorm>(64));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(64, 64));
    fc3 = register_module("fc3", std::make_shared<nn::Linear>(64, 3));
  }
  xg::Tensor forward(const xg::Tensor& x) override {
    return fc3->forward(xg::gelu(fc2->forward(ln->forward(xg::gelu(fc1->forward(x))))));
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
  int steps = argc > 1 ? std::atoi(argv[1]) : 1000;
  std::string out = argc > 2 ? argv[2] : "mlp.safetensors";
  if (steps < 10) {
    fmt::print(stderr, "usage: mlp [steps >= 10] [model.safetensors]\n");
    return 2;
  }
  xg::manual_seed(0);
  xg::Generator data_gen(1);
  const auto data = spirals(200, data_gen);
  const xg::Tensor &x = data.first, &y = data.second;
  auto model = std::make_shared<MLP>();
  fmt::print("{}\n", model->to_string());
  xg::optim::AdamW opt(xg::optim::decay_groups(model->named_parameters(), 0.01), {.lr = 1e-2});
  xg::optim::CosineWarmupLR schedule(opt, steps / 10, steps, 1e-3);

  auto accuracy = [&] {
    xg::autograd::NoGradGuard ng;
    return xg::mean(xg::eq(xg::argmax(model->forward(x), 1), y).to(xg::float32)).item();
  };
  for (int step = 1; step <= steps; ++step) {
    xg::Tensor loss = F::cross_entropy(model->forward(x), y);
    opt.zero_grad();
    loss.backward();
    xg::optim::clip_grad_norm_(model->parameters(), 1.0);
    opt.step();
    schedule.step();
    if (step % (steps / 10) == 0 || step == 1)
      fmt::print("step {:5d}  loss {:.4f}  lr {:.2e}  accuracy {:.1f}%\n", step, loss.item(), opt.lr(), 100 * accuracy());
  }
  double acc = accuracy();
  fmt::print("final training accuracy: {:.1f}%\n", 100 * acc);
  model->save(out);
  auto reloaded = std::make_shared<MLP>();
  reloaded->load(out);
  xg::autograd::NoGradGuard ng;
  bool same = xg::allclose(reloaded->forward(x), model->forward(x), 0, 0);
  fmt::print("saved to {}; reloaded model gives {} outputs\n", out, same ? "identical" : "DIFFERENT");
  return acc > 0.9 && same ? 0 : 1;
}

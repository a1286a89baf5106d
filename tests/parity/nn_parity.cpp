// Runs nn modules with seeded float64 weights and inputs and writes their state, outputs and gradients to a
// safetensors file, for nn_parity.py to run the same modules of torch.nn on the same weights and compare.
//   nn_parity OUT.safetensors
#include <cstdio>

#include <xgrad/xgrad.hpp>

using xg::Tensor;
namespace nn = xg::nn;

namespace {
/// Every parameter of m replaced by seeded normal values (so affine terms are not the identity).
void randomise(nn::Module& m, xg::Generator& gen) {
  xg::autograd::NoGradGuard ng;
  for (auto& p : m.parameters()) p.copy_(xg::randn(p.shape(), {xg::float64}, &gen) * 0.5 + 1.0);
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: nn_parity OUT.safetensors\n");
    return 2;
  }
  try {
    xg::Generator gen(31);
    xg::StateDict out;
    // Two training steps, then eval: outputs, the input's and the parameters' gradients, the state after.
    auto run = [&](const std::string& name, nn::Module& m, const xg::Shape& in_shape) {
      randomise(m, gen);
      for (auto& [k, v] : m.state_dict()) out.emplace_back(name + ".init." + k, v.detach().clone());
      for (int step = 0; step < 2; ++step) {
        Tensor x = (xg::randn(in_shape, {xg::float64}, &gen) * 2.0 + 0.5).requires_grad_();
        m.train();
        m.zero_grad();
        Tensor y = m.forward(x);
        Tensor g = xg::randn(y.shape(), {xg::float64}, &gen);
        y.backward(g);
        const std::string s = name + ".step" + std::to_string(step);
        out.emplace_back(s + ".x", x.detach());
        out.emplace_back(s + ".g", g);
        out.emplace_back(s + ".y", y.detach());
        out.emplace_back(s + ".dx", x.grad());
        for (auto& [k, p] : m.named_parameters()) out.emplace_back(s + ".grad." + k, p.grad());
      }
      Tensor x = xg::randn(in_shape, {xg::float64}, &gen);
      m.eval();
      out.emplace_back(name + ".eval.x", x);
      out.emplace_back(name + ".eval.y", m.forward(x).detach());
      for (auto& [k, v] : m.state_dict()) out.emplace_back(name + ".final." + k, v.detach().clone());
    };
    nn::BatchNorm1d bn1(nn::BatchNormOptions(3).dtype(xg::float64));
    run("bn1d", bn1, {5, 3, 4});
    nn::BatchNorm1d bn1flat(nn::BatchNormOptions(3).momentum(std::nullopt).dtype(xg::float64));
    run("bn1d_cumulative", bn1flat, {6, 3});
    nn::BatchNorm2d bn2(nn::BatchNormOptions(4).momentum(0.3).eps(1e-3).dtype(xg::float64));
    run("bn2d", bn2, {3, 4, 5, 2});
    nn::GroupNorm gn(nn::GroupNormOptions(3, 6).dtype(xg::float64));
    run("groupnorm", gn, {2, 6, 5});
    nn::RMSNorm rms(nn::RMSNormOptions(8).eps(1e-6).dtype(xg::float64));
    run("rmsnorm", rms, {2, 3, 8});
    nn::Conv2d conv(nn::Conv2dOptions(4, 6, {3, 2}).stride({2, 1}).padding({1, 1}).dilation({1, 2}).groups(2).dtype(xg::float64));
    run("conv2d", conv, {2, 4, 7, 6});
    nn::Conv1d conv1(3, 5, 3, 2, 1, 1, 1, true, xg::float64);
    run("conv1d", conv1, {2, 3, 9});
    nn::ConvTranspose2d convt(nn::Conv2dOptions(4, 2, 3).stride({2, 2}).padding({1, 0}).output_padding({1, 1}).dtype(xg::float64));
    run("conv_transpose2d", convt, {2, 4, 3, 4});
    nn::MaxPool2d maxpool(xg::nn::functional::PoolOptions{.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}});
    run("maxpool2d", maxpool, {2, 3, 7, 6});
    nn::AvgPool2d avgpool(xg::nn::functional::PoolOptions{.kernel = {2, 3}, .stride = {1, 2}, .padding = {1, 1}});
    run("avgpool2d", avgpool, {2, 3, 5, 6});
    nn::AdaptiveAvgPool2d adaptive({3, 4});
    run("adaptive_avgpool2d", adaptive, {2, 3, 7, 9});
    nn::LSTM lstm(nn::RNNOptions(3, 4).num_layers(2).batch_first(true).dtype(xg::float64));
    run("lstm", lstm, {2, 5, 3});
    nn::GRU gru(nn::RNNOptions(3, 4).num_layers(2).dtype(xg::float64));
    run("gru", gru, {5, 2, 3});
    nn::RNN rnn(nn::RNNOptions(3, 4).relu(true).dtype(xg::float64));
    run("rnn_relu", rnn, {4, 2, 3});
    xg::save_safetensors(argv[1], out);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nn_parity: %s\n", e.what());
    return 1;
  }
  return 0;
}

// xgrad side of the core benchmarks; bench/compare.py runs it next to bench/torch_core.py.
//   bench_core CASE THREADS  -> prints the median seconds per iteration
// Cases: op_forward, op_fwd_bwd (per op, a chain of tiny ops), linear_baby, linear_gpt2 (matmul
// forward + backward at GPT shapes), sgemm_baby, sgemm_gpt2 (the same three GEMMs called on raw BLAS),
// attention_1024 (causal attention forward + backward, GPT-2's 12 heads of 64 over 1024 tokens),
// attention_baby (the same at the baby GPT's shape, as it calls it: batch 12, 4 heads of 32 over 64 tokens
// read from the packed [B, T, 3C] projection), func_vjp, func_jvp, func_hvp (xg::func on a two-layer tanh
// MLP, with respect to its input [64, 256]), conv2d_3x3 (batch 32, 8 -> 8 channels, 28 x 28, forward and
// backward).
#include <cblas.h>
#include <xgrad/xgrad.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace {

double median_seconds(const std::function<void()>& f, double min_total = 1.0) {
  f();  // warm up
  std::vector<double> samples;
  auto begin = std::chrono::steady_clock::now();
  while (samples.size() < 5 ||
         std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count() < min_total) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    samples.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(samples.begin(), samples.begin() + samples.size() / 2, samples.end());
  return samples[samples.size() / 2];
}

constexpr int kChain = 1000;  // ops per chain (500 mul + 500 add)

struct LinearShape {
  std::int64_t b, t, c, d;
};
LinearShape shape_of(const std::string& name) {
  if (name.find("baby") != std::string::npos) return {12, 64, 128, 512};  // baby GPT MLP up-projection
  return {4, 64, 768, 3072};                                              // GPT-2 small MLP up-projection
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    fmt::print(stderr, "usage: bench_core CASE THREADS\n");
    return 2;
  }
  std::string name = argv[1];
  xg::set_num_threads(std::atoi(argv[2]));
  double seconds = 0;
  if (name == "op_forward" || name == "op_fwd_bwd") {
    xg::Tensor x = xg::randn({16}, {xg::float32, true});
    bool bwd = name == "op_fwd_bwd";
    seconds = median_seconds([&] {
                xg::Tensor y = x;
                for (int i = 0; i < kChain / 2; ++i) y = y * 1.0001 + 0.5;
                if (bwd) y.sum().backward();
              }) /
              kChain;
  } else if (name.rfind("linear_", 0) == 0) {
    auto s = shape_of(name);
    xg::Tensor x = xg::randn({s.b, s.t, s.c}, {xg::float32, true});
    xg::Tensor w = xg::randn({s.d, s.c}, {xg::float32, true});
    xg::Tensor g = xg::randn({s.b, s.t, s.d});
    seconds = median_seconds([&] {
      x.set_grad({});
      w.set_grad({});
      xg::matmul(x, w.t()).backward(g);
    });
  } else if (name == "attention_baby") {
    // As the GPT calls it: heads read in place from the packed [B, T, 3C] projection.
    xg::Generator gen(0);
    xg::Tensor qkv = xg::randn({12, 64, 3 * 128}, {xg::float32}, &gen).requires_grad_(true);
    xg::Tensor g = xg::randn({12, 64, 128}, {xg::float32}, &gen);
    seconds = median_seconds([&] {
      qkv.set_grad({});
      xg::nn::functional::packed_self_attention(qkv, 4, {.causal = true}).backward(g);
    });
  } else if (name == "attention_1024") {
    const std::vector<std::int64_t> shape{1, 12, 1024, 64};
    xg::Generator gen(0);
    auto leaf = [&] { return xg::randn(shape, {xg::float32}, &gen).requires_grad_(true); };
    xg::Tensor q = leaf(), k = leaf(), v = leaf(), g = xg::randn(shape, {xg::float32}, &gen);
    seconds = median_seconds([&] {
      for (auto* t : {&q, &k, &v}) t->set_grad({});
      xg::nn::functional::scaled_dot_product_attention(q, k, v, {.causal = true}).backward(g);
    });
  } else if (name == "conv2d_3x3") {
    // A 3x3 convolution with padding 1, batch 32, 8 -> 8 channels, 28 x 28: forward and backward.
    xg::Generator gen(0);
    xg::Tensor x = xg::randn({32, 8, 28, 28}, {xg::float32}, &gen).requires_grad_(true);
    xg::Tensor w = xg::randn({8, 8, 3, 3}, {xg::float32}, &gen).requires_grad_(true);
    xg::Tensor b = xg::randn({8}, {xg::float32}, &gen).requires_grad_(true);
    xg::Tensor g = xg::randn({32, 8, 28, 28}, {xg::float32}, &gen);
    seconds = median_seconds([&] {
      for (auto* t : {&x, &w, &b}) t->set_grad({});
      xg::nn::functional::conv2d(x, w, b, {.padding = {1, 1}}).backward(g);
    });
  } else if (name.rfind("func_", 0) == 0) {
    xg::Generator gen(0);
    xg::Tensor w1 = xg::randn({256, 256}, {xg::float32}, &gen) * 0.06, w2 = xg::randn({256, 256}, {xg::float32}, &gen) * 0.06;
    xg::Tensor x = xg::randn({64, 256}, {xg::float32}, &gen), v = xg::randn({64, 256}, {xg::float32}, &gen);
    auto mlp = [&](const std::vector<xg::Tensor>& in) { return xg::tanh(xg::matmul(xg::tanh(xg::matmul(in[0], w1.t())), w2.t())); };
    auto energy = [&](const std::vector<xg::Tensor>& in) {
      xg::Tensor y = mlp(in);
      return xg::sum(y * y);
    };
    if (name == "func_vjp") seconds = median_seconds([&] { (void)xg::func::vjp(mlp, {x}, v); });
    else if (name == "func_jvp") seconds = median_seconds([&] { (void)xg::func::jvp(mlp, {x}, {v}); });
    else if (name == "func_hvp") seconds = median_seconds([&] { (void)xg::func::hvp(energy, {x}, {v}); });
    else {
      fmt::print(stderr, "bench_core: unknown case {}\n", name);
      return 2;
    }
  } else if (name.rfind("sgemm_", 0) == 0) {
    auto s = shape_of(name);
    int m = int(s.b * s.t), k = int(s.c), n = int(s.d);
    std::vector<float> x(m * k, 0.5f), w(n * k, 0.25f), y(m * n), gy(m * n, 1.0f), gx(m * k), gw(n * k);
    seconds = median_seconds([&] {
      // y = x w^T; dx = dy w; dw = dy^T x
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x.data(), k, w.data(), k, 0.0f, y.data(), n);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, k, n, 1.0f, gy.data(), n, w.data(), k, 0.0f, gx.data(), k);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, k, m, 1.0f, gy.data(), n, x.data(), k, 0.0f, gw.data(), k);
    });
  } else {
    fmt::print(stderr, "bench_core: unknown case {}\n", name);
    return 2;
  }
  fmt::print("{:.9f}\n", seconds);
  return 0;
}

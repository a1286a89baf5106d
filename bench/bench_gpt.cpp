// xgrad side of the GPT benchmarks (see torch_gpt.py for the same model in PyTorch).
//   bench_gpt CONFIG THREADS [train|train-checkpoint|train-bf16|sample|sample-nocache]  -> one JSON line
// train-checkpoint recomputes each block's activations in backward (activation checkpointing);
// train-bf16 runs the step under xg::autocast (bf16 matrix products, float32 accumulation and weights).

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include <xgrad/kernel.hpp>

#include "gpt_bench.hpp"

namespace {
using bench::now;
using bench::peak_mb;
/// The float32 (or, with bf16, the autocast bf16) GEMM peak of this process's backend and threads, in
/// GFLOP/s: the best of several 1024-cubed products, measured in the same run as the step it is compared with.
double gemm_peak_gflops(bool bf16) {
  xg::autocast precision(bf16);
  const std::int64_t n = 1024;
  std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
  double best = 1e30;
  for (int rep = 0; rep < 6; ++rep) {
    const double t0 = now();
    xg::kernel::gemm(false, false, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
    if (rep > 0) best = std::min(best, now() - t0);
  }
  return 2.0 * n * n * n / best / 1e9;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    fmt::print(stderr, "usage: bench_gpt baby|gpt2 THREADS [train|train-checkpoint|train-bf16|sample|sample-nocache]\n");
    return 2;
  }
  std::string name = argv[1], mode = argc > 3 ? argv[3] : "train";
  xg::set_num_threads(std::atoi(argv[2]));
  const bench::GptSetup setup = bench::gpt_setup(name);
  const gpt::GPTConfig& c = setup.config;
  const std::int64_t batch = setup.batch, seq = setup.seq;
  xg::manual_seed(0);
  gpt::GPT model(c);
  if (mode == "train" || mode == "train-checkpoint" || mode == "train-bf16") {
    const bool bf16 = mode == "train-bf16";
    model.set_activation_checkpointing(mode == "train-checkpoint");
    xg::optim::AdamW opt(xg::optim::decay_groups(model.named_parameters(), 0.1), {.lr = 1e-3, .betas = {0.9, 0.99}});
    xg::Tensor x = xg::randint(0, c.vocab_size, {batch, seq}), y = xg::randint(0, c.vocab_size, {batch, seq});
    auto step = [&] {
      xg::Tensor loss;
      {
        xg::autocast precision(bf16);
        loss = model.loss(x, y);
      }
      opt.zero_grad();
      loss.backward();
      opt.step(xg::optim::clip_coef(xg::optim::get_total_norm(model.parameters()), 1.0));
    };
    step();
    std::vector<double> times;
    double begin = now();
    while (times.size() < 5 || now() - begin < 8.0) {
      double t0 = now();
      step();
      times.push_back(now() - t0);
    }
    std::sort(times.begin(), times.end());
    double sec = times[times.size() / 2];
    // nanoGPT's estimate: 6 N per token for the matmuls with weights, plus 12 L C T for attention.
    const double flops = (6.0 * static_cast<double>(model.num_parameters(true)) + 12.0 * c.n_layer * c.n_embd * seq) *
                         static_cast<double>(batch * seq);
    const double peak_memory = peak_mb();  // the step's, before the GEMM peaks below allocate their own
    const double peak = gemm_peak_gflops(false), bf16_peak = gemm_peak_gflops(true);
    // What training must hold whatever the activations: weights, their gradients, the optimizer's state.
    double state_bytes = 0;
    auto bytes = [](const xg::Tensor& t) { return t.defined() ? static_cast<double>(t.numel()) * xg::dtype_size(t.dtype()) : 0.0; };
    for (const auto& p : model.parameters()) state_bytes += bytes(p) + bytes(p.grad());
    for (const auto& [key, t] : opt.state_dict()) state_bytes += bytes(t);
    fmt::print("{{\"tokens_per_sec\": {:.1f}, \"step_ms\": {:.3f}, \"peak_mb\": {:.1f}, \"state_mb\": {:.1f}, "
               "\"gflops\": {:.1f}, \"sgemm_peak_gflops\": {:.1f}, \"bf16_gemm_peak_gflops\": {:.1f}, \"cpu\": \"{}\", "
               "\"gemm\": \"{}\"}}\n",
               batch * seq / sec, sec * 1e3, peak_memory, state_bytes / (1024.0 * 1024.0), flops / sec / 1e9, peak, bf16_peak,
               bench::cpu_model(), xg::kernel::gemm_backend_name());
  } else {
    gpt::SampleOptions o;
    o.max_new_tokens = 64;
    o.use_cache = mode != "sample-nocache";
    // A warm-up generation first (the GEMM backend is chosen, by timing, on the first product), then the
    // median of three.
    gpt::generate(model, {0}, o);
    std::vector<double> times;
    for (int rep = 0; rep < 3; ++rep) {
      const double t0 = now();
      gpt::generate(model, {0}, o);
      times.push_back(now() - t0);
    }
    std::sort(times.begin(), times.end());
    fmt::print("{{\"tokens_per_sec\": {:.1f}}}\n", o.max_new_tokens / times[1]);
  }
  return 0;
}

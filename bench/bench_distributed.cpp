// Data-parallel benchmarks, run under mpirun (see compare_distributed.py):
//   bench_distributed allreduce                          -> one JSON line per size: xgrad's all_reduce vs MPI_Allreduce
//   bench_distributed train baby|gpt2 THREADS [zero] [sync] -> one JSON line: tokens/s of the job, peak MB per rank
// Every rank trains on its own batch of the size a single process uses (baby 12 x 64, gpt2 4 x 64), so the
// job's tokens per step grow with the ranks. "zero" shards AdamW (ZeRO-1); "sync" reduces gradients in the
// backward thread instead of on the communication thread.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "gpt_bench.hpp"

namespace {
using bench::now;
using bench::peak_mb;
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// The median time of f over at least `reps` runs and half a second, after one warm-up run.
template <class F> double time_it(F&& f, int reps) {
  f();
  std::vector<double> t;
  const double begin = now();
  while (static_cast<int>(t.size()) < reps || now() - begin < 0.5) {
    const double t0 = now();
    f();
    t.push_back(now() - t0);
  }
  return median(t);
}

int allreduce(xg::distributed::Communicator& comm) {
  for (double mb : {1.0, 4.0, 25.0, 100.0}) {
    const auto n = static_cast<std::int64_t>(mb * 1024 * 1024 / 4);
    xg::Tensor ours = xg::ones({n});
    std::vector<float> raw(static_cast<std::size_t>(n), 1.f);
    // Interleaved, each timed the same way; both start with a barrier so no rank times another's lateness.
    std::vector<double> a, b;
    for (int round = 0; round < 3; ++round) {
      a.push_back(time_it([&] { comm.barrier(); comm.all_reduce(ours); }, 5));
      b.push_back(time_it([&] { MPI_Barrier(MPI_COMM_WORLD); MPI_Allreduce(MPI_IN_PLACE, raw.data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); }, 5));
    }
    const double ta = median(a), tb = median(b);
    if (comm.rank() == 0)
      fmt::print("{{\"mb\": {}, \"xgrad_gb_s\": {:.3f}, \"mpi_gb_s\": {:.3f}, \"ratio\": {:.3f}}}\n", mb,
                 mb / 1024 / ta, mb / 1024 / tb, tb / ta);
  }
  return 0;
}

int train(xg::distributed::Communicator& comm, const std::shared_ptr<xg::distributed::Communicator>& shared,
          const std::string& name, bool zero, bool sync) {
  const bench::GptSetup setup = bench::gpt_setup(name);
  const gpt::GPTConfig& c = setup.config;
  const std::int64_t batch = setup.batch, seq = setup.seq;
  xg::manual_seed(0);
  gpt::GPT model(c);
  std::unique_ptr<xg::distributed::DistributedDataParallel> ddp;
  if (comm.size() > 1)
    ddp = std::make_unique<xg::distributed::DistributedDataParallel>(
        model, shared, xg::distributed::DDPOptions{.overlap_communication = !sync});
  const auto groups = xg::optim::decay_groups(model.named_parameters(), 0.1);
  const xg::optim::AdamWOptions o{.lr = 1e-3, .betas = {0.9, 0.99}};
  std::unique_ptr<xg::optim::Optimizer> opt;
  if (zero)
    opt = std::make_unique<xg::distributed::ZeroRedundancyOptimizer>(
        groups, shared, [&](std::vector<xg::optim::ParamGroup> g) { return std::make_unique<xg::optim::AdamW>(std::move(g), o); });
  else
    opt = std::make_unique<xg::optim::AdamW>(groups, o);
  xg::Generator gen(1 + comm.rank());
  xg::Tensor x = xg::randint(0, c.vocab_size, {batch, seq}, &gen), y = xg::randint(0, c.vocab_size, {batch, seq}, &gen);
  auto step = [&] {
    xg::Tensor loss = model.loss(x, y);
    opt->zero_grad();
    loss.backward();
    opt->step(xg::optim::clip_coef(xg::optim::get_total_norm(model.parameters()), 1.0));
  };
  step();
  std::vector<double> times;
  const double begin = now();
  // Every rank takes the same number of steps: rank 0 decides when to stop.
  for (;;) {
    comm.barrier();
    const double t0 = now();
    step();
    comm.barrier();
    times.push_back(now() - t0);
    xg::Tensor more = xg::scalar_tensor(times.size() < 5 || now() - begin < 8.0 ? 1.0 : 0.0, xg::float64);
    comm.broadcast(more, 0);
    if (more.item() == 0.0) break;
  }
  const double sec = median(times);
  xg::Tensor mem = xg::scalar_tensor(peak_mb(), xg::float64);
  comm.all_reduce(mem, xg::distributed::ReduceOp::max);
  if (comm.rank() == 0)
    fmt::print("{{\"ranks\": {}, \"tokens_per_sec\": {:.1f}, \"step_ms\": {:.3f}, \"peak_mb_per_rank\": {:.1f}}}\n",
               comm.size(), comm.size() * batch * seq / sec, sec * 1e3, mem.item());
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  auto comm = xg::distributed::init();
  std::string mode = argc > 1 ? argv[1] : "";
  if (comm->rank() == 0) fmt::print(stderr, "# {}; GEMM: {}; {} ranks\n", bench::cpu_model(), bench::gemm_backend(), comm->size());
  if (mode == "allreduce") return allreduce(*comm);
  if (mode == "train" && argc >= 4) {
    xg::set_num_threads(std::atoi(argv[3]));
    std::vector<std::string> rest(argv + 4, argv + argc);
    auto has = [&](const char* s) { return std::find(rest.begin(), rest.end(), s) != rest.end(); };
    return train(*comm, comm, argv[2], has("zero"), has("sync"));
  }
  fmt::print(stderr, "usage: bench_distributed allreduce | train baby|gpt2 THREADS [zero] [sync]\n");
  return 2;
}

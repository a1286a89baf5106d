#include "checks.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

namespace test {

using xg::Tensor;
using xg::distributed::Communicator;
using xg::distributed::DDPOptions;
using xg::distributed::DistributedDataParallel;

namespace {

constexpr std::int64_t kIn = 7, kHidden = 13, kOut = 5;  // odd sizes: shards cut parameters

/// A small MLP; optionally with a weight used twice (tied) and a parameter used only on some ranks.
struct Net : xg::nn::Module {
  std::shared_ptr<xg::nn::Linear> fc1, fc2;
  Tensor extra;
  bool tied = false, use_extra = true;
  Net(std::uint64_t seed, bool tied_weight, bool with_extra) : tied(tied_weight) {
    xg::Generator gen(seed);
    fc1 = register_module("fc1", std::make_shared<xg::nn::Linear>(xg::nn::LinearOptions(kIn, kHidden), &gen));
    fc2 = register_module("fc2", std::make_shared<xg::nn::Linear>(xg::nn::LinearOptions(kHidden, kOut), &gen));
    if (with_extra) extra = register_parameter("extra", xg::randn({kOut}, {}, &gen));
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = xg::tanh(fc1->forward(x));
    if (tied) h = h + xg::tanh(xg::matmul(xg::matmul(h, fc1->weight), fc1->weight.transpose(0, 1)));  // used 3 times
    Tensor y = fc2->forward(h);
    if (extra.defined() && use_extra) y = y * extra;
    return y;
  }
};

/// Rows [first, first + n) of a fixed data set, the same on every rank.
std::pair<Tensor, Tensor> rows(std::int64_t first, std::int64_t n) {
  xg::Generator gen(99);
  Tensor x = xg::randn({64, kIn}, {}, &gen), y = xg::randn({64, kOut}, {}, &gen);
  return {x.narrow(0, first, n).contiguous(), y.narrow(0, first, n).contiguous()};
}

Tensor mse(const Tensor& out, const Tensor& target) {
  Tensor d = out - target;
  return (d * d).mean();
}

std::vector<float> flat_params(xg::nn::Module& m) {
  std::vector<float> out;
  for (auto& [n, p] : m.named_parameters()) {
    auto v = p.to_vector<float>();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

/// Every rank holds the same bits.
void expect_identical_across_ranks(Communicator& comm, const std::vector<float>& v, const std::string& what) {
  Tensor mine = xg::tensor(v, {static_cast<std::int64_t>(v.size())});
  auto all = comm.all_gather(mine).to_vector<float>();
  for (int r = 1; r < comm.size(); ++r)
    XG_CHECK(std::memcmp(all.data(), all.data() + r * v.size(), v.size() * sizeof(float)) == 0,
             "{}: rank {} holds other bits than rank 0", what, r);
}

/// Largest |a - b| / (atol + rtol |b|); at most 1 passes.
void expect_close(const std::vector<float>& a, const std::vector<float>& b, double atol, double rtol,
                  const std::string& what) {
  XG_CHECK(a.size() == b.size(), "{}: {} values vs {}", what, a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i)
    XG_CHECK(std::abs(double(a[i]) - b[i]) <= atol + rtol * std::abs(double(b[i])),
             "{}: element {} is {} but the reference is {}", what, i, a[i], b[i]);
}

enum class Opt { sgd, adamw, zero_adamw };

std::unique_ptr<xg::optim::Optimizer> make_optimizer(Opt kind, xg::nn::Module& m,
                                                     const std::shared_ptr<Communicator>& comm) {
  auto groups = xg::optim::decay_groups(m.named_parameters(), 0.1);
  xg::optim::AdamWOptions adamw{.lr = 1e-2, .betas = {0.9, 0.99}};
  switch (kind) {
    case Opt::sgd: return std::make_unique<xg::optim::SGD>(groups, xg::optim::SGDOptions{.lr = 0.1, .momentum = 0.9});
    case Opt::adamw: return std::make_unique<xg::optim::AdamW>(groups, adamw);
    default:
      return std::make_unique<xg::distributed::ZeroRedundancyOptimizer>(
          groups, comm, [adamw](std::vector<xg::optim::ParamGroup> g) {
            return std::make_unique<xg::optim::AdamW>(std::move(g), adamw);
          });
  }
}

/// A communicator handle that does not own the one the check was given.
std::shared_ptr<Communicator> borrow(Communicator& comm) { return {&comm, [](Communicator*) {}}; }

constexpr int kSteps = 5;

/// kSteps steps on one process over the whole batch of every rank together (the reference).
std::vector<float> reference_run(Opt kind, int ranks, std::int64_t b, int micro, bool tied) {
  Net net(1, tied, false);
  auto opt = make_optimizer(kind == Opt::zero_adamw ? Opt::adamw : kind, net, nullptr);
  for (int s = 0; s < kSteps; ++s) {
    auto [x, y] = rows(0, b * ranks * micro);
    mse(net.forward(x), y).backward();
    opt->step();
    opt->zero_grad();
  }
  return flat_params(net);
}

/// The same with DDP: rank r takes rows [(m * ranks + r) b, + b) of micro-batch m; all but the last
/// micro-batch under no_sync. Parameters must agree bit for bit across ranks after every step.
std::vector<float> ddp_run(Communicator& comm, Opt kind, std::int64_t b, int micro, bool tied, DDPOptions o,
                           bool grads_to_none = true) {
  Net net(1 + comm.rank(), tied, false);  // other ranks start elsewhere: construction broadcasts rank 0's
  auto shared = borrow(comm);
  DistributedDataParallel ddp(net, shared, o);
  auto opt = make_optimizer(kind, net, shared);
  for (int s = 0; s < kSteps; ++s) {
    for (int m = 0; m < micro; ++m) {
      auto [x, y] = rows((m * comm.size() + comm.rank()) * b, b);
      Tensor loss = mse(ddp.forward(x), y) / static_cast<double>(micro);
      if (m + 1 < micro) {
        auto guard = ddp.no_sync();
        loss.backward();
      } else {
        loss.backward();
      }
    }
    opt->step();
    opt->zero_grad(grads_to_none);  // false: the next backward accumulates into the bucket views
    expect_identical_across_ranks(comm, flat_params(net), fmt::format("parameters after step {}", s + 1));
  }
  return flat_params(net);
}

// Float32 sums taken in another order. Measured with 2 thread ranks after 5 steps: at most 3.4e-8 absolute
// on parameters of size 0.01-1; the bound leaves room for other rank counts and BLAS kernels.
constexpr double kAtol = 2e-6, kRtol = 2e-5;

void collectives(Communicator& comm) {
  const int r = comm.rank(), n = comm.size();
  Tensor f = xg::tensor(std::vector<float>{float(r + 1), -float(r)}, {2});
  comm.all_reduce(f);
  XG_CHECK(f.to_vector<float>() == std::vector<float>({float(n * (n + 1) / 2), -float(n * (n - 1) / 2)}),
           "all_reduce sum of float32 gave {}", fmt::join(f.to_vector<float>(), ", "));
  Tensor d = xg::tensor(std::vector<double>{double(r), 0.5 * r}, {2}, {xg::float64});
  comm.all_reduce(d, xg::distributed::ReduceOp::max);
  XG_CHECK(d.to_vector<double>() == std::vector<double>({double(n - 1), 0.5 * (n - 1)}), "all_reduce max of float64");
  Tensor i = xg::index_tensor(std::vector<std::int64_t>{10 + r});
  comm.all_reduce(i, xg::distributed::ReduceOp::min);
  XG_CHECK(i.item<std::int64_t>() == 10, "all_reduce min of int64 gave {}", i.item<std::int64_t>());
  Tensor b = xg::full({3}, r == n - 1 ? 7.0 : -1.0);
  comm.broadcast(b, n - 1);
  XG_CHECK(b.to_vector<float>() == std::vector<float>(3, 7.f), "broadcast from the last rank");
  auto all = comm.all_gather(xg::full({2}, double(r), {xg::float64})).to_vector<double>();
  for (int q = 0; q < n; ++q)
    XG_CHECK(all[2 * q] == q && all[2 * q + 1] == q, "all_gather: rank {}'s part holds {}", q, all[2 * q]);
  comm.barrier();
}

void ddp_equals_one_process(Communicator& comm, Opt kind, const char* name) {
  const auto ref = reference_run(kind, comm.size(), 3, 1, false);
  const auto got = ddp_run(comm, kind, 3, 1, false, {});
  expect_close(got, ref, kAtol, kRtol, fmt::format("{}: {} ranks at batch 3 vs one process at batch {}", name,
                                                   comm.size(), 3 * comm.size()));
}

void bucket_size_does_not_matter(Communicator& comm) {
  const auto big = ddp_run(comm, Opt::adamw, 3, 1, false, {.bucket_cap_mb = 25});
  const auto tiny = ddp_run(comm, Opt::adamw, 3, 1, false, {.bucket_cap_mb = 1e-4});  // one parameter each
  const auto sync = ddp_run(comm, Opt::adamw, 3, 1, false, {.bucket_cap_mb = 1e-4, .overlap_communication = false});
  const auto copies = ddp_run(comm, Opt::adamw, 3, 1, false, {.gradient_as_bucket_view = false});
  XG_CHECK(big == tiny && tiny == sync && sync == copies,
           "the parameters depend on the bucket size, the communication thread or gradient_as_bucket_view");
  Net net(1, false, false);
  DistributedDataParallel ddp(net, borrow(comm), {.bucket_cap_mb = 1e-4});
  XG_CHECK(ddp.bucket_names().size() == 4 && ddp.bucket_names().front() == std::vector<std::string>{"fc2.bias"},
           "buckets are not filled in reverse registration order: first bucket {}", fmt::join(ddp.bucket_names()[0], ","));
}

void no_sync_equals_larger_batch(Communicator& comm) {
  const auto ref = reference_run(Opt::sgd, comm.size(), 2, 3, false);
  const auto got = ddp_run(comm, Opt::sgd, 2, 3, false, {});
  expect_close(got, ref, kAtol, kRtol, "3 micro-batches with no_sync vs one batch of all of them");
  const auto zeroed = ddp_run(comm, Opt::sgd, 2, 3, false, {}, /*grads_to_none=*/false);
  expect_close(zeroed, ref, kAtol, kRtol, "the same with gradients zeroed in place");
}

void zero_equals_adamw(Communicator& comm) {
  const auto ref = reference_run(Opt::adamw, comm.size(), 3, 1, false);
  const auto got = ddp_run(comm, Opt::zero_adamw, 3, 1, false, {});
  expect_close(got, ref, kAtol, kRtol, "ZeRO-1 AdamW vs AdamW");
  // The state by parameter name: continue a sharded run with the plain optimizer, and back.
  Net a(5, false, false), b(5, false, false);
  auto zero = make_optimizer(Opt::zero_adamw, a, borrow(comm));
  auto plain = make_optimizer(Opt::adamw, b, nullptr);
  auto step = [](xg::nn::Module& net, xg::optim::Optimizer& opt, std::int64_t first, double grad_scale = 1.0) {
    auto [x, y] = rows(first, 8);
    mse(net.forward(x), y).backward();
    opt.step(grad_scale);
    opt.zero_grad();
  };
  step(a, *zero, 0);
  step(a, *zero, 8);
  b.load_state_dict(a.state_dict());
  plain->load_state_dict(zero->state_dict());
  step(a, *zero, 16);
  step(b, *plain, 16);
  expect_close(flat_params(a), flat_params(b), 1e-7, 1e-6, "a step from the gathered ZeRO state vs plain AdamW");
  zero->load_state_dict(plain->state_dict());
  step(a, *zero, 24, 0.25);  // a clipping factor reaches the shard's optimizer
  step(b, *plain, 24, 0.25);
  expect_close(flat_params(a), flat_params(b), 1e-7, 1e-6, "a scaled step from a plain AdamW state loaded into ZeRO");
}

void tied_weight(Communicator& comm) {
  const auto ref = reference_run(Opt::sgd, comm.size(), 3, 1, true);
  const auto got = ddp_run(comm, Opt::sgd, 3, 1, true, {});
  expect_close(got, ref, kAtol, kRtol, "a weight used twice");
}

void unused_parameter(Communicator& comm) {
  Net net(1, false, true);
  net.use_extra = false;
  {
    DistributedDataParallel ddp(net, borrow(comm));
    auto [x, y] = rows(0, 4);
    bool threw = false;
    try {
      mse(ddp.forward(x), y).backward();
    } catch (const xg::Error& e) {
      threw = std::string(e.what()).find("1 parameter got no gradient in this backward: extra") != std::string::npos;
      XG_CHECK(threw, "unexpected error: {}", e.what());
    }
    XG_CHECK(threw, "a parameter without a gradient was not reported");
  }
  net.zero_grad();
  // Allowed: used on rank 1 only, its gradient is rank 1's divided by the number of ranks; everywhere else 0.
  DistributedDataParallel ddp(net, borrow(comm), {.find_unused_parameters = true});
  net.use_extra = comm.rank() == 1;
  auto [x, y] = rows(comm.rank() * 4, 4);
  mse(ddp.forward(x), y).backward();
  Tensor g = net.extra.grad();
  XG_CHECK(g.defined() == (comm.size() > 1), "extra's gradient is {} with {} ranks", g.defined() ? "set" : "unset",
           comm.size());
  if (comm.size() > 1) {
    Net alone(1, false, true);
    auto [x1, y1] = rows(4, 4);
    mse(alone.forward(x1), y1).backward();
    expect_close(g.to_vector<float>(), (alone.extra.grad() / double(comm.size())).to_vector<float>(), 1e-7, 1e-6,
                 "the gradient of a parameter used on one rank");
  }
}

}  // namespace

const std::vector<std::pair<std::string, DistributedCheck>>& distributed_checks() {
  static const std::vector<std::pair<std::string, DistributedCheck>> checks = {
      {"collectives", collectives},
      {"ddp_sgd_equals_one_process", [](Communicator& c) { ddp_equals_one_process(c, Opt::sgd, "SGD"); }},
      {"ddp_adamw_equals_one_process", [](Communicator& c) { ddp_equals_one_process(c, Opt::adamw, "AdamW"); }},
      {"bucket_size_does_not_matter", bucket_size_does_not_matter},
      {"no_sync_equals_larger_batch", no_sync_equals_larger_batch},
      {"zero_equals_adamw", zero_equals_adamw},
      {"tied_weight", tied_weight},
      {"unused_parameter", unused_parameter},
  };
  return checks;
}

}  // namespace test

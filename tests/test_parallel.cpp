// xgrad's thread pool: parallel_for's contract, and every kernel that runs on the pool giving the same bits
// on 1, 2 and 3 threads (elementwise and row kernels split work without changing any sum's order; layer
// norm's and the gradient norm's partial sums belong to fixed blocks, not to threads).
#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include <xgrad/kernel.hpp>

#include "helpers.hpp"

namespace F = xg::nn::functional;

namespace {
/// Sets the pool's size for one scope.
struct Threads {
  int prev;
  explicit Threads(int n) : prev(xg::get_num_threads()) { xg::set_num_threads(n); }
  ~Threads() { xg::set_num_threads(prev); }
};

/// Every output and gradient of the pooled kernels, computed on `threads` threads, as float32 values.
std::vector<std::vector<float>> pooled_results(int threads) {
  Threads scope(threads);
  xg::Generator gen(7);
  auto leaf = [&](const xg::Shape& s) { return xg::randn(s, {xg::float32}, &gen).requires_grad_(true); };
  std::vector<std::vector<float>> out;
  auto keep = [&](const xg::Tensor& t) { out.push_back(t.contiguous().to_vector<float>()); };

  // [96, 384]: 36,864 items, more than two elementwise chunks.
  xg::Tensor a = leaf({96, 384}), b = leaf({96, 384}), bias = leaf({384}), w = leaf({384}), scalar = leaf({});
  xg::Tensor y = (a + b) * scalar + bias;  // same-shape, 0-d and row-broadcast paths
  y = y + xg::transpose(xg::transpose(b, 0, 1) * 0.5, 0, 1);  // strided operands
  y = xg::gelu(y, true) + xg::gelu(a, false) + xg::exp(b * 0.1);
  y = F::layer_norm(y, w, bias);
  y = F::add_layer_norm(y, a, w, bias).second + y;
  xg::Tensor proj = leaf({384, 384});
  y = F::linear(y, proj, bias) * 0.05;  // the bias's column sums in backward
  y = y + F::linear(a, proj, bias, F::Activation::gelu) * 0.05;  // GELU's gradient in the same pass
  y = F::softmax(y, -1) + F::log_softmax(a, -1);
  keep(y);
  xg::Tensor targets = xg::randint(0, 384, {96}, &gen);
  xg::Tensor loss = F::cross_entropy(y * 3.0, targets) + (y * y).sum();
  keep(loss);
  // Attention: [2, 4, 64, 32], causal, 8 blocks of work.
  xg::Tensor q = leaf({2, 4, 64, 32}), k = leaf({2, 4, 64, 32}), v = leaf({2, 4, 64, 32});
  xg::Tensor att = F::scaled_dot_product_attention(q, k, v, {.causal = true});
  keep(att);
  loss = loss + (att * att).sum();
  xg::Tensor packed = leaf({4, 64, 96});  // 4 sequences x 4 heads of 8
  xg::Tensor pat = F::packed_self_attention(packed, 4, {.causal = true});
  keep(pat);
  loss = loss + (pat * pat).sum();
  loss.backward();
  for (const auto& t : {a, b, bias, w, scalar, proj, q, k, v, packed}) keep(t.grad());

  // In-place accumulation with broadcasting, and the optimizer over the gradients.
  xg::Tensor acc = xg::zeros({96, 384});
  acc.add_(bias.grad(), 2.0);
  acc.add_(a.grad());
  keep(acc);
  std::vector<xg::Tensor> params{a, b, bias, w, scalar, q, k, v};
  const double norm = xg::optim::clip_grad_norm_(params, 0.5);
  out.push_back({static_cast<float>(norm), static_cast<float>(norm - static_cast<float>(norm))});
  xg::optim::AdamW opt(xg::optim::decay_groups({{"a", a}, {"b", b}, {"bias", bias}, {"w", w}, {"q", q}}, 0.1),
                       {.lr = 1e-2});
  opt.step();
  opt.step();
  for (const auto& t : {a, b, bias, w, q}) keep(t);
  return out;
}
}  // namespace

TEST_CASE("parallel_for covers 0 to n once, in chunks of at least the grain", "[parallel]") {
  for (int threads : {1, 2, 3}) {
    Threads scope(threads);
    for (std::int64_t n : {std::int64_t{1}, std::int64_t{5}, std::int64_t{100}, std::int64_t{101}, std::int64_t{100003}}) {
      const std::int64_t grain = 25;
      std::vector<int> seen(static_cast<std::size_t>(n), 0);
      std::mutex mu;
      std::vector<std::pair<std::int64_t, std::int64_t>> chunks;
      xg::kernel::parallel_for(n, grain, [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t i = b; i < e; ++i) ++seen[static_cast<std::size_t>(i)];
        std::lock_guard lock(mu);
        chunks.emplace_back(b, e);
      });
      INFO("threads " << threads << ", n " << n);
      CHECK(std::count(seen.begin(), seen.end(), 1) == n);
      CHECK(static_cast<int>(chunks.size()) <= threads);
      for (auto [b, e] : chunks) CHECK((e - b >= grain || chunks.size() == 1));
    }
  }
}

TEST_CASE("parallel_for runs on the pool's threads, inline when nested", "[parallel]") {
  Threads scope(2);
  std::mutex mu;
  std::set<std::thread::id> outer_ids;
  std::atomic<int> nested_elsewhere{0};
  xg::kernel::parallel_for(1000, 1, [&](std::int64_t, std::int64_t) {
    const auto me = std::this_thread::get_id();
    {
      std::lock_guard lock(mu);
      outer_ids.insert(me);
    }
    xg::kernel::parallel_for(1000, 1, [&](std::int64_t, std::int64_t) {
      if (std::this_thread::get_id() != me) ++nested_elsewhere;
    });
  });
  CHECK(nested_elsewhere == 0);
  CHECK(static_cast<int>(outer_ids.size()) == (xg::kernel::has_thread_pool() ? 2 : 1));
  CHECK(xg::get_num_threads() == 2);
#ifdef XGRAD_TEST_BLAS_OPENMP
  // The build found OpenBLAS's OpenMP build: the library loaded at run time must be that one.
  CHECK(xg::kernel::blas_shares_pool());
#endif
}

TEST_CASE("parallel_for rethrows a chunk's exception and carries autocast into the chunks", "[parallel]") {
  Threads scope(2);
  std::atomic<std::int64_t> done{0};
  auto run = [&] {
    xg::kernel::parallel_for(100, 10, [&](std::int64_t b, std::int64_t e) {
      if (b > 0) throw std::runtime_error("chunk failed");
      done += e - b;
    });
  };
  CHECK_THROWS_WITH(run(), "chunk failed");
  CHECK(done == 50);  // the other chunk ran to its end
  for (bool on : {false, true}) {
    xg::autocast precision(on);
    std::atomic<int> mismatched{0};
    xg::kernel::parallel_for(100, 10, [&](std::int64_t, std::int64_t) {
      if (xg::is_autocast_enabled() != on) ++mismatched;
    });
    CHECK(mismatched == 0);
  }
}

TEST_CASE("kernels on the pool give the same bits on 1, 2 and 3 threads", "[parallel]") {
  const auto one = pooled_results(1);
  for (int threads : {2, 3}) {
    const auto many = pooled_results(threads);
    REQUIRE(many.size() == one.size());
    for (std::size_t i = 0; i < one.size(); ++i) {
      INFO("result " << i << " on " << threads << " threads");
      CHECK(many[i] == one[i]);
    }
  }
}

TEST_CASE("set_num_threads reaches GEMMs called from other threads", "[parallel]") {
  Threads scope(1);
  // A std::thread has its own OpenMP settings; a GEMM there must still use the pool's size (1 here), so
  // a product computed there equals the same product on this thread.
  const xg::Tensor a = test::uniform({300, 200}, -1, 1, 1, false).to(xg::float32),
                   b = test::uniform({200, 250}, -1, 1, 2, false).to(xg::float32);
  const auto here = xg::matmul(a, b).to_vector<float>();
  std::vector<float> there;
  int threads_there = 0;
  std::thread t([&] {
    there = xg::matmul(a, b).to_vector<float>();
    threads_there = xg::get_num_threads();
  });
  t.join();
  CHECK(threads_there == 1);
  CHECK(there == here);
}

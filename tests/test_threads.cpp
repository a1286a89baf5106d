// The thread contract (README, "Threads"): graphs are per thread; leaves such as a shared model's
// parameters may be reached by backward passes running on several threads at once, and their .grad
// then holds the sum of every contribution. CI runs these tests under ThreadSanitizer too.
#include <thread>

#include "helpers.hpp"

namespace nn = xg::nn;
namespace F = xg::nn::functional;
using xg::Tensor;

namespace {

/// A model initialised from its own generator: the default one is shared by every thread, so drawing
/// from it on several threads at once interleaves the numbers.
std::shared_ptr<nn::Sequential> small_model(std::uint64_t seed) {
  xg::Generator gen(seed);
  auto m = std::make_shared<nn::Sequential>();
  m->push_back(std::make_shared<nn::Linear>(nn::LinearOptions(6, 16), &gen)).push_back(std::make_shared<nn::GELU>());
  m->push_back(std::make_shared<nn::LayerNorm>(16)).push_back(std::make_shared<nn::Linear>(nn::LinearOptions(16, 4), &gen));
  m->to(xg::float64);
  return m;
}

/// Loss of `m` on the batch drawn from `seed`.
Tensor loss_on(nn::Module& m, std::uint64_t seed) {
  xg::Generator gen(seed);
  Tensor x = xg::randn({8, 6}, {xg::float64}, &gen);
  Tensor y = xg::randint(0, 4, {8}, &gen);
  return F::cross_entropy(m.forward(x), y);
}

/// A few AdamW steps of a fresh model; returns its parameters' values.
std::vector<double> train_alone(std::uint64_t seed) {
  auto m = small_model(seed);
  xg::optim::AdamW opt(xg::optim::decay_groups(m->named_parameters(), 0.1), {.lr = 1e-2});
  for (int step = 0; step < 5; ++step) {
    opt.zero_grad();
    loss_on(*m, seed * 100 + step).backward();
    opt.step();
  }
  std::vector<double> out;
  for (auto& p : m->parameters())
    for (double v : p.to_vector<double>()) out.push_back(v);
  return out;
}

}  // namespace

TEST_CASE("N threads training N models end bit-identical to sequential runs", "[threads]") {
  constexpr int kThreads = 4;
  std::vector<std::vector<double>> sequential, parallel(kThreads);
  for (int t = 0; t < kThreads; ++t) sequential.push_back(train_alone(10 + t));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back([t, &parallel] { parallel[t] = train_alone(10 + t); });
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) CHECK(parallel[t] == sequential[t]);
}

TEST_CASE("backward from several threads into one shared model sums every contribution", "[threads]") {
  constexpr int kThreads = 4, kRounds = 5;
  auto m = small_model(3);
  // The reference: the same losses backpropagated one after another.
  for (int t = 0; t < kThreads; ++t)
    for (int r = 0; r < kRounds; ++r) loss_on(*m, 1000 + t * kRounds + r).backward();
  std::vector<std::vector<double>> want;
  for (auto& p : m->parameters()) want.push_back(p.grad().to_vector<double>());
  m->zero_grad();

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([t, &m] {
      for (int r = 0; r < kRounds; ++r) loss_on(*m, 1000 + t * kRounds + r).backward();
    });
  for (auto& th : threads) th.join();
  auto params = m->parameters();
  for (std::size_t i = 0; i < params.size(); ++i) {
    INFO("parameter " << i);
    // The order of the additions differs between runs, so the sums agree to rounding, not bitwise.
    auto got = params[i].grad().to_vector<double>();
    REQUIRE(got.size() == want[i].size());
    for (std::size_t k = 0; k < got.size(); ++k) CHECK(got[k] == Approx(want[i][k]).epsilon(1e-12).margin(1e-14));
  }
}

TEST_CASE("the default generator and the allocator's cache are safe to share", "[threads]") {
  constexpr int kThreads = 4;
  std::vector<std::thread> threads;
  std::vector<double> sums(kThreads);
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([t, &sums] {
      double s = 0;
      for (int i = 0; i < 200; ++i) s += xg::sum(xg::randn({64}) * 0.0 + 1.0).item();
      sums[t] = s;
    });
  for (auto& th : threads) th.join();
  for (double s : sums) CHECK(s == 200 * 64.0);
}

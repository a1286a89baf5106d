// The distributed checks on the thread communicator (no mpirun), the thread communicator's failure
// handling, and the engine hooks DistributedDataParallel is built on.
#include <thread>

#include "distributed/checks.hpp"
#include "helpers.hpp"

using xg::Tensor;
namespace dist = xg::distributed;

TEST_CASE("distributed checks on 2 and 3 thread ranks", "[threads][distributed]") {
  for (int ranks : {2, 3})
    for (const auto& [name, check] : test::distributed_checks()) {
      INFO(name << " with " << ranks << " ranks");
      std::string error;
      try {
        dist::run_threads(ranks, check, {.timeout_seconds = 60});
      } catch (const std::exception& e) {
        error = e.what();
      }
      CHECK(error == "");
    }
}

TEST_CASE("distributed checks on one rank") {
  for (const auto& [name, check] : test::distributed_checks()) {
    INFO(name);
    CHECK_NOTHROW(dist::run_threads(1, check));
  }
}

TEST_CASE("a rank that fails ends the others' collectives with its error", "[threads][distributed]") {
  std::vector<std::string> seen(3);
  test::require_error(
      [&] {
        dist::run_threads(3, [&](dist::Communicator& comm) {
          try {
            if (comm.rank() == 2) xg::fail("out of data");
            comm.all_reduce(xg::ones({4}));
          } catch (const xg::Error& e) {
            seen[static_cast<std::size_t>(comm.rank())] = e.what();
            throw;
          }
        });
      },
      {"out of data"});
  for (int r : {0, 1}) CHECK(seen[static_cast<std::size_t>(r)].find("rank 2 failed: out of data") != std::string::npos);
}

TEST_CASE("a rank that never arrives times the collective out", "[threads][distributed]") {
  test::require_error(
      [] {
        dist::run_threads(2, [](dist::Communicator& comm) {
          if (comm.rank() == 0) comm.barrier();  // rank 1 returns without the barrier
        }, {.timeout_seconds = 0.2});
      },
      {"rank 0: barrier did not complete within 0.2 s"});
}

TEST_CASE("init without mpirun is a job of one rank") {
  auto comm = dist::init();
  CHECK(comm->rank() == 0);
  CHECK(comm->size() == 1);
  Tensor t = xg::full({2}, 3.0);
  comm->all_reduce(t);
  CHECK(t.to_vector<float>() == std::vector<float>{3.f, 3.f});
}

TEST_CASE("collectives refuse bad tensors") {
  dist::run_threads(1, [](dist::Communicator& comm) {
    test::require_error([&] { comm.all_reduce(xg::ones({2, 3}).transpose(0, 1)); }, {"all_reduce", "not contiguous"});
    test::require_error([&] { comm.broadcast(xg::ones({2}), 3); }, {"broadcast: root 3 is not a rank"});
    test::require_error([&] { comm.all_reduce(Tensor()); }, {"all_reduce: the tensor is undefined"});
  });
  test::require_error([] { dist::run_threads(0, [](dist::Communicator&) {}); }, {"run_threads: 0 ranks"});
  test::require_error([] { dist::DistributedDataParallel(*std::make_shared<xg::nn::Linear>(2, 2), nullptr); },
                      {"no communicator"});
}

TEST_CASE("ranks with different models are refused") {
  test::require_error(
      [] {
        dist::run_threads(2, [](dist::Communicator& comm) {
          xg::nn::Linear net(3, comm.rank() == 0 ? 4 : 5);
          dist::DistributedDataParallel ddp(net, {&comm, [](dist::Communicator*) {}});
        });
      },
      {"rank 1 has 2 parameters (20 elements) and rank 0 has 2 (16 elements)"});
}

TEST_CASE("post-accumulate-grad hooks fire once per backward, after every contribution") {
  Tensor w = test::uniform({3}, -1, 1, 1);
  std::vector<std::vector<double>> seen;
  auto id = xg::autograd::register_post_accumulate_grad_hook(w, [&](const Tensor& leaf) {
    seen.push_back(test::values(leaf.grad()));
  });
  ((w * 2.0).sum() + (w * w).sum()).backward();  // two uses of w
  REQUIRE(seen.size() == 1);
  auto wv = test::values(w);
  for (int i = 0; i < 3; ++i) CHECK(seen[0][static_cast<std::size_t>(i)] == Approx(2 + 2 * wv[static_cast<std::size_t>(i)]));
  xg::autograd::grad({(w * 3.0).sum()}, {w});  // grad() accumulates nothing: no hook
  CHECK(seen.size() == 1);
  xg::autograd::remove_post_accumulate_grad_hook(w, id);
  (w * 2.0).sum().backward();
  CHECK(seen.size() == 1);
  test::require_error([&] { xg::autograd::register_post_accumulate_grad_hook(w * 2.0, [](const Tensor&) {}); },
                      {"not a leaf that requires grad"});
}

TEST_CASE("queue_callback runs after the whole backward, nested ones included") {
  Tensor w = test::uniform({2}, -1, 1, 2);
  std::vector<std::string> order;
  xg::autograd::register_post_accumulate_grad_hook(w, [&](const Tensor&) {
    order.push_back("hook");
    xg::autograd::queue_callback([&] { order.push_back("callback"); });
  });
  Tensor v = test::uniform({2}, -1, 1, 3);
  xg::autograd::register_post_accumulate_grad_hook(v, [&](const Tensor&) { order.push_back("hook v"); });
  // The checkpointed block runs its own backward inside the outer one; callbacks wait for the outer.
  Tensor y = xg::nn::checkpoint([](const std::vector<Tensor>& in) { return in[0] * 2.0; }, {w});
  (y * v).sum().backward();
  CHECK(order.back() == "callback");
  CHECK(std::count(order.begin(), order.end(), "callback") == 1);
  test::require_error([] { xg::autograd::queue_callback([] {}); }, {"no backward is running"});
}

// The engine: accumulation, graph shapes, retain_graph, grad mode, detach, versions, deep graphs, threads,
// autograd::grad and higher-order gradients, and the custom-op API.
#include <thread>

#include "helpers.hpp"

using xg::Tensor;


TEST_CASE("gradients accumulate into leaves across backward calls", "[engine]") {
  Tensor x = xg::tensor({1.0, 2.0, 3.0}, {3}, {xg::float64, true});
  (x * 2.0).sum().backward();
  (x * 3.0).sum().backward();
  CHECK(test::values(x.grad()) == std::vector<double>{5, 5, 5});
  x.set_grad(Tensor());
  (x * x).sum().backward();  // a tensor used twice gets both contributions: d/dx x*x = 2x
  CHECK(test::values(x.grad()) == std::vector<double>{2, 4, 6});
}

TEST_CASE("diamond graphs sum the gradients of both paths", "[engine]") {
  Tensor x = xg::tensor({1.5}, {1}, {xg::float64, true});
  Tensor a = x * 2.0;  // a = 2x
  Tensor b = a + 1.0;  // b = 2x + 1
  Tensor c = a * 3.0;  // c = 6x
  Tensor d = b * c;    // d = 12x^2 + 6x, dd/dx = 24x + 6
  d.backward();
  CHECK(x.grad().item() == Approx(24 * 1.5 + 6));
}

TEST_CASE("gradients of broadcast inputs are summed to the input's shape", "[engine]") {
  Tensor a = xg::ones({2, 3}, {xg::float64, true});
  Tensor b = xg::tensor({1.0, 2.0, 3.0}, {3}, {xg::float64, true});
  (a * b).sum().backward();
  CHECK(b.grad().shape() == xg::Shape{3});
  CHECK(test::values(b.grad()) == std::vector<double>{2, 2, 2});
  CHECK(test::values(a.grad()) == std::vector<double>{1, 2, 3, 1, 2, 3});
}

TEST_CASE("a second backward needs retain_graph, and says so", "[engine]") {
  Tensor x = xg::tensor({2.0}, {1}, {xg::float64, true});
  Tensor y = (x * x).sum();
  y.backward({}, /*retain_graph=*/true);
  y.backward();
  CHECK(x.grad().item() == Approx(8.0));
  test::require_error([&] { y.backward(); }, {"second time", "SumBackward", "retain_graph"});
}

TEST_CASE("backward of a non-scalar needs an explicit gradient", "[engine]") {
  Tensor x = xg::tensor({1.0, 2.0}, {2}, {xg::float64, true});
  Tensor y = x * 3.0;
  test::require_error([&] { y.backward(); }, {"backward", "[2]", "ones_like"});
  y.backward(xg::tensor({1.0, 10.0}, {2}, {xg::float64}));
  CHECK(test::values(x.grad()) == std::vector<double>{3, 30});
  test::require_error([&] { (x * 2.0).backward(xg::ones({3}, {xg::float64})); }, {"does not match", "[3]", "[2]"});
}

TEST_CASE("NoGradGuard stops recording, on this thread only", "[engine]") {
  Tensor x = xg::ones({2}, {xg::float64, true});
  {
    xg::autograd::NoGradGuard ng;
    Tensor y = x * 2.0;
    CHECK_FALSE(y.requires_grad());
    CHECK(y.grad_fn() == nullptr);
    bool other_thread_enabled = false;
    std::thread([&] { other_thread_enabled = xg::autograd::is_grad_enabled(); }).join();
    CHECK(other_thread_enabled);
  }
  CHECK(xg::autograd::is_grad_enabled());
  CHECK((x * 2.0).requires_grad());
}

TEST_CASE("detach shares storage and cuts the graph", "[engine]") {
  Tensor x = xg::tensor({1.0, 2.0}, {2}, {xg::float64, true});
  Tensor d = (x * 2.0).detach();
  CHECK(d.is_leaf());
  CHECK_FALSE(d.requires_grad());
  Tensor y = (x * d).sum();  // d is a constant: dy/dx = d
  y.backward();
  CHECK(test::values(x.grad()) == std::vector<double>{2, 4});
  Tensor v = x.detach();
  CHECK(v.impl()->storage == x.impl()->storage);
}

TEST_CASE("modifying a saved tensor in place makes backward throw", "[engine]") {
  Tensor x = xg::tensor({1.0, 2.0}, {2}, {xg::float64, true});
  Tensor w = xg::tensor({3.0, 4.0}, {2}, {xg::float64});
  w.set_name("w");
  Tensor y = (x * w).sum();
  w.add_(1.0);
  CHECK(w.version() == 1);
  test::require_error([&] { y.backward(); }, {"MulBackward", "in-place", "version 0", "version 1", "\"w\""});
}

TEST_CASE("in-place ops on tensors the graph needs are refused with a hint", "[engine]") {
  Tensor x = xg::ones({2}, {xg::float64, true});
  test::require_error([&] { x.add_(1.0); }, {"add_", "leaf", "NoGradGuard"});
  Tensor y = x * 2.0;
  test::require_error([&] { y.mul_(2.0); }, {"mul_", "part of a graph"});
  {
    xg::autograd::NoGradGuard ng;
    x.add_(1.0);  // an optimizer's update
  }
  CHECK(test::values(x) == std::vector<double>{2, 2});
  Tensor e = xg::ones({3}).expand({2, 3});
  test::require_error([&] { e.zero_(); }, {"zero_", "expanded"});
}

TEST_CASE("a chain of 100,000 ops backpropagates and frees without stack overflow", "[engine]") {
  Tensor x = xg::tensor({1.0}, {1}, {xg::float64, true});
  {
    Tensor y = x;
    for (int i = 0; i < 100000; ++i) y = y * 1.00001;
    y.sum().backward();
    CHECK(x.grad().item() == Approx(std::pow(1.00001, 100000)).epsilon(1e-9));
    // A retained graph of the same depth is freed with y at the end of this scope.
    Tensor z = x;
    for (int i = 0; i < 100000; ++i) z = z + 1.0;
    z.sum().backward({}, true);
  }
  CHECK(x.grad().item() == Approx(std::pow(1.00001, 100000) + 1.0).epsilon(1e-9));
}

TEST_CASE("independent graphs backpropagate in several threads at once", "[engine]") {
  constexpr int kThreads = 4;
  std::vector<double> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t, &got] {
      Tensor x = xg::full({8}, t + 1.0, {xg::float64, true});
      Tensor y;
      for (int i = 0; i < 200; ++i) y = y.defined() ? y + xg::tanh(x * 0.01) : xg::tanh(x * 0.01);
      y.sum().backward();
      got[t] = x.grad().to_vector<double>()[0];
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    double c = std::tanh(0.01 * (t + 1));
    CHECK(got[t] == Approx(200 * 0.01 * (1 - c * c)));
  }
}

TEST_CASE("autograd::grad returns gradients without touching .grad", "[engine]") {
  Tensor x = xg::tensor({1.0, 2.0}, {2}, {xg::float64, true});
  Tensor u = xg::tensor({5.0}, {1}, {xg::float64, true});
  Tensor y = (x * x).sum();
  auto g = xg::autograd::grad({y}, {x});
  CHECK(test::values(g[0]) == std::vector<double>{2, 4});
  CHECK_FALSE(x.grad().defined());
  Tensor y2 = (x * x).sum();
  test::require_error([&] { xg::autograd::grad({y2}, {x, u}); }, {"input 1", "not used", "allow_unused"});
  Tensor y3 = (x * x).sum();
  auto g3 = xg::autograd::grad({y3}, {x, u}, {}, {.allow_unused = true});
  CHECK_FALSE(g3[1].defined());
}

TEST_CASE("create_graph gives higher-order gradients (Hessian-vector product)", "[engine]") {
  Tensor x = xg::tensor({1.0, -2.0, 0.5}, {3}, {xg::float64, true});
  Tensor v = xg::tensor({1.0, 2.0, 3.0}, {3}, {xg::float64});
  Tensor y = (x * x * x).sum();  // dy/dx = 3x^2, d2y/dx2 = diag(6x)
  Tensor g = xg::autograd::grad({y}, {x}, {}, {.create_graph = true})[0];
  CHECK(g.requires_grad());
  Tensor hv = xg::autograd::grad({(g * v).sum()}, {x}, {}, {.retain_graph = true})[0];
  CHECK(test::values(hv) == std::vector<double>{6 * 1.0 * 1, 6 * -2.0 * 2, 6 * 0.5 * 3});
  // Third order through backward(create_graph): d3y/dx3 = 6.
  Tensor h = xg::autograd::grad({g.sum()}, {x}, {}, {.create_graph = true})[0];
  h.sum().backward();
  CHECK(test::values(x.grad()) == std::vector<double>{6, 6, 6});
}

TEST_CASE("retain_grad keeps a non-leaf gradient", "[engine]") {
  Tensor x = xg::tensor({1.0, 2.0}, {2}, {xg::float64, true});
  Tensor h = x * 3.0;
  h.retain_grad();
  Tensor y = (h * h).sum();
  y.backward();
  CHECK(test::values(h.grad()) == std::vector<double>{6, 12});  // dy/dh = 2h
  CHECK(test::values(x.grad()) == std::vector<double>{18, 36});
}

TEST_CASE("the graph is freed when its outputs go away", "[engine]") {
  Tensor x = xg::ones({4}, {xg::float64, true});
  std::weak_ptr<xg::autograd::Node> node;
  {
    Tensor y = xg::exp(x) * 2.0;
    node = y.grad_fn();
    CHECK_FALSE(node.expired());
  }
  CHECK(node.expired());  // no reference cycle through saved outputs
}

namespace {
// A user-defined op in one place: forward, then its derivative.
Tensor cube(const Tensor& x) {
  Tensor out = xg::pow(x.detach(), 3.0);
  return xg::autograd::record("cube", {x}, out, [sx = xg::autograd::Saved(x)](const Tensor& g) {
    const Tensor& v = sx.get();
    return std::vector<Tensor>{g * 3.0 * v * v};  // d/dx x^3 = 3x^2
  });
}
}  // namespace

TEST_CASE("custom ops use the same record API and are proven by gradcheck in one line", "[engine]") {
  Tensor x = test::uniform({3, 2}, -1, 1, 5);
  CHECK(xg::autograd::gradcheck([](auto& v) { return cube(v[0]); }, {x}));
  CHECK(xg::autograd::gradgradcheck([](auto& v) { return cube(v[0]); }, {x}));
  CHECK(cube(x).grad_fn()->name() == "CubeBackward");
}

TEST_CASE("a custom op's backward returning the wrong shape is named in the error", "[engine]") {
  Tensor x = xg::ones({3}, {xg::float64, true});
  Tensor y = xg::autograd::record("oops", {x}, x.detach() * 2.0, [](const Tensor& g) {
    return std::vector<Tensor>{xg::sum(g)};
  });
  test::require_error([&] { y.sum().backward(); }, {"OopsBackward", "input 0", "[3]"});
}

TEST_CASE("anomaly detection names the op and the parameter where a value first went non-finite", "[engine]") {
  Tensor w = xg::tensor({1.0, -1.0, 2.0}, {3}, {xg::float64, true});
  w.set_name("layer.weight");
  CHECK_NOTHROW(xg::log(w));  // off by default: NaN flows silently, as in PyTorch
  xg::autograd::DetectAnomalyGuard anomaly;
  test::require_error([&] { xg::log(w * 1.0); }, {"anomaly: log produced nan", "at element 1", "near layer.weight",
                                                 "its inputs are finite"});
  Tensor bad = xg::tensor({1.0, NAN}, {2}, {xg::float64, true});
  test::require_error([&] { xg::exp(bad); }, {"anomaly: exp", "input 0", "was already non-finite"});
  // Finite forward, infinite derivative: sqrt at 0.
  Tensor z = xg::zeros({2}, {xg::float64, true});
  z.set_name("z");
  Tensor y = xg::sum(xg::sqrt(z * 1.0));
  test::require_error([&] { y.backward(); }, {"anomaly: SqrtBackward", "near z", "non-finite gradient for input 0",
                                              "from a finite output gradient"});
}

TEST_CASE("anomaly detection follows a value through a model to the layer it came from", "[engine]") {
  xg::manual_seed(3);
  xg::nn::Sequential m;
  m.push_back(std::make_shared<xg::nn::Linear>(3, 4)).push_back(std::make_shared<xg::nn::GELU>());
  m.push_back(std::make_shared<xg::nn::Linear>(4, 2));
  for (auto& [name, p] : m.named_parameters()) p.set_name(name);
  {
    xg::autograd::NoGradGuard ng;
    m.named_parameters()[2].second.fill_(1e30f);  // the second layer's weight overflows float32
  }
  xg::autograd::DetectAnomalyGuard anomaly;
  Tensor x = xg::ones({2, 3}) * 1e10;
  test::require_error([&] { m.forward(x); }, {"anomaly:", "2.weight"});
}

namespace {
/// One micro-batch's gradients of a linear layer, computed alone (fresh leaves, no accumulation).
std::pair<std::vector<double>, std::vector<double>> linear_grads(const Tensor& x, const Tensor& w, const Tensor& b) {
  Tensor w1 = w.detach().clone().requires_grad_(true), b1 = b.detach().clone().requires_grad_(true);
  xg::sum(xg::nn::functional::linear(x, w1, b1) * x.sum()).backward();
  return {test::values(w1.grad()), test::values(b1.grad())};
}
}  // namespace

TEST_CASE("weight gradients of later micro-batches are added into the .grad buffer by the GEMM", "[engine]") {
  namespace F = xg::nn::functional;
  Tensor w = test::uniform({5, 4}, -1, 1, 1), b = test::uniform({5}, -1, 1, 2);
  Tensor x1 = test::uniform({3, 4}, -1, 1, 3, false), x2 = test::uniform({2, 3, 4}, -1, 1, 4, false);
  auto [w1, b1] = linear_grads(x1, w, b);
  auto [w2, b2] = linear_grads(x2, w, b);
  auto expect_sum = [](const std::vector<double>& got, const std::vector<double>& u, const std::vector<double>& v) {
    REQUIRE(got.size() == u.size());
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(u[i] + v[i]).epsilon(1e-12));
  };
  auto micro_batch = [&](const Tensor& x) { xg::sum(F::linear(x, w, b) * x.sum()).backward(); };

  SECTION("in place: the buffer stays and holds the sum") {
    micro_batch(x1);
    const void* wbuf = w.grad().data_ptr<double>();
    const void* bbuf = b.grad().data_ptr<double>();
    micro_batch(x2);
    CHECK(w.grad().data_ptr<double>() == wbuf);
    CHECK(b.grad().data_ptr<double>() == bbuf);
    expect_sum(test::values(w.grad()), w1, w2);
    expect_sum(test::values(b.grad()), b1, b2);
  }
  SECTION("a gradient that is a view into a larger buffer is added in place, the rest left alone") {
    Tensor flat = xg::full({30}, 7.0, {xg::float64});
    w.set_grad(xg::reshape(xg::narrow(flat, 0, 5, 20), {5, 4}));
    micro_batch(x2);
    std::vector<double> sevens(20, 7.0), all = test::values(flat);
    expect_sum(std::vector<double>(all.begin() + 5, all.begin() + 25), sevens, w2);
    for (int i : {0, 4, 25, 29}) CHECK(all[static_cast<std::size_t>(i)] == 7.0);
  }
  SECTION("a weight used twice in one backward gets every contribution") {
    micro_batch(x1);
    xg::sum(F::linear(x2, w, b) * x2.sum() + F::linear(x2, w, b) * x2.sum()).backward();
    std::vector<double> twice(w2.size());
    for (std::size_t i = 0; i < w2.size(); ++i) twice[i] = 2 * w2[i];
    expect_sum(test::values(w.grad()), w1, twice);
  }
  SECTION("hooks see the finished sum once") {
    micro_batch(x1);
    std::vector<std::vector<double>> seen;
    auto id = xg::autograd::register_post_accumulate_grad_hook(w, [&](const Tensor& p) { seen.push_back(test::values(p.grad())); });
    micro_batch(x2);
    xg::autograd::remove_post_accumulate_grad_hook(w, id);
    REQUIRE(seen.size() == 1);
    expect_sum(seen[0], w1, w2);
  }
  SECTION("create_graph accumulates out of place, and the sum is differentiable") {
    micro_batch(x1);
    const void* wbuf = w.grad().data_ptr<double>();
    xg::sum(F::linear(x2, w, b) * x2.sum()).backward({}, false, true);
    CHECK(w.grad().data_ptr<double>() != wbuf);
    expect_sum(test::values(w.grad()), w1, w2);
  }
}

TEST_CASE("a table used as embedding and output layer gets both gradients, rows added in place", "[engine]") {
  namespace F = xg::nn::functional;
  const Tensor ids = xg::index_tensor({3, 1, 3, 0, 5});  // a repeated id too
  Tensor w = test::uniform({6, 4}, -1, 1, 11);
  auto loss = [&](const Tensor& table, const Tensor& head) {
    Tensor h = xg::tanh(xg::index_select(table, 0, ids));
    return F::cross_entropy(F::linear(h, head), xg::index_tensor({0, 2, 4, 1, 1}));
  };
  // The reference: two separate copies of the table, their gradients summed.
  Tensor a = w.detach().clone().requires_grad_(true), b = w.detach().clone().requires_grad_(true);
  loss(a, b).backward();
  const auto want_once = test::values(a.grad() + b.grad());
  loss(w, w).backward();
  auto got = test::values(w.grad());
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(want_once[i]).epsilon(1e-12));
  loss(w, w).backward();  // a second micro-batch adds the same again
  got = test::values(w.grad());
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(2 * want_once[i]).epsilon(1e-12));
  // A gradient passed to two inputs at once (w + w) is not changed in place under the other.
  Tensor v = test::uniform({6, 4}, -1, 1, 12);
  (xg::sum((v + v) * 3.0) + xg::index_select(v, 0, ids).sum()).backward();
  std::vector<double> want(24, 6.0);
  for (auto id : {3, 1, 3, 0, 5})
    for (int j = 0; j < 4; ++j) want[static_cast<std::size_t>(id * 4 + j)] += 1.0;
  CHECK(test::values(v.grad()) == want);
}

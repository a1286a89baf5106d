// xg::func: transforms against closed forms in float64 (Rosenbrock's Hessian, the softmax Jacobian, a
// quadratic form), against central differences, and against each other (forward and reverse Jacobians,
// jvp and vjp through J, hvp through H).
#include <cmath>

#include "helpers.hpp"

using xg::Tensor;
namespace func = xg::func;
namespace F = xg::nn::functional;

namespace {

Tensor f64(const std::vector<double>& v, const xg::Shape& s = {}) { return xg::tensor(v, s, {xg::float64}); }

double max_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  const auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  double d = 0;
  for (std::size_t i = 0; i < va.size(); ++i) d = std::max(d, std::abs(va[i] - vb[i]));
  return d;
}

Tensor rosenbrock(const std::vector<Tensor>& v) {
  Tensor x = v[0].select(0, 0), y = v[0].select(0, 1);
  return (1.0 - x) * (1.0 - x) + 100.0 * (y - x * x) * (y - x * x);
}

/// A function of two inputs with mixed dependence: [3] and [2] -> [4].
Tensor mixed(const std::vector<Tensor>& v) {
  Tensor a = v[0], b = v[1];
  Tensor s = xg::sum(xg::sin(a) * a) * xg::exp(b.select(0, 0));
  return xg::stack({s, xg::tanh(a.select(0, 1) * b.select(0, 1)), a.select(0, 2) * a.select(0, 2), b.select(0, 0) * 3.0});
}

/// Central differences of f with respect to input j: [f.numel(), inputs[j].numel()].
Tensor numeric_jacobian(const func::Function& f, std::vector<Tensor> inputs, std::size_t j, double eps = 1e-6) {
  const std::int64_t n = inputs[j].numel();
  std::vector<Tensor> columns;
  for (std::int64_t k = 0; k < n; ++k) {
    auto shifted = [&](double h) {
      std::vector<Tensor> in = inputs;
      auto vals = in[j].to_vector<double>();
      vals[std::size_t(k)] += h;
      in[j] = f64(vals, in[j].shape());
      return f(in).reshape({-1});
    };
    columns.push_back((shifted(eps) - shifted(-eps)) / (2 * eps));
  }
  return xg::stack(columns, 1);
}

}  // namespace

TEST_CASE("hessian of Rosenbrock's function is its closed form", "[func]") {
  for (auto [x, y] : {std::pair{1.0, 1.0}, {-1.2, 1.0}, {0.3, -0.7}}) {
    INFO("at (" << x << ", " << y << ")");
    Tensor h = func::hessian(rosenbrock, {f64({x, y})})[0][0];
    // d2/dx2 = 2 - 400 (y - x^2) + 800 x^2, d2/dxdy = -400 x, d2/dy2 = 200.
    const Tensor want = f64({2 - 400 * (y - x * x) + 800 * x * x, -400 * x, -400 * x, 200}, {2, 2});
    CHECK(max_diff(h, want) < 1e-10);
    CHECK_FALSE(h.requires_grad());  // plain values unless asked for a graph
    Tensor h1 = func::hessian([](const Tensor& v) { return rosenbrock({v}); }, f64({x, y}));
    CHECK(max_diff(h1, want) < 1e-10);
  }
}

TEST_CASE("jacobian of softmax is diag(s) - s s^T, in reverse and forward mode", "[func]") {
  Tensor x = f64({0.5, -1.0, 2.0, 0.1});
  Tensor s = F::softmax(x, -1);
  Tensor want = xg::eye(4, {xg::float64}) * s - xg::matmul(s.reshape({4, 1}), s.reshape({1, 4}));  // diag(s) - s s^T
  for (auto mode : {func::Mode::reverse, func::Mode::forward}) {
    Tensor j = func::jacobian([](const Tensor& v) { return F::softmax(v, -1); }, x, mode);
    CHECK(j.shape() == xg::Shape{4, 4});
    CHECK(max_diff(j, want) < 1e-12);
  }
}

TEST_CASE("a quadratic form: gradient (A + A^T) x, Hessian A + A^T, hvp (A + A^T) v", "[func]") {
  Tensor a = test::uniform({3, 3}, -1, 1, 5, false), x = test::uniform({3}, -1, 1, 6, false),
         v = test::uniform({3}, -1, 1, 7, false);
  auto quad = [a](const std::vector<Tensor>& in) { return xg::sum(in[0] * xg::matmul(a, in[0])); };
  const Tensor sym = a + a.t();
  CHECK(max_diff(func::grad(quad)({x})[0], xg::matmul(sym, x)) < 1e-12);
  CHECK(max_diff(func::hessian(quad, {x})[0][0], sym) < 1e-12);
  auto [value, hv] = func::hvp(quad, {x}, {v});
  CHECK(value.item() == Approx(xg::sum(x * xg::matmul(a, x)).item()).epsilon(1e-14));
  CHECK(max_diff(hv[0], xg::matmul(sym, v)) < 1e-12);
  auto [value2, g] = func::value_and_grad(quad)({x});
  CHECK(value2.item() == Approx(value.item()).epsilon(1e-14));
  CHECK(max_diff(g[0], xg::matmul(sym, x)) < 1e-12);
}

TEST_CASE("jacobians of several inputs match central differences, forward and reverse", "[func]") {
  std::vector<Tensor> in = {test::uniform({3}, -1, 1, 11, false), test::uniform({2}, -1, 1, 12, false)};
  auto rev = func::jacobian(mixed, in, func::Mode::reverse);
  auto fwd = func::jacobian(mixed, in, func::Mode::forward);
  REQUIRE(rev.size() == 2);
  for (std::size_t j = 0; j < 2; ++j) {
    INFO("input " << j);
    CHECK(rev[j].shape() == xg::Shape{4, in[j].numel()});
    CHECK(max_diff(rev[j], fwd[j]) < 1e-12);
    CHECK(max_diff(rev[j], numeric_jacobian(mixed, in, j)) < 1e-8);
  }
}

TEST_CASE("jvp is J v and vjp is J^T v, exactly", "[func]") {
  std::vector<Tensor> in = {test::uniform({3}, -1, 1, 21, false), test::uniform({2}, -1, 1, 22, false)};
  std::vector<Tensor> t = {test::uniform({3}, -1, 1, 23, false), test::uniform({2}, -1, 1, 24, false)};
  Tensor u = test::uniform({4}, -1, 1, 25, false);
  auto jac = func::jacobian(mixed, in);
  auto [out, jv] = func::jvp(mixed, in, t);
  CHECK(max_diff(out, mixed(in)) < 1e-15);
  CHECK(max_diff(jv, xg::matmul(jac[0], t[0]) + xg::matmul(jac[1], t[1])) < 1e-12);
  auto [out2, vj] = func::vjp(mixed, in, u);
  for (std::size_t j = 0; j < 2; ++j) CHECK(max_diff(vj[j], xg::matmul(u, jac[j])) < 1e-12);
  // An input f ignores gets zeros, as torch.func gives.
  auto [o3, vj3] = func::vjp([](const std::vector<Tensor>& v) { return v[0] * 2.0; }, {in[0], in[1]}, in[0]);
  CHECK(test::values(vj3[1]) == std::vector<double>{0, 0});
  auto [o4, jv4] = func::jvp([](const std::vector<Tensor>& v) { return v[1] * 0.0 + 1.0; }, {in[0], in[1]}, t);
  CHECK(test::values(jv4) == std::vector<double>{0, 0});
}

TEST_CASE("transforms compose: grad(grad(f)), and an outer backward through a transform", "[func]") {
  // d2/dx2 sin(x) x = 2 cos(x) - x sin(x).
  auto f = [](const Tensor& x) { return xg::sum(xg::sin(x) * x); };
  auto d2 = func::grad(func::grad(f));
  for (double x0 : {0.3, -1.1, 2.5}) {
    CHECK(d2(f64({x0})).item() == Approx(2 * std::cos(x0) - x0 * std::sin(x0)).epsilon(1e-12));
  }
  // The third derivative through three grads: -3 sin(x) - x cos(x).
  auto d3 = func::grad(func::grad(func::grad(f)));
  CHECK(d3(f64({0.7})).item() == Approx(-3 * std::sin(0.7) - 0.7 * std::cos(0.7)).epsilon(1e-12));
  // A gradient penalty: a loss that holds a gradient, differentiated by backward().
  Tensor w = f64({0.5, -0.25}).requires_grad_();
  Tensor x = f64({1.0, 2.0});
  auto inner = func::grad([&](const std::vector<Tensor>& v) { return xg::sum(xg::tanh(v[0] * w)); });
  Tensor gx = inner({x})[0];  // d/dx sum tanh(w x) = w (1 - tanh^2(w x)): depends on w
  REQUIRE(gx.requires_grad());
  xg::sum(gx * gx).backward();
  // Compare with the gradient of the same penalty by central differences in w.
  auto penalty = [&](const std::vector<Tensor>& v) {
    Tensor t = xg::tanh(v[0] * x);
    Tensor g = v[0] * (1.0 - t * t);
    return xg::sum(g * g).reshape({1});
  };
  CHECK(max_diff(w.grad(), numeric_jacobian(penalty, {w.detach()}, 0).reshape({2})) < 1e-8);
  // create_graph keeps the result differentiable for inputs that did not require grad.
  Tensor h = func::hessian(rosenbrock, {f64({0.5, 0.5})}, {.create_graph = true})[0][0];
  CHECK(h.requires_grad());
}

TEST_CASE("transforms work in float32 and refuse what they cannot differentiate", "[func]") {
  Tensor x = xg::tensor({0.5, -1.0, 2.0});
  Tensor j = func::jacobian([](const Tensor& v) { return xg::exp(v); }, x);
  CHECK(j.dtype() == xg::float32);
  CHECK(xg::allclose(j, xg::eye(3) * xg::exp(x), 1e-6, 1e-7));
  test::require_error([] { func::hessian([](const Tensor& v) { return v * 2.0; }, f64({1.0, 2.0})); },
                      {"hessian", "one value", "[2]"});
  test::require_error([] { func::grad([](const Tensor& v) { return v; })(f64({1.0, 2.0})); }, {"grad", "one value"});
  test::require_error([] { func::jacobian([](const Tensor& v) { return v; }, xg::index_tensor({1, 2})); },
                      {"jacobian", "int64"});
  test::require_error([] { func::jvp(mixed, {f64({1, 2, 3}), f64({1, 2})}, {f64({1, 2, 3})}); }, {"1 tangents for 2 inputs"});
  test::require_error([] { func::vjp(mixed, {f64({1, 2, 3}), f64({1, 2})}, f64({1, 2})); }, {"v has shape [2]", "[4]"});
  test::require_error([] { func::grad(rosenbrock, {1})({f64({1, 2})}); }, {"argnum 1 is out of range"});
}

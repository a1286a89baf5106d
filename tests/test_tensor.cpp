// Tensor state: creation, dtypes, views, random numbers, printing.
#include <sstream>

#include <algorithm>
#include <set>

#include "helpers.hpp"

using xg::Tensor;

TEST_CASE("creation functions fill shape, dtype and values", "[tensor]") {
  Tensor z = xg::zeros({2, 3});
  CHECK(z.shape() == xg::Shape{2, 3});
  CHECK(z.dtype() == xg::float32);
  CHECK(z.strides() == xg::Shape{3, 1});
  CHECK(z.numel() == 6);
  CHECK(test::values(xg::ones({2}, {xg::float64})) == std::vector<double>{1, 1});
  CHECK(test::values(xg::full({3}, 2.5)) == std::vector<double>{2.5, 2.5, 2.5});
  CHECK(test::values(xg::arange(1, 2, 0.25, {xg::float64})) == std::vector<double>{1, 1.25, 1.5, 1.75});
  CHECK(xg::arange(5.0, {xg::int64}).to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 1, 2, 3, 4});
  CHECK(test::values(xg::eye(2, 3)) == std::vector<double>{1, 0, 0, 0, 1, 0});
  CHECK(xg::scalar_tensor(4.0).dim() == 0);
  CHECK(xg::scalar_tensor(4.0).item() == 4.0);
  CHECK(xg::tensor({1.0, 2.0, 3.0, 4.0}, {2, 2}).shape() == xg::Shape{2, 2});
  CHECK(xg::zeros({0, 4}).numel() == 0);
  Tensor l = xg::ones({2}, {xg::float64, true});
  CHECK(l.requires_grad());
  CHECK(l.is_leaf());
}

TEST_CASE("the same seed gives the same numbers", "[tensor]") {
  xg::Generator a(42), b(42), c(43);
  Tensor x = xg::randn({100}, {}, &a), y = xg::randn({100}, {}, &b), z = xg::randn({100}, {}, &c);
  CHECK(test::values(x) == test::values(y));
  CHECK(test::values(x) != test::values(z));
  xg::manual_seed(7);
  Tensor p = xg::rand({10});
  xg::manual_seed(7);
  CHECK(test::values(xg::rand({10})) == test::values(p));
  // Moments of 100k normals and uniforms are where they should be.
  Tensor n = xg::randn({100000}, {xg::float64}, &a);
  CHECK(std::abs(xg::mean(n).item()) < 0.02);
  CHECK(std::abs(xg::var(n, {}).item() - 1.0) < 0.02);
  Tensor u = xg::rand({100000}, {xg::float64}, &a);
  CHECK(xg::min(u).item() >= 0.0);
  CHECK(xg::max(u).item() < 1.0);
  CHECK(std::abs(xg::mean(u).item() - 0.5) < 0.01);
  // State round trip: a restored generator continues identically.
  auto st = a.state();
  double next = a.normal();
  a.set_state(st);
  CHECK(a.normal() == next);
  Tensor r = xg::randint(3, 7, {1000}, &a);
  auto rv = r.to_vector<std::int64_t>();
  CHECK(*std::min_element(rv.begin(), rv.end()) == 3);
  CHECK(*std::max_element(rv.begin(), rv.end()) == 6);
}

TEST_CASE("dtype conversion and item", "[tensor]") {
  Tensor x = xg::tensor({1.5, -2.25}, {}, {xg::float64});
  CHECK(x.to(xg::float32).dtype() == xg::float32);
  CHECK(x.to(xg::int64).to_vector<std::int64_t>() == std::vector<std::int64_t>{1, -2});
  CHECK(x.to(xg::float64).is_same(x));
  CHECK(xg::sum(x).item<float>() == -0.75f);
  CHECK(x.data_ptr<double>()[1] == -2.25);
}

TEST_CASE("views share storage and see writes", "[tensor]") {
  Tensor x = xg::zeros({2, 3}, {xg::float64});
  Tensor row = x.select(0, 1);
  Tensor col = x.t().select(0, 2);
  row.fill_(5.0);
  CHECK(test::values(x) == std::vector<double>{0, 0, 0, 5, 5, 5});
  col.add_(1.0);
  CHECK(test::values(x) == std::vector<double>{0, 0, 1, 5, 5, 6});
  CHECK(x.version() == 2);  // views share the version counter
  Tensor c = x.t().contiguous();
  CHECK(c.is_contiguous());
  CHECK(c.impl()->storage != x.impl()->storage);
  CHECK(x.contiguous().is_same(x));
  x.narrow(1, 0, 2).copy_(xg::tensor({7.0, 8.0}, {2}, {xg::float64}));
  CHECK(test::values(x) == std::vector<double>{7, 8, 1, 7, 8, 6});
}

TEST_CASE("printing looks like PyTorch and names the grad_fn", "[tensor]") {
  Tensor a = xg::tensor({1.5, -2.0, 0.25, 3.0}, {2, 2}, {xg::float64});
  CHECK(xg::to_string(a) ==
        "tensor([[ 1.5000, -2.0000],\n"
        "        [ 0.2500,  3.0000]], shape=[2, 2], dtype=float64)");
  CHECK(xg::to_string(xg::tensor({1, 2, 3}, {}, {xg::int64})) == "tensor([1, 2, 3], shape=[3], dtype=int64)");
  Tensor x = xg::ones({2}, {xg::float64, true});
  CHECK(fmt::format("{}", x * 2.0) == "tensor([2.0000, 2.0000], shape=[2], dtype=float64, grad_fn=<MulBackward>)");
  CHECK(fmt::format("{}", x) == "tensor([1.0000, 1.0000], shape=[2], dtype=float64, requires_grad=true)");
  std::ostringstream os;
  os << xg::scalar_tensor(0.5);
  CHECK(os.str() == "tensor(0.5000, shape=[], dtype=float32)");
  std::string big = xg::to_string(xg::arange(2000.0));
  CHECK(big.find("...") != std::string::npos);
  CHECK(big.size() < 200);
}

TEST_CASE("linspace, randperm, one_hot, topk, cumsum and pad give PyTorch's values", "[tensor]") {
  CHECK(test::values(xg::linspace(0, 1, 5, {xg::float64})) == std::vector<double>{0, 0.25, 0.5, 0.75, 1});
  CHECK(test::values(xg::linspace(-1, 1, 1, {xg::float64})) == std::vector<double>{-1});
  CHECK(xg::linspace(0.1, 0.7, 7, {xg::float64}).to_vector<double>().back() == 0.7);  // the end exactly
  CHECK(xg::linspace(0, 1, 0).numel() == 0);
  // randperm: a permutation, reproducible from a seed, and every order possible (all 6 of 3 elements appear).
  xg::Generator gen(3);
  std::set<std::vector<std::int64_t>> seen;
  for (int i = 0; i < 200; ++i) {
    auto p = xg::randperm(3, &gen).to_vector<std::int64_t>();
    auto sorted = p;
    std::sort(sorted.begin(), sorted.end());
    REQUIRE(sorted == std::vector<std::int64_t>{0, 1, 2});
    seen.insert(p);
  }
  CHECK(seen.size() == 6);
  xg::Generator g1(9), g2(9);
  CHECK(xg::randperm(50, &g1).to_vector<std::int64_t>() == xg::randperm(50, &g2).to_vector<std::int64_t>());
  Tensor oh = xg::one_hot(xg::index_tensor({2, 0, 1}, {3}), 4);
  CHECK(oh.dtype() == xg::int64);
  CHECK(oh.shape() == xg::Shape{3, 4});
  CHECK(oh.to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0});
  CHECK(xg::one_hot(xg::index_tensor({1, 3})).shape() == xg::Shape{2, 4});
  auto [v, i] = xg::topk(xg::tensor({1.0, 5.0, 3.0, 5.0, -2.0}, {}, {xg::float64}), 3);
  CHECK(test::values(v) == std::vector<double>{5, 5, 3});
  CHECK(i.to_vector<std::int64_t>() == std::vector<std::int64_t>{1, 3, 2});  // ties: the lower index first
  auto [vs, is] = xg::topk(xg::tensor({1.0, 5.0, 3.0, 4.0}, {2, 2}, {xg::float64}), 1, 0, false);
  CHECK(test::values(vs) == std::vector<double>{1, 4});
  CHECK(is.to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 1});
  CHECK(test::values(xg::cumsum(xg::tensor({1.0, 2.0, 3.0, 4.0}, {2, 2}, {xg::float64}), 0)) == std::vector<double>{1, 2, 4, 6});
  CHECK(xg::cumsum(xg::index_tensor({1, 2, 3}), 0).to_vector<std::int64_t>() == std::vector<std::int64_t>{1, 3, 6});
  CHECK(test::values(xg::pad(xg::tensor({1.0, 2.0}, {}, {xg::float64}), {1, 2}, 9)) == std::vector<double>{9, 1, 2, 9, 9});
  CHECK(xg::pad(xg::zeros({2, 3}), {1, 1, 2, 0}).shape() == xg::Shape{4, 5});
  test::require_error([] { xg::one_hot(xg::index_tensor({4}), 3); }, {"one_hot", "out of range for 3 classes"});
  test::require_error([] { xg::topk(xg::zeros({3}), 4); }, {"topk", "k = 4"});
  test::require_error([] { xg::pad(xg::zeros({3}), {1}); }, {"pad", "pairs"});
  test::require_error([] { xg::pad(xg::zeros({3}), {-2, -2}); }, {"leaves nothing"});
  test::require_error([] { xg::randperm(-1); }, {"randperm"});
}

TEST_CASE("einsum equals the products and sums it names", "[tensor]") {
  auto u = [](const xg::Shape& s, std::uint64_t seed) { return test::uniform(s, -1, 1, seed, false); };
  Tensor a = u({3, 4}, 1), b = u({4, 5}, 2), c = u({5, 2}, 3), x = u({2, 3, 4}, 4), y = u({2, 4, 5}, 5), v = u({4}, 6);
  auto same = [](const Tensor& p, const Tensor& q) { return p.shape() == q.shape() && xg::allclose(p, q, 1e-12, 1e-12); };
  CHECK(same(xg::einsum("ij,jk->ik", {a, b}), xg::matmul(a, b)));
  CHECK(same(xg::einsum("ij,jk", {a, b}), xg::matmul(a, b)));  // implicit: the letters used once
  CHECK(same(xg::einsum("ij,jk->ki", {a, b}), xg::matmul(a, b).t()));
  CHECK(same(xg::einsum("bij,bjk->bik", {x, y}), xg::matmul(x, y)));
  CHECK(same(xg::einsum("ij,jk,kl->il", {a, b, c}), xg::matmul(xg::matmul(a, b), c)));
  CHECK(same(xg::einsum("i,i->", {v, v}), xg::sum(v * v)));
  CHECK(same(xg::einsum("i,j->ij", {v, v}), xg::matmul(v.reshape({4, 1}), v.reshape({1, 4}))));
  CHECK(same(xg::einsum("ij->ji", {a}), a.t()));
  CHECK(same(xg::einsum("ij->", {a}), xg::sum(a)));
  CHECK(same(xg::einsum("bij->bj", {x}), xg::sum(x, {1})));
  CHECK(same(xg::einsum("ij,ij->i", {a, a}), xg::sum(a * a, {1})));  // a batch letter and a contracted one
  test::require_error([&] { xg::einsum("ii->i", {xg::eye(3, {xg::float64})}); }, {"einsum", "appears twice", "diagonals"});
  test::require_error([&] { xg::einsum("ij,jk->ik", {a, a}); }, {"'j' is 4 in one operand and 3 in another"});
  test::require_error([&] { xg::einsum("ij,jk->ik", {a}); }, {"names 2 operands, 1 given"});
  test::require_error([&] { xg::einsum("ijk->i", {a}); }, {"operand 0 has 2 dims"});
  test::require_error([&] { xg::einsum("ij->iz", {a}); }, {"'z' is in no operand"});
  test::require_error([&] { xg::einsum("i1->i", {a}); }, {"'1' is not a letter"});
}

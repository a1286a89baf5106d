// Tensor state: creation, dtypes, views, random numbers, printing.
#include <sstream>

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

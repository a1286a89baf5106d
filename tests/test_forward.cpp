// Forward values against independent references: closed forms, naive loops written here, and numbers
// computed with PyTorch 1.13 (torch.nn.functional.gelu etc. on float64 inputs) pasted with their source.
#include <cmath>

#include "helpers.hpp"

using xg::Tensor;


namespace {
const std::vector<double> kX = {-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0};

void check_close(const Tensor& t, const std::vector<double>& want, double tol) {
  auto got = test::values(t);
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i);
    CHECK(got[i] == Approx(want[i]).margin(tol).epsilon(tol));
  }
}
}  // namespace

TEST_CASE("unary math matches PyTorch in float64 and float32", "[forward]") {
  // torch.nn.functional.gelu(x) / gelu(x, approximate='tanh') / sigmoid / erf / tanh, x = kX, float64.
  const std::vector<double> gelu = {-0.00404969409489031, -0.15865525393145702, -0.15426876936299344, 0.0,
                                    0.34573123063700656,  0.841344746068543,    2.99595030590511};
  const std::vector<double> gelu_tanh = {-0.0036373920817729943, -0.15880800939172324, -0.15428599017485606, 0.0,
                                         0.34571400982514394,    0.8411919906082768,   2.996362607918227};
  const std::vector<double> sigmoid = {0.04742587317756678, 0.2689414213699951, 0.3775406687981454, 0.5,
                                       0.6224593312018546,  0.7310585786300049, 0.9525741268224334};
  const std::vector<double> erf = {-0.9999779095030014, -0.8427007929497149, -0.5204998778130465, 0.0,
                                   0.5204998778130465,  0.8427007929497149,  0.9999779095030014};
  for (auto dt : {xg::float64, xg::float32}) {
    double tol = dt == xg::float64 ? 1e-14 : 2e-6;
    Tensor x = xg::tensor(kX, {}, {dt});
    check_close(xg::gelu(x), gelu, tol);
    check_close(xg::gelu(x, true), gelu_tanh, tol);
    check_close(xg::sigmoid(x), sigmoid, tol);
    check_close(xg::erf(x), erf, tol);
    std::vector<double> want_exp, want_tanh, want_relu, want_sin;
    for (double v : kX) {
      want_exp.push_back(std::exp(v));
      want_tanh.push_back(std::tanh(v));
      want_relu.push_back(v > 0 ? v : 0);
      want_sin.push_back(std::sin(v));
    }
    check_close(xg::exp(x), want_exp, tol);
    check_close(xg::tanh(x), want_tanh, tol);
    check_close(xg::relu(x), want_relu, tol);
    check_close(xg::sin(x), want_sin, tol);
  }
}

TEST_CASE("binary ops broadcast like NumPy", "[forward]") {
  Tensor a = xg::tensor({1, 2, 3}, {3, 1}, {xg::float64});
  Tensor b = xg::tensor({10, 20}, {2}, {xg::float64});
  Tensor c = a * b + 1.0;
  CHECK(c.shape() == xg::Shape{3, 2});
  CHECK(test::values(c) == std::vector<double>{11, 21, 21, 41, 31, 61});
  CHECK(test::values(xg::maximum(a, xg::tensor({2.0}, {1}, {xg::float64}))) == std::vector<double>{2, 2, 3});
  CHECK(test::values(xg::pow(a, 2.0)) == std::vector<double>{1, 4, 9});
  CHECK(test::values(xg::where(xg::gt(a, 1.5), a, -1.0)) == std::vector<double>{-1, 2, 3});
  CHECK(test::values(xg::lt(b, 15.0)) == std::vector<double>{1, 0});
  CHECK(test::values(xg::clamp(xg::tensor({-5, 0.5, 5}, {}, {xg::float64}), -1, 1)) == std::vector<double>{-1, 0.5, 1});
}

TEST_CASE("reductions match naive loops and PyTorch", "[forward]") {
  Tensor a = xg::tensor({1, 2, 3, 4, 5, 6.5}, {2, 3}, {xg::float64});
  CHECK(xg::sum(a).item() == Approx(21.5));
  CHECK(test::values(xg::sum(a, {0})) == std::vector<double>{5, 7, 9.5});
  CHECK(test::values(xg::sum(a, {1}, true)) == std::vector<double>{6, 15.5});
  CHECK(xg::sum(a, {1}, true).shape() == xg::Shape{2, 1});
  CHECK(test::values(xg::mean(a, {1})) == std::vector<double>{2, 15.5 / 3});
  // torch.var(a, dim=1) -> [1.0, 1.583333333333333]; torch.var(a) -> 4.041666666666667
  check_close(xg::var(a, {1}), {1.0, 1.583333333333333}, 1e-14);
  CHECK(xg::var(a, {}).item() == Approx(4.041666666666667).epsilon(1e-14));
  // torch.logsumexp(a, dim=1) -> [3.4076059644443806, 6.7663678998071335]
  check_close(xg::logsumexp(a, {1}), {3.4076059644443806, 6.7663678998071335}, 1e-14);
  // Large values must not overflow: log(e^1000 + e^1000) = 1000 + log 2.
  CHECK(xg::logsumexp(xg::tensor({1000, 1000}, {}, {xg::float32}), {0}).item() == Approx(1000 + std::log(2.0)));
  auto [vals, idx] = xg::max_with_indices(xg::tensor({3, 9, 2, 7, 1, 8}, {2, 3}, {xg::float64}), 1);
  CHECK(test::values(vals) == std::vector<double>{9, 8});
  CHECK(idx.to_vector<std::int64_t>() == std::vector<std::int64_t>{1, 2});
  CHECK(xg::argmax(xg::tensor({3, 9, 2, 9}, {}, {xg::float64})).item<std::int64_t>() == 1);  // first on ties
  CHECK(xg::min(a).item() == 1.0);
  // A big float32 sum stays accurate: 2^20 ones.
  CHECK(xg::sum(xg::ones({1 << 20})).item() == 1048576.0);
  // Column sums of a strided (transposed) input.
  Tensor t = xg::arange(12.0, {xg::float64}).reshape({3, 4}).t();  // [4, 3]
  CHECK(test::values(xg::sum(t, {0})) == std::vector<double>{6, 22, 38});
}

TEST_CASE("matmul matches a naive triple loop for every layout", "[forward]") {
  auto naive = [](const Tensor& a, const Tensor& b) {  // 2-D reference
    auto va = test::values(a), vb = test::values(b);
    std::int64_t m = a.size(0), k = a.size(1), n = b.size(1);
    std::vector<double> out(m * n, 0.0);
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j)
        for (std::int64_t p = 0; p < k; ++p) out[i * n + j] += va[i * k + p] * vb[p * n + j];
    return out;
  };
  for (auto dt : {xg::float32, xg::float64}) {
    Tensor a = test::uniform({5, 7}, -1, 1, 1, false).to(dt);
    Tensor b = test::uniform({7, 3}, -1, 1, 2, false).to(dt);
    double tol = dt == xg::float32 ? 1e-5 : 1e-12;
    check_close(xg::matmul(a, b), naive(a, b), tol);
    // Transposed operands are read through BLAS flags; the result is the same.
    Tensor at = a.t().contiguous().t(), bt = b.t().contiguous().t();
    CHECK_FALSE(at.is_contiguous());
    check_close(xg::matmul(at, bt), naive(a, b), tol);
    // Batched with a broadcast batch dim: each batch is the 2-D product.
    Tensor a3 = xg::stack({a, a * 2.0});
    Tensor c = xg::matmul(a3, b);
    CHECK(c.shape() == xg::Shape{2, 5, 3});
    check_close(xg::select(c, 0, 1), naive(a * 2.0, b), tol);
    Tensor b3 = xg::stack({b, b * -1.0, b});  // [3, 7, 3]
    Tensor d = xg::matmul(xg::unsqueeze(a3, 1), b3);  // [2, 1, 5, 7] @ [3, 7, 3] -> [2, 3, 5, 3]
    CHECK(d.shape() == xg::Shape{2, 3, 5, 3});
    check_close(xg::select(xg::select(d, 0, 1), 0, 1), naive(a * 2.0, b * -1.0), tol);
  }
  CHECK(xg::matmul(xg::tensor({1, 2, 3}, {}, {xg::float64}), xg::tensor({4, 5, 6}, {}, {xg::float64})).item() == 32.0);
  CHECK(xg::matmul(xg::zeros({2, 0}), xg::zeros({0, 3})).shape() == xg::Shape{2, 3});
  CHECK(xg::sum(xg::matmul(xg::ones({2, 0}), xg::ones({0, 3}))).item() == 0.0);
}

TEST_CASE("shape ops are views where they can be", "[forward]") {
  Tensor x = xg::arange(24.0, {xg::float64}).reshape({2, 3, 4});
  Tensor p = x.permute({2, 0, 1});
  CHECK(p.shape() == xg::Shape{4, 2, 3});
  CHECK(p.impl()->storage == x.impl()->storage);
  CHECK_FALSE(p.is_contiguous());
  CHECK(test::values(xg::select(xg::select(p, 0, 1), 0, 1)) == std::vector<double>{13, 17, 21});
  Tensor s = xg::slice(x, 2, 1, 4, 2);  // x[:, :, 1::2]
  CHECK(test::values(s.reshape({-1})) == std::vector<double>{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23});
  CHECK(xg::squeeze(xg::zeros({1, 3, 1})).shape() == xg::Shape{3});
  CHECK(xg::unsqueeze(xg::zeros({3}), 0).shape() == xg::Shape{1, 3});
  Tensor e = xg::expand(xg::tensor({1, 2}, {2, 1}, {xg::float64}), {2, 3});
  CHECK(e.strides()[1] == 0);
  CHECK(test::values(e) == std::vector<double>{1, 1, 1, 2, 2, 2});
  auto parts = xg::chunk(xg::arange(5.0), 2);
  REQUIRE(parts.size() == 2);
  CHECK(parts[1].to_vector<double>() == std::vector<double>{3, 4});
  CHECK(test::values(xg::cat({xg::ones({1, 2}), xg::zeros({2, 2})}, 0)) == std::vector<double>{1, 1, 0, 0, 0, 0});
  CHECK(test::values(xg::tril(xg::ones({3, 3}))) == std::vector<double>{1, 0, 0, 1, 1, 0, 1, 1, 1});
  CHECK(test::values(xg::triu(xg::ones({2, 3}), 1)) == std::vector<double>{0, 1, 1, 0, 0, 1});
  // Splitting or merging dims that are contiguous among themselves is a view even in a strided tensor
  // (attention heads from a fused projection); otherwise reshape copies, in row-major order.
  Tensor qkv = xg::arange(2 * 3 * 12.0, {xg::float64}).reshape({2, 3, 12});
  Tensor k = xg::narrow(qkv, 2, 4, 4);  // [2, 3, 4] with strides [36, 12, 1]
  Tensor heads = k.reshape({2, 3, 2, 2});
  CHECK(heads.impl()->storage == qkv.impl()->storage);
  CHECK(heads.strides() == xg::Shape{36, 12, 2, 1});
  CHECK(test::values(heads.select(1, 2).reshape({-1})) == std::vector<double>{28, 29, 30, 31, 64, 65, 66, 67});
  CHECK(k.view({6, 4}).impl()->storage == qkv.impl()->storage);
  Tensor merged = heads.transpose(1, 2).reshape({2, 2, 6});  // not viewable: copies
  CHECK(merged.impl()->storage != qkv.impl()->storage);
  CHECK(test::values(merged.select(0, 0).select(0, 1)) == std::vector<double>{6, 7, 18, 19, 30, 31});
  // reshape of a non-contiguous tensor copies and keeps row-major order.
  CHECK(test::values(x.transpose(0, 2).reshape({-1})).at(1) == 12.0);
}

TEST_CASE("index ops pick and scatter the right elements", "[forward]") {
  Tensor w = xg::arange(12.0, {xg::float64}).reshape({4, 3});
  Tensor ids = xg::index_tensor({3, 0, 3});
  CHECK(test::values(xg::index_select(w, 0, ids)) == std::vector<double>{9, 10, 11, 0, 1, 2, 9, 10, 11});
  Tensor g = xg::gather(w, 1, xg::index_tensor({2, 0, 1, 1}, {4, 1}));
  CHECK(test::values(g) == std::vector<double>{2, 3, 7, 10});
  Tensor sa = xg::scatter_add(xg::zeros({2, 3}, {xg::float64}), 1, xg::index_tensor({0, 0, 2, 1}, {2, 2}),
                              xg::ones({2, 2}, {xg::float64}));
  CHECK(test::values(sa) == std::vector<double>{2, 0, 0, 0, 1, 1});
  Tensor ia = xg::index_add(xg::zeros({3, 2}, {xg::float64}), 0, xg::index_tensor({2, 2}), xg::ones({2, 2}, {xg::float64}));
  CHECK(test::values(ia) == std::vector<double>{0, 0, 0, 0, 2, 2});
  Tensor m = xg::masked_fill(xg::zeros({2, 2}), xg::tensor({1, 0}, {2}), -5.0);
  CHECK(test::values(m) == std::vector<double>{-5, 0, -5, 0});
}

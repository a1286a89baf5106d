// Every fused op against its composite formula, one row each, in float64 and float32: the forward
// values, the fused backward kernel against the gradient of the formula, and the op's own composite
// backward (the create_graph path) against its fused kernel. The formulas are written here from the
// definitions, with plain ops, not taken from the code under test.
#include <cmath>
#include <functional>

#include <xgrad/kernel.hpp>

#include "helpers.hpp"

namespace F = xg::nn::functional;
using xg::Shape;
using xg::Tensor;
using Inputs = std::vector<Tensor>;

namespace {

struct FusedCase {
  std::string name;
  std::function<Tensor(const Inputs&)> fused, formula;
  std::vector<Shape> shapes;
  double lo = -2.0, hi = 2.0;
};

Tensor softmax_formula(const Tensor& x) { return xg::exp(x) / xg::sum(xg::exp(x), {-1}, true); }
Tensor log_softmax_formula(const Tensor& x) { return x - xg::log(xg::sum(xg::exp(x), {-1}, true)); }
Tensor layer_norm_formula(const Tensor& x, const Tensor& w, const Tensor& b) {
  Tensor xc = x - xg::mean(x, {-1}, true);
  Tensor y = xc / xg::sqrt(xg::mean(xc * xc, {-1}, true) + 1e-5);
  return w.defined() ? y * w + b : y;
}
Tensor gelu_formula(const Tensor& x) { return 0.5 * x * (1.0 + xg::erf(x / std::sqrt(2.0))); }
Tensor gelu_tanh_formula(const Tensor& x) {
  return 0.5 * x * (1.0 + xg::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}
/// Mean (or per-row) negative log-likelihood of targets, rows with target -100 left out.
Tensor cross_entropy_formula(const Tensor& x, const Tensor& t, bool mean) {
  Tensor valid = xg::ne(t, -100.0);
  Tensor safe = xg::where(valid, t, xg::index_tensor({0}).reshape({}));
  Tensor nll = -xg::squeeze(xg::gather(log_softmax_formula(x), -1, xg::unsqueeze(safe, -1)), -1) * valid.to(x.dtype());
  return mean ? xg::sum(nll) / xg::sum(valid.to(x.dtype())) : nll;
}
/// softmax(q k^T / sqrt(d), masked) v; allowed is [T, S] (1 = may attend), pad broadcasts to the scores.
Tensor attention_formula(const Inputs& v, const Tensor& allowed, const Tensor& pad = {}) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(v[0].size(-1)));
  Tensor mask = allowed.to(v[0].dtype());
  if (pad.defined()) mask = mask * pad.to(v[0].dtype());
  Tensor scores = xg::where(mask, xg::matmul(v[0], xg::transpose(v[1], -1, -2)) * scale, -INFINITY);
  return xg::matmul(softmax_formula(scores), v[2]);
}
/// [T, S] 0/1: key j visible from query i (aligned at the last key) for a causal window (0: no window).
Tensor allowed(std::int64_t t, std::int64_t s, std::int64_t window) {
  std::vector<double> a;
  for (std::int64_t i = 0; i < t; ++i)
    for (std::int64_t j = 0; j < s; ++j) a.push_back(j <= i + s - t && (window == 0 || j > i + s - t - window));
  return xg::tensor(a, {t, s}, {xg::float64});
}

/// qkv [B, T, 3C]: q, k, v side by side, `h` heads each; attention per head, heads merged back to [B, T, C].
Tensor packed_formula(const Tensor& qkv, std::int64_t h, const Tensor& allowed_ts, const Tensor& pad = {}) {
  const std::int64_t b = qkv.size(0), t = qkv.size(1), c = qkv.size(2) / 3;
  auto part = [&](std::int64_t i) {
    return xg::transpose(xg::reshape(xg::narrow(qkv, 2, i * c, c), {b, t, h, c / h}), 1, 2);
  };
  Tensor y = attention_formula({part(0), part(1), part(2)}, allowed_ts, pad);
  return xg::reshape(xg::transpose(y, 1, 2), {b, t, c});
}
const Tensor& pad5() {  // [2, 1, 1, 5]: the second sequence's last key is padding
  static Tensor t = xg::tensor({1, 1, 1, 1, 1, 1, 1, 1, 1, 0}, {2, 1, 1, 5}, {xg::float64});
  return t;
}

const Tensor& targets() {
  static Tensor t = xg::index_tensor({3, 0, -100, 6, 3});
  return t;
}
const Tensor& pad() {  // [2, 1, 1, 5]: the second sequence's last two keys are padding
  static Tensor t = xg::tensor({1, 1, 1, 1, 1, 1, 1, 1, 0, 0}, {2, 1, 1, 5}, {xg::float64});
  return t;
}

const std::vector<FusedCase>& cases() {
  static const std::vector<FusedCase> c = {
      {"softmax", [](auto& v) { return F::softmax(v[0], -1); }, [](auto& v) { return softmax_formula(v[0]); }, {{3, 7}}},
      {"softmax dim 0", [](auto& v) { return F::softmax(v[0], 0); },
       [](auto& v) { return xg::transpose(softmax_formula(xg::transpose(v[0], 0, 1)), 0, 1); }, {{5, 4}}},
      {"log_softmax", [](auto& v) { return F::log_softmax(v[0], -1); }, [](auto& v) { return log_softmax_formula(v[0]); },
       {{2, 3, 6}}},
      {"layer_norm affine", [](auto& v) { return F::layer_norm(v[0], v[1], v[2]); },
       [](auto& v) { return layer_norm_formula(v[0], v[1], v[2]); }, {{4, 7}, {7}, {7}}},
      {"layer_norm plain", [](auto& v) { return F::layer_norm(v[0]); },
       [](auto& v) { return layer_norm_formula(v[0], {}, {}); }, {{2, 3, 5}}},
      // 150 per row: whole vector steps of the one-pass statistics and a tail.
      {"layer_norm wide rows", [](auto& v) { return F::layer_norm(v[0], v[1], v[2]); },
       [](auto& v) { return layer_norm_formula(v[0], v[1], v[2]); }, {{3, 150}, {150}, {150}}},
      // Both results used, so the norm's gradient is added to the residual stream's.
      {"add + layer_norm", [](auto& v) {
         auto [s, y] = F::add_layer_norm(v[0], v[1], v[2], v[3]);
         return y + 0.3 * s;
       },
       [](auto& v) { return layer_norm_formula(v[0] + v[1], v[2], v[3]) + 0.3 * (v[0] + v[1]); },
       {{2, 3, 150}, {2, 3, 150}, {150}, {150}}},
      {"add + layer_norm, no affine", [](auto& v) { return F::add_layer_norm(v[0], v[1]).second; },
       [](auto& v) { return layer_norm_formula(v[0] + v[1], {}, {}); }, {{4, 9}, {4, 9}}},
      {"cross_entropy mean", [](auto& v) { return F::cross_entropy(v[0], targets()); },
       [](auto& v) { return cross_entropy_formula(v[0], targets(), true); }, {{5, 7}}, -3.0, 3.0},
      {"cross_entropy none", [](auto& v) { return F::cross_entropy(v[0], targets(), {.reduction = F::Reduction::none}); },
       [](auto& v) { return cross_entropy_formula(v[0], targets(), false); }, {{5, 7}}, -3.0, 3.0},
      {"attention causal", [](auto& v) { return F::scaled_dot_product_attention(v[0], v[1], v[2], {.causal = true}); },
       [](auto& v) { return attention_formula(v, allowed(4, 5, 0)); }, {{2, 4, 3}, {2, 5, 3}, {2, 5, 2}}},
      {"attention window", [](auto& v) { return F::scaled_dot_product_attention(v[0], v[1], v[2], {.window = 2}); },
       [](auto& v) { return attention_formula(v, allowed(5, 5, 2)); }, {{2, 2, 5, 4}, {2, 2, 5, 4}, {2, 2, 5, 4}}},
      {"attention padding", [](auto& v) { return F::scaled_dot_product_attention(v[0], v[1], v[2], {.mask = pad()}); },
       [](auto& v) { return attention_formula(v, xg::ones({3, 5}, {xg::float64}), pad()); },
       {{2, 2, 3, 4}, {2, 2, 5, 4}, {2, 2, 5, 3}}},
      // More keys than one tile of query rows holds (32 rows of 1100 keys): several tiles, each multiplying
      // only the keys its rows may see.
      {"attention causal, tiled", [](auto& v) { return F::scaled_dot_product_attention(v[0], v[1], v[2], {.causal = true}); },
       [](auto& v) { return attention_formula(v, allowed(1100, 1100, 0)); }, {{1, 1100, 4}, {1, 1100, 4}, {1, 1100, 3}}},
      {"attention window, tiled, cached", [](auto& v) { return F::scaled_dot_product_attention(v[0], v[1], v[2], {.window = 40}); },
       [](auto& v) { return attention_formula(v, allowed(300, 1100, 40)); }, {{2, 300, 4}, {2, 1100, 4}, {2, 1100, 2}}},
      {"attention dense, tiled", [](auto& v) { return F::scaled_dot_product_attention(v[0], v[1], v[2]); },
       [](auto& v) { return attention_formula(v, xg::ones({100, 1100}, {xg::float64})); }, {{1, 100, 3}, {1, 1100, 3}, {1, 1100, 3}}},
      {"packed self-attention, causal", [](auto& v) { return F::packed_self_attention(v[0], 2, {.causal = true}); },
       [](auto& v) { return packed_formula(v[0], 2, allowed(5, 5, 0)); }, {{2, 5, 12}}},
      {"packed self-attention, window and padding", [](auto& v) { return F::packed_self_attention(v[0], 3, {.window = 2, .mask = pad5()}); },
       [](auto& v) { return packed_formula(v[0], 3, allowed(5, 5, 2), pad5()); }, {{2, 5, 9}}},
      {"linear", [](auto& v) { return F::linear(v[0], v[1], v[2]); },
       [](auto& v) { return xg::matmul(v[0], xg::transpose(v[1], 0, 1)) + v[2]; }, {{2, 3, 4}, {5, 4}, {5}}},
      {"linear no bias", [](auto& v) { return F::linear(v[0], v[1]); },
       [](auto& v) { return xg::matmul(v[0], xg::transpose(v[1], 0, 1)); }, {{6, 4}, {3, 4}}},
      {"gelu exact", [](auto& v) { return xg::gelu(v[0]); },
       [](auto& v) { return gelu_formula(v[0]); }, {{4, 8}}, -4.0, 4.0},
      // 70 outputs: rows wider than one vector with a tail, and two column chunks of the bias pass.
      {"linear + gelu", [](auto& v) { return F::linear(v[0], v[1], v[2], F::Activation::gelu); },
       [](auto& v) { return gelu_formula(xg::matmul(v[0], xg::transpose(v[1], 0, 1)) + v[2]); },
       {{2, 3, 4}, {70, 4}, {70}}},
      {"linear + gelu, no bias", [](auto& v) { return F::linear(v[0], v[1], {}, F::Activation::gelu); },
       [](auto& v) { return gelu_formula(xg::matmul(v[0], xg::transpose(v[1], 0, 1))); }, {{5, 4}, {3, 4}}},
      {"linear + gelu tanh", [](auto& v) { return F::linear(v[0], v[1], v[2], F::Activation::gelu_tanh); },
       [](auto& v) { return gelu_tanh_formula(xg::matmul(v[0], xg::transpose(v[1], 0, 1)) + v[2]); },
       {{6, 4}, {5, 4}, {5}}},
      {"gelu tanh", [](auto& v) { return xg::gelu(v[0], true); }, [](auto& v) { return gelu_tanh_formula(v[0]); },
       {{4, 8}}, -4.0, 4.0},
      {"silu", [](auto& v) { return xg::silu(v[0]); }, [](auto& v) { return v[0] / (1.0 + xg::exp(-v[0])); }, {{4, 8}},
       -6.0, 6.0},
  };
  return c;
}

Inputs make_inputs(const FusedCase& c, xg::DType dtype, std::uint64_t seed) {
  Inputs in;
  for (const auto& s : c.shapes) {
    Tensor t = test::uniform(s, c.lo, c.hi, seed++, false).to(dtype);
    in.push_back(t.requires_grad_());
  }
  return in;
}

Inputs grads_of(const Tensor& y, const Inputs& in, const Tensor& g) { return xg::autograd::grad({y}, in, {g}); }

/// The inputs in float64, as new leaves.
Inputs to_f64(const Inputs& in) {
  Inputs out;
  for (const auto& t : in) out.push_back(t.detach().to(xg::float64).requires_grad_());
  return out;
}

/// A float32 result's accuracy, with the bound taken from the arithmetic instead of one machine's observed
/// error: against the exact value (the formula in float64 on the same float32 inputs), the fused kernel
/// may be off by at most 4 times what the composite formula computed in float32 is off (both sum the same
/// terms, in orders that differ with the GEMM backend, the vector width and the tiling), plus 8 float32
/// roundings of the largest value, for where the formula happens to land exactly.
void check_as_accurate(const Tensor& fused, const Tensor& formula32, const Tensor& exact) {
  const auto f = fused.to_vector<double>(), r = formula32.to_vector<double>(), e = exact.to_vector<double>();
  REQUIRE(f.size() == e.size());
  double err_fused = 0, err_formula = 0, scale = 0;
  for (std::size_t i = 0; i < e.size(); ++i) {
    err_fused = std::max(err_fused, std::abs(f[i] - e[i]));
    err_formula = std::max(err_formula, std::abs(r[i] - e[i]));
    scale = std::max(scale, std::abs(e[i]));
  }
  INFO("largest error: fused " << err_fused << ", formula in float32 " << err_formula << ", largest value " << scale);
  CHECK(err_fused <= 4 * err_formula + 8 * std::ldexp(scale, -24));
}

/// The fused op against its formula: in float64 to 1e-10 (both are exact to far below it), in float32 as
/// accurate as the formula (check_as_accurate), outputs and every input's gradient for cotangent g.
template <class Formula>
void check_fused(const Formula& formula_fn, const Inputs& in, const Tensor& y, const Tensor& g) {
  const bool f64 = y.dtype() == xg::float64;
  Tensor ref = formula_fn(in);
  Inputs fused = grads_of(y, in, g), formula = grads_of(ref, in, g);
  if (f64) {
    CHECK(xg::allclose(y, ref, 1e-10, 1e-12));
    for (std::size_t i = 0; i < in.size(); ++i) {
      INFO("input " << i);
      CHECK(xg::allclose(fused[i], formula[i], 1e-9, 1e-11));
    }
    return;
  }
  Inputs in64 = to_f64(in);
  Tensor exact = formula_fn(in64);
  check_as_accurate(y, ref, exact);
  Inputs exact_grads = grads_of(exact, in64, g.to(xg::float64));
  for (std::size_t i = 0; i < in.size(); ++i) {
    INFO("gradient of input " << i);
    check_as_accurate(fused[i], formula[i], exact_grads[i]);
  }
}

}  // namespace

TEST_CASE("fused ops equal their composite formulas in float64 and float32", "[fused]") {
  std::uint64_t seed = 500;
  for (const auto& c : cases()) {
    for (xg::DType dtype : {xg::float64, xg::float32}) {
      DYNAMIC_SECTION(c.name << " " << xg::dtype_name(dtype)) {
        Inputs in = make_inputs(c, dtype, seed);
        Tensor y = c.fused(in);
        REQUIRE(y.dtype() == dtype);
        // A cotangent that is not all ones, so a wrong scale shows.
        Tensor g = test::uniform(y.shape(), -1, 1, seed + 99, false).to(dtype);
        check_fused(c.formula, in, y, g);
        // The fused op's own composite backward (its double-backward path) gives the same gradients.
        Inputs fused = grads_of(c.fused(in), in, g), composite;
        {
          xg::autograd::CompositeBackwardGuard composite_only;
          composite = grads_of(c.fused(in), in, g);
        }
        const bool f64 = dtype == xg::float64;
        for (std::size_t i = 0; i < in.size(); ++i) {
          INFO("input " << i);
          if (f64) {
            CHECK(xg::allclose(fused[i], composite[i], 1e-9, 1e-11));
          } else {
            Inputs in64 = to_f64(in);
            check_as_accurate(fused[i], composite[i], grads_of(c.formula(in64), in64, g.to(xg::float64))[i]);
          }
        }
      }
    }
    seed += 10;
  }
}

TEST_CASE("the fused path runs unless backward is recorded or composite is forced", "[fused]") {
  CHECK(!xg::autograd::use_fused_backward());  // grad mode is on here
  {
    xg::autograd::NoGradGuard ng;
    CHECK(xg::autograd::use_fused_backward());
    xg::autograd::CompositeBackwardGuard composite_only;
    CHECK(!xg::autograd::use_fused_backward());
  }
}

namespace {
/// Mean and population variance in float64, the textbook two passes.
std::pair<double, double> two_pass_moments(const std::vector<float>& x) {
  double mean = 0, var = 0;
  for (float f : x) mean += f;
  mean /= static_cast<double>(x.size());
  for (float f : x) var += (f - mean) * (f - mean);
  return {mean, var / static_cast<double>(x.size())};
}
}  // namespace

TEST_CASE("one-pass row statistics match two passes in float64, far from zero too", "[fused]") {
  for (std::int64_t n : {1, 5, 31, 32, 63, 64, 65, 130, 1000}) {
    INFO("n = " << n);
    // Spread 1 around 1000: sum and sum of squares would cancel 6 of float32's 7 digits.
    const auto v = test::values(test::uniform({n}, 999.0, 1001.0, 40 + static_cast<std::uint64_t>(n), false).to(xg::float32));
    std::vector<float> x(v.begin(), v.end()), other(x.size(), 0.5f), sum(x.size());
    const auto [mean, var] = two_pass_moments(x);
    const auto [m32, v32] = xg::kernel::row_moments(x.data(), n);
    CHECK(m32 == Approx(mean).epsilon(1e-6));
    CHECK(v32 == Approx(var).epsilon(1e-3).margin(1e-6));
    std::vector<double> xd(x.begin(), x.end());
    const auto [m64, v64] = xg::kernel::row_moments(xd.data(), n);
    CHECK(m64 == Approx(mean).epsilon(1e-14));
    CHECK(v64 == Approx(var).epsilon(1e-10).margin(1e-14));
    // The fused add writes the sum it takes the statistics of.
    const auto [ms, vs] = xg::kernel::add_row_moments(x.data(), other.data(), sum.data(), n);
    for (std::int64_t i = 0; i < n; ++i) REQUIRE(sum[static_cast<std::size_t>(i)] == x[static_cast<std::size_t>(i)] + 0.5f);
    const auto [mr, vr] = xg::kernel::row_moments(sum.data(), n);
    CHECK(ms == mr);
    CHECK(vs == vr);
  }
}

TEST_CASE("row kernels given no values (n <= 0) write nothing", "[fused]") {
  std::vector<float> x{1.f, 2.f}, y{7.f, 7.f};
  for (std::int64_t n : {0, -1}) {
    xg::kernel::gelu_values(x.data(), y.data(), n, false);
    xg::kernel::gelu_values(x.data(), y.data(), n, true);
    xg::kernel::gelu_backward_values(x.data(), x.data(), y.data(), n, false);
    CHECK(y == std::vector<float>{7.f, 7.f});
    const auto [m, v] = xg::kernel::row_moments(x.data(), n);
    CHECK(m == 0.f);
    CHECK(v == 0.f);
  }
}

TEST_CASE("one-pass row statistics keep their precision with an outlier first", "[fused]") {
  // The shift is the first value: here it is far from all the others.
  for (std::int64_t n : {64, 768, 1001}) {
    auto v = test::values(test::uniform({n}, -1.0, 1.0, 60 + static_cast<std::uint64_t>(n), false).to(xg::float32));
    std::vector<float> x(v.begin(), v.end());
    x[0] = 1e4f;
    const auto [mean, var] = two_pass_moments(x);
    const auto [m, s2] = xg::kernel::row_moments(x.data(), n);
    CHECK(m == Approx(mean).margin(1e-5 * std::sqrt(var)));  // what normalising by the spread sees
    CHECK(s2 == Approx(var).epsilon(1e-4));
  }
}

TEST_CASE("float32 layer_norm of rows far from zero stays close to float64", "[fused]") {
  Tensor x64 = test::uniform({4, 768}, 1e4 - 1, 1e4 + 1, 41, false).to(xg::float32).to(xg::float64);
  Tensor y32 = F::layer_norm(x64.to(xg::float32)), y64 = F::layer_norm(x64);
  CHECK(xg::allclose(y32.to(xg::float64), y64, 0, 1e-2));
  auto [s, y] = F::add_layer_norm(x64.to(xg::float32), xg::zeros({4, 768}));
  CHECK(xg::allclose(y.to(xg::float64), y64, 0, 1e-2));
}

TEST_CASE("layer_norm reads strided weight and bias like contiguous ones", "[fused]") {
  Tensor x = test::uniform({3, 4}, -2, 2, 700);
  Tensor wide = test::uniform({8}, 0.5, 1.5, 701, false), bwide = test::uniform({8}, -1, 1, 702, false);
  Tensor w = xg::slice(wide, 0, 0, 8, 2), b = xg::slice(bwide, 0, 1, 8, 2);  // every other element
  REQUIRE(!w.is_contiguous());
  CHECK(xg::allclose(F::layer_norm(x, w, b), F::layer_norm(x, w.contiguous(), b.contiguous()), 0, 0));
}

TEST_CASE("float32 exact GELU and its gradient stay within float32 rounding of the float64 formula", "[fused]") {
  // 20,001 points over [-10, 10] (not a multiple of the vector width: the tail takes the same path).
  std::vector<double> xs;
  for (int i = -10000; i <= 10000; ++i) xs.push_back(i * 1e-3);
  Tensor x64 = xg::tensor(xs, {static_cast<std::int64_t>(xs.size())}, {xg::float64});
  Tensor x32 = x64.to(xg::float32).requires_grad_(true);
  Tensor y32 = xg::gelu(x32);
  y32.backward(xg::ones_like(y32));
  const auto y = y32.to_vector<float>(), dy = x32.grad().to_vector<float>();
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const double v = static_cast<float>(xs[i]), cdf = 0.5 * (1 + std::erf(v / std::sqrt(2.0)));
    const double pdf = std::exp(-0.5 * v * v) / std::sqrt(2 * M_PI);
    INFO("x = " << v);
    CHECK(y[i] == Approx(v * cdf).margin(1e-6).epsilon(2e-6));
    CHECK(dy[i] == Approx(cdf + v * pdf).margin(1e-6).epsilon(2e-6));
  }
}

TEST_CASE("attention's short causal tiles agree with the formula on either small-product GEMM", "[fused]") {
  // 40 queries: three 16-row tiles per head; keys and values read in place from the packed projection, or
  // transposed once per head where A B^T is slow (OpenBLAS's small products, float32). Heads of 8: backward
  // recomputes the probabilities; of 32: forward keeps them (no larger than q, k and v).
  using B = xg::kernel::GemmBackend;
  const B large = xg::kernel::gemm_backend(), small = xg::kernel::gemm_backend(true);
  std::vector<B> smalls = {B::openblas};
  if (xg::kernel::has_onednn()) smalls.push_back(B::onednn);
  for (B s : smalls) {
    xg::kernel::set_gemm_backends(large, s);
    CHECK(xg::kernel::transposed_b_is_slow<float>(16, 40, 8) == (s == B::openblas));
    CHECK(!xg::kernel::transposed_b_is_slow<double>(16, 40, 8));
    for (xg::DType dtype : {xg::float32, xg::float64}) {
      for (auto [window, d] : {std::pair<std::int64_t, std::int64_t>{0, 8}, {0, 32}, {9, 8}, {9, 32}}) {
        INFO((s == B::openblas ? "OpenBLAS " : "oneDNN ") << xg::dtype_name(dtype) << " window " << window << " head " << d);
        Inputs in = {test::uniform({2, 40, 6 * d}, -1, 1, 77, false).to(dtype).requires_grad_()};
        const std::int64_t win = window;  // clang 14 does not let a lambda capture a structured binding
        auto fused = [&](const Inputs& v) { return F::packed_self_attention(v[0], 2, {.causal = win == 0, .window = win}); };
        auto formula = [&](const Inputs& v) { return packed_formula(v[0], 2, allowed(40, 40, win)); };
        Tensor y = fused(in);
        Tensor g = test::uniform(y.shape(), -1, 1, 78, false).to(dtype);
        check_fused(formula, in, y, g);
      }
    }
  }
  xg::kernel::set_gemm_backends(large, small);
}

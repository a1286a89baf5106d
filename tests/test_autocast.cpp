// bf16 autocast: matrix products use bf16-rounded operands with float32 sums, forward and backward, and
// models stay within bf16's tolerance of float32.
#include <cstdlib>
#include <cstring>
#include <fstream>

#include <xgrad/kernel.hpp>

#include "helpers.hpp"

using xg::Tensor;

namespace {

/// x rounded to the nearest bfloat16 (ties to even), written independently of the library's conversion.
float round_bf16(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  const std::uint32_t lower = u & 0xffffu, upper = u & 0xffff0000u;
  std::uint32_t r = upper;
  if (lower > 0x8000u || (lower == 0x8000u && (upper & 0x10000u))) r += 0x10000u;
  float y;
  std::memcpy(&y, &r, 4);
  return y;
}

Tensor rounded(const Tensor& t) {
  auto v = t.to_vector<float>();
  for (auto& x : v) x = round_bf16(x);
  return xg::tensor(v, t.shape());
}

/// float64 product of float32 matrices [m, k] @ [k, n].
std::vector<double> product(const Tensor& a, const Tensor& b) {
  const auto av = a.to_vector<float>(), bv = b.to_vector<float>();
  const auto m = a.size(0), k = a.size(1), n = b.size(1);
  std::vector<double> out(static_cast<std::size_t>(m * n));
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t p = 0; p < k; ++p) out[i * n + j] += double(av[i * k + p]) * bv[p * n + j];
  return out;
}

/// For each output of [m, k] @ [k, n], how far a float32 GEMM may land from the exact product whatever its
/// summation order (blocked, vectorised, split over threads): each product of two bf16 values is exact in
/// float32 (8-bit mantissas), and k additions in float32 are off by at most gamma_k sum |a_p b_p| with
/// gamma_k = k u / (1 - k u), u = 2^-24 (Higham, Accuracy and Stability, Thm 3.1); one more u for the result.
std::vector<double> sum_bound(const Tensor& a, const Tensor& b) {
  const double k = double(a.size(1)), u = std::ldexp(1.0, -24), gamma = (k + 1) * u / (1 - (k + 1) * u);
  auto s = product(xg::abs(a), xg::abs(b));
  for (auto& x : s) x *= gamma;
  return s;
}

/// Every value within its bound of the exact product.
void check_within(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& bound) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": " << got[i] << " against " << want[i] << ", bound " << bound[i]);
    REQUIRE(std::abs(double(got[i]) - want[i]) <= bound[i]);
  }
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(double(a[i]) - b[i]));
  return d;
}

Tensor randn(const xg::Shape& s, std::uint64_t seed) {
  xg::Generator g(seed);
  return xg::randn(s, {}, &g);
}

/// Whether autocast keeps bf16 operands here (AVX512-BF16 or AMX): else its products round to bf16 and
/// multiply on the float32 GEMM.
bool bf16_native() {
  xg::autocast on;
  const float one = 1.f;
  return xg::kernel::Bf16Operand(&one, 1, 1, 1).data() != nullptr;
}

}  // namespace

TEST_CASE("autocast: matmul multiplies bf16-rounded operands and sums in float32") {
  Tensor a = randn({37, 300}, 1), b = randn({300, 45}, 2);
  Tensor fp32 = xg::matmul(a, b), bf16;
  {
    xg::autocast on;
    CHECK(xg::is_autocast_enabled());
    bf16 = xg::matmul(a, b);
  }
  CHECK_FALSE(xg::is_autocast_enabled());
  const auto want = product(rounded(a), rounded(b)), bound = sum_bound(rounded(a), rounded(b));
  check_within(bf16.to_vector<float>(), want, bound);
  // The bound tells the two paths apart: the float32 product lies outside it (bf16 keeps 8 bits of mantissa).
  const auto f = fp32.to_vector<float>();
  std::size_t outside = 0;
  for (std::size_t i = 0; i < f.size(); ++i) outside += std::abs(double(f[i]) - want[i]) > bound[i];
  CHECK(outside > f.size() / 2);
  // Transposed operands take the same path.
  Tensor at = a.t().contiguous().t();
  xg::autocast on;
  check_within(xg::matmul(at, b).to_vector<float>(), want, bound);
}

TEST_CASE("autocast: an op recorded under autocast runs its backward products in bf16") {
  Tensor a = randn({20, 64}, 3).requires_grad_(), b = randn({64, 30}, 4).requires_grad_();
  Tensor g = randn({20, 30}, 5);
  Tensor y;
  {
    xg::autocast on;
    y = xg::matmul(a, b);
  }
  y.backward(g);  // outside the scope: still bf16
  // dA = dC B^T and dB = A^T dC with every operand rounded to bf16.
  const Tensor rg = rounded(g), rbt = rounded(b.detach()).t().contiguous(), rat = rounded(a.detach()).t().contiguous();
  check_within(a.grad().to_vector<float>(), product(rg, rbt), sum_bound(rg, rbt));
  check_within(b.grad().to_vector<float>(), product(rat, rg), sum_bound(rat, rg));
}

TEST_CASE("autocast: linear's bf16 copies made in forward give backward the products of fresh ones") {
  namespace F = xg::nn::functional;
  for (auto act : {F::Activation::none, F::Activation::gelu}) {
    Tensor x = randn({20, 64}, 8).requires_grad_(), w = randn({30, 64}, 9).requires_grad_(),
           b = randn({30}, 10).requires_grad_(), g = randn({20, 30}, 11);
    Tensor fused, plain;
    {
      xg::autocast on;
      fused = F::linear(x, w, b, act);
      plain = xg::matmul(x, w.t()) + b;  // matmul rounds its operands on every product
      if (act == F::Activation::gelu) plain = xg::gelu(plain);
    }
    auto gf = xg::autograd::grad({fused}, {x, w, b}, {g}), gp = xg::autograd::grad({plain}, {x, w, b}, {g});
    CHECK(xg::allclose(fused, plain, 1e-5, 1e-5));
    for (std::size_t i = 0; i < gf.size(); ++i) {
      INFO("input " << i);
      CHECK(xg::allclose(gf[i], gp[i], 1e-5, 1e-4));
    }
  }
}

TEST_CASE("autocast: float64 and integer products are unchanged") {
  Tensor a = test::uniform({5, 7}, -1, 1, 6, false), b = test::uniform({7, 3}, -1, 1, 7, false);
  Tensor plain = xg::matmul(a, b);
  xg::autocast on;
  CHECK(test::values(xg::matmul(a, b)) == test::values(plain));
}

TEST_CASE("autocast: layers stay within bf16's tolerance of float32, forward and backward") {
  // Per-op relative tolerances for bf16 operands (8-bit mantissa, sums of ~100 terms in float32).
  struct Row {
    const char* name;
    std::function<Tensor(const std::vector<Tensor>&)> f;
    std::vector<xg::Shape> shapes;
    double tol;
  };
  xg::nn::Linear lin(xg::nn::LinearOptions(96, 64));
  const std::vector<Row> rows = {
      {"linear", [&](const auto& in) { return lin.forward(in[0]); }, {{8, 96}}, 2e-2},
      {"causal attention",
       [](const auto& in) {
         xg::nn::functional::AttentionOptions o;
         o.causal = true;
         return xg::nn::functional::scaled_dot_product_attention(in[0], in[1], in[2], o);
       },
       {{2, 3, 16, 32}, {2, 3, 16, 32}, {2, 3, 16, 32}}, 3e-2},
  };
  for (const auto& row : rows) {
    INFO(row.name);
    std::vector<Tensor> in;
    for (std::size_t i = 0; i < row.shapes.size(); ++i) in.push_back(randn(row.shapes[i], 10 + i).requires_grad_());
    auto run = [&](bool bf16) {
      for (auto& t : in) t.set_grad(Tensor());
      lin.zero_grad();
      Tensor out;
      {
        xg::autocast precision(bf16);
        out = row.f(in);
      }
      (out * randn(out.shape(), 99)).sum().backward();
      std::vector<std::vector<float>> res = {out.to_vector<float>()};
      for (auto& t : in) res.push_back(t.grad().to_vector<float>());
      return res;
    };
    const auto f32 = run(false), b16 = run(true);
    for (std::size_t i = 0; i < f32.size(); ++i) {
      double scale = 0;
      for (float v : f32[i]) scale = std::max(scale, double(std::abs(v)));
      const double diff = max_abs_diff(b16[i], f32[i]);
      INFO("output/gradient " << i << ": max difference " << diff << " on values up to " << scale);
      CHECK(diff <= row.tol * scale);
      CHECK(diff > 0);  // bf16 was used
    }
  }
}

TEST_CASE("autocast: operands round to the nearest bf16 with ties to even, inf and NaN pass through") {
  // A column times [[1]]: each output is one rounded operand, exactly. (No subnormals: AVX512-BF16 treats
  // them as zero.)
  const float one = 1.0f, tie_down = 1.0f + 0x1p-8f, tie_up = 1.0f + 3 * 0x1p-8f, above = 1.0f + 0x1p-8f + 0x1p-20f;
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> col{one, tie_down, tie_up, above, -tie_up, 0x1p-120f, 3.4e38f, inf, -inf, nan};
  std::vector<float> big(col);
  for (int i = 0; i < 200; ++i) big.push_back(col[static_cast<std::size_t>(i) % 7]);  // enough rows for several chunks
  Tensor a = xg::tensor(big, {static_cast<std::int64_t>(big.size()), 1}), unit = xg::ones({1, 1});
  xg::autocast on;
  const auto got = xg::matmul(a, unit).to_vector<float>();
  for (std::size_t i = 0; i < big.size(); ++i) {
    INFO("operand " << big[i]);
    if (std::isnan(big[i])) {
      CHECK(std::isnan(got[i]));
    } else {
      CHECK(got[i] == round_bf16(big[i]));
    }
  }
  CHECK(got[1] == 1.0f);                 // the tie goes to the even neighbour below
  CHECK(got[2] == 1.0f + 0x1p-6f);       // ...and above
  CHECK(got[3] == 1.0f + 0x1p-7f);       // past the tie: rounds up
  CHECK(got[6] == inf);                  // 3.4e38 rounds past bf16's largest finite value
}

namespace {
/// A linear layer trained for three steps under autocast with AdamW; with `invalidate`, each weight is marked
/// as written after every step (version bumped, values unchanged), so every forward rounds it afresh.
std::pair<Tensor, Tensor> train_linear_under_autocast(bool invalidate, std::vector<double>& losses) {
  namespace F = xg::nn::functional;
  Tensor w = randn({48, 64}, 21).requires_grad_(), b = randn({48}, 22).requires_grad_();
  Tensor x = randn({16, 64}, 23), t = randn({16, 48}, 24);
  xg::optim::AdamW opt(std::vector<Tensor>{w, b}, {.lr = 0.05});
  for (int s = 0; s < 3; ++s) {
    Tensor loss;
    {
      xg::autocast on;
      Tensor d = F::linear(x, w, b) - t;
      loss = xg::sum(d * d);
    }
    loss.backward();
    opt.step();
    opt.zero_grad();
    losses.push_back(loss.item());
    if (invalidate) xg::kernel::write_ptr<float>(w);
  }
  return std::make_pair(w, b);
}
}  // namespace

TEST_CASE("autocast: the bf16 weight copies updates leave give the bits of rounding afresh") {
  // The optimizer's copy must give the same losses and weights, to the last bit, as rounding afresh.
  std::vector<double> kept_losses, fresh_losses;
  auto [w, b] = train_linear_under_autocast(false, kept_losses);
  auto [w2, b2] = train_linear_under_autocast(true, fresh_losses);
  CHECK(kept_losses == fresh_losses);
  CHECK(test::values(w) == test::values(w2));
  CHECK(test::values(b) == test::values(b2));
  // Without native bf16 the products round their operands: nothing is kept.
  if (!bf16_native()) CHECK_FALSE(w.impl()->storage->bf16);
}

TEST_CASE("autocast: the bf16 copy an update leaves is the rounded weight, used while current, freed unasked") {
  namespace F = xg::nn::functional;
  if (!bf16_native()) {
    test::skip("this CPU multiplies bf16 by rounding (no AVX512-BF16 or AMX): no bf16 weight copy is kept");
    return;
  }
  std::vector<double> losses;
  auto [w, b] = train_linear_under_autocast(false, losses);
  const xg::Storage& st = *w.impl()->storage;
  REQUIRE(st.bf16);
  CHECK(st.bf16_version == st.version.load());
  CHECK_FALSE(b.impl()->storage->bf16);  // the bias is never a bf16 operand
  // The copy holds the updated weight, rounded.
  const auto wv = w.to_vector<float>();
  const auto* bits = static_cast<const std::uint16_t*>(st.bf16->data);
  for (std::size_t i = 0; i < wv.size(); ++i) {
    std::uint32_t u = std::uint32_t(bits[i]) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    REQUIRE(f == round_bf16(wv[i]));
  }
  {
    xg::autocast on;
    CHECK(xg::kernel::Bf16Operand::of_weight(w).data() == st.bf16->data);  // used, not rounded again
    xg::kernel::write_ptr<float>(w);
    CHECK(xg::kernel::Bf16Operand::of_weight(w).data() != st.bf16->data);  // stale after a write
  }
  // An update after a float32 forward frees the copy: nothing asked for it.
  Tensor x = randn({4, 64}, 25);
  xg::optim::SGD sgd(std::vector<Tensor>{w}, {.lr = 0.1});
  (void)xg::kernel::bf16_copy_for_update(w);  // clears the mark the last forward left
  xg::sum(F::linear(x, w, Tensor())).backward();
  sgd.step();
  CHECK_FALSE(st.bf16);
}

TEST_CASE("autocast multiplies bf16 natively exactly where the CPU can") {
  // XGRAD_EXPECT_BF16 (native or rounding) says what a run with a limited ISA must take (ctest's
  // autocast_avx2_isa entry limits oneDNN to AVX2); otherwise the CPU's own flags say it.
  std::string expect;
  if (const char* e = std::getenv("XGRAD_EXPECT_BF16")) {
    expect = e;
  } else {
    std::ifstream cpuinfo("/proc/cpuinfo");
    std::string line;
    while (std::getline(cpuinfo, line) && line.rfind("flags", 0) != 0) {
    }
    const bool has = line.find(" avx512_bf16") != std::string::npos || line.find(" amx_bf16") != std::string::npos;
    expect = line.empty() ? "" : has ? "native" : "rounding";
  }
  if (expect.empty()) {
    test::skip("no CPU flags in /proc/cpuinfo and no XGRAD_EXPECT_BF16: nothing to compare with");
    return;
  }
  INFO(xg::kernel::gemm_backend_name());
  REQUIRE((expect == "native" || expect == "rounding"));
  CHECK(bf16_native() == (xg::kernel::has_onednn() && expect == "native"));
}

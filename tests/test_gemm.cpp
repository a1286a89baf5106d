// The GEMM self-test: every backend this build has, against a float64 reference written here, for each
// transpose, odd sizes, leading dimensions wider than the matrix, and alpha / beta.
#include <xgrad/kernel.hpp>

#include <cmath>
#include <vector>

#include "helpers.hpp"

namespace {

/// C = alpha op(A) op(B) + beta C in float64, row-major.
void reference(bool ta, bool tb, int m, int n, int k, double alpha, const std::vector<float>& a, int lda,
               const std::vector<float>& b, int ldb, double beta, std::vector<double>& c, int ldc) {
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int p = 0; p < k; ++p)
        s += double(ta ? a[p * lda + i] : a[i * lda + p]) * double(tb ? b[j * ldb + p] : b[p * ldb + j]);
      c[i * ldc + j] = alpha * s + beta * c[i * ldc + j];
    }
}

struct BackendGuard {
  xg::kernel::GemmBackend large = xg::kernel::gemm_backend(), small = xg::kernel::gemm_backend(true);
  ~BackendGuard() { xg::kernel::set_gemm_backends(large, small); }
};

/// The float32 backends this build has.
std::vector<xg::kernel::GemmBackend> build_backends() {
  std::vector<xg::kernel::GemmBackend> backends = {xg::kernel::GemmBackend::openblas};
  if (xg::kernel::has_onednn()) backends.push_back(xg::kernel::GemmBackend::onednn);
  return backends;
}

}  // namespace

TEST_CASE("float32 GEMM matches a float64 reference on every backend") {
  BackendGuard keep;
  xg::Generator gen(5);
  for (auto backend : build_backends()) {
    xg::kernel::set_gemm_backend(backend);
    INFO(xg::kernel::gemm_backend_name());
    for (auto [m, n, k] : {std::array{1, 1, 1}, {7, 13, 5}, {64, 96, 200}, {129, 65, 257}})
      for (bool ta : {false, true})
        for (bool tb : {false, true})
          for (auto [alpha, beta] : {std::pair{1.0, 0.0}, {0.5, 1.0}, {-2.0, 0.25}}) {
            const int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
            std::vector<float> a(std::size_t((ta ? k : m) * lda)), b(std::size_t((tb ? n : k) * ldb)),
                c(std::size_t(m * ldc));
            for (auto* v : {&a, &b, &c})
              for (auto& x : *v) x = static_cast<float>(gen.uniform() * 2 - 1);
            std::vector<double> want(c.begin(), c.end());
            reference(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, want, ldc);
            xg::kernel::gemm(ta, tb, m, n, k, float(alpha), a.data(), lda, b.data(), ldb, float(beta), c.data(), ldc);
            double worst = 0;
            for (int i = 0; i < m; ++i)
              for (int j = 0; j < n; ++j) worst = std::max(worst, std::abs(c[i * ldc + j] - want[i * ldc + j]));
            INFO("m=" << m << " n=" << n << " k=" << k << " ta=" << ta << " tb=" << tb << " alpha=" << alpha
                      << " beta=" << beta);
            // float32 rounding of k products of values below 1, scaled: well under 1e-5 * k * |alpha|.
            CHECK(worst <= 1e-5 * k * std::abs(alpha) + 1e-6);
          }
  }
}

TEST_CASE("small and larger products each run on their own backend") {
  if (!xg::kernel::has_onednn()) {
    test::skip("this build has no oneDNN (libdnnl-dev): one GEMM backend, nothing to split");
    return;
  }
  BackendGuard keep;
  using B = xg::kernel::GemmBackend;
  xg::kernel::set_gemm_backends(B::onednn, B::openblas);
  CHECK(xg::kernel::gemm_backend() == B::onednn);
  CHECK(xg::kernel::gemm_backend(true) == B::openblas);
  CHECK(xg::kernel::gemm_backend_name().find("oneDNN") == 0);
  CHECK(xg::kernel::gemm_backend_name().find("small products on OpenBLAS") != std::string::npos);
  xg::kernel::set_gemm_backend(B::openblas);
  CHECK(xg::kernel::gemm_backend(true) == B::openblas);
  CHECK(xg::kernel::gemm_backend_name().find("small products") == std::string::npos);
  xg::kernel::set_gemm_backends(B::openblas, B::onednn);
  CHECK(xg::kernel::gemm_backend_name().find("small products on oneDNN") != std::string::npos);
  // The name says how bf16 products run: natively (on which ISA) exactly when autocast keeps bf16 operands.
  for (auto b : {B::openblas, B::onednn}) {
    xg::kernel::set_gemm_backend(b);
    const std::string name = xg::kernel::gemm_backend_name();
    INFO(name);
    xg::autocast on;
    const float one = 1.f;
    if (xg::kernel::Bf16Operand(&one, 1, 1, 1).data() != nullptr)
      CHECK((name.find("native on AVX512-BF16") != std::string::npos || name.find("native on AMX") != std::string::npos));
    else
      CHECK(name.find("bf16 by rounding") != std::string::npos);
  }
  // Both sides of the boundary, on both splits, against a float64 reference.
  for (auto [large, small] : {std::pair{B::onednn, B::openblas}, {B::openblas, B::onednn}}) {
    xg::kernel::set_gemm_backends(large, small);
    for (auto [m, n, k] : {std::array{64, 64, 64}, {64, 64, 65}, {1, 1, 262145}}) {
      std::vector<float> a(std::size_t(m * k)), b(std::size_t(k * n)), c(std::size_t(m * n), 7.f);
      xg::Generator gen(9);
      for (auto* v : {&a, &b})
        for (auto& x : *v) x = static_cast<float>(gen.uniform() * 2 - 1);
      std::vector<double> want(c.size(), 0.0);
      reference(false, false, m, n, k, 1.0, a, k, b, n, 0.0, want, n);
      xg::kernel::gemm(false, false, m, n, k, 1.f, a.data(), k, b.data(), n, 0.f, c.data(), n);
      for (std::size_t i = 0; i < c.size(); ++i) CHECK(std::abs(c[i] - want[i]) <= 1e-5 * k + 1e-6);
    }
  }
}

TEST_CASE("XGRAD_GEMM names a backend") {
  const std::string name = xg::kernel::gemm_backend_name();
  CHECK((name.find("OpenBLAS") != std::string::npos || name.find("oneDNN") != std::string::npos));
  if (!xg::kernel::has_onednn())
    test::require_error([] { xg::kernel::set_gemm_backend(xg::kernel::GemmBackend::onednn); }, {"no oneDNN"});
}

TEST_CASE("transpose writes x^T with both leading dimensions") {
  const std::int64_t rows = 5, cols = 3, ld = 4, ldt = 7;  // ld > cols and ldt > rows: padding left alone
  std::vector<float> x(rows * ld), xt(cols * ldt, -1.f);
  std::vector<double> xd(rows * ld), xtd(cols * ldt, -1.0);
  for (std::int64_t i = 0; i < rows * ld; ++i) x[std::size_t(i)] = float(xd[std::size_t(i)] = double(i) + 0.5);
  xg::kernel::transpose(rows, cols, x.data(), ld, xt.data(), ldt);
  xg::kernel::transpose(rows, cols, xd.data(), ld, xtd.data(), ldt);
  for (std::int64_t c = 0; c < cols; ++c)
    for (std::int64_t r = 0; r < ldt; ++r) {
      const double want = r < rows ? double(r * ld + c) + 0.5 : -1.0;
      CHECK(xt[std::size_t(c * ldt + r)] == float(want));
      CHECK(xtd[std::size_t(c * ldt + r)] == want);
    }
  xg::kernel::transpose(0, cols, x.data(), ld, xt.data(), ldt);  // nothing to do, nothing touched
  CHECK(xt[0] == 0.5f);
}

TEST_CASE("linear_product adds the bias to x w^T on every backend and size") {
  BackendGuard keep;
  xg::Generator gen(11);
  for (auto backend : build_backends()) {
    xg::kernel::set_gemm_backend(backend);
    // 130 x 129 deep: oneDNN's matmul primitive with its bias argument; 6 x 5: the small GEMM.
    for (auto [m, n, k] : {std::array{130, 70, 129}, {6, 3, 5}})
      for (bool with_bias : {true, false}) {
        INFO(xg::kernel::gemm_backend_name() << " m=" << m << " bias=" << with_bias);
        const int ldx = k + 2, ldy = n + 1;
        std::vector<float> x(std::size_t(m * ldx)), w(std::size_t(n * k)), b(static_cast<std::size_t>(n)),
            y(std::size_t(m * ldy), 5.f);
        for (auto* v : {&x, &w, &b})
          for (auto& e : *v) e = static_cast<float>(gen.uniform() * 2 - 1);
        std::vector<double> want(std::size_t(m * ldy), 5.0), xd(x.begin(), x.end()), wd(w.begin(), w.end()),
            yd(want);
        for (int i = 0; i < m; ++i)
          for (int j = 0; j < n; ++j) want[std::size_t(i * ldy + j)] = with_bias ? b[std::size_t(j)] : 0.0;
        reference(false, true, m, n, k, 1.0, x, ldx, w, k, 1.0, want, ldy);
        xg::kernel::linear_product(m, n, k, x.data(), ldx, w.data(), k, with_bias ? b.data() : nullptr, y.data(), ldy);
        std::vector<double> bd(b.begin(), b.end());
        xg::kernel::linear_product(m, n, k, xd.data(), ldx, wd.data(), k, with_bias ? bd.data() : nullptr, yd.data(), ldy);
        for (int i = 0; i < m; ++i)
          for (int j = 0; j < ldy; ++j) {
            const std::size_t at = std::size_t(i * ldy + j);
            if (j == n) {  // the padding of each row is left alone
              CHECK(y[at] == 5.f);
              CHECK(yd[at] == 5.0);
              continue;
            }
            CHECK(std::abs(y[at] - want[at]) <= 1e-5 * k);
            CHECK(std::abs(yd[at] - want[at]) <= 1e-12 * k);
          }
      }
  }
}

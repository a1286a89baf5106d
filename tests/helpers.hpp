// Shared test helpers.
#pragma once

#include <catch2/catch.hpp>
#include <xgrad/xgrad.hpp>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

using Approx = Catch::Detail::Approx;

namespace test {

/// Float64 leaf with values uniform in [lo, hi), seeded.
inline xg::Tensor uniform(const xg::Shape& shape, double lo, double hi, std::uint64_t seed, bool requires_grad = true) {
  xg::Generator gen(seed);
  xg::Tensor t = xg::rand(shape, {xg::float64}, &gen) * (hi - lo) + lo;
  t = t.detach();
  if (requires_grad) t.requires_grad_();
  return t;
}

/// A path in the temporary folder (the file is not created).
inline std::string temp_file(const std::string& name) { return (std::filesystem::temp_directory_path() / name).string(); }

/// The values of a tensor as doubles.
inline std::vector<double> values(const xg::Tensor& t) { return t.to_vector<double>(); }

/// Checks that f throws an xg::Error whose message contains every fragment.
template <class F>
void require_error(F&& f, const std::vector<std::string>& fragments) {
  try {
    f();
  } catch (const xg::Error& e) {
    std::string msg = e.what();
    INFO("message: " << msg);
    for (const auto& frag : fragments) CHECK(msg.find(frag) != std::string::npos);
    return;
  }
  FAIL("expected an xg::Error containing " << fragments.front());
}

/// Says that a test (or its remaining part) cannot run on this machine, and why. ctest marks a test that
/// prints this as skipped (SKIP_REGULAR_EXPRESSION), so it is listed as not run instead of passing silently.
inline void skip(const std::string& why) { std::cout << "SKIPPED: " << why << std::endl; }

/// Whether the environment variable is set to 1 (XGRAD_REQUIRE_BPE, XGRAD_REQUIRE_TORCH: CI's way of
/// turning a skip into a failure).
inline bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v && std::string(v) == "1";
}

}  // namespace test

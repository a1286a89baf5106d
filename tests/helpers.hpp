// Shared test helpers.
#pragma once

#include <catch2/catch.hpp>
#include <xgrad/xgrad.hpp>

#include <filesystem>
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

}  // namespace test

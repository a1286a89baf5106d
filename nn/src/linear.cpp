#include "xgrad/nn/linear.hpp"

#include <fmt/format.h>

#include <cmath>

#include "xgrad/autograd.hpp"
#include "xgrad/nn/functional.hpp"

namespace xg::nn {

Linear::Linear(const LinearOptions& o, Generator* gen) : Module("Linear"), options_(o) {
  if (o.in_ <= 0 || o.out_ <= 0)
    throw Error(fmt::format("Linear: in_features and out_features must be positive, got {} and {}", o.in_, o.out_));
  // U(-k, k) with k = 1/sqrt(in_features), PyTorch's default for both weight and bias.
  double k = 1.0 / std::sqrt(static_cast<double>(o.in_));
  auto uniform = [&](const Shape& s) { return rand(s, {o.dtype_}, gen) * (2.0 * k) - k; };
  autograd::NoGradGuard ng;
  weight = register_parameter("weight", uniform({o.out_, o.in_}));
  if (o.bias_) bias = register_parameter("bias", uniform({o.out_}));
}

Tensor Linear::forward(const Tensor& x) const { return functional::linear(x, weight, bias); }

std::string Linear::extra_repr() const {
  return fmt::format("in_features={}, out_features={}, bias={}", options_.in_, options_.out_, options_.bias_);
}

}  // namespace xg::nn

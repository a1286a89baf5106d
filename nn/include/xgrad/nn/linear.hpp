// xgrad::nn::Linear.
#pragma once

#include <cstdint>

#include "xgrad/nn/module.hpp"

namespace xg::nn {

/// Options for Linear: required sizes in the constructor, the rest as chainable setters.
struct LinearOptions {
  LinearOptions(std::int64_t in_features, std::int64_t out_features) : in_(in_features), out_(out_features) {}
  LinearOptions& bias(bool on) {
    bias_ = on;
    return *this;
  }
  LinearOptions& dtype(DType dt) {
    dtype_ = dt;
    return *this;
  }
  std::int64_t in_;
  std::int64_t out_;
  bool bias_ = true;
  DType dtype_ = DType::float32;
};

/// y = x W^T + b with W [out_features, in_features], initialised like PyTorch: U(-1/sqrt(in), 1/sqrt(in)).
class Linear : public Module {
 public:
  explicit Linear(const LinearOptions& options, Generator* gen = nullptr);
  Linear(std::int64_t in_features, std::int64_t out_features) : Linear(LinearOptions(in_features, out_features)) {}
  Tensor forward(const Tensor& x) const;
  std::string extra_repr() const override;

  Tensor weight;
  Tensor bias;  // undefined without bias

 private:
  LinearOptions options_;
};

}  // namespace xg::nn

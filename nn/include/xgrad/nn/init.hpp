// xgrad::nn::init: in-place initialisers, drawing from a Generator (the default one if none is given).
#pragma once

#include <string>

#include "xgrad/tensor.hpp"

namespace xg::nn::init {

/// Fills with N(mean, std^2).
void normal_(const Tensor& t, double mean = 0.0, double std = 1.0, Generator* gen = nullptr);
/// Fills with U(a, b).
void uniform_(const Tensor& t, double a = 0.0, double b = 1.0, Generator* gen = nullptr);
void constant_(const Tensor& t, double value);
void zeros_(const Tensor& t);
void ones_(const Tensor& t);
/// Glorot: U(-a, a) with a = gain sqrt(6 / (fan_in + fan_out)).
void xavier_uniform_(const Tensor& t, double gain = 1.0, Generator* gen = nullptr);
/// Glorot: N(0, std^2) with std = gain sqrt(2 / (fan_in + fan_out)).
void xavier_normal_(const Tensor& t, double gain = 1.0, Generator* gen = nullptr);
/// He: U(-b, b) with b = gain sqrt(3 / fan), gain = sqrt(2 / (1 + a^2)) for "leaky_relu"/"relu", 1 for "linear".
void kaiming_uniform_(const Tensor& t, double a = 0.0, const std::string& mode = "fan_in",
                      const std::string& nonlinearity = "leaky_relu", Generator* gen = nullptr);
/// He: N(0, std^2) with std = gain / sqrt(fan).
void kaiming_normal_(const Tensor& t, double a = 0.0, const std::string& mode = "fan_in",
                     const std::string& nonlinearity = "leaky_relu", Generator* gen = nullptr);

}  // namespace xg::nn::init

#include "xgrad/nn/init.hpp"

#include <fmt/format.h>

#include <cmath>

#include "xgrad/autograd.hpp"
#include "xgrad/check.hpp"
#include "xgrad/ops.hpp"

namespace xg::nn::init {

namespace {
/// Initialisers write into parameters in place, outside of any graph.
void assign(const Tensor& t, const Tensor& values) {
  autograd::NoGradGuard ng;
  Tensor dst = t;
  dst.copy_(values);
}

std::pair<double, double> fans(const Tensor& t, const char* op) {
  if (t.dim() < 2) fail("{}: needs a tensor with at least 2 dims, got {}", op, shape_str(t.shape()));
  double receptive = 1;
  for (std::int64_t i = 2; i < t.dim(); ++i) receptive *= static_cast<double>(t.size(i));
  return {static_cast<double>(t.size(1)) * receptive, static_cast<double>(t.size(0)) * receptive};
}

double kaiming_std(const Tensor& t, double a, const std::string& mode, const std::string& nl, const char* op) {
  auto [fan_in, fan_out] = fans(t, op);
  if (mode != "fan_in" && mode != "fan_out")
    fail("{}: mode must be \"fan_in\" or \"fan_out\", got \"{}\"", op, mode);
  double gain;
  if (nl == "relu") gain = std::sqrt(2.0);
  else if (nl == "leaky_relu") gain = std::sqrt(2.0 / (1.0 + a * a));
  else if (nl == "linear" || nl == "sigmoid") gain = 1.0;
  else if (nl == "tanh") gain = 5.0 / 3.0;
  else fail("{}: unknown nonlinearity \"{}\"", op, nl);
  return gain / std::sqrt(mode == "fan_in" ? fan_in : fan_out);
}
}  // namespace

void normal_(const Tensor& t, double mean, double std, Generator* gen) {
  assign(t, randn(t.shape(), {t.dtype()}, gen) * std + mean);
}
void uniform_(const Tensor& t, double a, double b, Generator* gen) {
  assign(t, rand(t.shape(), {t.dtype()}, gen) * (b - a) + a);
}
void constant_(const Tensor& t, double value) { assign(t, full(t.shape(), value, {t.dtype()})); }
void zeros_(const Tensor& t) { constant_(t, 0.0); }
void ones_(const Tensor& t) { constant_(t, 1.0); }

void xavier_uniform_(const Tensor& t, double gain, Generator* gen) {
  auto [fan_in, fan_out] = fans(t, "xavier_uniform_");
  double a = gain * std::sqrt(6.0 / (fan_in + fan_out));
  uniform_(t, -a, a, gen);
}
void xavier_normal_(const Tensor& t, double gain, Generator* gen) {
  auto [fan_in, fan_out] = fans(t, "xavier_normal_");
  normal_(t, 0.0, gain * std::sqrt(2.0 / (fan_in + fan_out)), gen);
}
void kaiming_uniform_(const Tensor& t, double a, const std::string& mode, const std::string& nl, Generator* gen) {
  double bound = std::sqrt(3.0) * kaiming_std(t, a, mode, nl, "kaiming_uniform_");
  uniform_(t, -bound, bound, gen);
}
void kaiming_normal_(const Tensor& t, double a, const std::string& mode, const std::string& nl, Generator* gen) {
  normal_(t, 0.0, kaiming_std(t, a, mode, nl, "kaiming_normal_"), gen);
}

}  // namespace xg::nn::init

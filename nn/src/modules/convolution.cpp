// Conv1d, Conv2d, ConvTranspose2d, and the pooling modules.
#include "xgrad/nn/layers.hpp"

#include <fmt/format.h>

#include <cmath>

#include "xgrad/check.hpp"
#include "xgrad/nn/init.hpp"

namespace xg::nn {

namespace {
/// PyTorch's convolution initialisation: kaiming_uniform_(a = sqrt(5)) for the weight, which is uniform in
/// +-1/sqrt(fan_in), and the bias uniform in the same range.
void init_conv(Tensor& weight, Tensor& bias, Generator* gen) {
  init::kaiming_uniform_(weight, std::sqrt(5.0), "fan_in", "leaky_relu", gen);
  if (bias.defined()) {
    double fan_in = static_cast<double>(weight.size(1));
    for (std::int64_t i = 2; i < weight.dim(); ++i) fan_in *= static_cast<double>(weight.size(i));
    const double bound = 1.0 / std::sqrt(fan_in);
    init::uniform_(bias, -bound, bound, gen);
  }
}
void check_channels(std::string_view op, std::int64_t in, std::int64_t out, std::int64_t groups) {
  if (in <= 0 || out <= 0 || groups <= 0 || in % groups != 0 || out % groups != 0)
    fail("{}: {} in and {} out channels must be positive multiples of groups {}", op, in, out, groups);
}
std::string pair(const std::array<std::int64_t, 2>& p) { return fmt::format("({}, {})", p[0], p[1]); }
}  // namespace

Conv2d::Conv2d(const Conv2dOptions& o, Generator* gen) : Module("Conv2d"), options_(o) {
  check_channels("Conv2d", o.in_, o.out_, o.groups_);
  if (o.kernel_[0] <= 0 || o.kernel_[1] <= 0) fail("Conv2d: kernel size must be positive, got {}", pair(o.kernel_));
  weight = register_parameter("weight", empty({o.out_, o.in_ / o.groups_, o.kernel_[0], o.kernel_[1]}, {o.dtype_}));
  if (o.bias_) bias = register_parameter("bias", empty({o.out_}, {o.dtype_}));
  init_conv(weight, bias, gen);
}
Tensor Conv2d::forward(const Tensor& x) {
  return functional::conv2d(x, weight, bias,
                            {.stride = options_.stride_, .padding = options_.padding_, .dilation = options_.dilation_,
                             .groups = options_.groups_});
}
std::string Conv2d::extra_repr() const {
  return fmt::format("{}, {}, kernel_size={}, stride={}, padding={}, dilation={}, groups={}, bias={}", options_.in_,
                     options_.out_, pair(options_.kernel_), pair(options_.stride_), pair(options_.padding_),
                     pair(options_.dilation_), options_.groups_, options_.bias_);
}

Conv1d::Conv1d(std::int64_t in, std::int64_t out, std::int64_t k, std::int64_t stride, std::int64_t padding,
               std::int64_t dilation, std::int64_t groups, bool with_bias, DType dtype, Generator* gen)
    : Module("Conv1d"), options_{stride, padding, dilation, groups} {
  check_channels("Conv1d", in, out, groups);
  if (k <= 0) fail("Conv1d: kernel size must be positive, got {}", k);
  weight = register_parameter("weight", empty({out, in / groups, k}, {dtype}));
  if (with_bias) bias = register_parameter("bias", empty({out}, {dtype}));
  init_conv(weight, bias, gen);
}
Tensor Conv1d::forward(const Tensor& x) { return functional::conv1d(x, weight, bias, options_); }
std::string Conv1d::extra_repr() const {
  return fmt::format("{}, {}, kernel_size=({},), stride=({},), padding=({},)", weight.size(1) * options_.groups,
                     weight.size(0), weight.size(2), options_.stride, options_.padding);
}

ConvTranspose2d::ConvTranspose2d(const Conv2dOptions& o, Generator* gen) : Module("ConvTranspose2d"), options_(o) {
  check_channels("ConvTranspose2d", o.in_, o.out_, o.groups_);
  if (o.kernel_[0] <= 0 || o.kernel_[1] <= 0) fail("ConvTranspose2d: kernel size must be positive, got {}", pair(o.kernel_));
  weight = register_parameter("weight", empty({o.in_, o.out_ / o.groups_, o.kernel_[0], o.kernel_[1]}, {o.dtype_}));
  if (o.bias_) bias = register_parameter("bias", empty({o.out_}, {o.dtype_}));
  init_conv(weight, bias, gen);
}
Tensor ConvTranspose2d::forward(const Tensor& x) {
  return functional::conv_transpose2d(x, weight, bias,
                                      {.stride = options_.stride_, .padding = options_.padding_,
                                       .output_padding = options_.output_padding_, .dilation = options_.dilation_,
                                       .groups = options_.groups_});
}
std::string ConvTranspose2d::extra_repr() const {
  return fmt::format("{}, {}, kernel_size={}, stride={}, padding={}, output_padding={}", options_.in_, options_.out_,
                     pair(options_.kernel_), pair(options_.stride_), pair(options_.padding_), pair(options_.output_padding_));
}

std::string MaxPool2d::extra_repr() const {
  return fmt::format("kernel_size={}, stride={}, padding={}", pair(options_.kernel), pair(options_.stride[0] ? options_.stride : options_.kernel),
                     pair(options_.padding));
}
std::string AvgPool2d::extra_repr() const {
  return fmt::format("kernel_size={}, stride={}, padding={}", pair(options_.kernel), pair(options_.stride[0] ? options_.stride : options_.kernel),
                     pair(options_.padding));
}
std::string AdaptiveAvgPool2d::extra_repr() const { return fmt::format("output_size={}", pair(size_)); }

}  // namespace xg::nn

// xgrad: fmt support, so `fmt::print("{}\n", t)` prints a tensor like PyTorch does.
#pragma once

#include <fmt/format.h>

#include <string_view>

#include "xgrad/tensor.hpp"

template <>
struct fmt::formatter<xg::Tensor> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const xg::Tensor& t, FormatContext& ctx) const {
    const std::string s = xg::to_string(t);
    return fmt::formatter<std::string_view>::format(std::string_view(s), ctx);
  }
};

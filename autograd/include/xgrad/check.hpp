// xgrad: the one way code raises an error: XG_CHECK(cond, "op: what was given, what was expected", ...).
// The message is formatted with fmt only when the check fails.
#pragma once

#include <fmt/format.h>

#include <utility>

#include "xgrad/tensor.hpp"

namespace xg {

/// Throws xg::Error with a fmt-formatted message: `xg::fail("matmul: inner dims differ: {} @ {}", a, b)`.
template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace xg

/// Throws xg::Error with the formatted message unless cond holds.
#define XG_CHECK(cond, ...)                 \
  do {                                      \
    if (!(cond)) ::xg::fail(__VA_ARGS__);   \
  } while (0)

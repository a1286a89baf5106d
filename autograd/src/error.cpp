#include <xgrad/tensor.hpp>

#include <cstdio>

namespace xg {

namespace {
/// Length of the valid UTF-8 sequence at s[i] (shortest form, no surrogates, up to U+10FFFF), or 0.
std::size_t utf8_length(std::string_view s, std::size_t i, std::uint32_t& cp) {
  const auto b = static_cast<unsigned char>(s[i]);
  const std::size_t len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xe ? 3 : (b >> 3) == 0x1e ? 4 : 0;
  if (len == 0 || i + len > s.size()) return 0;
  cp = len == 1 ? b : b & (0xffu >> (len + 1));
  for (std::size_t k = 1; k < len; ++k) {
    const auto c = static_cast<unsigned char>(s[i + k]);
    if ((c & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (c & 0x3fu);
  }
  static constexpr std::uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) return 0;
  return len;
}
}  // namespace

std::string escape_control_chars(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    std::uint32_t cp = 0;
    const std::size_t len = utf8_length(text, i, cp);
    const bool control = len == 0 || cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f);
    if (!control) {
      out.append(text.substr(i, len));
      i += len;
      continue;
    }
    const auto b = static_cast<unsigned char>(text[i]);
    if (len == 1 && b == '\n') {
      out += "\\n";
    } else if (len == 1 && b == '\t') {
      out += "\\t";
    } else {
      // One \xNN per byte: a C1 control's two bytes, or the one invalid byte (the rest is read again).
      const std::size_t n = len == 0 ? 1 : len;
      for (std::size_t k = 0; k < n; ++k) {
        char buf[5];
        std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(text[i + k]));
        out += buf;
      }
      i += n;
      continue;
    }
    i += 1;
  }
  return out;
}

Error::Error(const std::string& message) : std::runtime_error(escape_control_chars(message)) {}

}  // namespace xg

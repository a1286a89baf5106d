#include "tokenizer.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <xgrad/tensor.hpp>

#include <algorithm>

namespace gpt {

std::vector<char32_t> utf8_decode(const std::string& s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    auto b = static_cast<unsigned char>(s[i]);
    int len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xe ? 3 : (b >> 3) == 0x1e ? 4 : 0;
    if (len == 0 || i + len > s.size()) throw xg::Error(fmt::format("invalid UTF-8 at byte {}", i));
    char32_t c = len == 1 ? b : b & (0xff >> (len + 1));
    for (int k = 1; k < len; ++k) {
      auto cb = static_cast<unsigned char>(s[i + k]);
      if ((cb & 0xc0) != 0x80) throw xg::Error(fmt::format("invalid UTF-8 at byte {}", i + k));
      c = (c << 6) | (cb & 0x3f);
    }
    if (c > 0x10ffff) throw xg::Error(fmt::format("invalid UTF-8 at byte {}", i));
    out.push_back(c);
    i += static_cast<std::size_t>(len);
  }
  return out;
}

std::string utf8_encode(char32_t c) {
  std::string out;
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xc0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3f));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xe0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (c & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (c & 0x3f));
  }
  return out;
}

namespace {
CharTokenizer build(std::vector<char32_t> chars) {
  std::sort(chars.begin(), chars.end());
  chars.erase(std::unique(chars.begin(), chars.end()), chars.end());
  return CharTokenizer::from_json([&] {
    nlohmann::json j = nlohmann::json::array();
    for (char32_t c : chars) j.push_back(utf8_encode(c));
    return j.dump();
  }());
}
}  // namespace

CharTokenizer CharTokenizer::from_text(const std::string& utf8) { return build(utf8_decode(utf8)); }

CharTokenizer CharTokenizer::from_json(const std::string& json) {
  CharTokenizer t;
  try {
    for (auto& s : nlohmann::json::parse(json)) {
      auto cps = utf8_decode(s.get<std::string>());
      if (cps.size() != 1) throw xg::Error("each vocabulary entry must be one character");
      t.chars_.push_back(cps[0]);
    }
  } catch (const nlohmann::json::exception& e) {
    throw xg::Error(std::string("char tokenizer: cannot read the vocabulary: ") + e.what());
  }
  if (t.chars_.empty()) throw xg::Error("char tokenizer: the vocabulary is empty");
  char32_t top = *std::max_element(t.chars_.begin(), t.chars_.end());
  t.ids_.assign(top + 1, -1);
  for (std::size_t i = 0; i < t.chars_.size(); ++i) t.ids_[t.chars_[i]] = static_cast<std::int32_t>(i);
  return t;
}

std::string CharTokenizer::to_json() const {
  nlohmann::json j = nlohmann::json::array();
  for (char32_t c : chars_) j.push_back(utf8_encode(c));
  return j.dump();
}

std::vector<std::int64_t> CharTokenizer::encode(const std::string& utf8) const {
  std::vector<std::int64_t> out;
  for (char32_t c : utf8_decode(utf8)) {
    if (c >= ids_.size() || ids_[c] < 0)
      throw xg::Error(fmt::format("char tokenizer: \"{}\" (U+{:04X}) is not in the vocabulary of {} characters",
                                  utf8_encode(c), static_cast<std::uint32_t>(c), chars_.size()));
    out.push_back(ids_[c]);
  }
  return out;
}

std::string CharTokenizer::decode(const std::vector<std::int64_t>& ids) const {
  std::string out;
  for (auto id : ids) {
    if (id < 0 || id >= vocab_size())
      throw xg::Error(fmt::format("char tokenizer: token id {} is outside the vocabulary of {}", id, vocab_size()));
    out += utf8_encode(chars_[static_cast<std::size_t>(id)]);
  }
  return out;
}

}  // namespace gpt

// Character-level tokenizer: one token per Unicode code point seen in the training text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gpt {

class CharTokenizer {
 public:
  /// The vocabulary of a text: its distinct code points, sorted (as nanoGPT's shakespeare_char does).
  static CharTokenizer from_text(const std::string& utf8);
  /// The vocabulary stored in a checkpoint (a JSON array of strings).
  static CharTokenizer from_json(const std::string& json);
  std::string to_json() const;

  /// Token ids of a UTF-8 string; throws naming the first character outside the vocabulary.
  std::vector<std::int64_t> encode(const std::string& utf8) const;
  std::string decode(const std::vector<std::int64_t>& ids) const;
  std::int64_t vocab_size() const { return static_cast<std::int64_t>(chars_.size()); }

 private:
  std::vector<char32_t> chars_;    // id -> code point
  std::vector<std::int32_t> ids_;  // code point -> id (-1 if absent), for code points < 0x110000 seen
};

/// Code points of a UTF-8 string; throws on invalid UTF-8 (with the byte offset).
std::vector<char32_t> utf8_decode(const std::string& s);
std::string utf8_encode(char32_t c);

}  // namespace gpt

// Tokenizers: character-level, and GPT-2's byte-level BPE read from OpenAI's encoder.json and vocab.bpe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace gpt {

/// Turns text into token ids and back; stored in checkpoints through metadata().
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  /// Token ids of a UTF-8 string; throws naming what cannot be encoded.
  virtual std::vector<std::int64_t> encode(const std::string& utf8) const = 0;
  virtual std::string decode(const std::vector<std::int64_t>& ids) const = 0;
  virtual std::int64_t vocab_size() const = 0;
  /// "char" or "gpt2".
  virtual std::string type() const = 0;
  /// Everything needed to rebuild the tokenizer, as checkpoint metadata ("tokenizer_type", ...).
  virtual std::map<std::string, std::string> metadata() const = 0;
};

/// Rebuilds the tokenizer a checkpoint's metadata describes.
std::shared_ptr<Tokenizer> tokenizer_from_metadata(const std::map<std::string, std::string>& meta);

/// One token per Unicode code point seen in the training text.
class CharTokenizer : public Tokenizer {
 public:
  CharTokenizer() = default;
  /// The vocabulary of a text: its distinct code points, sorted (as nanoGPT's shakespeare_char does).
  static CharTokenizer from_text(const std::string& utf8);
  /// The vocabulary as a JSON array of one-character strings.
  static CharTokenizer from_json(const std::string& json);
  std::string to_json() const;

  std::vector<std::int64_t> encode(const std::string& utf8) const override;
  std::string decode(const std::vector<std::int64_t>& ids) const override;
  std::int64_t vocab_size() const override { return static_cast<std::int64_t>(chars_.size()); }
  std::string type() const override { return "char"; }
  std::map<std::string, std::string> metadata() const override;

 private:
  std::vector<char32_t> chars_;    // id -> code point
  std::vector<std::int32_t> ids_;  // code point -> id (-1 if absent)
};

/// GPT-2's byte-level BPE: text is split with GPT-2's pattern, each piece's bytes are mapped to printable
/// characters, and merges from vocab.bpe are applied lowest rank first; encoder.json maps the results to ids.
/// Any string round-trips, since every byte has a token.
class GPT2Tokenizer : public Tokenizer {
 public:
  /// From the files' contents.
  GPT2Tokenizer(const std::string& encoder_json, const std::string& vocab_bpe);
  /// From a folder holding encoder.json and vocab.bpe.
  static std::shared_ptr<GPT2Tokenizer> from_dir(const std::string& dir);
  ~GPT2Tokenizer() override;
  GPT2Tokenizer(const GPT2Tokenizer&) = delete;
  GPT2Tokenizer& operator=(const GPT2Tokenizer&) = delete;

  std::vector<std::int64_t> encode(const std::string& utf8) const override;
  std::string decode(const std::vector<std::int64_t>& ids) const override;
  std::int64_t vocab_size() const override { return static_cast<std::int64_t>(decoder_.size()); }
  std::string type() const override { return "gpt2"; }
  std::map<std::string, std::string> metadata() const override;

 private:
  std::vector<std::int64_t> bpe(const std::string& piece) const;
  std::string encoder_json_, vocab_bpe_;
  std::unordered_map<std::string, std::int64_t> encoder_;
  std::vector<std::string> decoder_;
  std::unordered_map<std::string, int> ranks_;  // "a b" -> merge rank
  std::string byte_to_unicode_[256];
  std::unordered_map<std::string, unsigned char> unicode_to_byte_;
  void* regex_ = nullptr;  // pcre2_code*
  mutable std::unordered_map<std::string, std::vector<std::int64_t>> cache_;
};

/// Code points of a UTF-8 string; throws on invalid UTF-8 (with the byte offset).
std::vector<char32_t> utf8_decode(const std::string& s);
std::string utf8_encode(char32_t c);

}  // namespace gpt

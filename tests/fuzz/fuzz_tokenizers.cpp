// libFuzzer harness: any bytes as text for both tokenizers, and as token ids for decoding. Valid UTF-8
// must round-trip through encode and decode; everything else must raise xg::Error.
// GPT-2's files are read from XGRAD_BPE_DIR (default data/gpt2); without them only the char tokenizer runs.
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <xgrad/tensor.hpp>

#include "tokenizer.hpp"

namespace {
std::shared_ptr<gpt::GPT2Tokenizer> bpe() {
  static std::shared_ptr<gpt::GPT2Tokenizer> t = [] {
    const char* dir = std::getenv("XGRAD_BPE_DIR");
    try {
      return gpt::GPT2Tokenizer::from_dir(dir ? dir : "data/gpt2");
    } catch (const xg::Error&) {
      return std::shared_ptr<gpt::GPT2Tokenizer>();
    }
  }();
  return t;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    auto chars = gpt::CharTokenizer::from_text(text);
    if (chars.decode(chars.encode(text)) != text) std::abort();
  } catch (const xg::Error&) {
  }
  if (auto t = bpe()) {
    try {
      if (t->decode(t->encode(text)) != text) std::abort();
    } catch (const xg::Error&) {
    }
    std::vector<std::int64_t> ids;
    for (std::size_t i = 0; i + 2 <= size; i += 2) ids.push_back(static_cast<std::int64_t>(data[i] << 8 | data[i + 1]) - 1000);
    try {
      (void)t->decode(ids);
    } catch (const xg::Error&) {
    }
  }
  return 0;
}

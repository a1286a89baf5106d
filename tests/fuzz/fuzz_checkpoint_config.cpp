// libFuzzer harness: the metadata a checkpoint stores, as read back by load_checkpoint: the model config
// (JSON) and the tokenizer entries. Input: config, then a NUL byte, then the char tokenizer's JSON.
#include <map>
#include <string>

#include "gpt.hpp"
#include "tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  const auto nul = in.find('\0');
  try {
    gpt::GPTConfig c = gpt::GPTConfig::from_json(in.substr(0, nul));
    (void)c.parameter_count();
    (void)c.training_bytes(1);
  } catch (const xg::Error&) {
  }
  if (nul != std::string::npos) {
    try {
      auto tok = gpt::tokenizer_from_metadata({{"tokenizer_type", "char"}, {"tokenizer", in.substr(nul + 1)}});
      (void)tok->vocab_size();
    } catch (const xg::Error&) {
    }
  }
  return 0;
}

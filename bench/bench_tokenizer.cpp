// Tokenizer throughput: GPT-2 byte-level BPE and the char tokenizer over a text file (the default
// corpus, data/kjv.txt, after scripts/setup.sh).
//   bench_tokenizer [TEXT] [BPE_DIR]  -> prints one JSON line
#include <chrono>
#include <fstream>
#include <sstream>

#include <xgrad/check.hpp>

#include "tokenizer.hpp"

namespace {
template <class F>
double seconds(F&& f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "data/kjv.txt", bpe_dir = argc > 2 ? argv[2] : "data/gpt2";
  try {
    std::ifstream in(path, std::ios::binary);
    if (!in) xg::fail("cannot read {}", path);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    auto bpe = gpt::GPT2Tokenizer::from_dir(bpe_dir);
    std::vector<std::int64_t> ids;
    const double bpe_s = seconds([&] { ids = bpe->encode(text); });
    std::string back;
    const double dec_s = seconds([&] { back = bpe->decode(ids); });
    if (back != text) xg::fail("GPT-2 BPE did not round-trip {}", path);
    auto chars = gpt::CharTokenizer::from_text(text);
    std::vector<std::int64_t> cids;
    const double char_s = seconds([&] { cids = chars.encode(text); });
    const double mb = static_cast<double>(text.size()) / 1e6;
    fmt::print("{{\"bytes\": {}, \"gpt2_tokens\": {}, \"gpt2_encode_mb_per_s\": {:.2f}, \"gpt2_decode_mb_per_s\": {:.2f}, "
               "\"char_encode_mb_per_s\": {:.2f}}}\n",
               text.size(), ids.size(), mb / bpe_s, mb / dec_s, mb / char_s);
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_tokenizer: {}\n", e.what());
    return 1;
  }
}

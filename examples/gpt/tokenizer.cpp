#include "tokenizer.hpp"

#include <xgrad/check.hpp>
#include <xgrad/serialize.hpp>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <fmt/format.h>
#include <pcre2.h>
#include <nlohmann/json.hpp>
#include <xgrad/tensor.hpp>

#include <algorithm>
#include <climits>
#include <filesystem>
#include <fstream>
#include <queue>
#include <sstream>
#include <tuple>

namespace gpt {

std::vector<char32_t> utf8_decode(const std::string& s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    auto b = static_cast<unsigned char>(s[i]);
    int len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xe ? 3 : (b >> 3) == 0x1e ? 4 : 0;
    if (len == 0 || i + len > s.size()) xg::fail("invalid UTF-8 at byte {}", i);
    char32_t c = len == 1 ? b : b & (0xff >> (len + 1));
    for (int k = 1; k < len; ++k) {
      auto cb = static_cast<unsigned char>(s[i + k]);
      if ((cb & 0xc0) != 0x80) xg::fail("invalid UTF-8 at byte {}", i + k);
      c = (c << 6) | (cb & 0x3f);
    }
    // Strict: the shortest form only, no UTF-16 surrogates, nothing past U+10FFFF.
    static constexpr char32_t kMinForLength[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < kMinForLength[len]) xg::fail("invalid UTF-8 at byte {}: an overlong form of U+{:04X}", i, static_cast<std::uint32_t>(c));
    if (c >= 0xd800 && c <= 0xdfff) xg::fail("invalid UTF-8 at byte {}: a UTF-16 surrogate (U+{:04X})", i, static_cast<std::uint32_t>(c));
    if (c > 0x10ffff) xg::fail("invalid UTF-8 at byte {}: U+{:X} is past U+10FFFF", i, static_cast<std::uint32_t>(c));
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
      if (cps.size() != 1) xg::fail("each vocabulary entry must be one character");
      t.chars_.push_back(cps[0]);
    }
  } catch (const nlohmann::json::exception& e) {
    xg::fail("char tokenizer: cannot read the vocabulary: {}", e.what());
  }
  if (t.chars_.empty()) xg::fail("char tokenizer: the vocabulary is empty");
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
      xg::fail("char tokenizer: \"{}\" (U+{:04X}) is not in the vocabulary of {} characters",
                                  utf8_encode(c), static_cast<std::uint32_t>(c), chars_.size());
    out.push_back(ids_[c]);
  }
  return out;
}

std::map<std::string, std::string> CharTokenizer::metadata() const {
  return {{"tokenizer_type", "char"}, {"tokenizer", to_json()}};
}

std::string CharTokenizer::decode(const std::vector<std::int64_t>& ids) const {
  std::string out;
  for (auto id : ids) {
    if (id < 0 || id >= vocab_size())
      xg::fail("char tokenizer: token id {} is outside the vocabulary of {}", id, vocab_size());
    out += utf8_encode(chars_[static_cast<std::size_t>(id)]);
  }
  return out;
}



// ---- GPT-2 byte-level BPE --------------------------------------------------------------------------------

namespace {
// GPT-2's pre-tokenizer: contractions, letters, numbers, other symbols, each with an optional leading
// space, and runs of whitespace.
constexpr const char* kPattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::string read_file(const std::string& path) {
  try {
    return xg::read_file(path, std::uint64_t(1) << 28);
  } catch (const xg::Error& e) {
    xg::fail("GPT-2 tokenizer: {}", e.what());
  }
}
}  // namespace

GPT2Tokenizer::GPT2Tokenizer(const std::string& encoder_json, const std::string& vocab_bpe)
    : encoder_json_(encoder_json), vocab_bpe_(vocab_bpe) {
  // Bytes map to printable code points: printable Latin-1 ones to themselves, the rest to 256 + n.
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    byte_to_unicode_[b] = utf8_encode(printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++));
    unicode_to_byte_[byte_to_unicode_[b]] = static_cast<unsigned char>(b);
  }
  // Every token and merge is spelled in the byte-to-unicode alphabet: anything else could never be produced
  // by encoding and cannot be decoded to bytes.
  auto in_alphabet = [&](const std::string& text) {
    for (char32_t c : utf8_decode(text))
      if (!unicode_to_byte_.count(utf8_encode(c))) return false;
    return !text.empty();
  };
  try {
    auto j = nlohmann::json::parse(encoder_json);
    if (!j.is_object()) xg::fail("it is not a JSON object of token -> id");
    decoder_.resize(j.size());
    std::vector<bool> seen(j.size());
    for (auto& [tok, id] : j.items()) {
      if (!id.is_number_integer()) xg::fail("the id of token \"{}\" is not an integer", tok);
      auto i = id.get<std::int64_t>();
      if (i < 0 || i >= static_cast<std::int64_t>(j.size())) xg::fail("id {} out of range", i);
      if (seen[static_cast<std::size_t>(i)]) xg::fail("id {} is given to two tokens", i);
      seen[static_cast<std::size_t>(i)] = true;
      if (!in_alphabet(tok))
        xg::fail("token {} (\"{}\") has a character outside GPT-2's byte-to-unicode map", i, tok);
      encoder_[tok] = i;
      decoder_[static_cast<std::size_t>(i)] = tok;
    }
  } catch (const std::exception& e) {
    xg::fail("GPT-2 tokenizer: encoder.json is not valid: {}", e.what());
  }
  for (int b = 0; b < 256; ++b)
    if (!encoder_.count(byte_to_unicode_[b]))
      xg::fail("GPT-2 tokenizer: encoder.json is not valid: byte {} has no token", b);
  std::istringstream merges(vocab_bpe);
  std::string line;
  int rank = 0, line_no = 0;
  while (std::getline(merges, line)) {
    ++line_no;
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const auto space = line.find(' ');
    bool ok = space != std::string::npos && line.find(' ', space + 1) == std::string::npos;
    try {
      ok = ok && in_alphabet(line.substr(0, space)) && in_alphabet(line.substr(space + 1));
    } catch (const xg::Error&) {
      ok = false;  // invalid UTF-8
    }
    if (!ok)
      xg::fail("GPT-2 tokenizer: vocab.bpe line {} (\"{}\") is not two symbols of GPT-2's alphabet joined by one space",
               line_no, line);
    ranks_.emplace(line, rank++);
  }
  if (ranks_.empty()) xg::fail("GPT-2 tokenizer: vocab.bpe has no merges");
  int err = 0;
  PCRE2_SIZE off = 0;
  regex_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
  if (!regex_) xg::fail("GPT-2 tokenizer: cannot compile the pattern (error {} at {})", err, off);
}

GPT2Tokenizer::~GPT2Tokenizer() { pcre2_code_free(static_cast<pcre2_code*>(regex_)); }

std::shared_ptr<GPT2Tokenizer> GPT2Tokenizer::from_dir(const std::string& dir) {
  for (const char* name : {"encoder.json", "vocab.bpe"})
    if (!std::filesystem::exists(dir + "/" + name))
      xg::fail("GPT-2's BPE files are not in \"{}\" (no {}): `bash scripts/setup.sh --bpe` fetches them into "
               "data/gpt2, or pass --bpe-dir", dir, name);
  return std::make_shared<GPT2Tokenizer>(read_file(dir + "/encoder.json"), read_file(dir + "/vocab.bpe"));
}

std::map<std::string, std::string> GPT2Tokenizer::metadata() const {
  return {{"tokenizer_type", "gpt2"}, {"tokenizer_encoder", encoder_json_}, {"tokenizer_merges", vocab_bpe_}};
}

std::vector<std::int64_t> GPT2Tokenizer::bpe(const std::string& piece) const {
  if (auto it = cache_.find(piece); it != cache_.end()) return it->second;
  // Symbols in a linked list; candidate merges in a heap ordered by (rank, position). Merging the lowest
  // rank first, leftmost first, gives OpenAI's result (every pair that a merge creates has a later rank
  // than that merge), in O(n log n) rather than a pass over the piece per merge: a hostile "word" of a
  // million letters takes a second, not hours.
  struct Symbol {
    std::string text;
    int prev, next;
    int version = 0;  // bumped when the text grows
    bool alive = true;
  };
  std::vector<Symbol> sym;
  for (unsigned char b : piece)
    sym.push_back({byte_to_unicode_[b], static_cast<int>(sym.size()) - 1, static_cast<int>(sym.size()) + 1});
  if (!sym.empty()) sym.back().next = -1;
  using Candidate = std::tuple<int, int, int, int, int>;  // rank, left, right, and their versions
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto consider = [&](int left) {
    if (left < 0 || sym[left].next < 0) return;
    auto it = ranks_.find(sym[left].text + " " + sym[sym[left].next].text);
    if (it != ranks_.end()) heap.emplace(it->second, left, sym[left].next, sym[left].version, sym[sym[left].next].version);
  };
  for (int i = 0; i + 1 < static_cast<int>(sym.size()); ++i) consider(i);
  while (!heap.empty()) {
    auto [rank, left, right, lv, rv] = heap.top();
    heap.pop();
    // Stale when a neighbour merged since: the pair is gone, or one side grew (same indices, other text).
    if (!sym[left].alive || sym[left].next != right || !sym[right].alive || sym[left].version != lv ||
        sym[right].version != rv)
      continue;
    sym[left].text += sym[right].text;
    ++sym[left].version;
    sym[right].alive = false;
    sym[left].next = sym[right].next;
    if (sym[left].next >= 0) sym[sym[left].next].prev = left;
    consider(sym[left].prev);
    consider(left);
  }
  std::vector<std::int64_t> ids;
  for (int i = sym.empty() ? -1 : 0; i >= 0; i = sym[i].next) {
    auto it = encoder_.find(sym[i].text);
    if (it == encoder_.end()) xg::fail("GPT-2 tokenizer: no id for the symbol \"{}\"", sym[i].text);
    ids.push_back(it->second);
  }
  if (cache_.size() < 100000 && piece.size() < 64) cache_.emplace(piece, ids);
  return ids;
}

std::vector<std::int64_t> GPT2Tokenizer::encode(const std::string& text) const {
  utf8_decode(text);  // refuses invalid UTF-8 with its offset
  auto* re = static_cast<pcre2_code*>(regex_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(re, nullptr);
  std::vector<std::int64_t> out;
  PCRE2_SIZE start = 0;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  while (start < text.size()) {
    // The text was validated once above; without NO_UTF_CHECK PCRE2 re-validates the whole rest of it at
    // every match, which makes tokenizing quadratic.
    int rc = pcre2_match(re, subject, text.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc < 0) break;
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[1] == ov[0]) {  // cannot happen with this pattern, but never loop forever
      ++start;
      continue;
    }
    auto ids = bpe(text.substr(ov[0], ov[1] - ov[0]));
    out.insert(out.end(), ids.begin(), ids.end());
    start = ov[1];
  }
  pcre2_match_data_free(md);
  return out;
}

std::string GPT2Tokenizer::decode(const std::vector<std::int64_t>& ids) const {
  std::string out;
  for (auto id : ids) {
    if (id < 0 || id >= vocab_size())
      xg::fail("GPT-2 tokenizer: token id {} is outside the vocabulary of {}", id, vocab_size());
    for (char32_t c : utf8_decode(decoder_[static_cast<std::size_t>(id)])) out += static_cast<char>(unicode_to_byte_.at(utf8_encode(c)));
  }
  return out;
}

std::shared_ptr<Tokenizer> tokenizer_from_metadata(const std::map<std::string, std::string>& meta) {
  auto get = [&](const char* k) {
    auto it = meta.find(k);
    if (it == meta.end()) xg::fail("the checkpoint has no \"{}\" metadata", k);
    return it->second;
  };
  std::string type = meta.count("tokenizer_type") ? meta.at("tokenizer_type") : "char";
  if (type == "char") return std::make_shared<CharTokenizer>(CharTokenizer::from_json(get("tokenizer")));
  if (type == "gpt2") return std::make_shared<GPT2Tokenizer>(get("tokenizer_encoder"), get("tokenizer_merges"));
  xg::fail("unknown tokenizer type \"{}\" in the checkpoint", type);
}

}  // namespace gpt

// Text corpora for the GPT: reading a file, the train/validation split, and random batches.
#pragma once

#include <xgrad/xgrad.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace gpt {

/// The bytes of a text file; an error names the file if it cannot be read or is empty.
std::string read_text(const std::string& path);

/// Token ids split 90% / 10% into train and validation, as nanoGPT's prepare.py does.
struct Dataset {
  std::vector<std::int64_t> train, val;
  /// Refuses data too small to hold one block of block_size + 1 tokens in either split.
  static Dataset make(const std::vector<std::int64_t>& ids, std::int64_t block_size);
};

/// A batch of b random windows of t tokens: x = data[i : i+t], y = data[i+1 : i+t+1], both [b, t].
std::pair<xg::Tensor, xg::Tensor> get_batch(const std::vector<std::int64_t>& data, std::int64_t b, std::int64_t t,
                                            xg::Generator& gen);

}  // namespace gpt

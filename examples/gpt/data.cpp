#include "data.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace gpt {

std::string read_text(const std::string& path) {
  std::string text;
  try {
    text = xg::read_file(path);
  } catch (const xg::Error& e) {
    xg::fail("cannot read the data file: {}", e.what());
  }
  if (text.empty()) xg::fail("the data file {} is empty", path);
  return text;
}

Dataset Dataset::make(const std::vector<std::int64_t>& ids, std::int64_t block_size) {
  Dataset d;
  auto n = static_cast<std::ptrdiff_t>(ids.size() * 9 / 10);
  d.train.assign(ids.begin(), ids.begin() + n);
  d.val.assign(ids.begin() + n, ids.end());
  for (auto* part : {&d.train, &d.val})
    if (static_cast<std::int64_t>(part->size()) <= block_size + 1)
      xg::fail("the data file is too small: {} tokens in the {} split, but block_size {} needs more than {}",
               part->size(), part == &d.train ? "train" : "validation", block_size, block_size + 1);
  return d;
}

std::pair<xg::Tensor, xg::Tensor> get_batch(const std::vector<std::int64_t>& data, std::int64_t b, std::int64_t t,
                                            xg::Generator& gen) {
  std::vector<std::int64_t> x(static_cast<std::size_t>(b * t)), y(x.size());
  const auto span = static_cast<std::uint64_t>(data.size()) - static_cast<std::uint64_t>(t);
  for (std::int64_t r = 0; r < b; ++r) {
    auto i = static_cast<std::size_t>(gen.next_u64() % span);
    std::copy_n(data.begin() + static_cast<std::ptrdiff_t>(i), t, x.begin() + r * t);
    std::copy_n(data.begin() + static_cast<std::ptrdiff_t>(i + 1), t, y.begin() + r * t);
  }
  return {xg::index_tensor(x, {b, t}), xg::index_tensor(y, {b, t})};
}

}  // namespace gpt

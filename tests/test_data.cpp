// xgrad::data: every sample once per epoch, seeded shuffles that a resumed run reproduces, prefetching that
// changes nothing but timing, files read lazily, and errors that reach the caller.
#include <filesystem>
#include <fstream>
#include <set>

#include "helpers.hpp"

using xg::Tensor;
namespace data = xg::data;

namespace {
std::vector<std::vector<std::int64_t>> epoch_ids(data::DataLoader& loader) {
  std::vector<std::vector<std::int64_t>> out;
  for (const auto& batch : loader) out.push_back(batch[1].to_vector<std::int64_t>());
  return out;
}
std::shared_ptr<data::TensorDataset> numbered(std::int64_t n) {
  Tensor x = xg::arange(0.0, static_cast<double>(2 * n), 1.0, {xg::float64}).reshape({n, 2});
  return std::make_shared<data::TensorDataset>(std::vector<Tensor>{x, xg::arange(0.0, static_cast<double>(n), 1.0, {xg::int64})});
}
}  // namespace

TEST_CASE("DataLoader: batches, every sample once per epoch, drop_last", "[data]") {
  data::DataLoader loader(numbered(10), {.batch_size = 4});
  CHECK(loader.size() == 3);
  auto ids = epoch_ids(loader);
  CHECK(ids == std::vector<std::vector<std::int64_t>>{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}});
  for (const auto& batch : loader) {
    REQUIRE(batch.size() == 2);
    CHECK(batch[0].shape() == xg::Shape{batch[1].numel(), 2});
    CHECK(batch[0].select(1, 0).to_vector<double>()[0] == 2.0 * double(batch[1].to_vector<std::int64_t>()[0]));
  }
  data::DataLoader dropped(numbered(10), {.batch_size = 4, .drop_last = true});
  CHECK(dropped.size() == 2);
  CHECK(epoch_ids(dropped).size() == 2);
}

TEST_CASE("DataLoader: seeded shuffles differ by epoch and are reproduced by set_epoch", "[data]") {
  data::DataLoader a(numbered(50), {.batch_size = 8, .shuffle = true, .seed = 7});
  auto e0 = epoch_ids(a), e1 = epoch_ids(a);
  CHECK(a.epoch() == 2);
  CHECK(e0 != e1);
  for (const auto& e : {e0, e1}) {
    std::set<std::int64_t> seen;
    for (const auto& b : e) seen.insert(b.begin(), b.end());
    CHECK(seen.size() == 50);  // a permutation
  }
  data::DataLoader b(numbered(50), {.batch_size = 8, .shuffle = true, .seed = 7});
  b.set_epoch(1);
  CHECK(epoch_ids(b) == e1);  // a resumed run sees the same batches
  data::DataLoader other(numbered(50), {.batch_size = 8, .shuffle = true, .seed = 8});
  CHECK(epoch_ids(other) != e0);
}

TEST_CASE("DataLoader: prefetching on a thread gives the same batches, stops early, passes errors on", "[data]") {
  data::DataLoader plain(numbered(37), {.batch_size = 5, .shuffle = true, .seed = 3});
  data::DataLoader ahead(numbered(37), {.batch_size = 5, .shuffle = true, .seed = 3, .prefetch = 2});
  for (int e = 0; e < 3; ++e) CHECK(epoch_ids(plain) == epoch_ids(ahead));
  // Leaving an epoch early ends its thread (no hang, no leak under the sanitizers).
  for (int e = 0; e < 3; ++e)
    for (const auto& batch : ahead) {
      (void)batch;
      break;
    }
  // A sample that cannot be read: the error reaches the loop, with or without prefetch.
  auto dir = std::filesystem::temp_directory_path() / "xgrad_test_files";
  std::filesystem::create_directories(dir);
  std::vector<std::string> paths;
  for (int i = 0; i < 6; ++i) {
    paths.push_back((dir / ("sample" + std::to_string(i) + ".txt")).string());
    std::ofstream(paths.back()) << i * 10;
  }
  paths.push_back((dir / "missing.txt").string());
  auto load = [](const std::string& p) {
    std::ifstream in(p);
    double v;
    if (!(in >> v)) xg::fail("cannot read {}", p);
    return std::vector<Tensor>{xg::tensor({v}, {1}, {xg::float64})};
  };
  auto files = std::make_shared<data::FileDataset>(paths, load);
  for (std::int64_t prefetch : {0, 2}) {
    data::DataLoader loader(files, {.batch_size = 4, .prefetch = prefetch});
    auto it = loader.begin();
    CHECK(test::values((*it)[0]) == std::vector<double>{0, 10, 20, 30});
    test::require_error([&] { ++it; }, {"cannot read", "missing.txt"});
  }
  std::filesystem::remove_all(dir);
  test::require_error([] { data::TensorDataset(std::vector<Tensor>{xg::zeros({3, 2}), xg::zeros({4})}); },
                      {"TensorDataset", "tensor 1 has shape [4]", "first size 3"});
  test::require_error([] { data::DataLoader(numbered(3), {.batch_size = 0}); }, {"batch_size must be positive"});
}

// xgrad::data: datasets and a DataLoader, as torch.utils.data has them.
//
//   auto data = std::make_shared<xg::data::TensorDataset>(std::vector<xg::Tensor>{images, labels});
//   xg::data::DataLoader loader(data, {.batch_size = 64, .shuffle = true, .seed = 1, .prefetch = 2});
//   for (int epoch = 0; epoch < 10; ++epoch)
//     for (const auto& batch : loader) train_step(batch[0], batch[1]);   // a new order every epoch
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "xgrad/tensor.hpp"

namespace xg::data {

/// A map-style dataset: size() samples, each one or more tensors.
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual std::int64_t size() const = 0;
  /// Sample i (0 <= i < size()).
  virtual std::vector<Tensor> get(std::int64_t i) const = 0;
  /// The samples at `indices` collated: each of a sample's tensors stacked along a new first dim. A dataset
  /// that can gather a batch faster (TensorDataset: one index_select) overrides it.
  virtual std::vector<Tensor> get_batch(const std::vector<std::int64_t>& indices) const;
};

/// Samples along the first dim of tensors that all have the same first size (torch's TensorDataset).
class TensorDataset : public Dataset {
 public:
  explicit TensorDataset(std::vector<Tensor> tensors);
  std::int64_t size() const override { return size_; }
  std::vector<Tensor> get(std::int64_t i) const override;
  std::vector<Tensor> get_batch(const std::vector<std::int64_t>& indices) const override;

 private:
  std::vector<Tensor> tensors_;
  std::int64_t size_;
};

/// One sample per file, read when the sample is asked for (by `load`, e.g. an image decoder): with the
/// DataLoader's prefetch, reading overlaps training.
class FileDataset : public Dataset {
 public:
  FileDataset(std::vector<std::string> paths, std::function<std::vector<Tensor>(const std::string& path)> load);
  std::int64_t size() const override { return static_cast<std::int64_t>(paths_.size()); }
  std::vector<Tensor> get(std::int64_t i) const override;

 private:
  std::vector<std::string> paths_;
  std::function<std::vector<Tensor>(const std::string&)> load_;
};

/// Options of a DataLoader.
struct DataLoaderOptions {
  std::int64_t batch_size = 1;
  bool shuffle = false;       // a new random order each epoch, from a generator seeded with `seed`
  bool drop_last = false;     // leave out a last batch smaller than batch_size
  std::uint64_t seed = 0;
  std::int64_t prefetch = 0;  // batches prepared ahead on a background thread (0: on the caller's thread)
};

/// Batches of a dataset, one epoch per iteration over it (torch.utils.data.DataLoader). The order of epoch
/// e depends only on the seed and e, so a resumed run can set_epoch(e) and see the same batches.
class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions options = {});
  /// Batches per epoch.
  std::int64_t size() const;
  /// The epoch the next iteration runs (counted from 0, advanced by every begin()).
  void set_epoch(std::int64_t epoch);
  std::int64_t epoch() const { return epoch_; }

  class Iterator;
  Iterator begin();
  Iterator end();

 private:
  std::shared_ptr<const Dataset> dataset_;
  DataLoaderOptions options_;
  std::int64_t epoch_ = 0;
};

/// An input iterator over one epoch's batches; with prefetch, a thread fills a bounded queue ahead.
class DataLoader::Iterator {
 public:
  using value_type = std::vector<Tensor>;
  Iterator() = default;
  const std::vector<Tensor>& operator*() const;
  const std::vector<Tensor>* operator->() const { return &**this; }
  Iterator& operator++();
  bool operator==(const Iterator& other) const { return done() == other.done(); }

 private:
  friend class DataLoader;
  struct State;
  explicit Iterator(std::shared_ptr<State> state);
  bool done() const;
  std::shared_ptr<State> state_;
};

}  // namespace xg::data

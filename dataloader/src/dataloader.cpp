#include "xgrad/data/dataloader.hpp"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <numeric>
#include <thread>

#include "xgrad/autograd.hpp"
#include "xgrad/check.hpp"
#include "xgrad/ops.hpp"

namespace xg::data {

std::vector<Tensor> Dataset::get_batch(const std::vector<std::int64_t>& indices) const {
  std::vector<std::vector<Tensor>> samples;
  for (auto i : indices) samples.push_back(get(i));
  XG_CHECK(!samples.empty(), "DataLoader: an empty batch");
  std::vector<Tensor> batch;
  for (std::size_t k = 0; k < samples[0].size(); ++k) {
    std::vector<Tensor> parts;
    for (std::size_t s = 0; s < samples.size(); ++s) {
      XG_CHECK(samples[s].size() == samples[0].size() && samples[s][k].shape() == samples[0][k].shape(),
               "DataLoader: sample {} does not have the shapes of sample {} (tensor {}: {} vs {}); samples of a batch "
               "must match", indices[s], indices[0], k, shape_str(samples[s][k].shape()), shape_str(samples[0][k].shape()));
      parts.push_back(samples[s][k]);
    }
    batch.push_back(stack(parts, 0));
  }
  return batch;
}

TensorDataset::TensorDataset(std::vector<Tensor> tensors) : tensors_(std::move(tensors)) {
  XG_CHECK(!tensors_.empty(), "TensorDataset: no tensors");
  for (std::size_t k = 0; k < tensors_.size(); ++k)
    XG_CHECK(tensors_[k].defined() && tensors_[k].dim() >= 1 && tensors_[k].size(0) == tensors_[0].size(0),
             "TensorDataset: tensor {} has shape {}, but every tensor needs the first size {}", k,
             tensors_[k].defined() ? shape_str(tensors_[k].shape()) : std::string("undefined"), tensors_[0].size(0));
  size_ = tensors_[0].size(0);
}

std::vector<Tensor> TensorDataset::get(std::int64_t i) const {
  XG_CHECK(i >= 0 && i < size_, "TensorDataset: sample {} is out of range for {} samples", i, size_);
  std::vector<Tensor> out;
  for (const auto& t : tensors_) out.push_back(t.select(0, i));
  return out;
}

std::vector<Tensor> TensorDataset::get_batch(const std::vector<std::int64_t>& indices) const {
  const Tensor idx = index_tensor(indices);
  std::vector<Tensor> out;
  for (const auto& t : tensors_) out.push_back(index_select(t, 0, idx));
  return out;
}

FileDataset::FileDataset(std::vector<std::string> paths, std::function<std::vector<Tensor>(const std::string&)> load)
    : paths_(std::move(paths)), load_(std::move(load)) {
  XG_CHECK(static_cast<bool>(load_), "FileDataset: no load function");
}

std::vector<Tensor> FileDataset::get(std::int64_t i) const {
  XG_CHECK(i >= 0 && i < size(), "FileDataset: sample {} is out of range for {} files", i, size());
  return load_(paths_[static_cast<std::size_t>(i)]);
}

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions o) : dataset_(std::move(dataset)), options_(o) {
  XG_CHECK(dataset_ != nullptr, "DataLoader: no dataset");
  XG_CHECK(o.batch_size > 0, "DataLoader: batch_size must be positive, got {}", o.batch_size);
  XG_CHECK(o.prefetch >= 0, "DataLoader: prefetch must be >= 0, got {}", o.prefetch);
}

std::int64_t DataLoader::size() const {
  const std::int64_t n = dataset_->size(), b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

void DataLoader::set_epoch(std::int64_t epoch) {
  XG_CHECK(epoch >= 0, "DataLoader: epoch must be >= 0, got {}", epoch);
  epoch_ = epoch;
}

/// One epoch: its batches' indices, and, with prefetch, the thread that makes batches ahead.
struct DataLoader::Iterator::State {
  std::shared_ptr<const Dataset> dataset;
  std::vector<std::vector<std::int64_t>> batches;
  std::size_t next = 0;  // the next batch to hand out
  std::vector<Tensor> current;
  bool finished = false;
  // Prefetch.
  std::int64_t ahead = 0;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::vector<Tensor>> ready;
  std::exception_ptr error;
  bool stop = false;
  std::thread worker;

  std::vector<Tensor> make(std::size_t b) const {
    autograd::NoGradGuard ng;  // batches are data: nothing to record
    return dataset->get_batch(batches[b]);
  }

  void start() {
    worker = std::thread([this] {
      for (std::size_t b = 0; b < batches.size(); ++b) {
        std::vector<Tensor> batch;
        try {
          batch = make(b);
        } catch (...) {
          std::lock_guard lock(mu);
          error = std::current_exception();
          cv.notify_all();
          return;
        }
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return stop || static_cast<std::int64_t>(ready.size()) < ahead; });
        if (stop) return;
        ready.push_back(std::move(batch));
        cv.notify_all();
      }
    });
  }

  void advance() {
    if (next >= batches.size()) {
      finished = true;
      current.clear();
      return;
    }
    if (ahead == 0) {
      current = make(next++);
      return;
    }
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return !ready.empty() || error; });
    if (ready.empty() && error) std::rethrow_exception(error);
    current = std::move(ready.front());
    ready.pop_front();
    ++next;
    cv.notify_all();
  }

  ~State() {
    if (!worker.joinable()) return;
    {
      std::lock_guard lock(mu);
      stop = true;
    }
    cv.notify_all();
    worker.join();
  }
};

DataLoader::Iterator DataLoader::begin() {
  auto s = std::make_shared<Iterator::State>();
  s->dataset = dataset_;
  std::vector<std::int64_t> order(static_cast<std::size_t>(dataset_->size()));
  std::iota(order.begin(), order.end(), 0);
  if (options_.shuffle) {
    // The order of epoch e from (seed, e) alone: a resumed run that sets the epoch sees the same batches.
    Generator gen(options_.seed * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(epoch_) + 1);
    order = randperm(dataset_->size(), &gen).to_vector<std::int64_t>();
  }
  for (std::size_t b = 0; b < order.size(); b += static_cast<std::size_t>(options_.batch_size)) {
    const std::size_t e = std::min(order.size(), b + static_cast<std::size_t>(options_.batch_size));
    if (options_.drop_last && e - b < static_cast<std::size_t>(options_.batch_size)) break;
    s->batches.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(b), order.begin() + static_cast<std::ptrdiff_t>(e));
  }
  ++epoch_;
  s->ahead = options_.prefetch;
  if (s->ahead > 0 && !s->batches.empty()) s->start();
  s->advance();
  return Iterator(s);
}

DataLoader::Iterator DataLoader::end() { return Iterator(); }

DataLoader::Iterator::Iterator(std::shared_ptr<State> state) : state_(std::move(state)) {}
bool DataLoader::Iterator::done() const { return !state_ || state_->finished; }
const std::vector<Tensor>& DataLoader::Iterator::operator*() const {
  XG_CHECK(!done(), "DataLoader: the iterator is past the last batch");
  return state_->current;
}
DataLoader::Iterator& DataLoader::Iterator::operator++() {
  XG_CHECK(!done(), "DataLoader: the iterator is past the last batch");
  state_->advance();
  return *this;
}

}  // namespace xg::data

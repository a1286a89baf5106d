// The tensor forms of the collectives, the in-process communicator over threads, and init().
#include "xgrad/distributed/communicator.hpp"

#include <xgrad/check.hpp>
#include <xgrad/kernel.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "internal.hpp"

namespace xg::distributed {

namespace {
void check_tensor(const char* op, const Tensor& t) {
  XG_CHECK(t.defined(), "{}: the tensor is undefined", op);
  XG_CHECK(t.is_contiguous(), "{}: the tensor (shape {}) is not contiguous", op, shape_str(t.shape()));
}
}  // namespace

void Communicator::all_reduce(const Tensor& t, ReduceOp op) {
  check_tensor("all_reduce", t);
  XG_CHECK(t.dtype() == DType::float32 || t.dtype() == DType::float64 || t.dtype() == DType::int64,
           "all_reduce: {} tensors are not supported (float32, float64 or int64)", dtype_name(t.dtype()));
  kernel::dispatch_all(t.dtype(), [&]<class T>() {
    all_reduce(kernel::write_ptr<T>(t), static_cast<std::size_t>(t.numel()), t.dtype(), op);
  });
}

void Communicator::broadcast(const Tensor& t, int root) {
  check_tensor("broadcast", t);
  XG_CHECK(root >= 0 && root < size(), "broadcast: root {} is not a rank of this job of {}", root, size());
  kernel::dispatch_all(t.dtype(), [&]<class T>() {
    broadcast(kernel::write_ptr<T>(t), static_cast<std::size_t>(t.numel()) * sizeof(T), root);
  });
}

Tensor Communicator::all_gather(const Tensor& t) {
  check_tensor("all_gather", t);
  Shape shape = t.shape();
  shape.insert(shape.begin(), size());
  Tensor out = empty(shape, {t.dtype()});
  kernel::dispatch_all(t.dtype(), [&]<class T>() {
    all_gather(kernel::ptr<T>(t), kernel::write_ptr<T>(out), static_cast<std::size_t>(t.numel()) * sizeof(T));
  });
  return out;
}

std::size_t dtype_bytes(DType dtype) {
  switch (dtype) {
    case DType::float32: return 4;
    case DType::float64: return 8;
    case DType::int64: return 8;
    default: fail("distributed: {} is not supported", dtype_name(dtype));
  }
}

void reduce_into(void* acc, const void* in, std::size_t count, DType dtype, ReduceOp op) {
  auto go = [&]<class T>() {
    T* a = static_cast<T*>(acc);
    const T* b = static_cast<const T*>(in);
    switch (op) {
      case ReduceOp::sum: for (std::size_t i = 0; i < count; ++i) a[i] += b[i]; break;
      case ReduceOp::max: for (std::size_t i = 0; i < count; ++i) a[i] = std::max(a[i], b[i]); break;
      case ReduceOp::min: for (std::size_t i = 0; i < count; ++i) a[i] = std::min(a[i], b[i]); break;
    }
  };
  switch (dtype) {
    case DType::float32: go.operator()<float>(); break;
    case DType::float64: go.operator()<double>(); break;
    case DType::int64: go.operator()<std::int64_t>(); break;
    default: fail("all_reduce: {} is not supported", dtype_name(dtype));
  }
}

// ---- threads ----

namespace {

/// What the ranks of one in-process job share: each collective posts every rank's buffers, then a
/// barrier, then each rank computes its own result (summing in rank order, so all agree bit for bit),
/// then a second barrier before anyone may change its input.
class ThreadGroup {
 public:
  ThreadGroup(int n, CommOptions o) : n_(n), options_(o), in_(static_cast<std::size_t>(n)), out_(in_.size()) {}

  int size() const { return n_; }
  const void*& in(int r) { return in_[static_cast<std::size_t>(r)]; }
  void*& out(int r) { return out_[static_cast<std::size_t>(r)]; }

  /// Waits until every rank has arrived; throws if a rank aborted or the wait outlasts the timeout.
  void arrive(int rank, const char* op) {
    std::unique_lock lock(mu_);
    check_aborted(rank);
    const std::uint64_t gen = generation_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(options_.timeout_seconds);
    while (generation_ == gen) {
      check_aborted(rank);
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && generation_ == gen) {
        abort_locked(fmt::format("rank {}: {} did not complete within {} s: another rank failed or stopped", rank, op,
                                 options_.timeout_seconds));
        check_aborted(rank);
      }
    }
  }

  void abort(const std::string& reason) {
    std::lock_guard lock(mu_);
    abort_locked(reason);
  }

 private:
  void abort_locked(const std::string& reason) {
    if (aborted_) return;
    aborted_ = true;
    reason_ = reason;
    cv_.notify_all();
  }
  void check_aborted(int rank) const {
    if (aborted_) fail("rank {}: the job was aborted: {}", rank, reason_);
  }

  int n_;
  CommOptions options_;
  std::vector<const void*> in_;
  std::vector<void*> out_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  std::uint64_t generation_ = 0;
  bool aborted_ = false;
  std::string reason_;
};

class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(std::shared_ptr<ThreadGroup> group, int rank) : g_(std::move(group)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return g_->size(); }
  std::string backend() const override { return "threads"; }
  using Communicator::all_gather;
  using Communicator::all_reduce;
  using Communicator::broadcast;

  void barrier() override { g_->arrive(rank_, "barrier"); }

  void all_reduce(void* data, std::size_t count, DType dtype, ReduceOp op) override {
    if (size() == 1) return;
    const std::size_t bytes = count * dtype_bytes(dtype);
    g_->in(rank_) = data;
    g_->arrive(rank_, "all_reduce");
    scratch_.resize(bytes);
    std::memcpy(scratch_.data(), g_->in(0), bytes);
    for (int r = 1; r < size(); ++r) reduce_into(scratch_.data(), g_->in(r), count, dtype, op);
    g_->arrive(rank_, "all_reduce");
    std::memcpy(data, scratch_.data(), bytes);
  }

  void broadcast(void* data, std::size_t bytes, int root) override {
    if (size() == 1) return;
    g_->in(rank_) = data;
    g_->arrive(rank_, "broadcast");
    if (rank_ != root) std::memcpy(data, g_->in(root), bytes);
    g_->arrive(rank_, "broadcast");
  }

  void all_gather(const void* in, void* out, std::size_t bytes) override {
    g_->in(rank_) = in;
    if (size() > 1) g_->arrive(rank_, "all_gather");
    for (int r = 0; r < size(); ++r)
      std::memcpy(static_cast<char*>(out) + static_cast<std::size_t>(r) * bytes, g_->in(r), bytes);
    if (size() > 1) g_->arrive(rank_, "all_gather");
  }

  void abort(const std::string& reason) override { g_->abort(reason); }

 private:
  std::shared_ptr<ThreadGroup> g_;
  int rank_;
  std::vector<char> scratch_;
};

}  // namespace

std::shared_ptr<Communicator> single_process_communicator(CommOptions options) {
  return std::make_shared<ThreadCommunicator>(std::make_shared<ThreadGroup>(1, options), 0);
}

void run_threads(int ranks, const std::function<void(Communicator&)>& fn, CommOptions options) {
  XG_CHECK(ranks >= 1 && ranks <= 1024, "run_threads: {} ranks; expected 1 to 1024", ranks);
  auto group = std::make_shared<ThreadGroup>(ranks, options);
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(ranks));
  std::vector<int> order;  // ranks in the order they failed: the first is the cause, the others followed
  std::mutex order_mu;
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      ThreadCommunicator comm(group, r);
      try {
        fn(comm);
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(r)] = std::current_exception();
        {
          std::lock_guard lock(order_mu);
          order.push_back(r);
        }
        group->abort(fmt::format("rank {} failed: {}", r, e.what()));
      }
    });
  for (auto& t : threads) t.join();
  if (!order.empty()) std::rethrow_exception(errors[static_cast<std::size_t>(order.front())]);
}

bool launched_by_mpirun() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(var)) return true;
  return false;
}

std::shared_ptr<Communicator> init(CommOptions options) {
  XG_CHECK(options.timeout_seconds > 0, "distributed::init: timeout_seconds must be > 0, got {}",
           options.timeout_seconds);
  static std::shared_ptr<Communicator> world;
  static std::mutex mu;
  std::lock_guard lock(mu);
  if (world) return world;
  if (launched_by_mpirun()) {
    XG_CHECK(has_mpi(), "this program was started by mpirun, but xgrad was built without MPI; install Open MPI "
             "(libopenmpi-dev) and rebuild");
    world = mpi_world(options);
  } else {
    world = single_process_communicator(options);
  }
  return world;
}

}  // namespace xg::distributed

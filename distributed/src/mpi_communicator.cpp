// The MPI backend: MPI_COMM_WORLD with a watchdog, since a collective waiting for a rank that stopped
// would otherwise wait forever.
#include <mpi.h>

#include <xgrad/check.hpp>

#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "internal.hpp"

namespace xg::distributed {

bool has_mpi() { return true; }

namespace {

MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::float32: return MPI_FLOAT;
    case DType::float64: return MPI_DOUBLE;
    default: return MPI_INT64_T;
  }
}
MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return MPI_SUM;
    case ReduceOp::max: return MPI_MAX;
    default: return MPI_MIN;
  }
}

/// Calls MPI in pieces of at most INT_MAX elements: MPI counts are int.
constexpr std::size_t kMaxCount = INT_MAX;

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(CommOptions o) : options_(o) {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    // Collectives may run on a communication thread, one thread at a time.
    if (provided < MPI_THREAD_SERIALIZED) {
      MPI_Finalize();
      fail("MPI provides thread level {}, but xgrad needs MPI_THREAD_SERIALIZED", provided);
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    watchdog_ = std::thread([this] { watch(); });
  }
  ~MpiCommunicator() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    watchdog_.join();
    MPI_Comm_free(&comm_);
    MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  using Communicator::all_gather;
  using Communicator::all_reduce;
  using Communicator::broadcast;

  void barrier() override {
    Watch w(*this, "barrier", 0);
    MPI_Barrier(comm_);
  }

  void all_reduce(void* data, std::size_t count, DType dtype, ReduceOp op) override {
    Watch w(*this, "all_reduce", count * dtype_bytes(dtype));
    const std::size_t elem = dtype_bytes(dtype);
    for (std::size_t done = 0; done < count;) {
      const std::size_t n = std::min(kMaxCount, count - done);
      MPI_Allreduce(MPI_IN_PLACE, static_cast<char*>(data) + done * elem, static_cast<int>(n), mpi_type(dtype),
                    mpi_op(op), comm_);
      done += n;
    }
  }

  void broadcast(void* data, std::size_t bytes, int root) override {
    Watch w(*this, "broadcast", bytes);
    for (std::size_t done = 0; done < bytes;) {
      const std::size_t n = std::min(kMaxCount, bytes - done);
      MPI_Bcast(static_cast<char*>(data) + done, static_cast<int>(n), MPI_BYTE, root, comm_);
      done += n;
    }
  }

  void all_gather(const void* in, void* out, std::size_t bytes) override {
    Watch w(*this, "all_gather", bytes * static_cast<std::size_t>(size_));
    XG_CHECK(bytes <= kMaxCount, "all_gather: {} bytes per rank; at most {} in one call", bytes, kMaxCount);
    MPI_Allgather(in, static_cast<int>(bytes), MPI_BYTE, out, static_cast<int>(bytes), MPI_BYTE, comm_);
  }

  [[noreturn]] void abort(const std::string& reason) override {
    std::fprintf(stderr, "rank %d: %s; ending all ranks\n", rank_, reason.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::_Exit(1);
  }

 private:
  /// Marks a collective as running for the watchdog.
  struct Watch {
    MpiCommunicator& c;
    Watch(MpiCommunicator& comm, const char* op, std::size_t bytes) : c(comm) {
      std::lock_guard lock(c.mu_);
      c.op_ = op;
      c.bytes_ = bytes;
      c.since_ = std::chrono::steady_clock::now();
      c.running_ = true;
    }
    ~Watch() {
      std::lock_guard lock(c.mu_);
      c.running_ = false;
    }
  };

  void watch() {
    std::unique_lock lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, std::chrono::milliseconds(200));
      if (!running_) continue;
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - since_).count();
      if (waited > options_.timeout_seconds)
        abort(fmt::format("{} of {} bytes did not complete within {} s: another rank failed or stopped "
                          "(set the limit with the timeout option, e.g. --dist-timeout)",
                          op_, bytes_, options_.timeout_seconds));
    }
  }

  CommOptions options_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::thread watchdog_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false, running_ = false;
  const char* op_ = "";
  std::size_t bytes_ = 0;
  std::chrono::steady_clock::time_point since_;
};

}  // namespace

std::shared_ptr<Communicator> mpi_world(CommOptions options) { return std::make_shared<MpiCommunicator>(options); }

}  // namespace xg::distributed

// xgrad::distributed: the processes (ranks) of one training job and the collectives between them.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "xgrad/tensor.hpp"

namespace xg::distributed {

enum class ReduceOp { sum, max, min };

/// Settings shared by every communicator.
struct CommOptions {
  /// A collective that has not completed after this many seconds ends the job with an error naming it
  /// (a rank failed or stopped); MPI itself would wait forever.
  double timeout_seconds = 600.0;
};

/// The ranks of one job and the collectives between them (like a torch.distributed process group).
/// Every rank must call the same collectives in the same order. Results are identical on every rank.
/// Tensors passed to collectives must be contiguous; all_reduce takes float32, float64 or int64.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// "mpi" or "threads".
  virtual std::string backend() const = 0;

  /// t = op over the ranks of t, in place.
  void all_reduce(const Tensor& t, ReduceOp op = ReduceOp::sum);
  /// Every rank's t becomes root's t (same shape and dtype on every rank).
  void broadcast(const Tensor& t, int root = 0);
  /// The ranks' tensors (same shape and dtype everywhere) stacked in rank order: [size, *t.shape].
  Tensor all_gather(const Tensor& t);
  virtual void barrier() = 0;

  /// The raw collectives the tensor forms call. Buffers may not overlap except all_reduce in place.
  virtual void all_reduce(void* data, std::size_t count, DType dtype, ReduceOp op) = 0;
  virtual void broadcast(void* data, std::size_t bytes, int root) = 0;
  virtual void all_gather(const void* in, void* out, std::size_t bytes_per_rank) = 0;

  /// Ends every rank of the job: MPI_Abort under MPI; with threads, every rank's next or current
  /// collective throws an Error carrying `reason`. For a rank that cannot go on.
  virtual void abort(const std::string& reason) = 0;
};

/// The communicator of this process: MPI's world when the program was started by mpirun (and xgrad was
/// built with MPI), else a job of one rank. MPI is initialised on the first call and finalised at exit.
std::shared_ptr<Communicator> init(CommOptions options = {});

/// Whether this build has the MPI backend.
bool has_mpi();

/// Runs fn(communicator) on `ranks` threads of this process, one per rank, and waits for them: the same
/// collectives as MPI without mpirun (tests, or trying distributed code on one machine). If a rank throws,
/// the others' collectives throw too, and the first rank's error is rethrown here.
void run_threads(int ranks, const std::function<void(Communicator&)>& fn, CommOptions options = {});

}  // namespace xg::distributed

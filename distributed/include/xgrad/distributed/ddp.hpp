// xgrad::distributed::DistributedDataParallel: the same model on every rank, gradients averaged.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "xgrad/distributed/communicator.hpp"
#include "xgrad/nn/module.hpp"

namespace xg::distributed {

struct DDPOptions {
  /// Gradients are averaged in flat buckets of about this many megabytes, filled in reverse registration
  /// order (roughly the order backward finishes them), each sent as soon as all its gradients are final.
  double bucket_cap_mb = 25.0;
  /// Parameters may get no gradient in a backward (then it is treated as zero on that rank, and a
  /// parameter no rank used keeps its .grad as it was). Without it, such a parameter is an error.
  bool find_unused_parameters = false;
  /// Reduce buckets on a communication thread while backward goes on (else in the backward thread).
  bool overlap_communication = true;
  /// Broadcast the module's buffers from rank 0 at construction, like its parameters.
  bool broadcast_buffers = true;
  /// After backward each .grad is a view of its slot in the bucket, so gradients are not kept twice (the
  /// next averaging backward overwrites it). Off: .grad gets its own copy, as PyTorch's default.
  bool gradient_as_bucket_view = true;
};

/// Data-parallel training as torch.nn.parallel.DistributedDataParallel: construction broadcasts rank 0's
/// parameters and buffers to every rank; during each backward, hooks on the parameters copy each final
/// gradient into its bucket and average full buckets across ranks; when backward returns, every .grad
/// holds the mean over ranks. Run forward on the wrapped module (or through forward()), backward and the
/// optimizer as usual. Every rank must run the same number of backwards.
///
///   auto comm = xg::distributed::init();
///   Net net;
///   xg::distributed::DistributedDataParallel ddp(net, comm);
///   xg::optim::AdamW opt(net.named_parameters());
///   ddp.forward(x).backward();   // gradients averaged across ranks here
///   opt.step();
class DistributedDataParallel {
 public:
  DistributedDataParallel(nn::Module& module, std::shared_ptr<Communicator> comm, DDPOptions options = {});
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  /// The wrapped module's forward (the hooks work whichever way the module is called).
  Tensor forward(const Tensor& x) { return module_.forward(x); }
  nn::Module& module() { return module_; }
  Communicator& communicator() { return *comm_; }

  /// Skips gradient averaging in its scope (like DDP.no_sync()): gradients accumulate locally, and the
  /// first backward after it averages the accumulated gradients.
  class NoSync {
   public:
    explicit NoSync(DistributedDataParallel& ddp);
    ~NoSync();
    NoSync(const NoSync&) = delete;
    NoSync& operator=(const NoSync&) = delete;

   private:
    DistributedDataParallel& ddp_;
    bool prev_;
  };
  NoSync no_sync() { return NoSync(*this); }

  /// The buckets as lists of parameter names, in the order they are reduced.
  std::vector<std::vector<std::string>> bucket_names() const;

 private:
  struct State;
  nn::Module& module_;
  std::shared_ptr<Communicator> comm_;
  std::unique_ptr<State> state_;
};

}  // namespace xg::distributed

// DistributedDataParallel: buckets, the post-accumulate-grad hooks that fill them, and the reduction.
#include "xgrad/distributed/ddp.hpp"

#include <xgrad/autograd.hpp>
#include <xgrad/check.hpp>
#include <xgrad/kernel.hpp>

#include <fmt/ranges.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "internal.hpp"

namespace xg::distributed {

namespace {

struct Param {
  std::string name;
  Tensor tensor;
  std::size_t bucket = 0;
  std::size_t offset = 0;  // in elements, within the bucket
  std::uint64_t hook = 0;
  bool ready = false;      // its gradient for this backward is in the bucket
};

struct Bucket {
  std::vector<std::size_t> params;  // indices into State::params
  Tensor flat;                      // the gradients, then their mean over ranks
  std::size_t pending = 0;          // parameters not yet ready in this backward
};

/// Runs bucket reductions on its own thread, in the order they are queued.
class CommThread {
 public:
  CommThread() : thread_([this] { loop(); }) {}
  ~CommThread() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void push(std::function<void()> job) {
    {
      std::lock_guard lock(mu_);
      jobs_.push_back(std::move(job));
      ++queued_;
    }
    cv_.notify_all();
  }
  /// Waits for every queued job; rethrows the first error.
  void wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return done_ == queued_; });
    if (error_) {
      auto e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
  }

 private:
  void loop() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
      if (jobs_.empty()) return;
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      std::exception_ptr err;
      try {
        if (!error_) job();  // after a failure the remaining jobs are dropped
      } catch (...) {
        err = std::current_exception();
      }
      lock.lock();
      if (err && !error_) error_ = err;
      ++done_;
      cv_.notify_all();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::size_t queued_ = 0, done_ = 0;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace

struct DistributedDataParallel::State {
  Communicator& comm;
  DDPOptions options;
  std::vector<Param> params;
  std::vector<Bucket> buckets;
  std::unordered_map<const TensorImpl*, std::size_t> index;
  std::unique_ptr<CommThread> thread;
  bool syncing = true;          // false inside no_sync()
  bool in_backward = false;     // a hook of this backward has run and queued finish()
  std::size_t next_launch = 0;  // buckets are reduced strictly in order, the same order on every rank

  State(Communicator& c, DDPOptions o) : comm(c), options(o) {}

  void on_gradient(std::size_t i) {
    if (!syncing) return;
    if (!in_backward) {
      in_backward = true;
      for (auto& b : buckets) b.pending = b.params.size();
      for (auto& p : params) p.ready = false;
      next_launch = 0;
      autograd::queue_callback([this] { finish(); });
    }
    Param& p = params[i];
    XG_CHECK(!p.ready,
             "DistributedDataParallel: parameter \"{}\" received a gradient twice in one backward (used both inside "
             "and outside a checkpointed block?); each parameter's gradient must be final once", p.name);
    p.ready = true;
    copy_in(p);
    --buckets[p.bucket].pending;
    launch_ready();
  }

  /// The parameter's slot in its bucket, shaped like the parameter.
  Tensor slot(const Param& p) const {
    return buckets[p.bucket].flat.narrow(0, static_cast<std::int64_t>(p.offset), p.tensor.numel()).reshape(p.tensor.shape());
  }

  void copy_in(const Param& p) {
    Tensor g = p.tensor.grad().contiguous();
    XG_CHECK(g.dtype() == p.tensor.dtype(), "DistributedDataParallel: the gradient of \"{}\" is {}, the parameter {}",
             p.name, dtype_name(g.dtype()), dtype_name(p.tensor.dtype()));
    Tensor dst = slot(p);
    kernel::dispatch_float(g.dtype(), "DistributedDataParallel", [&]<class T>() {
      if (kernel::ptr<T>(g) != kernel::ptr<T>(dst))  // already the slot: the gradient accumulated in place
        std::memcpy(kernel::write_ptr<T>(dst), kernel::ptr<T>(g), static_cast<std::size_t>(g.numel()) * sizeof(T));
    });
    // The gradient lives in the bucket from now on: the engine's buffer is freed, so gradients are not
    // held twice (PyTorch's gradient_as_bucket_view).
    if (options.gradient_as_bucket_view) p.tensor.set_grad(dst);
  }

  void launch_ready() {
    while (next_launch < buckets.size() && buckets[next_launch].pending == 0) launch(next_launch++);
  }

  void launch(std::size_t b) {
    auto job = [this, b] {
      Tensor& flat = buckets[b].flat;
      comm.all_reduce(flat);
      flat.mul_(1.0 / static_cast<double>(comm.size()));
    };
    if (thread) thread->push(job);
    else job();
  }

  /// End of backward: the buckets still open hold unused parameters; then every .grad gets the mean.
  void finish() {
    in_backward = false;
    std::vector<std::string> missing;
    for (auto& p : params)
      if (!p.ready) missing.push_back(p.name);
    std::vector<float> used;
    if (!missing.empty()) {
      if (!options.find_unused_parameters) {
        if (thread) thread->wait();
        fail("DistributedDataParallel: {} parameter{} got no gradient in this backward: {}. If parameters may go "
             "unused, construct with find_unused_parameters = true; every rank must reduce the same buckets",
             missing.size(), missing.size() == 1 ? "" : "s", fmt::join(missing, ", "));
      }
      for (auto& p : params)
        if (!p.ready) {
          fill_zero(p);
          --buckets[p.bucket].pending;
        }
    }
    if (options.find_unused_parameters) used = used_anywhere();
    launch_ready();
    if (thread) thread->wait();
    for (std::size_t i = 0; i < params.size(); ++i)
      if (used.empty() || used[i] > 0) copy_out(params[i]);
  }

  /// Which parameters got a gradient on any rank (one small all-reduce), so that a parameter no rank
  /// used keeps the .grad it had, as in PyTorch.
  std::vector<float> used_anywhere() {
    Tensor mask = zeros({static_cast<std::int64_t>(params.size())}, {DType::float32});
    float* m = kernel::write_ptr<float>(mask);
    for (std::size_t i = 0; i < params.size(); ++i) m[i] = params[i].ready ? 1.f : 0.f;
    launch_ready();  // keep the collective order: buckets already complete go first
    if (thread) thread->wait();
    comm.all_reduce(mask, ReduceOp::max);
    return mask.to_vector<float>();
  }

  void fill_zero(const Param& p) {
    kernel::dispatch_float(p.tensor.dtype(), "DistributedDataParallel", [&]<class T>() {
      std::fill_n(kernel::write_ptr<T>(buckets[p.bucket].flat) + p.offset, p.tensor.numel(), T(0));
    });
  }

  void copy_out(const Param& p) {
    Tensor src = slot(p);
    if (options.gradient_as_bucket_view) {
      p.tensor.set_grad(src);
      return;
    }
    Tensor g = p.tensor.grad();
    if (!g.defined() || !g.is_contiguous() || g.shape() != p.tensor.shape()) {
      g = zeros(p.tensor.shape(), {p.tensor.dtype()});
      p.tensor.set_grad(g);
    }
    kernel::dispatch_float(g.dtype(), "DistributedDataParallel", [&]<class T>() {
      std::memcpy(kernel::write_ptr<T>(g), kernel::ptr<T>(src), static_cast<std::size_t>(g.numel()) * sizeof(T));
    });
  }
};

namespace {

/// Checks that every rank wraps a model with the same parameters (count, sizes, dtypes, shapes).
void check_same_model(Communicator& comm, const std::vector<Param>& params) {
  std::uint64_t h = 1469598103934665603ull;
  auto mix = [&](std::uint64_t v) { h = (h ^ v) * 1099511628211ull; };
  std::int64_t elements = 0;
  for (const auto& p : params) {
    mix(static_cast<std::uint64_t>(p.tensor.dtype()));
    for (auto d : p.tensor.shape()) mix(static_cast<std::uint64_t>(d));
    mix(~0ull);
    elements += p.tensor.numel();
  }
  Tensor mine = index_tensor(std::vector<std::int64_t>{static_cast<std::int64_t>(params.size()), elements,
                                                     static_cast<std::int64_t>(h >> 1)});
  auto all = comm.all_gather(mine).to_vector<std::int64_t>();
  for (int r = 1; r < comm.size(); ++r)
    if (!std::equal(all.begin(), all.begin() + 3, all.begin() + 3 * r))
      fail("DistributedDataParallel: rank {} has {} parameters ({} elements) and rank 0 has {} ({} elements){}; every "
           "rank must build the same model", r, all[3 * static_cast<std::size_t>(r)], all[3 * static_cast<std::size_t>(r) + 1],
           all[0], all[1], all[3 * static_cast<std::size_t>(r)] == all[0] ? " with other shapes" : "");
}

}  // namespace

DistributedDataParallel::DistributedDataParallel(nn::Module& module, std::shared_ptr<Communicator> comm,
                                                 DDPOptions options)
    : module_(module), comm_(std::move(comm)) {
  XG_CHECK(comm_ != nullptr, "DistributedDataParallel: no communicator given");
  XG_CHECK(options.bucket_cap_mb > 0 && options.bucket_cap_mb <= 1e6,
           "DistributedDataParallel: bucket_cap_mb is {}; expected a size in (0, 1e6]", options.bucket_cap_mb);
  state_ = std::make_unique<State>(*comm_, options);
  State& s = *state_;
  for (auto& [name, p] : module.named_parameters()) {
    if (!p.requires_grad()) continue;
    XG_CHECK(p.is_contiguous(), "DistributedDataParallel: parameter \"{}\" is not contiguous", name);
    s.index.emplace(p.impl().get(), s.params.size());
    s.params.push_back({name, p});
  }
  check_same_model(*comm_, s.params);
  {
    autograd::NoGradGuard ng;
    for (auto& [name, p] : module.named_parameters()) comm_->broadcast(p, 0);
    if (options.broadcast_buffers)
      for (auto& [name, b] : module.named_buffers()) comm_->broadcast(b.contiguous(), 0);
  }
  // Buckets in reverse registration order, a new one when full or when the dtype changes.
  const double cap = options.bucket_cap_mb * 1024 * 1024;
  std::vector<std::size_t> sizes;
  for (std::size_t k = s.params.size(); k-- > 0;) {
    Param& p = s.params[k];
    const std::size_t bytes = static_cast<std::size_t>(p.tensor.numel()) * dtype_bytes(p.tensor.dtype());
    const bool fresh = s.buckets.empty() || sizes.back() + bytes > cap ||
                       s.params[s.buckets.back().params.front()].tensor.dtype() != p.tensor.dtype();
    if (fresh) {
      s.buckets.emplace_back();
      sizes.push_back(0);
    }
    p.bucket = s.buckets.size() - 1;
    p.offset = sizes.back() / dtype_bytes(p.tensor.dtype());
    sizes.back() += bytes;
    s.buckets.back().params.push_back(k);
  }
  for (std::size_t b = 0; b < s.buckets.size(); ++b) {
    const Tensor& first = s.params[s.buckets[b].params.front()].tensor;
    s.buckets[b].flat = zeros({static_cast<std::int64_t>(sizes[b] / dtype_bytes(first.dtype()))}, {first.dtype()});
  }
  if (options.overlap_communication && comm_->size() > 1) s.thread = std::make_unique<CommThread>();
  for (std::size_t i = 0; i < s.params.size(); ++i)
    s.params[i].hook = autograd::register_post_accumulate_grad_hook(
        s.params[i].tensor, [st = &s, i](const Tensor&) { st->on_gradient(i); });
}

DistributedDataParallel::~DistributedDataParallel() {
  for (auto& p : state_->params) autograd::remove_post_accumulate_grad_hook(p.tensor, p.hook);
}

std::vector<std::vector<std::string>> DistributedDataParallel::bucket_names() const {
  std::vector<std::vector<std::string>> out;
  for (const auto& b : state_->buckets) {
    out.emplace_back();
    for (auto i : b.params) out.back().push_back(state_->params[i].name);
  }
  return out;
}

DistributedDataParallel::NoSync::NoSync(DistributedDataParallel& ddp) : ddp_(ddp), prev_(ddp.state_->syncing) {
  ddp_.state_->syncing = false;
}
DistributedDataParallel::NoSync::~NoSync() { ddp_.state_->syncing = prev_; }

}  // namespace xg::distributed

// ZeroRedundancyOptimizer: each rank steps the wrapped optimizer on its shard of the flattened
// parameters, then the shards are all-gathered.
#include "xgrad/distributed/zero.hpp"

#include <xgrad/autograd.hpp>
#include <xgrad/check.hpp>
#include <xgrad/kernel.hpp>
#include <xgrad/ops.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "internal.hpp"

namespace xg::distributed {

namespace {

/// A run of one parameter's elements that falls in this rank's shard, as a leaf viewing its storage.
struct Piece {
  std::size_t param;
  std::int64_t offset, length;  // within the parameter's flat elements
  std::string name;             // the parameter's name, with [begin:end] when only part of it is here
  Tensor view;
};

/// State buffers a shard may hold, with the parameter's size. Others cannot be split and are refused.
const std::vector<std::string> kShardable = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer"};

/// Chunks of the all-gathers: bounded scratch memory whatever the model's size.
constexpr std::size_t kChunkBytes = std::size_t(16) << 20;

std::vector<optim::ParamGroup> resolve(std::vector<optim::ParamGroup> groups, const OptimizerFactory& make) {
  XG_CHECK(static_cast<bool>(make), "ZeroRedundancyOptimizer: no optimizer factory given");
  // The wrapped optimizer resolves the default lr and weight decay; it allocates no state until a step.
  std::unique_ptr<optim::Optimizer> probe = make(groups);
  XG_CHECK(probe && probe->groups().size() == groups.size(),
           "ZeroRedundancyOptimizer: the factory must return an optimizer over the groups it is given");
  for (std::size_t i = 0; i < groups.size(); ++i) {
    groups[i].lr = probe->lr(i);
    groups[i].weight_decay = probe->weight_decay(i);
  }
  return groups;
}

}  // namespace

struct ZeroRedundancyOptimizer::Impl {
  std::shared_ptr<Communicator> comm;
  std::vector<std::pair<std::string, Tensor>> params;  // in group order: the flat layout
  std::vector<std::int64_t> start;                     // flat offset of each parameter
  std::int64_t total = 0, shard = 0;
  DType dtype = DType::float32;
  std::vector<Piece> pieces;
  std::unique_ptr<optim::Optimizer> inner;

  std::int64_t my_begin() const { return comm->rank() * shard; }

  /// Copies flat elements [b, e) of the parameters to dst (zeros past the end).
  template <class T> void read_flat(std::int64_t b, std::int64_t e, T* dst) const {
    std::fill_n(dst, e - b, T(0));
    for_overlaps(b, e, [&](std::size_t i, std::int64_t lo, std::int64_t hi) {
      std::memcpy(dst + (lo - b), kernel::ptr<T>(params[i].second) + (lo - start[i]), (hi - lo) * sizeof(T));
    });
  }
  template <class T> void write_flat(std::int64_t b, std::int64_t e, const T* src) const {
    for_overlaps(b, e, [&](std::size_t i, std::int64_t lo, std::int64_t hi) {
      std::memcpy(kernel::write_ptr<T>(params[i].second) + (lo - start[i]), src + (lo - b), (hi - lo) * sizeof(T));
    });
  }
  template <class F> void for_overlaps(std::int64_t b, std::int64_t e, F&& f) const {
    auto it = std::upper_bound(start.begin(), start.end(), b);
    for (auto i = static_cast<std::size_t>(std::max<std::ptrdiff_t>(0, it - start.begin() - 1)); i < params.size(); ++i) {
      const std::int64_t lo = std::max(b, start[i]), hi = std::min(e, start[i] + params[i].second.numel());
      if (start[i] >= e) break;
      if (lo < hi) f(i, lo, hi);
    }
  }

  /// Every rank's shard [q*shard + k, q*shard + k + len) for k in chunks: `mine(k, len, buf)` fills this
  /// rank's part, `put(q, k, len, data)` receives rank q's.
  template <class T, class Mine, class Put> void gather_shards(Mine&& mine, Put&& put) const {
    const std::int64_t ranks = comm->size();
    const std::int64_t chunk =
        std::max<std::int64_t>(1, std::min<std::int64_t>(shard, static_cast<std::int64_t>(kChunkBytes / sizeof(T)) / ranks));
    std::vector<T> send(static_cast<std::size_t>(chunk)), recv(static_cast<std::size_t>(chunk * ranks));
    for (std::int64_t k = 0; k < shard; k += chunk) {
      const std::int64_t len = std::min(chunk, shard - k);
      mine(k, len, send.data());
      comm->all_gather(send.data(), recv.data(), static_cast<std::size_t>(len) * sizeof(T));
      for (std::int64_t q = 0; q < ranks; ++q) put(q, k, len, recv.data() + q * len);
    }
  }
};

ZeroRedundancyOptimizer::ZeroRedundancyOptimizer(std::vector<optim::ParamGroup> groups,
                                                 std::shared_ptr<Communicator> comm, const OptimizerFactory& make)
    : optim::Optimizer("ZeroRedundancyOptimizer", resolve(std::move(groups), make), 0.0, 0.0),
      impl_(std::make_unique<Impl>()) {
  XG_CHECK(comm != nullptr, "ZeroRedundancyOptimizer: no communicator given");
  Impl& m = *impl_;
  m.comm = std::move(comm);
  for (const auto& g : this->groups())
    for (const auto& [name, p] : g.params) {
      if (m.params.empty()) m.dtype = p.dtype();
      XG_CHECK(p.dtype() == m.dtype, "ZeroRedundancyOptimizer: parameter \"{}\" is {} but the others are {}; the "
               "shards are cut from one flat buffer of one dtype", name, dtype_name(p.dtype()), dtype_name(m.dtype));
      m.start.push_back(m.total);
      m.params.emplace_back(name, p);
      m.total += p.numel();
    }
  const std::int64_t ranks = m.comm->size();
  m.shard = (m.total + ranks - 1) / ranks;
  // This rank's pieces, grouped like the parameters they come from, for the wrapped optimizer.
  std::vector<optim::ParamGroup> mine;
  std::size_t index = 0;
  for (const auto& g : this->groups()) {
    optim::ParamGroup pg;
    pg.lr = g.lr;
    pg.weight_decay = g.weight_decay;
    for (std::size_t j = 0; j < g.params.size(); ++j, ++index) {
      const Tensor& p = m.params[index].second;
      const std::int64_t lo = std::max(m.start[index], m.my_begin());
      const std::int64_t hi = std::min(m.start[index] + p.numel(), m.my_begin() + m.shard);
      if (lo >= hi) continue;
      Piece piece{index, lo - m.start[index], hi - lo, m.params[index].first, {}};
      if (piece.length != p.numel()) piece.name += fmt::format("[{}:{}]", piece.offset, piece.offset + piece.length);
      piece.view = p.detach().reshape({p.numel()}).narrow(0, piece.offset, piece.length);
      piece.view.requires_grad_(true);
      pg.params.emplace_back(piece.name, piece.view);
      m.pieces.push_back(std::move(piece));
    }
    mine.push_back(std::move(pg));
  }
  // A model smaller than one element per rank leaves some ranks no shard: their optimizer holds one empty
  // view (it never gets a gradient, so it never keeps state), as optimizers refuse an empty parameter list.
  bool empty = true;
  for (const auto& pg : mine) empty = empty && pg.params.empty();
  if (empty && !mine.empty() && !m.params.empty()) {
    Tensor none = m.params.front().second.detach().reshape({m.params.front().second.numel()}).narrow(0, 0, 0);
    mine.front().params.emplace_back("(empty shard)", none.requires_grad_(true));
  }
  m.inner = make(std::move(mine));
}

ZeroRedundancyOptimizer::~ZeroRedundancyOptimizer() = default;

std::int64_t ZeroRedundancyOptimizer::shard_numel() const {
  std::int64_t n = 0;
  for (const auto& p : impl_->pieces) n += p.length;
  return n;
}

void ZeroRedundancyOptimizer::step(double grad_scale) {
  check_grad_scale(grad_scale);
  Impl& m = *impl_;
  autograd::NoGradGuard ng;
  for (std::size_t i = 0; i < groups().size(); ++i) {
    m.inner->set_lr(i, lr(i));
    m.inner->set_weight_decay(i, weight_decay(i));
  }
  for (auto& piece : m.pieces) {
    Tensor g = m.params[piece.param].second.grad();
    piece.view.set_grad(g.defined() ? g.contiguous().reshape({g.numel()}).narrow(0, piece.offset, piece.length)
                                    : Tensor());
  }
  m.inner->step(grad_scale);
  for (auto& piece : m.pieces) piece.view.set_grad(Tensor());
  kernel::dispatch_float(m.dtype, "ZeroRedundancyOptimizer", [&]<class T>() {
    m.gather_shards<T>(
        [&](std::int64_t k, std::int64_t len, T* buf) { m.read_flat(m.my_begin() + k, m.my_begin() + k + len, buf); },
        [&](std::int64_t q, std::int64_t k, std::int64_t len, const T* data) {
          if (q == m.comm->rank()) return;
          const std::int64_t b = q * m.shard + k;
          m.write_flat(b, std::min(b + len, m.total), data);
        });
  });
}

StateDict ZeroRedundancyOptimizer::state_dict() const {
  const Impl& m = *impl_;
  const StateDict local = m.inner->state_dict();
  std::map<std::string, std::size_t> piece_of;
  for (std::size_t i = 0; i < m.pieces.size(); ++i) piece_of[m.pieces[i].name] = i;
  // Which buffers exist on any rank, and each parameter's step count (the same in each of its pieces).
  Tensor present = zeros({static_cast<std::int64_t>(kShardable.size())}, {DType::int64});
  Tensor steps = zeros({static_cast<std::int64_t>(m.params.size())}, {DType::int64});
  std::map<std::string, std::vector<Tensor>> buffers;  // key -> per piece
  for (const auto& [key, t] : local) {
    if (key.rfind("group.", 0) == 0) continue;
    const auto dot = key.find_last_of('.');
    const std::string owner = key.substr(0, dot), what = key.substr(dot + 1);
    auto it = piece_of.find(owner);
    XG_CHECK(it != piece_of.end(), "ZeroRedundancyOptimizer: unexpected state \"{}\"", key);
    if (what == "step") {
      kernel::write_ptr<std::int64_t>(steps)[m.pieces[it->second].param] = static_cast<std::int64_t>(t.item());
      continue;
    }
    auto k = std::find(kShardable.begin(), kShardable.end(), what);
    XG_CHECK(k != kShardable.end(), "ZeroRedundancyOptimizer: the wrapped optimizer keeps \"{}\", which cannot be "
             "sharded (known: exp_avg, exp_avg_sq, max_exp_avg_sq, momentum_buffer)", what);
    kernel::write_ptr<std::int64_t>(present)[k - kShardable.begin()] = 1;
    auto& v = buffers[what];
    v.resize(m.pieces.size());
    v[it->second] = t;
  }
  m.comm->all_reduce(present, ReduceOp::max);
  m.comm->all_reduce(steps, ReduceOp::max);
  const auto step_of = steps.to_vector<std::int64_t>();
  StateDict out;
  for (std::size_t i = 0; i < groups().size(); ++i) {
    out.emplace_back(fmt::format("group.{}.lr", i), scalar_tensor(lr(i), DType::float64));
    out.emplace_back(fmt::format("group.{}.weight_decay", i), scalar_tensor(weight_decay(i), DType::float64));
  }
  for (std::size_t i = 0; i < m.params.size(); ++i)
    if (step_of[i] > 0)
      out.emplace_back(m.params[i].first + ".step", scalar_tensor(static_cast<double>(step_of[i]), DType::float64));
  const auto have = present.to_vector<std::int64_t>();
  for (std::size_t k = 0; k < kShardable.size(); ++k) {
    if (!have[k]) continue;
    const auto& mine = buffers[kShardable[k]];
    kernel::dispatch_float(m.dtype, "ZeroRedundancyOptimizer", [&]<class T>() {
      std::vector<T> full(static_cast<std::size_t>(m.shard * m.comm->size()));
      m.gather_shards<T>(
          [&](std::int64_t off, std::int64_t len, T* buf) {
            std::fill_n(buf, len, T(0));
            for (std::size_t p = 0; p < m.pieces.size(); ++p) {
              if (mine.size() <= p || !mine[p].defined()) continue;
              const Piece& piece = m.pieces[p];
              const std::int64_t b = m.start[piece.param] + piece.offset - m.my_begin();  // within the shard
              const std::int64_t lo = std::max(b, off), hi = std::min(b + piece.length, off + len);
              if (lo < hi) std::memcpy(buf + (lo - off), kernel::ptr<T>(mine[p].contiguous()) + (lo - b), (hi - lo) * sizeof(T));
            }
          },
          [&](std::int64_t q, std::int64_t off, std::int64_t len, const T* data) {
            std::memcpy(full.data() + q * m.shard + off, data, static_cast<std::size_t>(len) * sizeof(T));
          });
      for (std::size_t i = 0; i < m.params.size(); ++i) {
        if (step_of[i] == 0) continue;
        const Tensor& p = m.params[i].second;
        Tensor t = empty(p.shape(), {m.dtype});
        std::memcpy(kernel::write_ptr<T>(t), full.data() + m.start[i], static_cast<std::size_t>(p.numel()) * sizeof(T));
        out.emplace_back(m.params[i].first + "." + kShardable[k], t);
      }
    });
  }
  return out;
}

void ZeroRedundancyOptimizer::load_state_dict(const StateDict& state) {
  Impl& m = *impl_;
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < m.params.size(); ++i) index[m.params[i].first] = i;
  // Read and check everything against the whole parameters first; the pieces are cut from it after.
  StateDict groups_only, pieces;
  std::map<std::size_t, std::vector<std::pair<std::string, Tensor>>> per_param;
  for (const auto& [key, t] : state) {
    if (key.rfind("group.", 0) == 0) {
      groups_only.emplace_back(key, t);
      pieces.emplace_back(key, t);
      continue;
    }
    const auto dot = key.find_last_of('.');
    const std::string param = dot == std::string::npos ? key : key.substr(0, dot);
    const std::string what = dot == std::string::npos ? "" : key.substr(dot + 1);
    auto it = index.find(param);
    XG_CHECK(it != index.end(), "ZeroRedundancyOptimizer: load_state_dict: state for unknown parameter \"{}\"", param);
    const Tensor& p = m.params[it->second].second;
    if (what == "step") {
      const double step = optim::state_scalar("ZeroRedundancyOptimizer", key, t);
      XG_CHECK(step >= 1 && step <= 0x1p53 && step == std::floor(step),
               "ZeroRedundancyOptimizer: load_state_dict: {} is {}, not a step count (a whole number >= 1)", key, step);
    } else {
      XG_CHECK(is_floating(t.dtype()) && t.shape() == p.shape(),
               "ZeroRedundancyOptimizer: load_state_dict: {} is {} {}, but the parameter is {} {}", key,
               dtype_name(t.dtype()), shape_str(t.shape()), dtype_name(p.dtype()), shape_str(p.shape()));
    }
    per_param[it->second].emplace_back(what, t);
  }
  for (const auto& piece : m.pieces) {
    auto it = per_param.find(piece.param);
    if (it == per_param.end()) continue;
    for (const auto& [what, t] : it->second) {
      if (what == "step") {
        pieces.emplace_back(piece.name + ".step", t);
        continue;
      }
      Tensor flat = t.to(m.dtype).contiguous().reshape({t.numel()}).narrow(0, piece.offset, piece.length);
      pieces.emplace_back(piece.name + "." + what, flat.contiguous());
    }
  }
  // The wrapped optimizer checks its part completely before changing anything, and so does the base.
  m.inner->load_state_dict(pieces);
  optim::Optimizer::load_state_dict(groups_only);
}

}  // namespace xg::distributed

// The graph and the engine: grad mode, recording nodes, saved tensors, backward and grad.
#include <algorithm>
#include <atomic>
#include <functional>
#include <cctype>
#include <climits>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "internal.hpp"

namespace xg::autograd {
using namespace xg::kernel;
struct Engine;

namespace {
thread_local bool grad_enabled = true;
thread_local const Node* running_node = nullptr;  // names the op in errors raised inside a backward rule
thread_local Engine* running_engine = nullptr;     // the engine running that rule (accumulate_into_grad)

// Nodes are freed through an explicit work list so that tearing down a chain of 100,000 ops does not
// recurse 100,000 destructors deep. Both thread-locals are trivially destructible on purpose: a graph
// held by a static object may be freed after the thread's other thread-locals are gone.
struct DeleteQueue {
  std::vector<std::shared_ptr<Node>> nodes;
  std::vector<BackwardFn> fns;
  std::vector<std::shared_ptr<TensorImpl>> impls;
};
thread_local DeleteQueue* delete_queue = nullptr;

std::string node_name(std::string_view op) {
  std::string out;
  bool upper = true;
  for (char c : op) {
    if (c == '_') {
      upper = true;
      continue;
    }
    out += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
    upper = false;
  }
  return out + "Backward";
}
}  // namespace

bool is_grad_enabled() { return grad_enabled; }
void set_grad_enabled(bool enabled) { grad_enabled = enabled; }

namespace {
thread_local bool fused_backward_allowed = true;
thread_local int grad_calls = 0;  // autograd::grad calls running on this thread
}
bool is_computing_grad() { return grad_calls > 0; }
bool use_fused_backward() { return fused_backward_allowed && !grad_enabled; }
CompositeBackwardGuard::CompositeBackwardGuard() : prev_(fused_backward_allowed) { fused_backward_allowed = false; }
CompositeBackwardGuard::~CompositeBackwardGuard() { fused_backward_allowed = prev_; }

Node::Node(std::string name, std::vector<Edge> inputs, BackwardFn fn)
    : name_(std::move(name)), inputs_(std::move(inputs)), fn_(std::move(fn)) {}

Node::~Node() {
  DeleteQueue local;
  DeleteQueue* q = delete_queue ? delete_queue : &local;
  for (auto& e : inputs_)
    if (e.node) q->nodes.push_back(std::move(e.node));
  if (fn_) q->fns.push_back(std::move(fn_));
  if (leaf_) q->impls.push_back(std::move(leaf_));
  if (delete_queue) return;  // an outer destructor is draining the queue
  delete_queue = &local;
  while (!local.nodes.empty() || !local.fns.empty() || !local.impls.empty()) {
    if (!local.fns.empty()) {
      BackwardFn f = std::move(local.fns.back());
      local.fns.pop_back();
    } else if (!local.impls.empty()) {
      std::shared_ptr<TensorImpl> i = std::move(local.impls.back());
      local.impls.pop_back();
    } else {
      std::shared_ptr<Node> n = std::move(local.nodes.back());
      local.nodes.pop_back();
    }
  }
  delete_queue = nullptr;
}

bool needs_grad(std::span<const Tensor> inputs) {
  if (!grad_enabled) return false;
  for (const auto& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

namespace {
/// Leaves may be shared by graphs that run backward on several threads: their .grad and their
/// accumulator node are changed under a lock (striped by leaf, so unrelated leaves do not contend).
std::mutex& leaf_mutex(const TensorImpl* leaf) {
  static std::mutex stripes[64];
  return stripes[(reinterpret_cast<std::uintptr_t>(leaf) >> 6) % 64];
}
}  // namespace

std::uint64_t register_post_accumulate_grad_hook(const Tensor& leaf, PostAccumulateGradHook hook) {
  XG_CHECK(leaf.defined() && leaf.is_leaf() && leaf.requires_grad(),
           "register_post_accumulate_grad_hook: the tensor is not a leaf that requires grad");
  XG_CHECK(static_cast<bool>(hook), "register_post_accumulate_grad_hook: the hook is empty");
  static std::atomic<std::uint64_t> next_id{1};
  const std::uint64_t id = next_id++;
  auto& impl = *leaf.impl();
  std::lock_guard lock(leaf_mutex(&impl));
  // Copy on write: a backward running hooks on another thread keeps the list it took.
  auto hooks = impl.hooks ? std::make_shared<LeafHooks>(*impl.hooks) : std::make_shared<LeafHooks>();
  hooks->hooks.emplace_back(id, std::move(hook));
  impl.hooks = std::move(hooks);
  return id;
}

void remove_post_accumulate_grad_hook(const Tensor& leaf, std::uint64_t id) {
  if (!leaf.defined()) return;
  auto& impl = *leaf.impl();
  std::lock_guard lock(leaf_mutex(&impl));
  if (!impl.hooks) return;
  auto hooks = std::make_shared<LeafHooks>(*impl.hooks);
  std::erase_if(hooks->hooks, [id](const auto& h) { return h.first == id; });
  impl.hooks = hooks->hooks.empty() ? nullptr : std::move(hooks);
}

namespace {
thread_local int backward_depth = 0;  // backward() calls running on this thread (nested by checkpointing)
thread_local std::vector<std::function<void()>>* pending_callbacks = nullptr;
}  // namespace

void queue_callback(std::function<void()> fn) {
  XG_CHECK(backward_depth > 0 && pending_callbacks, "queue_callback: no backward is running on this thread");
  pending_callbacks->push_back(std::move(fn));
}

std::shared_ptr<Node> grad_accumulator(const Tensor& leaf) {
  auto& impl = leaf.impl();
  XG_CHECK(impl && !impl->grad_fn && impl->requires_grad, "grad_accumulator: tensor is not a leaf that requires grad");
  std::lock_guard lock(leaf_mutex(impl.get()));
  if (auto n = impl->grad_accumulator.lock()) return n;
  auto n = std::make_shared<Node>("AccumulateGrad", std::vector<Edge>{}, nullptr);
  n->leaf_ = impl;
  impl->grad_accumulator = n;
  return n;
}

Tensor record_node(std::string_view name, std::span<const Tensor> inputs, Tensor result, BackwardFn backward) {
  if (!is_floating(result.dtype())) return result;  // int64 results carry no gradient
  std::vector<Edge> edges(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& in = inputs[i];
    if (!in.defined()) continue;
    edges[i].shape = in.shape();
    edges[i].dtype = in.dtype();
    if (!in.requires_grad()) continue;
    edges[i].node = in.grad_fn() ? in.grad_fn() : grad_accumulator(in);
    // An op may hand back one of its inputs unchanged; give the output its own identity.
    if (result.is_same(in)) result = result.detach();
  }
  if (result.impl()->grad_fn || result.impl()->requires_grad) result = result.detach();
  std::pair<std::string, int> origin;
  if (is_anomaly_enabled()) {
    origin = origin_of(inputs);
    check_forward(name, inputs, result, origin.first);
  }
  result.impl()->grad_fn = std::make_shared<Node>(node_name(name), std::move(edges), std::move(backward));
  result.impl()->grad_fn->origin_ = std::move(origin.first);
  result.impl()->grad_fn->origin_distance_ = origin.second;
  return result;
}

Saved::Saved(const Tensor& t) : t_(t), version_(t.defined() ? t.version() : 0) {}
Saved Saved::output(const Tensor& t) {
  // Holding the output itself would make its node own a handle to itself: a reference cycle.
  return Saved(t.detach());
}
const Tensor& Saved::get() const {
  if (t_.defined() && t_.version() != version_) {
    fail("{}: a tensor saved for backward (shape {}{}) was modified by an in-place operation: it was saved at "
         "version {} and is now at version {}. Hint: clone() the tensor before modifying it, or modify it only "
         "after backward()",
         running_node ? running_node->name() : std::string("backward"), shape_str(t_.shape()),
         t_.name().empty() ? "" : ", name \"" + t_.name() + "\"", version_, t_.version());
  }
  return t_;
}

/// What one backward or grad call asks of the engine.
struct RunOptions {
  bool keep_graph = false;    // keep the backward rules (and what they saved) for another backward
  bool create_graph = false;  // record the backward itself, for higher-order gradients
  const std::vector<Tensor>* inputs = nullptr;  // grad(): return these tensors' gradients instead of accumulating
  bool allow_unused = false;  // grad(): an input the outputs do not depend on gets an undefined gradient
};

/// One backward pass: find the nodes that lead to the roots, count how many edges enter each, then run
/// each node's rule once all of its output gradient has arrived (dependency counting, no recursion).
struct Engine {
  struct Task {
    int deps = 0;  // edges from nodes not yet run
    Tensor grad;   // the gradient of the node's output, summed over those edges
  };

  explicit Engine(RunOptions o) : opt(o), op(o.inputs ? "grad" : "backward") {}

  std::vector<Tensor> run(const std::vector<Tensor>& outputs, const std::vector<Tensor>& grad_outputs) {
    std::vector<Tensor> root_grads = seed_roots(outputs, grad_outputs);
    count_dependencies();
    if (opt.inputs) mark_captures();
    GradModeGuard mode(opt.create_graph);
    for (std::size_t i = 0; i < roots.size(); ++i) accumulate(tasks[roots[i].get()].grad, root_grads[i]);
    execute();
    if (opt.inputs && !opt.allow_unused) check_all_captured();
    return std::move(captured);
  }

 private:
  RunOptions opt;
  std::string_view op;
  std::unordered_map<Node*, Task> tasks;
  std::vector<std::shared_ptr<Node>> roots;
  std::unordered_map<Node*, std::vector<std::size_t>> capture_at;  // grad(): node -> indices of inputs
  std::vector<Tensor> captured;

  /// Checks the outputs and their gradients (ones for one-element outputs), and collects their nodes.
  std::vector<Tensor> seed_roots(const std::vector<Tensor>& outputs, const std::vector<Tensor>& grad_outputs) {
    XG_CHECK(!outputs.empty(), "{}: no outputs given", op);
    XG_CHECK(grad_outputs.empty() || grad_outputs.size() == outputs.size(),
             "{}: got {} outputs but {} gradients; give one gradient per output", op, outputs.size(), grad_outputs.size());
    std::vector<Tensor> root_grads;
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      const Tensor& out = outputs[i];
      XG_CHECK(out.defined(), "{}: output {} is an undefined tensor", op, i);
      XG_CHECK(out.requires_grad(),
               "{}: output {} (shape {}) does not require grad and has no grad_fn. Hint: call requires_grad_() on the "
               "leaves, and do not compute the output under NoGradGuard",
               op, i, shape_str(out.shape()));
      Tensor g = grad_outputs.empty() ? Tensor() : grad_outputs[i];
      if (!g.defined()) {
        XG_CHECK(out.numel() == 1,
                 "{}: the gradient can be created implicitly only for one-element outputs, but output {} has shape {}. "
                 "Hint: pass a gradient of the same shape, e.g. y.backward(xg::ones_like(y))",
                 op, i, shape_str(out.shape()));
        g = ones(out.shape(), {out.dtype()});
      }
      XG_CHECK(g.shape() == out.shape() && g.dtype() == out.dtype(),
               "{}: gradient {} {} does not match output {} {} {}", op, dtype_name(g.dtype()), shape_str(g.shape()), i,
               dtype_name(out.dtype()), shape_str(out.shape()));
      roots.push_back(out.grad_fn() ? out.grad_fn() : grad_accumulator(out));
      root_grads.push_back(g);
    }
    return root_grads;
  }

  /// Discovers the graph below the roots and counts, for each node, the edges that lead into it.
  void count_dependencies() {
    std::vector<Node*> stack;
    for (auto& r : roots)
      if (tasks.try_emplace(r.get()).second) stack.push_back(r.get());
    while (!stack.empty()) {
      Node* n = stack.back();
      stack.pop_back();
      for (auto& e : n->inputs_) {
        if (!e.node) continue;
        auto [it, fresh] = tasks.try_emplace(e.node.get());
        ++it->second.deps;
        if (fresh) stack.push_back(e.node.get());
      }
    }
  }

  /// grad(): the nodes whose output gradient is one of the requested inputs' gradients.
  void mark_captures() {
    const std::vector<Tensor>& inputs = *opt.inputs;
    captured.assign(inputs.size(), Tensor());
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      const Tensor& in = inputs[i];
      XG_CHECK(in.defined() && in.requires_grad(), "grad: input {} (shape {}) does not require grad", i,
               in.defined() ? shape_str(in.shape()) : std::string("undefined"));
      Node* n = in.grad_fn() ? in.grad_fn().get() : in.impl()->grad_accumulator.lock().get();
      if (n && tasks.count(n)) capture_at[n].push_back(i);
    }
  }

  void execute() {
    std::vector<Node*> ready;
    for (auto& r : roots)
      if (tasks[r.get()].deps == 0 && std::find(ready.begin(), ready.end(), r.get()) == ready.end())
        ready.push_back(r.get());
    while (!ready.empty()) {
      Node* n = ready.back();
      ready.pop_back();
      Tensor g = std::move(tasks[n].grad);
      deliver(n, g);
      if (n->leaf_) {
        if (!opt.inputs && g.defined()) {
          accumulate_leaf(*n->leaf_, std::move(g), opt.create_graph);
          run_hooks(n->leaf_);
        }
        continue;
      }
      if (g.defined()) apply_rule(n, g);
      if (!opt.keep_graph && !n->released_) {
        n->released_ = true;
        BackwardFn drop = std::move(n->fn_);
        n->fn_ = nullptr;
      }
      for (auto& e : n->inputs_)
        if (e.node && --tasks[e.node.get()].deps == 0) ready.push_back(e.node.get());
    }
  }

  /// Hands a node's finished output gradient to grad()'s results, or to a tensor that asked retain_grad().
  void deliver(Node* n, const Tensor& g) {
    if (opt.inputs) {
      auto it = capture_at.find(n);
      if (it != capture_at.end())
        for (auto idx : it->second) captured[idx] = g;
    } else if (auto kept = n->retained_.lock(); kept && g.defined()) {
      Tensor keep = opt.create_graph ? g : g.detach();
      kept->grad = kept->grad ? add(Tensor(kept->grad), keep).impl() : keep.clone().impl();
    }
  }

  /// Runs a node's backward rule and adds each input's gradient to that input's task.
  void apply_rule(Node* n, const Tensor& g) {
    XG_CHECK(!n->released_,
             "{}: trying to backward through the graph a second time (through {}), but its saved tensors were "
             "freed after the first backward. Hint: pass retain_graph=true to the first backward",
             op, n->name_);
    std::vector<Tensor> in_grads;
    {
      // Restored on the way out, also when a rule runs a backward of its own (checkpointing).
      struct Running {
        const Node* node = running_node;
        Engine* engine = running_engine;
        ~Running() {
          running_node = node;
          running_engine = engine;
        }
      } restore;
      running_node = n;
      running_engine = this;
      in_grads = n->fn_(g);
    }
    XG_CHECK(in_grads.size() == n->inputs_.size(), "{}: the backward rule returned {} gradients for {} inputs",
             n->name_, in_grads.size(), n->inputs_.size());
    for (std::size_t i = 0; i < in_grads.size(); ++i) {
      const Edge& e = n->inputs_[i];
      if (!e.node || !in_grads[i].defined()) continue;
      const Tensor& gi = in_grads[i];
      XG_CHECK(gi.shape() == e.shape && gi.dtype() == e.dtype,
               "{}: the backward rule returned a gradient of {} {} for input {} of {} {}", n->name_,
               dtype_name(gi.dtype()), shape_str(gi.shape()), i, dtype_name(e.dtype), shape_str(e.shape));
      if (is_anomaly_enabled() && first_non_finite(gi) >= 0)
        fail("anomaly: {} (near {}) returned a non-finite gradient for input {} ({}), from a{} output gradient", n->name_,
             n->origin_.empty() ? "unnamed tensors" : n->origin_, i, describe(gi),
             first_non_finite(g) >= 0 ? " non-finite" : " finite");
      accumulate(tasks[e.node.get()].grad, gi);
    }
  }

  void check_all_captured() const {
    for (std::size_t i = 0; i < captured.size(); ++i)
      XG_CHECK(captured[i].defined(),
               "grad: input {} (shape {}) was not used to compute the outputs. Hint: pass allow_unused=true to get "
               "an undefined gradient for it",
               i, shape_str((*opt.inputs)[i].shape()));
  }

  /// slot += g. Without create_graph, a buffer that nothing else refers to is updated in place, which
  /// saves a full-size temporary per extra use of a tensor (tied embeddings, residual streams).
  static void accumulate(Tensor& slot, const Tensor& g) {
    if (!slot.defined()) {
      slot = g;
    } else if (!is_grad_enabled() && slot.impl().use_count() == 1 && slot.impl()->storage.use_count() == 1 &&
               slot.is_contiguous() && slot.shape() == g.shape() && slot.dtype() == g.dtype()) {
      slot.add_(g);
    } else {
      slot = add(slot, g);
    }
  }

  friend bool accumulate_into_grad(std::size_t, const std::function<void(const Tensor&)>&);
  /// accumulate_into_grad for input `input` of the node whose rule is running.
  bool add_into_leaf_grad(const Node& n, std::size_t input, const std::function<void(const Tensor&)>& add) {
    if (opt.create_graph || is_anomaly_enabled() || input >= n.inputs_.size()) return false;
    const Edge& e = n.inputs_[input];
    if (!e.node) return false;
    auto it = tasks.find(e.node.get());
    if (it == tasks.end()) return false;
    auto fits = [&](const Tensor& t) { return t.is_contiguous() && t.shape() == e.shape && t.dtype() == e.dtype; };
    if (Tensor& slot = it->second.grad; slot.defined()) {
      // The sum of this backward so far: changed in place only if nothing else refers to it (a rule may
      // have passed one gradient to several inputs), as accumulate() does.
      if (slot.impl().use_count() != 1 || slot.impl()->storage.use_count() != 1 || !fits(slot)) return false;
      add(slot);
      ++slot.impl()->storage->version;
      return true;
    }
    if (opt.inputs || !e.node->leaf_) return false;  // autograd::grad leaves .grad alone
    TensorImpl& leaf = *e.node->leaf_;
    std::lock_guard lock(leaf_mutex(&leaf));
    // Hooks must see the finished sum. The buffer is changed in place as accumulate_leaf's add_ would.
    if ((leaf.hooks && !leaf.hooks->hooks.empty()) || !leaf.grad) return false;
    Tensor grad(leaf.grad);
    if (!fits(grad)) return false;
    add(grad);
    ++grad.impl()->storage->version;
    return true;
  }

  static void run_hooks(const std::shared_ptr<TensorImpl>& leaf) {
    std::shared_ptr<LeafHooks> hooks;
    {
      std::lock_guard lock(leaf_mutex(leaf.get()));
      hooks = leaf->hooks;
    }
    if (!hooks) return;
    Tensor t(leaf);
    for (auto& [id, hook] : hooks->hooks) hook(t);
  }

  static void accumulate_leaf(TensorImpl& leaf, Tensor g, bool create_graph) {
    std::lock_guard lock(leaf_mutex(&leaf));
    if (create_graph) {
      leaf.grad = leaf.grad ? add(Tensor(leaf.grad), g).impl() : g.impl();
      return;
    }
    if (!leaf.grad) {
      // Keep the incoming buffer when nothing else refers to it; otherwise own a contiguous copy.
      bool exclusive = g.impl().use_count() == 1 && g.impl()->storage.use_count() == 1 && g.is_contiguous() &&
                       g.offset() == 0;
      leaf.grad = exclusive ? g.impl() : g.clone().impl();
    } else {
      Tensor(leaf.grad).add_(g);
    }
  }
};

bool accumulate_into_grad(std::size_t input, const std::function<void(const Tensor& grad)>& add) {
  return running_engine && running_node && running_engine->add_into_leaf_grad(*running_node, input, add);
}

void backward(const std::vector<Tensor>& outputs, const std::vector<Tensor>& grad_outputs, bool retain_graph,
              bool create_graph) {
  // The outermost backward owns the callback list; nested ones (checkpointed blocks) add to it.
  std::vector<std::function<void()>> callbacks;
  struct Depth {
    explicit Depth(std::vector<std::function<void()>>* mine) {
      if (++backward_depth == 1) pending_callbacks = mine;
    }
    ~Depth() {
      if (--backward_depth == 0) pending_callbacks = nullptr;
    }
  } depth(&callbacks);
  Engine({.keep_graph = retain_graph || create_graph, .create_graph = create_graph}).run(outputs, grad_outputs);
  if (backward_depth == 1)
    for (std::size_t i = 0; i < callbacks.size(); ++i) callbacks[i]();  // a callback may queue another
}

std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs, GradOptions options) {
  struct Count {
    Count() { ++grad_calls; }
    ~Count() { --grad_calls; }
  } counting;
  return Engine({.keep_graph = options.retain_graph || options.create_graph,
                 .create_graph = options.create_graph,
                 .inputs = &inputs,
                 .allow_unused = options.allow_unused})
      .run(outputs, grad_outputs);
}

}  // namespace xg::autograd

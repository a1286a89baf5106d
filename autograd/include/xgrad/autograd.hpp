// xgrad: the graph recorded as ops run, grad mode, the engine entry points and the custom-op API.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "xgrad/tensor.hpp"

namespace xg::autograd {

/// Whether ops record the graph on this thread (thread-local, on by default).
bool is_grad_enabled();
void set_grad_enabled(bool enabled);

/// Turns graph recording off on this thread for its scope (like torch.no_grad()).
class NoGradGuard {
 public:
  NoGradGuard() : prev_(is_grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

/// Sets grad mode for its scope.
class GradModeGuard {
 public:
  explicit GradModeGuard(bool enabled) : prev_(is_grad_enabled()) { set_grad_enabled(enabled); }
  ~GradModeGuard() { set_grad_enabled(prev_); }
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool prev_;
};

/// Anomaly detection on this thread for its scope (like torch.autograd.detect_anomaly): every recorded
/// op's output and every gradient a backward rule returns is checked for NaN and inf, and the first
/// non-finite one raises an Error naming the op, where it was made (the nearest named parameter, e.g.
/// "transformer.h.0.attn.c_attn.weight": name parameters with set_name) and which input went bad. Slow:
/// for finding a bug, not for training.
class DetectAnomalyGuard {
 public:
  DetectAnomalyGuard();
  ~DetectAnomalyGuard();
  DetectAnomalyGuard(const DetectAnomalyGuard&) = delete;
  DetectAnomalyGuard& operator=(const DetectAnomalyGuard&) = delete;

 private:
  bool prev_;
};
bool is_anomaly_enabled();

/// Maps the gradient of an op's output to the gradients of its inputs (one per input, undefined = none).
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

/// One input of a recorded op: the node its gradient flows to (null if it needs none), and its shape and
/// dtype, which the engine checks the backward rule's gradient against.
struct Edge {
  std::shared_ptr<class Node> node;
  Shape shape;
  DType dtype = DType::float32;
};

/// One recorded op. A node points to the nodes of its inputs; its backward rule holds what it needs.
class Node {
 public:
  Node(std::string name, std::vector<Edge> inputs, BackwardFn fn);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  /// "MulBackward": the op's name with "Backward".
  const std::string& name() const { return name_; }
  /// One edge per input of the op.
  const std::vector<Edge>& inputs() const { return inputs_; }
  bool is_accumulator() const { return leaf_ != nullptr; }
  bool released() const { return released_; }
  /// Makes backward store this node's output gradient in `output`'s .grad (Tensor::retain_grad).
  void retain_output(const std::shared_ptr<TensorImpl>& output) { retained_ = output; }
  /// Under anomaly detection: the nearest named parameter this op's inputs came from (else empty).
  const std::string& origin() const { return origin_; }
  int origin_distance() const { return origin_distance_; }

 private:
  friend struct Engine;
  friend Tensor record_node(std::string_view, std::span<const Tensor>, Tensor, BackwardFn);
  friend std::shared_ptr<Node> grad_accumulator(const Tensor& leaf);
  std::string name_;
  std::vector<Edge> inputs_;
  BackwardFn fn_;
  std::shared_ptr<TensorImpl> leaf_;       // set for the node that accumulates into a leaf's .grad
  std::weak_ptr<TensorImpl> retained_;     // a non-leaf output that asked for retain_grad()
  std::string origin_;                     // anomaly detection only
  int origin_distance_ = 0;                // ops between this one and the parameter named in origin_
  bool released_ = false;
};

/// True if recording is on and any input requires a gradient.
bool needs_grad(std::span<const Tensor> inputs);

/// Records an op: `result` was computed from `inputs` (without recording); `backward` maps the output
/// gradient to one gradient per input. This is the custom-op API and every built-in op uses it:
///
///   Tensor my_square(const Tensor& x) {
///     Tensor y = xg::mul(x.detach(), x.detach());                 // forward, computed however you like
///     return xg::autograd::record("my_square", {x}, y, [sx = Saved(x)](const Tensor& g) {
///       return std::vector<Tensor>{g * 2.0 * sx.get()};          // d/dx x^2 = 2x
///     });
///   }
///
/// Backward rules written with Tensor ops are differentiable again (create_graph).
Tensor record_node(std::string_view name, std::span<const Tensor> inputs, Tensor result, BackwardFn backward);

template <class F>
Tensor record(std::string_view name, std::initializer_list<Tensor> inputs, Tensor result, F&& backward) {
  std::span<const Tensor> in(inputs.begin(), inputs.size());
  if (!needs_grad(in)) return result;
  return record_node(name, in, std::move(result), BackwardFn(std::forward<F>(backward)));
}
template <class F>
Tensor record(std::string_view name, const std::vector<Tensor>& inputs, Tensor result, F&& backward) {
  if (!needs_grad(inputs)) return result;
  return record_node(name, inputs, std::move(result), BackwardFn(std::forward<F>(backward)));
}

/// Whether a fused op's backward runs its hand-written kernel on this thread: only while backward is not
/// itself recorded (no create_graph) and no CompositeBackwardGuard is active.
bool use_fused_backward();

/// Makes fused ops run their composite backward formulas on this thread for its scope, so a test can
/// compare the fused kernels with them.
class CompositeBackwardGuard {
 public:
  CompositeBackwardGuard();
  ~CompositeBackwardGuard();
  CompositeBackwardGuard(const CompositeBackwardGuard&) = delete;
  CompositeBackwardGuard& operator=(const CompositeBackwardGuard&) = delete;

 private:
  bool prev_;
};

/// Records a fused op: `rule.fused(g)` is its first-order backward kernel, `rule.composite(g)` the same
/// derivative in Tensor ops, which runs when the backward is recorded (create_graph) so the op stays
/// differentiable to any order. Both return one gradient per input.
///
///   struct SoftmaxRule {
///     Saved y;
///     std::vector<Tensor> fused(const Tensor& g) const;      // one pass per row
///     std::vector<Tensor> composite(const Tensor& g) const;  // y (g - sum(g y))
///   };
///   return record_fused("softmax", {x}, y, SoftmaxRule{Saved::output(y)});
template <class Rule>
Tensor record_fused(std::string_view name, std::initializer_list<Tensor> inputs, Tensor result, Rule rule) {
  return record(name, inputs, std::move(result), [r = std::move(rule)](const Tensor& g) {
    return use_fused_backward() ? r.fused(g) : r.composite(g);
  });
}

/// A tensor kept for backward, with the version it had when saved: backward refuses to use it if it was
/// modified in place since. Save an op's own output with Saved::output, which keeps no graph reference.
class Saved {
 public:
  Saved() = default;
  explicit Saved(const Tensor& t);
  static Saved output(const Tensor& t);
  /// The saved tensor; throws if it was modified in place after being saved.
  const Tensor& get() const;

 private:
  Tensor t_;
  std::uint32_t version_ = 0;
};

/// The node that accumulates gradients into a leaf's .grad (created on first use).
std::shared_ptr<Node> grad_accumulator(const Tensor& leaf);

/// Called with a leaf once backward has accumulated into its .grad, after every contribution of that
/// backward (a weight used twice, e.g. tied embeddings, fires once with both summed). Distributed data
/// parallel training starts reducing gradients from here. Runs on the thread running backward; not
/// called by autograd::grad, which accumulates nothing.
using PostAccumulateGradHook = std::function<void(const Tensor& leaf)>;

/// The hooks of one leaf (kept in TensorImpl::hooks).
struct LeafHooks {
  std::vector<std::pair<std::uint64_t, PostAccumulateGradHook>> hooks;
};

/// Registers a hook on a leaf that requires grad (like torch.Tensor.register_post_accumulate_grad_hook);
/// returns an id for remove_post_accumulate_grad_hook.
std::uint64_t register_post_accumulate_grad_hook(const Tensor& leaf, PostAccumulateGradHook hook);
void remove_post_accumulate_grad_hook(const Tensor& leaf, std::uint64_t id);

/// For a backward rule that can add its gradient for input `input` straight into the gradient already
/// summed for that input (a GEMM with beta = 1, rows scattered into place), instead of returning a tensor
/// the engine then adds: calls add(buffer) and returns true when there is such a buffer to change in place,
/// either this backward's sum so far (contiguous, referred to by nothing else) or, for a leaf nothing else
/// has contributed to yet in this backward, its .grad (contiguous, no hooks; not under grad()); never under
/// create_graph or anomaly mode. The rule then returns an undefined gradient for that input. Otherwise
/// returns false and the rule returns its gradient as usual. Saves a full-size temporary and a
/// read-add-write pass for weights over micro-batches, for an embedding table shared with the output layer,
/// and for a residual stream whose gradient a layer norm adds to.
bool accumulate_into_grad(std::size_t input, const std::function<void(const Tensor& grad)>& add);

/// Queues `fn` to run on this thread when the outermost backward now running has finished (like
/// torch's Variable._execution_engine.queue_callback). Only valid inside a backward, e.g. from a hook;
/// callbacks of a backward that fails are dropped.
void queue_callback(std::function<void()> fn);

/// Runs backward from `outputs`, accumulating into the .grad of the leaves.
void backward(const std::vector<Tensor>& outputs, const std::vector<Tensor>& grad_outputs = {},
              bool retain_graph = false, bool create_graph = false);

/// Options for autograd::grad.
struct GradOptions {
  bool retain_graph = false;
  bool create_graph = false;  // record the backward itself, for higher-order derivatives
  bool allow_unused = false;  // return undefined tensors for inputs the outputs do not depend on
};

/// True while autograd::grad runs on this thread: it returns gradients rather than accumulating them, so
/// a backward rule must not accumulate into .grad either (nn::checkpoint refuses to run then).
bool is_computing_grad();

/// Gradients of `outputs` with respect to `inputs`, without touching any .grad.
std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs = {}, GradOptions options = {});

}  // namespace xg::autograd

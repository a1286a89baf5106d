// xgrad::nn::functional: the stateless ops that layers are thin shells over. softmax, log_softmax,
// layer_norm, cross_entropy and scaled_dot_product_attention are fused kernels with fused first-order
// backward passes; their composite formulas (Tensor ops) are the reference in the tests and the path
// taken for higher-order gradients.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <utility>

#include "xgrad/ops.hpp"
#include "xgrad/tensor.hpp"

namespace xg::nn::functional {

/// y = x W^T + b, with W of shape [out, in] as in PyTorch; bias may be undefined.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = {});

/// An activation applied by the op that computes its input.
enum class Activation { none, gelu, gelu_tanh };
/// activation(x W^T + b) as one op (the values of gelu(linear(x, W, b))): the bias and the activation are one
/// pass over the product, and backward computes the activation's gradient and the bias gradient in one pass.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Activation activation);

/// softmax along dim (numerically stable: the row maximum is subtracted first).
Tensor softmax(const Tensor& x, std::int64_t dim = -1);
/// log(softmax(x)) along dim, without forming softmax.
Tensor log_softmax(const Tensor& x, std::int64_t dim = -1);

/// Normalises over the last dim: (x - mean) / sqrt(var + eps) * weight + bias, with weight and bias of
/// shape [C] (either may be undefined). Mean and 1/std are saved per row for the backward pass.
Tensor layer_norm(const Tensor& x, const Tensor& weight = {}, const Tensor& bias = {}, double eps = 1e-5);
/// {sum, layer_norm(sum, weight, bias, eps)} with sum = x + residual (same shapes): a pre-norm transformer
/// block's residual add and the next norm in one pass per row. The two results are an add and a layer_norm
/// to autograd, with the same gradients.
std::pair<Tensor, Tensor> add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor& weight = {},
                                         const Tensor& bias = {}, double eps = 1e-5);

/// How a loss reduces its per-element values: none, their mean, their sum; batchmean (kl_div only) divides
/// the sum by the batch size, the mathematically correct KL divergence.
enum class Reduction { none, mean, sum, batchmean };

/// x / sqrt(mean(x^2 over the last dim) + eps) * weight (weight [C], may be undefined), as torch's
/// rms_norm and Llama's RMSNorm; eps defaults to the dtype's machine epsilon, as in PyTorch.
Tensor rms_norm(const Tensor& x, const Tensor& weight = {}, std::optional<double> eps = std::nullopt);
/// Group normalisation of x [N, C, *]: channels in num_groups groups, each group of each sample normalised
/// over its channels and positions, then weight [C] and bias [C] per channel (either may be undefined).
Tensor group_norm(const Tensor& x, std::int64_t num_groups, const Tensor& weight = {}, const Tensor& bias = {},
                  double eps = 1e-5);
/// Options for batch_norm, as in torch.nn.functional.batch_norm.
struct BatchNormOptions {
  Tensor running_mean, running_var;  // [C]; undefined: no running statistics (batch statistics always)
  Tensor weight, bias;               // [C]; either may be undefined
  bool training = false;             // normalise by the batch's statistics and update the running ones
  double momentum = 0.1;             // running = (1 - momentum) running + momentum batch
  double eps = 1e-5;
};
/// Batch normalisation of x [N, C, *] per channel C: in training by the batch's mean and biased variance
/// over N and the positions, updating the running mean and the unbiased running variance in place (no
/// gradient flows into them); in evaluation by the running statistics.
Tensor batch_norm(const Tensor& x, const BatchNormOptions& options);

/// Options for cross_entropy, as in torch.nn.functional.cross_entropy.
struct CrossEntropyOptions {
  std::int64_t ignore_index = -100;  // targets equal to this contribute no loss and no gradient
  Reduction reduction = Reduction::mean;  // mean over the targets that are not ignored
};

/// Cross-entropy of logits [..., C] against int64 class targets [...], fused with log_softmax. The
/// gradient is (softmax(logits) - one_hot(targets)) / n for the mean over n counted targets.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, CrossEntropyOptions options = {});

// ---- losses with element-wise targets: input and target of one shape and one floating dtype ----

/// (input - target)^2, reduced.
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::mean);
/// |input - target|, reduced.
Tensor l1_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::mean);
/// 0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta, for d = input - target (beta = 0: l1_loss).
Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::mean,
                      double beta = 1.0);
/// 0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta): smooth_l1_loss times delta, with beta = delta.
Tensor huber_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::mean,
                  double delta = 1.0);

/// Options for binary_cross_entropy_with_logits, as in PyTorch.
struct BCEWithLogitsOptions {
  Tensor weight;      // optional, broadcast to the input: a rescaling of each element's loss
  Tensor pos_weight;  // optional, broadcast over the last dim: the weight of positive examples per class
  Reduction reduction = Reduction::mean;
};
/// -[pos_weight y log s(x) + (1 - y) log(1 - s(x))] for logits x and targets y in [0, 1], computed as
/// (1 - y) x + (1 + (pos_weight - 1) y) (log(1 + exp(-|x|)) + max(-x, 0)): no overflow for any x.
Tensor binary_cross_entropy_with_logits(const Tensor& input, const Tensor& target, const BCEWithLogitsOptions& options = {});

/// Options for nll_loss, as in PyTorch.
struct NLLLossOptions {
  Tensor weight;                      // optional [C]: a weight per class (the mean divides by their sum)
  std::int64_t ignore_index = -100;   // targets equal to this contribute nothing
  Reduction reduction = Reduction::mean;
};
/// -log_probs[..., target] for log-probabilities [..., C] (class dim last, as cross_entropy) and int64
/// targets [...]; cross_entropy(x, t) equals nll_loss(log_softmax(x), t).
Tensor nll_loss(const Tensor& log_probs, const Tensor& targets, const NLLLossOptions& options = {});

/// Options for kl_div, as in PyTorch.
struct KLDivOptions {
  Reduction reduction = Reduction::mean;  // batchmean divides by the batch size: the true KL divergence
  bool log_target = false;                // the target is given as log-probabilities
};
/// target (log target - input) element by element, for input log-probabilities (0 where target is 0).
Tensor kl_div(const Tensor& input, const Tensor& target, const KLDivOptions& options = {});

// ---- convolution and pooling (im2col + GEMM; NCHW) ----

/// A 2-d window's geometry: (height, width) pairs.
struct Window2d {
  std::array<std::int64_t, 2> kernel{1, 1}, stride{1, 1}, padding{0, 0}, dilation{1, 1};
};
/// Every kernel window of x [N, C, H, W] as the columns of [N, C kh kw, L] (torch.nn.functional.unfold);
/// zeros where a window reaches into the padding.
Tensor unfold(const Tensor& x, const Window2d& window);
/// unfold's adjoint: columns [N, C kh kw, L] added back into [N, C, H, W] (torch.nn.functional.fold).
Tensor fold(const Tensor& columns, std::array<std::int64_t, 2> output_size, const Window2d& window);

/// Options of conv2d, as torch.nn.functional.conv2d's.
struct ConvOptions {
  std::array<std::int64_t, 2> stride{1, 1}, padding{0, 0}, dilation{1, 1};
  std::int64_t groups = 1;
};
/// 2-d convolution (cross-correlation, as PyTorch): x [N, C, H, W], weight [out, C / groups, kh, kw], bias
/// [out] or undefined -> [N, out, oh, ow].
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = {}, const ConvOptions& options = {});
/// Options of conv1d.
struct Conv1dOptions {
  std::int64_t stride = 1, padding = 0, dilation = 1, groups = 1;
};
/// 1-d convolution: x [N, C, L], weight [out, C / groups, k] -> [N, out, l].
Tensor conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias = {}, const Conv1dOptions& options = {});
/// Options of conv_transpose2d, as torch.nn.functional.conv_transpose2d's.
struct ConvTransposeOptions {
  std::array<std::int64_t, 2> stride{1, 1}, padding{0, 0}, output_padding{0, 0}, dilation{1, 1};
  std::int64_t groups = 1;
};
/// The transposed convolution (conv2d's gradient with respect to its input): x [N, in, H, W], weight
/// [in, out / groups, kh, kw] -> [N, out, (H - 1) stride - 2 padding + dilation (kh - 1) + output_padding + 1, ...].
Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias = {},
                        const ConvTransposeOptions& options = {});

/// Options of max_pool2d and avg_pool2d; stride 0 means the kernel size, as in PyTorch.
struct PoolOptions {
  std::array<std::int64_t, 2> kernel{2, 2}, stride{0, 0}, padding{0, 0};
};
/// The largest value of each window (the gradient goes to it); padding counts as -inf.
Tensor max_pool2d(const Tensor& x, const PoolOptions& options = {});
/// The mean of each window, padding counted as zeros (count_include_pad, PyTorch's default).
Tensor avg_pool2d(const Tensor& x, const PoolOptions& options = {});
/// The mean over PyTorch's adaptive cells, so the output is exactly output_size.
Tensor adaptive_avg_pool2d(const Tensor& x, std::array<std::int64_t, 2> output_size);

/// Zeroes each element with probability p in training and scales the rest by 1 / (1 - p).
Tensor dropout(const Tensor& x, double p, bool training, Generator* gen = nullptr);

/// Rows of weight [V, C] for int64 ids of any shape: the result is ids.shape + [C].
Tensor embedding(const Tensor& ids, const Tensor& weight);

/// Options for scaled_dot_product_attention.
struct AttentionOptions {
  bool causal = false;        // position t attends to positions <= t
  std::int64_t window = 0;    // if > 0: position t attends only to the last `window` positions (t-window, t]
  Tensor mask;                // optional padding mask broadcastable to [..., T, S]: nonzero = may attend
  double dropout_p = 0.0;     // dropout on the attention weights (training only)
  double scale = 0.0;         // 0: 1 / sqrt(head_dim)
  Generator* generator = nullptr;
};

/// softmax(q k^T * scale + masks) v for q [..., T, D], k [..., S, D], v [..., S, Dv]. Without dropout
/// it is one fused kernel that keeps a single T x S score block per head in memory at a time (the
/// backward pass recomputes the block from the saved row log-sum-exps).
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& options = {});
/// Rotary position embeddings (RoPE, as Llama and Hugging Face's rotate_half form compute them): cos and sin
/// [seq_len, head_dim] for positions offset .. offset + seq_len - 1, the frequency of pair i being
/// theta^(-2i / head_dim), each repeated for both halves of a head.
std::pair<Tensor, Tensor> rope_cos_sin(std::int64_t seq_len, std::int64_t head_dim, double theta = 10000.0,
                                       std::int64_t offset = 0, DType dtype = DType::float32);
/// x [..., T, D] rotated by its positions: x cos + rotate_half(x) sin, rotate_half(x) = [-x2, x1] for the
/// halves x1, x2 of each head. Queries and keys so rotated have dot products that depend only on their
/// distance.
Tensor apply_rotary_emb(const Tensor& x, const Tensor& cos, const Tensor& sin);

/// Self-attention over a packed projection: qkv [B, T, 3 C] holds q, k and v side by side (the output of
/// nanoGPT's c_attn), each split into `heads` heads of C / heads. Returns [B, T, C] with the heads merged:
/// the values of splitting, scaled_dot_product_attention and merging, but the kernel reads q, k, v and
/// writes the output and the one [B, T, 3 C] gradient in their packed layouts, with no per-head copies.
Tensor packed_self_attention(const Tensor& qkv, std::int64_t heads, const AttentionOptions& options = {});

}  // namespace xg::nn::functional

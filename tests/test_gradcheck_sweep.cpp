// Every differentiable op, one line each: gradcheck and gradgradcheck in float64, with broadcasting,
// size-1 and zero-size dims, per-op input domains, and again with non-contiguous (transposed) inputs.
#include <functional>

#include "helpers.hpp"

namespace F = xg::nn::functional;
using xg::Shape;
using xg::Tensor;
using Inputs = std::vector<Tensor>;

namespace {

struct OpCase {
  std::string name;
  std::function<Tensor(const Inputs&)> f;
  std::vector<Shape> shapes;
  double lo = -2.0, hi = 2.0;  // input domain
};

const Tensor& idx_rows() {  // index into a dim of size 4, with a repeat
  static Tensor t = xg::index_tensor({2, 0, 2});
  return t;
}
const Tensor& idx_gather() {  // [3, 2] indices into dim 1 of a [3, 4] tensor
  static Tensor t = xg::index_tensor({0, 3, 1, 1, 2, 0}, {3, 2});
  return t;
}
const Tensor& mask34() {
  static Tensor t = xg::tensor({1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1, 1}, {3, 4}, {xg::float64});
  return t;
}

const Tensor& targets5() {  // class targets for 5 rows of 4 classes, one ignored (-100)
  static Tensor t = xg::index_tensor({3, 0, -100, 1, 3});
  return t;
}
const Tensor& ids() {
  static Tensor t = xg::index_tensor({1, 4, 1, 0, 2, 2}, {2, 3});
  return t;
}
const Tensor& pad_mask() {  // [B=2, 1, 1, S=4]: the second sequence has one padded key
  static Tensor t = xg::tensor({1, 1, 1, 1, 1, 1, 1, 0}, {2, 1, 1, 4}, {xg::float64});
  return t;
}
Tensor sdpa(const Inputs& v, F::AttentionOptions o) { return F::scaled_dot_product_attention(v[0], v[1], v[2], o); }

// The table: one row per op and case, so it is as long as the list of ops.
const std::vector<OpCase>& cases() {
  static const std::vector<OpCase> c = {
      // ---- binary, broadcasting ----
      {"add", [](auto& v) { return v[0] + v[1]; }, {{3, 4}, {3, 4}}},
      {"add broadcast row", [](auto& v) { return v[0] + v[1]; }, {{3, 4}, {4}}},
      {"add broadcast both", [](auto& v) { return v[0] + v[1]; }, {{2, 1, 3}, {4, 1}}},
      {"add 0-d", [](auto& v) { return v[0] + v[1]; }, {{}, {3}}},
      {"add zero-size", [](auto& v) { return v[0] + v[1]; }, {{0, 3}, {3}}},
      {"add scalar", [](auto& v) { return 2.5 + v[0]; }, {{3}}},
      {"sub broadcast", [](auto& v) { return v[0] - v[1]; }, {{3, 1}, {1, 4}}},
      {"sub scalar", [](auto& v) { return 1.0 - v[0]; }, {{2, 2}}},
      {"mul", [](auto& v) { return v[0] * v[1]; }, {{3, 4}, {3, 4}}},
      {"mul broadcast", [](auto& v) { return v[0] * v[1]; }, {{3, 1, 4}, {1, 5, 1}}},
      {"mul self", [](auto& v) { return v[0] * v[0]; }, {{4}}},
      {"div", [](auto& v) { return v[0] / v[1]; }, {{3, 4}, {4}}, 0.5, 2.0},
      {"div scalar numerator", [](auto& v) { return 1.0 / v[0]; }, {{5}}, 0.5, 2.0},
      {"pow tensor", [](auto& v) { return xg::pow(v[0], v[1]); }, {{3, 4}, {4}}, 0.5, 2.0},
      {"pow cube", [](auto& v) { return xg::pow(v[0], 3.0); }, {{2, 3}}},
      {"pow sqrt", [](auto& v) { return xg::pow(v[0], 0.5); }, {{2, 3}}, 0.5, 3.0},
      {"pow zero", [](auto& v) { return xg::pow(v[0], 0.0); }, {{2, 3}}},
      {"pow scalar base", [](auto& v) { return xg::pow(2.0, v[0]); }, {{2, 3}}},
      {"maximum", [](auto& v) { return xg::maximum(v[0], v[1]); }, {{3, 4}, {4}}},
      {"minimum", [](auto& v) { return xg::minimum(v[0], v[1]); }, {{3, 1}, {3, 4}}},
      {"where", [](auto& v) { return xg::where(mask34(), v[0], v[1]); }, {{3, 4}, {4}}},
      {"where scalar", [](auto& v) { return xg::where(xg::gt(v[0], 0.0), v[0], 0.5); }, {{3, 4}}},
      // ---- unary ----
      {"neg", [](auto& v) { return -v[0]; }, {{3, 4}}},
      {"abs", [](auto& v) { return xg::abs(v[0]); }, {{3, 4}}},
      {"exp", [](auto& v) { return xg::exp(v[0]); }, {{3, 4}}},
      {"log", [](auto& v) { return xg::log(v[0]); }, {{3, 4}}, 0.1, 4.0},
      {"sqrt", [](auto& v) { return xg::sqrt(v[0]); }, {{3, 4}}, 0.1, 4.0},
      {"rsqrt", [](auto& v) { return xg::rsqrt(v[0]); }, {{3, 4}}, 0.2, 4.0},
      {"sin", [](auto& v) { return xg::sin(v[0]); }, {{3, 4}}},
      {"cos", [](auto& v) { return xg::cos(v[0]); }, {{3, 4}}},
      {"tanh", [](auto& v) { return xg::tanh(v[0]); }, {{3, 4}}},
      {"sigmoid", [](auto& v) { return xg::sigmoid(v[0]); }, {{3, 4}}},
      {"erf", [](auto& v) { return xg::erf(v[0]); }, {{3, 4}}},
      {"relu", [](auto& v) { return xg::relu(v[0]); }, {{3, 4}}},
      {"gelu exact", [](auto& v) { return xg::gelu(v[0]); }, {{3, 4}}, -3.0, 3.0},
      {"gelu tanh", [](auto& v) { return xg::gelu(v[0], true); }, {{3, 4}}, -3.0, 3.0},
      {"gelu_backward", [](auto& v) { return xg::gelu_backward(v[0], v[1]); }, {{3, 4}, {3, 4}}, -3.0, 3.0},
      {"gelu_backward tanh", [](auto& v) { return xg::gelu_backward(v[0], v[1], true); }, {{3, 4}, {3, 4}}, -3.0, 3.0},
      {"silu", [](auto& v) { return xg::silu(v[0]); }, {{3, 4}}, -4.0, 4.0},
      {"clamp", [](auto& v) { return xg::clamp(v[0], -1.0, 1.0); }, {{3, 4}}},
      {"clamp_min", [](auto& v) { return xg::clamp_min(v[0], 0.3); }, {{3, 4}}},
      {"clamp_max", [](auto& v) { return xg::clamp_max(v[0], 0.3); }, {{3, 4}}},
      {"masked_fill", [](auto& v) { return xg::masked_fill(v[0], mask34(), -1.5); }, {{3, 4}}},
      {"masked_fill broadcast mask", [](auto& v) { return xg::masked_fill(v[0], xg::select(mask34(), 0, 0), 7.0); }, {{3, 4}}},
      {"tril", [](auto& v) { return xg::tril(v[0]); }, {{2, 3, 4}}},
      {"triu k=1", [](auto& v) { return xg::triu(v[0], 1); }, {{4, 4}}},
      {"tril k=-1", [](auto& v) { return xg::tril(v[0], -1); }, {{3, 5}}},
      // ---- reductions ----
      {"sum all", [](auto& v) { return xg::sum(v[0]); }, {{3, 4}}},
      {"sum dim", [](auto& v) { return xg::sum(v[0], {1}); }, {{3, 4, 2}}},
      {"sum dims keepdim", [](auto& v) { return xg::sum(v[0], {0, -1}, true); }, {{3, 4, 2}}},
      {"sum size-1 dim", [](auto& v) { return xg::sum(v[0], {1}); }, {{3, 1, 2}}},
      {"sum zero-size", [](auto& v) { return xg::sum(v[0], {0}); }, {{0, 3}}},
      {"mean", [](auto& v) { return xg::mean(v[0]); }, {{3, 4}}},
      {"mean dim keepdim", [](auto& v) { return xg::mean(v[0], {1}, true); }, {{3, 4}}},
      {"var", [](auto& v) { return xg::var(v[0], {1}); }, {{3, 5}}},
      {"var biased keepdim", [](auto& v) { return xg::var(v[0], {0, 1}, 0, true); }, {{3, 5}}},
      {"logsumexp", [](auto& v) { return xg::logsumexp(v[0], {-1}); }, {{3, 5}}},
      {"logsumexp keepdim", [](auto& v) { return xg::logsumexp(v[0], {0}, true); }, {{3, 5}}},
      {"max all", [](auto& v) { return xg::max(v[0]); }, {{3, 4}}},
      {"max dim", [](auto& v) { return xg::max(v[0], 1); }, {{3, 4}}},
      {"min dim keepdim", [](auto& v) { return xg::min(v[0], 0, true); }, {{3, 4}}},
      {"sum_to", [](auto& v) { return xg::sum_to(v[0], {1, 4}); }, {{2, 3, 4}}},
      // ---- linear algebra ----
      {"matmul 2d", [](auto& v) { return xg::matmul(v[0], v[1]); }, {{3, 4}, {4, 5}}},
      {"matmul 1d 1d", [](auto& v) { return xg::matmul(v[0], v[1]); }, {{4}, {4}}},
      {"matmul 1d 2d", [](auto& v) { return xg::matmul(v[0], v[1]); }, {{4}, {4, 3}}},
      {"matmul 2d 1d", [](auto& v) { return xg::matmul(v[0], v[1]); }, {{3, 4}, {4}}},
      {"matmul batched", [](auto& v) { return xg::matmul(v[0], v[1]); }, {{2, 3, 4}, {2, 4, 5}}},
      {"matmul broadcast batch", [](auto& v) { return xg::matmul(v[0], v[1]); }, {{2, 1, 3, 4}, {3, 4, 2}}},
      {"matmul 3d @ 2d", [](auto& v) { return xg::matmul(v[0], v[1]); }, {{2, 3, 4}, {4, 5}}},
      {"matmul 2d @ 3d", [](auto& v) { return xg::matmul(v[0], v[1]); }, {{3, 4}, {2, 4, 5}}},
      {"matmul transposed", [](auto& v) { return xg::matmul(v[0].t(), v[1].t()); }, {{4, 3}, {5, 4}}},
      {"matmul size-1", [](auto& v) { return xg::matmul(v[0], v[1]); }, {{1, 4}, {4, 1}}},
      {"matmul zero inner", [](auto& v) { return xg::matmul(v[0], v[1]); }, {{3, 0}, {0, 2}}},
      // ---- shape ----
      {"reshape", [](auto& v) { return xg::reshape(v[0], {4, -1}); }, {{2, 3, 2}}},
      {"view", [](auto& v) { return xg::view(v[0].contiguous(), {6, 2}); }, {{2, 3, 2}}},
      {"flatten", [](auto& v) { return xg::flatten(v[0], 1); }, {{2, 3, 2}}},
      {"transpose", [](auto& v) { return xg::transpose(v[0], 0, 2) * 1.5; }, {{2, 3, 4}}},
      {"permute", [](auto& v) { return xg::permute(v[0], {2, 0, 1}).contiguous(); }, {{2, 3, 4}}},
      {"squeeze", [](auto& v) { return xg::squeeze(v[0]); }, {{3, 1, 2, 1}}},
      {"squeeze dim", [](auto& v) { return xg::squeeze(v[0], 1); }, {{3, 1, 2}}},
      {"unsqueeze", [](auto& v) { return xg::unsqueeze(v[0], -1); }, {{3, 2}}},
      {"expand", [](auto& v) { return xg::expand(v[0], {2, 3, 4}) * xg::arange(24.0, {xg::float64}).reshape({2, 3, 4}); }, {{3, 1}}},
      {"narrow", [](auto& v) { return xg::narrow(v[0], 1, 1, 2); }, {{3, 4}}},
      {"slice step", [](auto& v) { return xg::slice(v[0], 0, 1, 6, 2); }, {{6, 2}}},
      {"slice negative", [](auto& v) { return xg::slice(v[0], -1, -3, 100); }, {{2, 5}}},
      {"select", [](auto& v) { return xg::select(v[0], 1, -1); }, {{3, 4}}},
      {"cat", [](auto& v) { return xg::cat({v[0], v[1], v[0]}, 1); }, {{2, 3}, {2, 1}}},
      {"stack", [](auto& v) { return xg::stack({v[0], v[1]}, 1); }, {{2, 3}, {2, 3}}},
      {"split", [](auto& v) { auto p = xg::split(v[0], 2, 1); return xg::cat({p[2], p[0] * 2.0, p[1]}, 1); }, {{2, 5}}},
      {"split sizes", [](auto& v) { auto p = xg::split(v[0], std::vector<std::int64_t>{1, 3}, 0); return p[1] * xg::sum(p[0]); }, {{4, 2}}},
      {"chunk", [](auto& v) { auto p = xg::chunk(v[0], 2, 0); return p[0] * p[1]; }, {{4, 3}}},
      {"contiguous of transposed", [](auto& v) { return v[0].t().contiguous(); }, {{3, 4}}},
      {"clone", [](auto& v) { return v[0].clone(); }, {{3, 4}}},
      // ---- indexing ----
      {"index_select", [](auto& v) { return xg::index_select(v[0], 0, idx_rows()); }, {{4, 3}}},
      {"index_select dim 1", [](auto& v) { return xg::index_select(v[0], 1, idx_rows()); }, {{2, 4}}},
      {"index_add", [](auto& v) { return xg::index_add(v[0], 0, idx_rows(), v[1]); }, {{4, 3}, {3, 3}}},
      {"gather", [](auto& v) { return xg::gather(v[0], 1, idx_gather()); }, {{3, 4}}},
      {"scatter_add", [](auto& v) { return xg::scatter_add(v[0], 1, idx_gather(), v[1]); }, {{3, 4}, {3, 2}}},
      // ---- nn::functional ----
      {"linear", [](auto& v) { return F::linear(v[0], v[1], v[2]); }, {{2, 3, 4}, {5, 4}, {5}}},
      {"linear no bias", [](auto& v) { return F::linear(v[0], v[1]); }, {{3, 4}, {2, 4}}},
      {"linear + gelu", [](auto& v) { return F::linear(v[0], v[1], v[2], F::Activation::gelu); }, {{2, 3, 4}, {5, 4}, {5}}},
      {"linear + gelu tanh, no bias", [](auto& v) { return F::linear(v[0], v[1], {}, F::Activation::gelu_tanh); },
       {{3, 4}, {2, 4}}},
      {"linear 1-d input", [](auto& v) { return F::linear(v[0], v[1], v[2]); }, {{4}, {3, 4}, {3}}},
      {"linear transposed input", [](auto& v) { return F::linear(xg::transpose(v[0], 0, 1), v[1], v[2]); }, {{4, 3}, {2, 4}, {2}}},
      {"softmax", [](auto& v) { return F::softmax(v[0], -1); }, {{3, 5}}},
      {"softmax dim 0", [](auto& v) { return F::softmax(v[0], 0); }, {{3, 5}}},
      {"softmax size-1", [](auto& v) { return F::softmax(v[0], -1); }, {{3, 1}}},
      {"log_softmax", [](auto& v) { return F::log_softmax(v[0], -1); }, {{2, 3, 5}}},
      {"log_softmax dim 1", [](auto& v) { return F::log_softmax(v[0], 1); }, {{2, 3, 5}}},
      {"layer_norm", [](auto& v) { return F::layer_norm(v[0], v[1], v[2]); }, {{2, 3, 5}, {5}, {5}}},
      {"layer_norm no affine", [](auto& v) { return F::layer_norm(v[0]); }, {{4, 6}}},
      {"add_layer_norm", [](auto& v) {
         auto [s, y] = F::add_layer_norm(v[0], v[1], v[2], v[3]);
         return y * s;
       }, {{2, 3, 5}, {2, 3, 5}, {5}, {5}}},
      {"layer_norm weight only", [](auto& v) { return F::layer_norm(v[0], v[1], Tensor(), 1e-3); }, {{3, 4}, {4}}},
      {"cross_entropy mean", [](auto& v) { return F::cross_entropy(v[0], targets5()); }, {{5, 4}}},
      {"cross_entropy sum", [](auto& v) { return F::cross_entropy(v[0], targets5(), {.reduction = F::Reduction::sum}); }, {{5, 4}}},
      {"cross_entropy none", [](auto& v) { return F::cross_entropy(v[0], targets5(), {.reduction = F::Reduction::none}); }, {{5, 4}}},
      {"cross_entropy 3-d", [](auto& v) { return F::cross_entropy(v[0], ids()); }, {{2, 3, 5}}},
      // ---- convolution and pooling ----
      {"unfold stride, padding, dilation", [](auto& v) { return F::unfold(v[0], {{2, 3}, {2, 1}, {1, 0}, {1, 2}}); }, {{2, 2, 5, 6}}},
      {"fold", [](auto& v) { return F::fold(v[0], {4, 5}, {{2, 2}, {1, 2}, {1, 0}, {1, 1}}); }, {{2, 8, 10}}},
      {"conv2d", [](auto& v) { return F::conv2d(v[0], v[1], v[2]); }, {{2, 3, 5, 4}, {4, 3, 3, 2}, {4}}},
      {"conv2d stride, padding, dilation", [](auto& v) { return F::conv2d(v[0], v[1], {}, {.stride = {2, 1}, .padding = {1, 2}, .dilation = {1, 2}}); },
       {{1, 2, 6, 5}, {3, 2, 2, 3}}},
      {"conv2d groups", [](auto& v) { return F::conv2d(v[0], v[1], v[2], {.groups = 2}); }, {{2, 4, 4, 4}, {6, 2, 3, 3}, {6}}},
      {"conv1d", [](auto& v) { return F::conv1d(v[0], v[1], v[2], {.stride = 2, .padding = 1}); }, {{2, 3, 7}, {4, 3, 3}, {4}}},
      {"conv_transpose2d", [](auto& v) { return F::conv_transpose2d(v[0], v[1], v[2], {.stride = {2, 2}, .padding = {1, 0}, .output_padding = {1, 1}}); },
       {{2, 3, 3, 3}, {3, 2, 3, 2}, {2}}},
      {"conv_transpose2d groups", [](auto& v) { return F::conv_transpose2d(v[0], v[1], {}, {.groups = 2}); }, {{1, 4, 3, 3}, {4, 1, 2, 2}}},
      {"max_pool2d", [](auto& v) { return F::max_pool2d(v[0]); }, {{2, 2, 4, 6}}},
      {"max_pool2d stride 1, padding", [](auto& v) { return F::max_pool2d(v[0], {.kernel = {3, 3}, .stride = {1, 1}, .padding = {1, 1}}); }, {{1, 2, 4, 4}}},
      {"avg_pool2d padding", [](auto& v) { return F::avg_pool2d(v[0], {.kernel = {2, 3}, .stride = {2, 2}, .padding = {1, 1}}); }, {{2, 2, 5, 5}}},
      {"adaptive_avg_pool2d uneven", [](auto& v) { return F::adaptive_avg_pool2d(v[0], {3, 2}); }, {{2, 2, 5, 7}}},
      // ---- rotary embeddings: x, cos and sin all differentiable ----
      {"apply_rotary_emb", [](auto& v) { return F::apply_rotary_emb(v[0], v[1], v[2]); }, {{2, 3, 4}, {3, 4}, {3, 4}}},
      // ---- einsum: contractions as batched matmuls ----
      {"einsum batched matmul", [](auto& v) { return xg::einsum("bij,bjk->bik", {v[0], v[1]}); }, {{2, 3, 4}, {2, 4, 2}}},
      {"einsum three operands", [](auto& v) { return xg::einsum("ij,jk,kl->il", {v[0], v[1], v[2]}); }, {{2, 3}, {3, 4}, {4, 2}}},
      {"einsum outer, summed letter", [](auto& v) { return xg::einsum("ia,j->ji", {v[0], v[1]}); }, {{3, 2}, {4}}},
      {"einsum implicit output", [](auto& v) { return xg::einsum("ki,jk", {v[0], v[1]}); }, {{3, 2}, {4, 3}}},
      // ---- cumsum, pad, topk ----
      {"cumsum dim 1", [](auto& v) { return xg::cumsum(v[0], 1); }, {{3, 4}}},
      {"cumsum dim 0, 3-d", [](auto& v) { return xg::cumsum(v[0], 0); }, {{3, 2, 2}}},
      {"pad last two dims", [](auto& v) { return xg::pad(v[0], {1, 2, 0, 1}, 0.5); }, {{2, 3, 4}}},
      {"pad cropping", [](auto& v) { return xg::pad(v[0], {-1, 2}); }, {{3, 4}}},
      {"topk largest", [](auto& v) { return xg::topk(v[0], 2, 1).first; }, {{3, 5}}},
      {"topk smallest dim 0", [](auto& v) { return xg::topk(v[0], 3, 0, false).first; }, {{4, 2}}},
      // ---- normalisation written with other ops ----
      {"rms_norm", [](auto& v) { return F::rms_norm(v[0], v[1], 1e-6); }, {{2, 3, 4}, {4}}},
      {"rms_norm no weight, default eps", [](auto& v) { return F::rms_norm(v[0]); }, {{3, 5}}},
      {"group_norm", [](auto& v) { return F::group_norm(v[0], 2, v[1], v[2]); }, {{2, 4, 3}, {4}, {4}}},
      {"group_norm one group, 4-d", [](auto& v) { return F::group_norm(v[0], 1); }, {{2, 3, 2, 2}}},
      {"batch_norm training", [](auto& v) { return F::batch_norm(v[0], {.weight = v[1], .bias = v[2], .training = true}); },
       {{4, 3}, {3}, {3}}},
      {"batch_norm training 4-d", [](auto& v) { return F::batch_norm(v[0], {.training = true}); }, {{2, 2, 3, 2}}},
      {"batch_norm eval", [](auto& v) { return F::batch_norm(v[0], {.running_mean = v[1], .running_var = xg::exp(v[2]), .weight = v[3]}); },
       {{4, 3, 2}, {3}, {3}, {3}}},
      // ---- losses written with other ops: both input and target differentiable ----
      {"mse_loss mean", [](auto& v) { return F::mse_loss(v[0], v[1]); }, {{3, 4}, {3, 4}}},
      {"mse_loss sum", [](auto& v) { return F::mse_loss(v[0], v[1], F::Reduction::sum); }, {{5}, {5}}},
      {"mse_loss none", [](auto& v) { return F::mse_loss(v[0], v[1], F::Reduction::none); }, {{2, 3}, {2, 3}}},
      {"l1_loss", [](auto& v) { return F::l1_loss(v[0], v[1]); }, {{3, 4}, {3, 4}}},
      {"smooth_l1_loss beta 0.5", [](auto& v) { return F::smooth_l1_loss(v[0], v[1], F::Reduction::mean, 0.5); }, {{3, 4}, {3, 4}}},
      {"smooth_l1_loss none", [](auto& v) { return F::smooth_l1_loss(v[0], v[1], F::Reduction::none); }, {{6}, {6}}},
      {"huber_loss delta 0.7", [](auto& v) { return F::huber_loss(v[0], v[1], F::Reduction::sum, 0.7); }, {{3, 4}, {3, 4}}},
      {"bce_with_logits", [](auto& v) { return F::binary_cross_entropy_with_logits(v[0], xg::sigmoid(v[1])); }, {{3, 4}, {3, 4}}, -4.0, 4.0},
      {"bce_with_logits weight, pos_weight",
       [](auto& v) { return F::binary_cross_entropy_with_logits(v[0], xg::sigmoid(v[1]), {.weight = v[2], .pos_weight = xg::exp(v[3])}); },
       {{3, 4}, {3, 4}, {3, 4}, {4}}},
      {"bce_with_logits none", [](auto& v) { return F::binary_cross_entropy_with_logits(v[0], xg::sigmoid(v[1]), {.reduction = F::Reduction::none}); },
       {{5}, {5}}},
      {"nll_loss", [](auto& v) { return F::nll_loss(F::log_softmax(v[0], -1), targets5()); }, {{5, 4}}},
      {"nll_loss class weights", [](auto& v) { return F::nll_loss(F::log_softmax(v[0], -1), targets5(), {.weight = xg::exp(v[1])}); },
       {{5, 4}, {4}}},
      {"nll_loss none 3-d", [](auto& v) { return F::nll_loss(v[0], ids(), {.reduction = F::Reduction::none}); }, {{2, 3, 5}}},
      {"kl_div batchmean", [](auto& v) { return F::kl_div(F::log_softmax(v[0], -1), F::softmax(v[1], -1), {.reduction = F::Reduction::batchmean}); },
       {{3, 4}, {3, 4}}},
      {"kl_div log_target", [](auto& v) { return F::kl_div(F::log_softmax(v[0], -1), F::log_softmax(v[1], -1), {.reduction = F::Reduction::sum, .log_target = true}); },
       {{3, 4}, {3, 4}}},
      {"embedding", [](auto& v) { return F::embedding(ids(), v[0]); }, {{5, 3}}},
      {"dropout (fixed seed)", [](auto& v) { xg::Generator g(4); return F::dropout(v[0], 0.4, true, &g); }, {{4, 5}}},
      {"attention", [](auto& v) { return sdpa(v, {}); }, {{2, 3, 4}, {2, 5, 4}, {2, 5, 3}}},
      {"packed self-attention causal", [](auto& v) { return F::packed_self_attention(v[0], 2, {.causal = true}); }, {{2, 3, 12}}},
      {"attention causal", [](auto& v) { return sdpa(v, {.causal = true}); }, {{2, 2, 4, 3}, {2, 2, 4, 3}, {2, 2, 4, 3}}},
      {"attention window 2", [](auto& v) { return sdpa(v, {.window = 2}); }, {{1, 5, 3}, {1, 5, 3}, {1, 5, 2}}},
      {"attention padding mask", [](auto& v) { return sdpa(v, {.mask = pad_mask()}); }, {{2, 2, 3, 4}, {2, 2, 4, 4}, {2, 2, 4, 4}}},
      {"attention causal cached (T < S)", [](auto& v) { return sdpa(v, {.causal = true}); }, {{1, 2, 3}, {1, 4, 3}, {1, 4, 3}}},
      {"attention dropout (fixed seed)", [](auto& v) { xg::Generator g(2); return sdpa(v, {.causal = true, .dropout_p = 0.3, .generator = &g}); }, {{1, 4, 3}, {1, 4, 3}, {1, 4, 3}}},
      // ---- compositions: products keep second derivatives non-trivial ----
      {"tanh(x @ w) * x", [](auto& v) { return xg::tanh(xg::matmul(v[0], v[1])) * v[0]; }, {{3, 3}, {3, 3}}},
      {"softmax-like", [](auto& v) { return xg::exp(v[0] - xg::logsumexp(v[0], {-1}, true)); }, {{2, 5}}},
  };
  return c;
}

Inputs make_inputs(const OpCase& c, std::uint64_t seed, bool transposed) {
  Inputs in;
  for (std::size_t i = 0; i < c.shapes.size(); ++i) {
    const Shape& s = c.shapes[i];
    if (transposed && s.size() >= 2) {
      // Same logical shape, stored transposed: a non-contiguous leaf.
      Shape st = s;
      std::swap(st[st.size() - 1], st[st.size() - 2]);
      Tensor base = test::uniform(st, c.lo, c.hi, seed + i, false);
      Tensor t = base.transpose(-1, -2).detach().requires_grad_();
      REQUIRE_FALSE((t.is_contiguous() && s[s.size() - 1] > 1 && s[s.size() - 2] > 1));
      in.push_back(t);
    } else {
      in.push_back(test::uniform(s, c.lo, c.hi, seed + i));
    }
  }
  return in;
}

}  // namespace

TEST_CASE("gradcheck and gradgradcheck of every op", "[gradcheck]") {
  std::uint64_t seed = 100;
  for (const auto& c : cases()) {
    DYNAMIC_SECTION(c.name) {
      Inputs in = make_inputs(c, seed, false);
      CHECK(xg::autograd::gradcheck(c.f, in));
      CHECK(xg::autograd::gradgradcheck(c.f, in));
      bool any_matrix = false;
      for (auto& s : c.shapes) any_matrix |= s.size() >= 2;
      if (any_matrix) {
        Inputs nc = make_inputs(c, seed + 50, true);
        CHECK(xg::autograd::gradcheck(c.f, nc));
        CHECK(xg::autograd::gradgradcheck(c.f, nc));
      }
    }
    seed += 7;
  }
}

TEST_CASE("gradcheck reports a wrong backward rule with input, element and values", "[gradcheck]") {
  // A custom op whose backward is off by a factor of 2 for one input.
  auto bad = [](const Inputs& v) {
    Tensor out = v[0].detach() * v[1].detach();
    return xg::autograd::record("bad_mul", {v[0], v[1]}, out, [a = v[0], b = v[1]](const Tensor& g) {
      return std::vector<Tensor>{g * b, g * a * 2.0};
    });
  };
  Inputs in = {test::uniform({2, 3}, -1, 1, 1), test::uniform({2, 3}, -1, 1, 2)};
  test::require_error([&] { xg::autograd::gradcheck(bad, in); }, {"gradcheck failed for input 1", "analytic", "numeric", "[2, 3]"});
  xg::autograd::GradcheckOptions quiet;
  quiet.raise = false;
  CHECK_FALSE(xg::autograd::gradcheck(bad, in, quiet));
}

TEST_CASE("gradgradcheck catches a backward rule that is not differentiable correctly", "[gradcheck]") {
  // First derivative right (2x), but computed from a detached x: the second derivative is lost.
  auto square = [](const Inputs& v) {
    Tensor out = v[0].detach() * v[0].detach();
    return xg::autograd::record("square", {v[0]}, out, [x = v[0].detach()](const Tensor& g) {
      return std::vector<Tensor>{g * x * 2.0};
    });
  };
  Inputs in = {test::uniform({4}, -1, 1, 3)};
  CHECK(xg::autograd::gradcheck(square, in));
  test::require_error([&] { xg::autograd::gradgradcheck(square, in); }, {"gradcheck failed for input 0"});
}

TEST_CASE("gradcheck refuses float32 inputs", "[gradcheck]") {
  Tensor x = xg::randn({3}, {xg::float32, true});
  test::require_error([&] { xg::autograd::gradcheck([](auto& v) { return v[0] * 2.0; }, {x}); }, {"float64", "float32"});
}

// xgrad: the differentiable ops. Each has its backward rule next to its forward in autograd/src/ops/.
// Binary ops broadcast like NumPy. Tensors of different dtypes never mix silently: convert with .to().
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "xgrad/tensor.hpp"

namespace xg {

// ---- elementwise, broadcasting ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, double exponent);
Tensor pow(double base, const Tensor& exponent);
/// Elementwise max/min; where both are equal the gradient is split evenly.
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
/// cond ? a : b, with cond a mask (nonzero = true) of any dtype.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor where(const Tensor& cond, const Tensor& a, double b);
Tensor where(const Tensor& cond, double a, const Tensor& b);

// ---- elementwise, unary ----
Tensor neg(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor sign(const Tensor& x);  // no gradient
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor sin(const Tensor& x);
Tensor cos(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor erf(const Tensor& x);
Tensor relu(const Tensor& x);
/// GELU: exact x * Phi(x) by default, or GPT-2's tanh approximation.
Tensor gelu(const Tensor& x, bool tanh_approximation = false);
/// grad * gelu'(x), written with the ops above so it is differentiable again: gelu's backward formula, for
/// ops that fuse gelu with something else (as torch.ops.aten.gelu_backward).
Tensor gelu_backward(const Tensor& grad, const Tensor& x, bool tanh_approximation = false);
/// x * sigmoid(x) (also called swish).
Tensor silu(const Tensor& x);
/// Limits values to [lo, hi]; pass -inf/inf for a one-sided clamp.
Tensor clamp(const Tensor& x, double lo, double hi);
Tensor clamp_min(const Tensor& x, double lo);
Tensor clamp_max(const Tensor& x, double hi);

// ---- comparisons and masks (no gradient; masks are 0/1 tensors of the inputs' dtype) ----
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, double b);
Tensor ne(const Tensor& a, double b);
Tensor lt(const Tensor& a, double b);
Tensor le(const Tensor& a, double b);
Tensor gt(const Tensor& a, double b);
Tensor ge(const Tensor& a, double b);
/// value where mask is nonzero, x elsewhere; the gradient flows to the kept values of x.
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);
/// Keeps the lower (upper) triangle of the last two dims, from diagonal k on.
Tensor tril(const Tensor& x, std::int64_t k = 0);
Tensor triu(const Tensor& x, std::int64_t k = 0);

// ---- reductions (dims may be negative; an empty dims list reduces everything) ----
Tensor sum(const Tensor& x);
Tensor sum(const Tensor& x, const Shape& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const Shape& dims, bool keepdim = false);
/// Variance with Bessel's correction by default (correction = 1), like torch.var.
Tensor var(const Tensor& x, const Shape& dims, std::int64_t correction = 1, bool keepdim = false);
Tensor logsumexp(const Tensor& x, const Shape& dims, bool keepdim = false);
/// Largest value (the gradient goes to one arg-extremum).
Tensor max(const Tensor& x);
Tensor max(const Tensor& x, std::int64_t dim, bool keepdim = false);
Tensor min(const Tensor& x);
Tensor min(const Tensor& x, std::int64_t dim, bool keepdim = false);
/// Values and int64 indices of the extremum along dim.
std::pair<Tensor, Tensor> max_with_indices(const Tensor& x, std::int64_t dim, bool keepdim = false);
std::pair<Tensor, Tensor> min_with_indices(const Tensor& x, std::int64_t dim, bool keepdim = false);
/// Index of the largest value (first on ties), int64; over the flattened tensor when no dim is given.
Tensor argmax(const Tensor& x);
Tensor argmax(const Tensor& x, std::int64_t dim, bool keepdim = false);
Tensor argmin(const Tensor& x, std::int64_t dim, bool keepdim = false);
/// Sums `x` down to `shape` (the reverse of broadcasting): the one place broadcast gradients are reduced.
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---- linear algebra ----
/// torch.matmul: 1-D, 2-D and batched N-D with broadcast batch dims, on BLAS gemm.
Tensor matmul(const Tensor& a, const Tensor& b);
/// Einstein summation as torch.einsum: "bij,bjk->bik", "ii->i" is not supported (a letter appears at most once
/// per operand); without "->" the output is the letters that appear once, in alphabetical order. Operands
/// are contracted two at a time, each pair as one batched matmul.
Tensor einsum(const std::string& equation, const std::vector<Tensor>& operands);

// ---- shape ----
Tensor reshape(const Tensor& x, const Shape& shape);
Tensor view(const Tensor& x, const Shape& shape);
Tensor flatten(const Tensor& x, std::int64_t start_dim = 0, std::int64_t end_dim = -1);
Tensor transpose(const Tensor& x, std::int64_t dim0, std::int64_t dim1);
Tensor permute(const Tensor& x, const Shape& dims);
Tensor squeeze(const Tensor& x);
Tensor squeeze(const Tensor& x, std::int64_t dim);
Tensor unsqueeze(const Tensor& x, std::int64_t dim);
/// Broadcasts size-1 dims to `shape` without copying (-1 keeps a size).
Tensor expand(const Tensor& x, const Shape& shape);
Tensor broadcast_to(const Tensor& x, const Shape& shape);
Tensor narrow(const Tensor& x, std::int64_t dim, std::int64_t start, std::int64_t length);
/// Python-style x[start:end:step] along dim (negative and out-of-range bounds clamp like Python).
Tensor slice(const Tensor& x, std::int64_t dim, std::int64_t start, std::int64_t end, std::int64_t step = 1);
/// x[index] along dim, removing dim.
Tensor select(const Tensor& x, std::int64_t dim, std::int64_t index);
Tensor cat(const std::vector<Tensor>& tensors, std::int64_t dim = 0);
Tensor stack(const std::vector<Tensor>& tensors, std::int64_t dim = 0);
/// Pieces of `split_size` along dim (the last may be smaller).
std::vector<Tensor> split(const Tensor& x, std::int64_t split_size, std::int64_t dim = 0);
/// Pieces of the given sizes along dim.
std::vector<Tensor> split(const Tensor& x, const std::vector<std::int64_t>& sizes, std::int64_t dim = 0);
std::vector<Tensor> chunk(const Tensor& x, std::int64_t chunks, std::int64_t dim = 0);

// ---- indexing (index tensors are int64) ----
/// Rows (along dim) picked by a 1-D index: embedding's lookup.
Tensor index_select(const Tensor& x, std::int64_t dim, const Tensor& index);
/// Adds src's slices into a copy of x at the indexed positions along dim (index_select's backward).
Tensor index_add(const Tensor& x, std::int64_t dim, const Tensor& index, const Tensor& src);
/// out[i][j] = x[index[i][j]][j] for dim 0, and so on.
Tensor gather(const Tensor& x, std::int64_t dim, const Tensor& index);
/// A copy of x with src added at the positions index names along dim (gather's backward).
Tensor scatter_add(const Tensor& x, std::int64_t dim, const Tensor& index, const Tensor& src);
/// int64 indices [...] as one-hot rows [..., num_classes] (int64, like torch.nn.functional.one_hot); no
/// gradient. num_classes -1: the largest index + 1.
Tensor one_hot(const Tensor& indices, std::int64_t num_classes = -1);
/// The k largest (or smallest) values along dim and their indices, in order; the values are differentiable
/// (the gradient goes to the positions they came from).
std::pair<Tensor, Tensor> topk(const Tensor& x, std::int64_t k, std::int64_t dim = -1, bool largest = true);

/// Running sums along dim: out[i] = x[0] + ... + x[i].
Tensor cumsum(const Tensor& x, std::int64_t dim);
/// Constant padding as torch.nn.functional.pad: pads holds (before, after) pairs starting from the last
/// dim, {left, right, top, bottom, ...}; negative amounts crop.
Tensor pad(const Tensor& x, const std::vector<std::int64_t>& pads, double value = 0.0);

// ---- operators ----
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a);
Tensor operator+(const Tensor& a, double b);
Tensor operator-(const Tensor& a, double b);
Tensor operator*(const Tensor& a, double b);
Tensor operator/(const Tensor& a, double b);
Tensor operator+(double a, const Tensor& b);
Tensor operator-(double a, const Tensor& b);
Tensor operator*(double a, const Tensor& b);
Tensor operator/(double a, const Tensor& b);

/// True if both have the same shape and all values are within atol + rtol * |b|.
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8);

}  // namespace xg

// scaled_dot_product_attention: a fused kernel that, per (batch, head), computes one T x S score block
// with gemm, masks it, takes the row softmax and multiplies by V. Only the row log-sum-exps are kept for
// backward, which recomputes the block. The composite version (Tensor ops) is the reference, the path
// for attention dropout, and the path for higher-order gradients.
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <span>

#include "xgrad/kernel.hpp"
#include "xgrad/autograd.hpp"
#include "xgrad/nn/functional.hpp"

namespace xg::nn::functional {
using namespace xg::kernel;
using autograd::Saved;
using Grads = std::vector<Tensor>;

namespace {

/// Which (query i, key j) pairs may attend: causal and window rules, aligned so that the last query
/// sits at the last key (so a single new query against a key/value cache sees every cached key).
struct MaskRule {
  bool causal;
  std::int64_t window;
  std::int64_t shift;  // S - T
  bool allowed(std::int64_t i, std::int64_t j) const {
    std::int64_t pos = i + shift;
    if ((causal || window > 0) && j > pos) return false;
    if (window > 0 && j <= pos - window) return false;
    return true;
  }
  /// The keys [first, last) row i may see, within [0, s).
  std::pair<std::int64_t, std::int64_t> visible(std::int64_t i, std::int64_t s) const {
    const std::int64_t pos = i + shift;
    const std::int64_t last = causal || window > 0 ? std::clamp<std::int64_t>(pos + 1, 0, s) : s;
    const std::int64_t first = window > 0 ? std::clamp<std::int64_t>(pos - window + 1, 0, last) : 0;
    return {first, last};
  }
};

/// The causal/window rule as a constant 0/1 [T, S] tensor.
Tensor rule_tensor(const MaskRule& rule, std::int64_t t, std::int64_t s, DType dt) {
  std::vector<double> v(static_cast<std::size_t>(t * s));
  for (std::int64_t i = 0; i < t; ++i)
    for (std::int64_t j = 0; j < s; ++j) v[i * s + j] = rule.allowed(i, j) ? 1.0 : 0.0;
  return tensor(v, {t, s}, {dt});
}

/// A [..., R, C] operand read in place by gemm: the storage offset of each batch element and the row
/// stride (columns must be contiguous, else it is copied once). Heads split from a fused projection are
/// read this way without copies.
struct Operand {
  Tensor t;
  std::vector<std::int64_t> offsets;
  std::int64_t ld = 0;
  template <class T>
  const T* at(std::int64_t b) const {
    return static_cast<const T*>(t.impl()->storage->data) + offsets[static_cast<std::size_t>(b)];
  }
  /// For an output the kernel writes: the block's first element, writable.
  template <class T>
  T* out(std::int64_t b) const {
    return static_cast<T*>(t.impl()->storage->data) + offsets[static_cast<std::size_t>(b)];
  }
};

Operand operand(const Tensor& x) {
  const std::int64_t nd = x.dim(), rows = x.shape()[nd - 2], cols = x.shape()[nd - 1];
  Operand o{x, {}, x.strides()[nd - 2]};
  bool inplace = (cols <= 1 || x.strides()[nd - 1] == 1) && (rows <= 1 || o.ld >= std::max<std::int64_t>(cols, 1));
  if (!inplace) {
    o.t = contiguous_data(x);
    o.ld = cols;
  }
  if (rows <= 1) o.ld = std::max<std::int64_t>(cols, 1);
  Shape batch(o.t.shape().begin(), o.t.shape().end() - 2), bstrides(o.t.strides().begin(), o.t.strides().end() - 2);
  strided_loop<1>(batch, {&bstrides}, {o.t.offset()}, [&](const auto& off, std::int64_t n, const auto& in) {
    for (std::int64_t i = 0; i < n; ++i) o.offsets.push_back(off[0] + i * in[0]);
  });
  return o;
}

/// softmax(masked scores) in Tensor ops.
Tensor attention_probs(const Tensor& q, const Tensor& k, const MaskRule& rule, const Tensor& pad, double scale) {
  const std::int64_t t = q.shape()[q.dim() - 2], s = k.shape()[k.dim() - 2];
  Tensor scores = matmul(q, transpose(k, -1, -2)) * scale;
  Tensor allowed = rule_tensor(rule, t, s, q.dtype());
  if (pad.defined()) allowed = allowed * ne(pad.to(q.dtype()), 0.0);
  return softmax(where(allowed, scores, -std::numeric_limits<double>::infinity()), -1);
}

/// The sizes of one (batch, head) block: q [T, D], k [S, D], v [S, Dv].
struct Dims {
  std::int64_t t, s, d, dv;
  /// Blocks per chunk when the (batch, head) blocks are spread over the thread pool: about 256K
  /// multiply-adds per chunk, so a single query against a short cache stays on one thread.
  std::int64_t grain() const { return std::max<std::int64_t>(1, (std::int64_t{1} << 18) / std::max<std::int64_t>(1, t * s * (d + dv))); }
  static Dims of(const Tensor& q, const Tensor& k, const Tensor& v) {
    const std::int64_t nd = q.dim();
    return {q.shape()[nd - 2], k.shape()[nd - 2], q.shape()[nd - 1], v.shape()[nd - 1]};
  }
};

/// A tile of query rows [i0, i1) and the keys [j0, j1) any of them may see: with a causal or window rule,
/// keys past the tile's last visible one (and before its first) are never multiplied.
struct Tile {
  std::int64_t i0, i1, j0, j1;
  std::int64_t rows() const { return i1 - i0; }
  std::int64_t keys() const { return j1 - j0; }
};

/// Query rows per tile: a tile's [rows, S] score block stays in L2 (~128 KB of float32) while it is
/// masked, normalised and multiplied, flash-attention style. Under a causal or window rule a tile never
/// multiplies the keys none of its rows sees, so tiles stay short (the waste is about half a tile per row): 16 rows
/// for up to 128 queries, where the products are a few microseconds and cheap to call, 32 above. Not under
/// autocast: a bf16 product rounds and packs its operands per call, which short tiles would multiply.
std::int64_t tile_rows(const Dims& z, const MaskRule& rule) {
  if ((rule.causal || rule.window > 0) && !is_autocast_enabled()) return z.t <= 128 ? 16 : 32;
  return std::max<std::int64_t>(32, 32768 / std::max<std::int64_t>(z.s, 1));
}

Tile tile_at(const MaskRule& rule, const Dims& z, std::int64_t i0) {
  Tile t{i0, std::min(z.t, i0 + tile_rows(z, rule)), 0, z.s};
  t.j1 = rule.visible(t.i1 - 1, z.s).second;  // the last row sees furthest, the first row from furthest back
  t.j0 = std::min(rule.visible(t.i0, z.s).first, t.j1);
  return t;
}

/// The right operand of C = alpha A X[j0:j1]^T for one block's keys or values X [S, depth]: read in place
/// (A B^T), or, where the GEMM runs A B^T markedly slower than A B (OpenBLAS's small products), from X
/// transposed once per block into `copy` [depth, S] and shared by every tile.
template <class T>
struct RowsOperand {
  const T* x;
  std::int64_t ld, s, depth;
  T* xt = nullptr;

  RowsOperand(const T* x_, std::int64_t ld_, std::int64_t s_, std::int64_t depth_, T* copy)
      : x(x_), ld(ld_), s(s_), depth(depth_), xt(copy) {
    if (xt) transpose(s, depth, x, ld, xt, s);
  }
  /// c [m, j1 - j0] (leading dimension ldc) = alpha a x[j0:j1]^T.
  void product(std::int64_t m, std::int64_t j0, std::int64_t j1, T alpha, const T* a, std::int64_t lda, T* c,
               std::int64_t ldc) const {
    if (xt) return gemm(false, false, m, j1 - j0, depth, alpha, a, lda, xt + j0, s, T(0), c, ldc);
    gemm(false, true, m, j1 - j0, depth, alpha, a, lda, x + j0 * ld, ld, T(0), c, ldc);
  }
};

/// Tile row i's keys, relative to the tile's first key: [lo, last) the rule lets it see, and [lo, hi) the
/// softmax loops touch, `last` rounded up to whole vectors (16 floats) within the tile; the keys in
/// [last, hi) are masked at -inf, so a partial vector never takes the scalar path.
struct RowKeys {
  std::int64_t lo, last, hi;
};
RowKeys row_keys(const MaskRule& rule, const Dims& z, const Tile& tile, std::int64_t i) {
  const auto vis = rule.visible(i, z.s);
  const std::int64_t lo = std::clamp(vis.first, tile.j0, tile.j1) - tile.j0;
  const std::int64_t last = std::clamp(vis.second, tile.j0 + lo, tile.j1) - tile.j0;
  return {lo, last, last == lo ? lo : std::min(tile.keys(), lo + (last - lo + 15) / 16 * 16)};
}

/// p [rows, keys] (leading dimension ldp) = scale q k^T over the tile: the rule's disallowed pairs at 0
/// outside each row's row_keys range (the softmax loops touch only that range, so a causal tile
/// exponentiates about half its scores) and at -inf inside it, the padding mask's at -inf (pad: [T, S] of
/// 0/1 or null).
template <class T>
void masked_scores(const T* q, std::int64_t ldq, const RowsOperand<T>& k, const double* pad, const MaskRule& rule,
                   T scale, const Dims& z, const Tile& tile, T* p, std::int64_t ldp) {
  const std::int64_t nk = tile.keys();
  k.product(tile.rows(), tile.j0, tile.j1, scale, q + tile.i0 * ldq, ldq, p, ldp);
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  for (std::int64_t i = tile.i0; i < tile.i1; ++i) {
    T* row = p + (i - tile.i0) * ldp;  // key j at row[j - j0]
    const auto [lo, last, hi] = row_keys(rule, z, tile, i);
    std::fill(row, row + lo, T(0));
    std::fill(row + last, row + hi, ninf);
    std::fill(row + hi, row + nk, T(0));
    if (pad) {
      const double* pr = pad + i * z.s + tile.j0;
      for (std::int64_t j = lo; j < last; ++j)
        if (pr[j] == 0.0) row[j] = ninf;
    }
  }
}

/// One (batch, head) block forward, tile by tile: p = softmax(masked scores) per row, lse [T] = each row's
/// log-sum-exp, out [T, Dv] = p v. p is [tile rows, S] scratch, or with `probs` [T, S] each tile's
/// probabilities are written there and kept for backward (where a tile reads only its own keys' columns).
/// A row with nothing to attend to is NaN, as softmax over all -inf is in PyTorch.
template <class T>
void attention_forward(const T* q, std::int64_t ldq, const T* k, std::int64_t ldk, const T* v, std::int64_t ldv,
                       const double* pad, const MaskRule& rule, T scale, const Dims& z, T* scratch, T* probs, T* kt,
                       T* lse, T* out, std::int64_t ldo) {
  const RowsOperand<T> keys(k, ldk, z.s, z.d, kt);
  constexpr T nan = std::numeric_limits<T>::quiet_NaN();
  for (std::int64_t i0 = 0; i0 < z.t; i0 += tile_rows(z, rule)) {
    const Tile tile = tile_at(rule, z, i0);
    const std::int64_t nk = tile.keys();
    if (nk == 0) {  // no key visible from any row of the tile
      std::fill(lse + tile.i0, lse + tile.i1, nan);
      for (std::int64_t i = tile.i0; i < tile.i1; ++i) std::fill_n(out + i * ldo, z.dv, nan);
      continue;
    }
    T* p = probs ? probs + tile.i0 * z.s + tile.j0 : scratch;
    const std::int64_t ldp = probs ? z.s : nk;
    masked_scores(q, ldq, keys, pad, rule, scale, z, tile, p, ldp);
    for (std::int64_t r = 0; r < tile.rows(); ++r) {
      const auto [lo, last, hi] = row_keys(rule, z, tile, tile.i0 + r);
      T* row = p + r * ldp + lo;
      const std::int64_t n = hi - lo;
      T m = row_max(row, n);
      if (std::isinf(m)) {  // nothing visible (n = 0 gives -inf too)
        std::fill_n(p + r * ldp, nk, nan);
        lse[tile.i0 + r] = nan;
        continue;
      }
      T sum = exp_shift_sum(row, row, n, m);
      T inv = T(1) / sum;
#pragma omp simd
      for (std::int64_t j = 0; j < n; ++j) row[j] *= inv;
      lse[tile.i0 + r] = m + std::log(sum);
    }
    gemm(false, false, tile.rows(), z.dv, nk, T(1), p, ldp, v + tile.j0 * ldv, ldv, T(0), out + tile.i0 * ldo, ldo);
  }
}

/// One block backward from g [T, Dv], tile by tile: p = the forward's `probs` [T, S] when kept, else
/// recomputed as exp(scores - lse); then dv += p^T g;  ds = p (g v^T - rowsum(g v^T p));  dq = scale ds k;
/// dk += scale ds^T q over the tile's keys (dk and dv accumulate across tiles in the GEMM, beta = 1). p and
/// dp are [tile rows, S] scratch.
/// A row with nothing to attend to made the forward NaN; its gradients are NaN everywhere, as in PyTorch.
template <class T>
void attention_backward(const T* q, std::int64_t ldq, const T* k, std::int64_t ldk, const T* v, std::int64_t ldv,
                        const T* g, std::int64_t ldg, const double* pad, const MaskRule& rule, T scale, const T* lse,
                        const T* probs, const Dims& z, T* scratch, T* dp, T* kt, T* vt, T* dq, std::int64_t lddq, T* dk,
                        std::int64_t lddk, T* dv, std::int64_t lddv) {
  auto fill_rows = [](T* m, std::int64_t rows, std::int64_t cols, std::int64_t ld, T value) {
    for (std::int64_t r = 0; r < rows; ++r) std::fill_n(m + r * ld, cols, value);
  };
  if (std::any_of(lse, lse + z.t, [](T x) { return std::isnan(x); })) {
    constexpr T nan = std::numeric_limits<T>::quiet_NaN();
    fill_rows(dq, z.t, z.d, lddq, nan);
    fill_rows(dk, z.s, z.d, lddk, nan);
    fill_rows(dv, z.s, z.dv, lddv, nan);
    return;
  }
  fill_rows(dk, z.s, z.d, lddk, T(0));
  fill_rows(dv, z.s, z.dv, lddv, T(0));
  const RowsOperand<T> keys(k, ldk, z.s, z.d, kt), values(v, ldv, z.s, z.dv, vt);
  for (std::int64_t i0 = 0; i0 < z.t; i0 += tile_rows(z, rule)) {
    const Tile tile = tile_at(rule, z, i0);
    const std::int64_t nk = tile.keys(), nr = tile.rows();
    const T* p = probs ? probs + tile.i0 * z.s + tile.j0 : scratch;
    const std::int64_t ldp = probs ? z.s : nk;
    if (!probs) {
      masked_scores(q, ldq, keys, pad, rule, scale, z, tile, scratch, nk);
      for (std::int64_t r = 0; r < nr; ++r) {
        const auto [lo, last, hi] = row_keys(rule, z, tile, tile.i0 + r);
        T* row = scratch + r * nk + lo;
        exp_shift_sum(row, row, hi - lo, lse[tile.i0 + r]);  // padded entries (-inf) become 0
      }
    }
    const T* gt = g + tile.i0 * ldg;
    gemm(true, false, nk, z.dv, nr, T(1), p, ldp, gt, ldg, T(1), dv + tile.j0 * lddv, lddv);
    values.product(nr, tile.j0, tile.j1, T(1), gt, ldg, dp, nk);
    for (std::int64_t r = 0; r < nr; ++r) {
      const T* pr = p + r * ldp;
      T* dr = dp + r * nk;
      T dot = row_dot(dr, pr, nk);
      for (std::int64_t j = 0; j < nk; ++j) dr[j] = pr[j] * (dr[j] - dot);
    }
    gemm(false, false, nr, z.d, nk, scale, dp, nk, k + tile.j0 * ldk, ldk, T(0), dq + tile.i0 * lddq, lddq);
    gemm(true, false, nk, z.d, nr, scale, dp, nk, q + tile.i0 * ldq, ldq, T(1), dk + tile.j0 * lddk, lddk);
  }
}

/// Whether the blocks' keys and values are worth transposing once per block (RowsOperand): where a tile's
/// A B^T products run as A B^T slowly and a block has more than one tile to share the copy.
template <class T>
bool transpose_pays(const Dims& z, const MaskRule& rule) {
  const std::int64_t rows = std::min(z.t, tile_rows(z, rule));
  return rows < z.t && kernel::transposed_b_is_slow<T>(rows, z.s, std::max(z.d, z.dv));
}

/// Whether forward keeps the probabilities [T, S] per block for backward, which then neither recomputes
/// the scores nor exponentiates them again: where they take no more memory than the block's q, k and v,
/// i.e. short sequences (flash attention's recomputation is for long ones).
bool keep_probs(const Dims& z) { return z.t * z.s <= z.t * z.d + z.s * (z.d + z.dv); }

/// The kept probabilities of `blocks` blocks, or undefined (also when no gradient will be asked for).
Tensor probs_for(const Dims& z, std::int64_t blocks, std::span<const Tensor> inputs) {
  return keep_probs(z) && autograd::needs_grad(inputs) ? empty({blocks, z.t, z.s}, {inputs[0].dtype()}) : Tensor();
}

/// Forward over every (batch, head) block, spread over the thread pool; out is written through its operand,
/// and the probabilities into `probs` [blocks, T, S] when it is defined.
void run_forward(const Operand& qo, const Operand& ko, const Operand& vo, const Tensor& pad, const MaskRule& rule,
                 double scale, const Dims& z, const Operand& oo, const Tensor& lse, const Tensor& probs) {
  const auto nb = static_cast<std::int64_t>(qo.offsets.size());
  dispatch_float(qo.t.dtype(), "scaled_dot_product_attention", [&]<class T>() {
    const bool copy = transpose_pays<T>(z, rule);
    parallel_for(nb, z.grain(), [&](std::int64_t b0, std::int64_t b1) {
      std::vector<T> p(static_cast<std::size_t>(std::min(z.t, tile_rows(z, rule)) * z.s)),
          kt(copy ? static_cast<std::size_t>(z.s * z.d) : 0);
      for (std::int64_t b = b0; b < b1; ++b)
        attention_forward<T>(qo.at<T>(b), qo.ld, ko.at<T>(b), ko.ld, vo.at<T>(b), vo.ld,
                             pad.defined() ? ptr<double>(pad) + b * z.t * z.s : nullptr, rule, T(scale), z, p.data(),
                             probs.defined() ? ptr<T>(probs) + b * z.t * z.s : nullptr, copy ? kt.data() : nullptr,
                             ptr<T>(lse) + b * z.t, oo.out<T>(b), oo.ld);
    });
  });
}

/// Backward over every block; dq, dk, dv are written through their operands.
void run_backward(const Operand& qo, const Operand& ko, const Operand& vo, const Operand& go, const Tensor& pad,
                  const MaskRule& rule, double scale, const Tensor& lse, const Tensor& probs, const Dims& z,
                  const Operand& dqo, const Operand& dko, const Operand& dvo) {
  dispatch_float(qo.t.dtype(), "scaled_dot_product_attention_backward", [&]<class T>() {
    // With the probabilities kept, the keys are not multiplied as A B^T: only the values need a copy.
    const bool copy_v = transpose_pays<T>(z, rule), copy_k = copy_v && !probs.defined();
    parallel_for(static_cast<std::int64_t>(qo.offsets.size()), z.grain(), [&](std::int64_t b0, std::int64_t b1) {
      std::vector<T> p(probs.defined() ? 0 : static_cast<std::size_t>(std::min(z.t, tile_rows(z, rule)) * z.s)),
          dp(static_cast<std::size_t>(std::min(z.t, tile_rows(z, rule)) * z.s)),
          kt(copy_k ? static_cast<std::size_t>(z.s * z.d) : 0), vt(copy_v ? static_cast<std::size_t>(z.s * z.dv) : 0);
      for (std::int64_t i = b0; i < b1; ++i)
        attention_backward<T>(qo.at<T>(i), qo.ld, ko.at<T>(i), ko.ld, vo.at<T>(i), vo.ld, go.at<T>(i), go.ld,
                              pad.defined() ? ptr<double>(pad) + i * z.t * z.s : nullptr, rule, T(scale),
                              ptr<T>(lse) + i * z.t, probs.defined() ? ptr<T>(probs) + i * z.t * z.s : nullptr, z,
                              p.data(), dp.data(), copy_k ? kt.data() : nullptr, copy_v ? vt.data() : nullptr,
                              dqo.out<T>(i), dqo.ld, dko.out<T>(i), dko.ld, dvo.out<T>(i), dvo.ld);
    });
  });
}

/// dq, dk, dv in Tensor ops (the create_graph path): softmax backward per row, then the three products.
std::array<Tensor, 3> composite_grads(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                      const MaskRule& rule, const Tensor& mask, double scale) {
  Tensor p = attention_probs(q, k, rule, mask, scale);
  Tensor dp = matmul(g, transpose(v, -1, -2));
  Tensor ds = p * (dp - sum(dp * p, {-1}, true));
  return {matmul(ds, k) * scale, matmul(transpose(ds, -1, -2), q) * scale, matmul(transpose(p, -1, -2), g)};
}

struct AttentionRule {
  Saved q, k, v, pad;  // pad: the padding mask broadcast to [..., T, S] as float64 (or undefined)
  Tensor mask;         // the user's mask, for the composite path
  Tensor lse;          // [batch, T]
  Tensor probs;        // [batch, T, S] when kept (keep_probs), else undefined
  MaskRule rule;
  double scale;
  bool bf16;  // recorded under autocast: the backward products run in bf16 too

  Grads fused(const Tensor& g) const {
    autocast precision(bf16);
    const Tensor &qv = q.get(), &kv = k.get(), &vv = v.get();
    Tensor dq = empty(qv.shape(), {qv.dtype()}), dk = empty(kv.shape(), {qv.dtype()}), dv = empty(vv.shape(), {qv.dtype()});
    run_backward(operand(qv), operand(kv), operand(vv), operand(g), pad.get(), rule, scale, lse, probs,
                 Dims::of(qv, kv, vv), operand(dq), operand(dk), operand(dv));
    return {dq, dk, dv};
  }
  Grads composite(const Tensor& g) const {
    autocast precision(bf16);
    auto [dq, dk, dv] = composite_grads(q.get(), k.get(), v.get(), g, rule, mask, scale);
    return {dq, dk, dv};
  }
};

/// Columns [first, first + H D) of a contiguous [B, T, W] tensor seen as H heads [B, H, T, D]: a view,
/// no copy, no graph (rows of a head are W apart).
Tensor head_view(const Tensor& x, std::int64_t heads, std::int64_t d, std::int64_t first) {
  const std::int64_t b = x.shape()[0], t = x.shape()[1], w = x.shape()[2];
  return make_view(x, {b, heads, t, d}, {t * w, d, w, 1}, x.offset() + first);
}

/// The packed projection's q, k and v as heads [B, H, T, D], in differentiable ops (the composite path).
std::array<Tensor, 3> split_heads(const Tensor& qkv, std::int64_t heads) {
  const std::int64_t b = qkv.shape()[0], t = qkv.shape()[1], c = qkv.shape()[2] / 3;
  auto parts = split(qkv, c, 2);
  auto h = [&](const Tensor& z) { return transpose(reshape(z, {b, t, heads, c / heads}), 1, 2); };
  return {h(parts[0]), h(parts[1]), h(parts[2])};
}
/// [B, H, T, D] -> [B, T, H D].
Tensor merge_heads(const Tensor& y) {
  return reshape(transpose(y, 1, 2), {y.shape()[0], y.shape()[2], y.shape()[1] * y.shape()[3]});
}

struct PackedAttentionRule {
  Saved qkv, pad;
  Tensor mask, lse, probs;
  MaskRule rule;
  double scale;
  std::int64_t heads;
  bool bf16;

  Grads fused(const Tensor& g) const {
    autocast precision(bf16);
    const Tensor& x = qkv.get();
    const std::int64_t c = x.shape()[2] / 3, d = c / heads;
    Tensor xc = contiguous_data(x), gc = contiguous_data(g);
    Tensor dx = empty(x.shape(), {x.dtype()});
    const Dims z{x.shape()[1], x.shape()[1], d, d};
    run_backward(operand(head_view(xc, heads, d, 0)), operand(head_view(xc, heads, d, c)),
                 operand(head_view(xc, heads, d, 2 * c)), operand(head_view(gc, heads, d, 0)), pad.get(), rule, scale,
                 lse, probs, z, operand(head_view(dx, heads, d, 0)), operand(head_view(dx, heads, d, c)),
                 operand(head_view(dx, heads, d, 2 * c)));
    return {dx};
  }
  Grads composite(const Tensor& g) const {
    autocast precision(bf16);
    auto [q, k, v] = split_heads(qkv.get(), heads);
    const std::int64_t b = g.shape()[0], t = g.shape()[1], c = g.shape()[2];
    Tensor gh = transpose(reshape(g, {b, t, heads, c / heads}), 1, 2);
    auto [dq, dk, dv] = composite_grads(q, k, v, gh, rule, mask, scale);
    return {cat({merge_heads(dq), merge_heads(dk), merge_heads(dv)}, 2)};
  }
};

/// The scores' full shape [..., T, S] after checking q, k, v and the options against each other.
Shape check_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& o) {
  constexpr std::string_view op = "scaled_dot_product_attention";
  XG_CHECK(q.dim() >= 2 && k.dim() == q.dim() && v.dim() == q.dim(),
           "{}: q, k, v must have the same number of dims (>= 2), got {}, {}, {}", op, shape_str(q.shape()),
           shape_str(k.shape()), shape_str(v.shape()));
  check_same_dtype(q, k, op);
  check_same_dtype(q, v, op);
  const std::int64_t nd = q.dim();
  Shape batch(q.shape().begin(), q.shape().end() - 2);
  XG_CHECK(Shape(k.shape().begin(), k.shape().end() - 2) == batch && Shape(v.shape().begin(), v.shape().end() - 2) == batch &&
               k.shape()[nd - 1] == q.shape()[nd - 1] && v.shape()[nd - 2] == k.shape()[nd - 2],
           "{}: shapes q {}, k {}, v {} do not fit q [..., T, D], k [..., S, D], v [..., S, Dv]", op,
           shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()));
  XG_CHECK(o.window >= 0, "{}: window must be >= 0, got {}", op, o.window);
  XG_CHECK(o.dropout_p >= 0.0 && o.dropout_p < 1.0, "{}: dropout_p must be in [0, 1), got {}", op, o.dropout_p);
  XG_CHECK(!(o.scale < 0.0) && std::isfinite(o.scale), "{}: scale must be finite and >= 0 (0: 1/sqrt(D)), got {}", op,
           o.scale);
  Shape full = batch;
  full.push_back(q.shape()[nd - 2]);
  full.push_back(k.shape()[nd - 2]);
  if (o.mask.defined())
    XG_CHECK(broadcast_shapes(o.mask.shape(), full, "scaled_dot_product_attention (mask)") == full,
             "{}: mask {} does not broadcast to the scores' shape {}", op, shape_str(o.mask.shape()), shape_str(full));
  return full;
}

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& o) {
  const Shape full = check_attention(q, k, v, o);
  const Dims z = Dims::of(q, k, v);
  const double scale = o.scale > 0.0 ? o.scale : 1.0 / std::sqrt(static_cast<double>(z.d));
  const MaskRule rule{o.causal, o.window, z.s - z.t};
  // Dropout on the weights and degenerate (zero-size) shapes take the composite path.
  if (o.dropout_p > 0.0 || z.t == 0 || z.s == 0 || z.d == 0 || z.dv == 0) {
    Tensor p = dropout(attention_probs(q, k, rule, o.mask, scale), o.dropout_p, true, o.generator);
    return matmul(p, v);
  }
  Shape oshape(full.begin(), full.end() - 1);
  oshape.push_back(z.dv);
  Tensor out = empty(oshape, {q.dtype()});
  const Operand qo = operand(q);
  Tensor lse = empty({static_cast<std::int64_t>(qo.offsets.size()), z.t}, {q.dtype()});
  // The padding mask read through broadcast strides, as doubles, per batch element.
  Tensor pad = o.mask.defined() ? contiguous_data(expand(o.mask.detach().to(DType::float64), full)) : Tensor();
  const Tensor inputs[] = {q, k, v};
  Tensor probs = probs_for(z, static_cast<std::int64_t>(qo.offsets.size()), inputs);
  run_forward(qo, operand(k), operand(v), pad, rule, scale, z, operand(out), lse, probs);
  return autograd::record_fused("scaled_dot_product_attention", {q, k, v}, out,
                                AttentionRule{Saved(q), Saved(k), Saved(v), Saved(pad), o.mask, lse, probs, rule, scale,
                                              is_autocast_enabled()});
}

Tensor packed_self_attention(const Tensor& qkv, std::int64_t heads, const AttentionOptions& o) {
  XG_CHECK(qkv.dim() == 3 && qkv.shape()[2] % 3 == 0,
           "packed_self_attention: qkv must be [B, T, 3 C] (q, k and v side by side), got {}", shape_str(qkv.shape()));
  const std::int64_t c = qkv.shape()[2] / 3;
  XG_CHECK(heads > 0 && c % heads == 0, "packed_self_attention: {} heads do not divide the width {}", heads, c);
  auto [q, k, v] = split_heads(qkv.detach(), heads);  // views, for the checks and the mask's shape
  const Shape full = check_attention(q, k, v, o);
  const Dims z = Dims::of(q, k, v);
  if (o.dropout_p > 0.0 || z.t == 0 || z.d == 0 || qkv.shape()[0] == 0) {
    auto [qh, kh, vh] = split_heads(qkv, heads);
    return merge_heads(scaled_dot_product_attention(qh, kh, vh, o));
  }
  const double scale = o.scale > 0.0 ? o.scale : 1.0 / std::sqrt(static_cast<double>(z.d));
  const MaskRule rule{o.causal, o.window, 0};
  Tensor x = contiguous_data(qkv);
  Tensor y = empty({qkv.shape()[0], z.t, c}, {qkv.dtype()});
  Tensor lse = empty({qkv.shape()[0] * heads, z.t}, {qkv.dtype()});
  Tensor pad = o.mask.defined() ? contiguous_data(expand(o.mask.detach().to(DType::float64), full)) : Tensor();
  Tensor probs = probs_for(z, qkv.shape()[0] * heads, std::span<const Tensor>(&qkv, 1));
  run_forward(operand(head_view(x, heads, z.d, 0)), operand(head_view(x, heads, z.d, c)),
              operand(head_view(x, heads, z.d, 2 * c)), pad, rule, scale, z, operand(head_view(y, heads, z.d, 0)), lse,
              probs);
  return autograd::record_fused("packed_self_attention", {qkv}, y,
                                PackedAttentionRule{Saved(qkv), Saved(pad), o.mask, lse, probs, rule, scale, heads,
                                                    is_autocast_enabled()});
}

// ---- rotary position embeddings ------------------------------------------------------------------------

std::pair<Tensor, Tensor> rope_cos_sin(std::int64_t seq_len, std::int64_t head_dim, double theta, std::int64_t offset,
                                       DType dtype) {
  XG_CHECK(seq_len >= 0 && offset >= 0, "rope_cos_sin: seq_len {} and offset {} must be >= 0", seq_len, offset);
  XG_CHECK(head_dim > 0 && head_dim % 2 == 0, "rope_cos_sin: head_dim must be positive and even, got {}", head_dim);
  XG_CHECK(theta > 0 && std::isfinite(theta), "rope_cos_sin: theta must be finite and positive, got {}", theta);
  const std::int64_t half = head_dim / 2;
  std::vector<double> c(static_cast<std::size_t>(seq_len * head_dim)), s(c.size());
  for (std::int64_t t = 0; t < seq_len; ++t)
    for (std::int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(offset + t) * std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
      for (std::int64_t j : {i, i + half}) {
        c[static_cast<std::size_t>(t * head_dim + j)] = std::cos(angle);
        s[static_cast<std::size_t>(t * head_dim + j)] = std::sin(angle);
      }
    }
  return {tensor(c, {seq_len, head_dim}, {dtype}), tensor(s, {seq_len, head_dim}, {dtype})};
}

Tensor apply_rotary_emb(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  XG_CHECK(x.dim() >= 2, "apply_rotary_emb: x must be [..., T, D], got {}", shape_str(x.shape()));
  const std::int64_t t = x.size(-2), d = x.size(-1);
  XG_CHECK(d % 2 == 0, "apply_rotary_emb: the head dim {} must be even", d);
  XG_CHECK(cos.shape() == Shape({t, d}) && sin.shape() == Shape({t, d}),
           "apply_rotary_emb: cos {} and sin {} must be [{}, {}] for x {}", shape_str(cos.shape()), shape_str(sin.shape()), t,
           d, shape_str(x.shape()));
  auto halves = split(x, d / 2, -1);
  return x * cos + cat({-halves[1], halves[0]}, -1) * sin;
}

}  // namespace xg::nn::functional

// scaled_dot_product_attention: a fused kernel that, per (batch, head), computes one T x S score block
// with gemm, masks it, takes the row softmax and multiplies by V. Only the row log-sum-exps are kept for
// backward, which recomputes the block. The composite version (Tensor ops) is the reference, the path
// for attention dropout, and the path for higher-order gradients.
#include <cmath>
#include <limits>

#include "internal.hpp"
#include "row_kernels.hpp"
#include "xgrad/autograd.hpp"
#include "xgrad/nn/functional.hpp"

namespace xg::nn::functional {
using namespace xg::detail;
using autograd::record;
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

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& o) {
  XG_CHECK(q.dim() >= 2 && k.dim() == q.dim() && v.dim() == q.dim(),
           "scaled_dot_product_attention: q, k, v must have the same number of dims (>= 2), got {}, {}, {}",
           shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()));
  check_same_dtype(q, k, "scaled_dot_product_attention");
  check_same_dtype(q, v, "scaled_dot_product_attention");
  const std::int64_t nd = q.dim();
  const std::int64_t t = q.shape()[nd - 2], d = q.shape()[nd - 1], s = k.shape()[nd - 2], dv = v.shape()[nd - 1];
  Shape batch(q.shape().begin(), q.shape().end() - 2);
  XG_CHECK(Shape(k.shape().begin(), k.shape().end() - 2) == batch && Shape(v.shape().begin(), v.shape().end() - 2) == batch &&
               k.shape()[nd - 1] == d && v.shape()[nd - 2] == s,
           "scaled_dot_product_attention: shapes q {}, k {}, v {} do not fit q [..., T, D], k [..., S, D], v [..., S, Dv]",
           shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()));
  XG_CHECK(o.window >= 0, "scaled_dot_product_attention: window must be >= 0, got {}", o.window);
  XG_CHECK(o.dropout_p >= 0.0 && o.dropout_p < 1.0, "scaled_dot_product_attention: dropout_p must be in [0, 1), got {}",
           o.dropout_p);
  Shape full = batch;
  full.push_back(t);
  full.push_back(s);
  if (o.mask.defined())
    XG_CHECK(broadcast_shapes(o.mask.shape(), full, "scaled_dot_product_attention (mask)") == full,
             "scaled_dot_product_attention: mask {} does not broadcast to the scores' shape {}", shape_str(o.mask.shape()),
             shape_str(full));
  const double scale = o.scale > 0.0 ? o.scale : 1.0 / std::sqrt(static_cast<double>(d));
  const MaskRule rule{o.causal, o.window, s - t};

  // Dropout on the weights and degenerate (zero-size) shapes take the composite path.
  if (o.dropout_p > 0.0 || t == 0 || s == 0 || d == 0 || dv == 0) {
    Tensor p = dropout(attention_probs(q, k, rule, o.mask, scale), o.dropout_p, true, o.generator);
    return matmul(p, v);
  }

  const std::int64_t nb = numel_of(batch);
  Shape oshape = batch;
  oshape.push_back(t);
  oshape.push_back(dv);
  Tensor out = empty(oshape, {q.dtype()});
  Tensor lse = empty({nb, t}, {q.dtype()});
  const Operand qo = operand(q), ko = operand(k), vo = operand(v);
  // The padding mask read through broadcast strides, as doubles, per batch element.
  Tensor pad = o.mask.defined() ? contiguous_data(expand(o.mask.detach().to(DType::float64), full)) : Tensor();

  dispatch_float(q.dtype(), "scaled_dot_product_attention", [&]<class T>() {
    std::vector<T> block(static_cast<std::size_t>(t * s));
    for (std::int64_t b = 0; b < nb; ++b) {
      const T* qb = qo.at<T>(b);
      const T* kb = ko.at<T>(b);
      const T* vb = vo.at<T>(b);
      const double* pb = pad.defined() ? ptr<double>(pad) + b * t * s : nullptr;
      // block = scale * Q K^T   [T, S]
      gemm(false, true, t, s, d, T(scale), qb, qo.ld, kb, ko.ld, T(0), block.data(), s);
      T* lb = ptr<T>(lse) + b * t;
      for (std::int64_t i = 0; i < t; ++i) {
        T* row = block.data() + i * s;
        for (std::int64_t j = 0; j < s; ++j)
          if (!rule.allowed(i, j) || (pb && pb[i * s + j] == 0.0)) row[j] = -std::numeric_limits<T>::infinity();
        T m = row_max(row, s);
        if (std::isinf(m)) {  // nothing to attend to: NaN, as softmax over all -inf gives in PyTorch
          std::fill_n(row, s, std::numeric_limits<T>::quiet_NaN());
          lb[i] = std::numeric_limits<T>::quiet_NaN();
          continue;
        }
        T sum = exp_shift_sum(row, row, s, m);
        T inv = T(1) / sum;
#pragma omp simd
        for (std::int64_t j = 0; j < s; ++j) row[j] *= inv;
        lb[i] = m + std::log(sum);
      }
      // out = P V   [T, Dv]
      gemm(false, false, t, dv, s, T(1), block.data(), s, vb, vo.ld, T(0), ptr<T>(out) + b * t * dv, dv);
    }
  });

  return record("scaled_dot_product_attention", {q, k, v}, out,
                [sq = Saved(q), sk = Saved(k), sv = Saved(v), pad, lse, rule, scale, nb, mask = o.mask](const Tensor& g) {
    const Tensor &q = sq.get(), &k = sk.get(), &v = sv.get();
    if (autograd::is_grad_enabled()) {
      Tensor p = attention_probs(q, k, rule, mask, scale);
      Tensor dp = matmul(g, transpose(v, -1, -2));
      Tensor ds = p * (dp - sum(dp * p, {-1}, true));  // softmax backward, per row
      return Grads{matmul(ds, k) * scale, matmul(transpose(ds, -1, -2), q) * scale, matmul(transpose(p, -1, -2), g)};
    }
    const std::int64_t nd = q.dim();
    const std::int64_t t = q.shape()[nd - 2], d = q.shape()[nd - 1], s = k.shape()[nd - 2], dv = v.shape()[nd - 1];
    Tensor dq = empty(q.shape(), {q.dtype()}), dk = empty(k.shape(), {q.dtype()}), dvt = empty(v.shape(), {q.dtype()});
    const Operand qo = operand(q), ko = operand(k), vo = operand(v), go = operand(g);
    dispatch_float(q.dtype(), "scaled_dot_product_attention_backward", [&]<class T>() {
      std::vector<T> p(static_cast<std::size_t>(t * s)), dp(static_cast<std::size_t>(t * s));
      for (std::int64_t b = 0; b < nb; ++b) {
        const T* qb = qo.at<T>(b);
        const T* kb = ko.at<T>(b);
        const T* vb = vo.at<T>(b);
        const T* gb = go.at<T>(b);
        const double* pb = pad.defined() ? ptr<double>(pad) + b * t * s : nullptr;
        const T* lb = ptr<T>(lse) + b * t;
        // Recompute P = exp(scale Q K^T - lse) on allowed pairs.
        gemm(false, true, t, s, d, T(scale), qb, qo.ld, kb, ko.ld, T(0), p.data(), s);
        for (std::int64_t i = 0; i < t; ++i) {
          T* row = p.data() + i * s;
          for (std::int64_t j = 0; j < s; ++j) {
            bool ok = rule.allowed(i, j) && !(pb && pb[i * s + j] == 0.0);
            row[j] = ok ? row[j] - lb[i] : -std::numeric_limits<T>::infinity();
          }
          exp_shift_sum(row, row, s, T(0));  // P = exp(S - lse); masked entries become 0
        }
        // dV = P^T dO;  dP = dO V^T
        gemm(true, false, s, dv, t, T(1), p.data(), s, gb, go.ld, T(0), ptr<T>(dvt) + b * s * dv, dv);
        gemm(false, true, t, s, dv, T(1), gb, go.ld, vb, vo.ld, T(0), dp.data(), s);
        // dS = P (dP - rowsum(dP P)), kept in dp
        for (std::int64_t i = 0; i < t; ++i) {
          T* pr = p.data() + i * s;
          T* dr = dp.data() + i * s;
          T dot = 0;
          for (std::int64_t j = 0; j < s; ++j) dot += dr[j] * pr[j];
          for (std::int64_t j = 0; j < s; ++j) dr[j] = pr[j] * (dr[j] - dot);
        }
        // dQ = scale dS K;  dK = scale dS^T Q
        gemm(false, false, t, d, s, T(scale), dp.data(), s, kb, ko.ld, T(0), ptr<T>(dq) + b * t * d, d);
        gemm(true, false, s, d, t, T(scale), dp.data(), s, qb, qo.ld, T(0), ptr<T>(dk) + b * s * d, d);
      }
    });
    return Grads{dq, dk, dvt};
  });
}

}  // namespace xg::nn::functional

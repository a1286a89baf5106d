// Losses. cross_entropy: log-softmax and the negative log-likelihood fused per row, keeping only each row's
// log-sum-exp for backward (the composite formula is the create_graph path). The others are written with
// other ops, so every derivative of any order comes with them.
#include <algorithm>
#include <cmath>

#include "xgrad/kernel.hpp"
#include "xgrad/nn/functional.hpp"

namespace xg::nn::functional {
using namespace xg::kernel;
using autograd::Saved;
using Grads = std::vector<Tensor>;

namespace {

/// x [rows, n], targets [rows] -> loss [rows] (0 on ignored rows), lse [rows] = log(sum(exp(x))).
template <class T>
void cross_entropy_forward(const T* x, const std::int64_t* t, std::int64_t ignore, T* loss, T* lse, std::int64_t rows,
                           std::int64_t n) {
  parallel_for(rows, row_grain(n), [&](std::int64_t begin, std::int64_t end) {
    std::vector<T> scratch(static_cast<std::size_t>(n));
    for (std::int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * n;
      T m = row_max(xr, n);
      lse[r] = m + std::log(exp_shift_sum(xr, scratch.data(), n, m));
      loss[r] = t[r] == ignore ? T(0) : lse[r] - xr[t[r]];
    }
  });
}

/// dx [rows, n] = (softmax(x) - one_hot(t)) * g_r, with g_r = g[r] (no reduction) or g[0] * scale.
template <class T>
void cross_entropy_backward(const T* x, const std::int64_t* t, std::int64_t ignore, const T* lse, const T* g,
                            bool per_row, T scale, T* dx, std::int64_t rows, std::int64_t n) {
  parallel_for(rows, row_grain(n), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r = begin; r < end; ++r) {
      T* dr = dx + r * n;
      if (t[r] == ignore) {
        std::fill_n(dr, n, T(0));
        continue;
      }
      const T gr = per_row ? g[r] : g[0] * scale;
      exp_shift_sum(x + r * n, dr, n, lse[r]);  // softmax
#pragma omp simd
      for (std::int64_t i = 0; i < n; ++i) dr[i] *= gr;
      dr[t[r]] -= gr;
    }
  });
}

struct CrossEntropyRule {
  Saved x, targets;
  Tensor lse;
  Reduction reduction;
  double scale;  // 1/count for the mean
  std::int64_t ignore;

  Grads fused(const Tensor& g) const {
    const Tensor& xv = x.get();
    return {dispatch_float(xv.dtype(), "cross_entropy_backward", [&]<class T>() {
      auto [rows, n] = rows_of(xv);
      Tensor xc = contiguous_data(xv), gc = contiguous_data(g), tc = contiguous_data(targets.get());
      Tensor dx = empty(xv.shape(), {xv.dtype()});
      cross_entropy_backward<T>(ptr<T>(xc), ptr<std::int64_t>(tc), ignore, ptr<T>(lse), ptr<T>(gc),
                                reduction == Reduction::none, T(scale), ptr<T>(dx), rows, n);
      return dx;
    })};
  }
  // dx = (softmax(x) - one_hot(t)) * g_row, with g_row = g * scale on counted rows, 0 on ignored ones.
  Grads composite(const Tensor& g) const {
    const Tensor &xv = x.get(), &t = targets.get();
    Tensor valid = ne(t, static_cast<double>(ignore)).to(xv.dtype());
    Tensor safe = where(valid.to(DType::int64), t, index_tensor({0}).reshape({}));
    Tensor onehot = scatter_add(zeros(xv.shape(), {xv.dtype()}), -1, unsqueeze(safe, -1), unsqueeze(valid, -1));
    Tensor grow = reduction == Reduction::none ? g * valid : expand(g * scale, valid.shape()) * valid;
    return {(softmax(xv, -1) - onehot) * unsqueeze(grow, -1)};
  }
};

/// The number of rows that count, after checking every target is a class or ignore_index.
std::int64_t count_targets(const Tensor& targets, std::int64_t classes, std::int64_t ignore) {
  std::int64_t count = 0, r = 0;
  for (auto t : targets.to_vector<std::int64_t>()) {
    if (t != ignore) {
      XG_CHECK(t >= 0 && t < classes, "cross_entropy: target {} (at position {}) is out of range for {} classes", t, r,
               classes);
      ++count;
    }
    ++r;
  }
  return count;
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, CrossEntropyOptions o) {
  XG_CHECK(logits.dim() >= 1, "cross_entropy: logits must have a class dim, got a 0-d tensor");
  XG_CHECK(targets.dtype() == DType::int64, "cross_entropy: targets must be int64 class indices, got {} {}",
           dtype_name(targets.dtype()), shape_str(targets.shape()));
  Shape lead(logits.shape().begin(), logits.shape().end() - 1);
  XG_CHECK(targets.shape() == lead, "cross_entropy: targets {} must have the shape of the logits {} without the "
           "class dim, i.e. {}", shape_str(targets.shape()), shape_str(logits.shape()), shape_str(lead));
  XG_CHECK(o.reduction != Reduction::batchmean, "cross_entropy: reduction batchmean is kl_div's; use mean, sum or none");
  const std::int64_t count = count_targets(targets, logits.shape().back(), o.ignore_index);
  const auto shape2d = rows_of(logits);
  const std::int64_t rows = shape2d.first, n = shape2d.second;
  Tensor lse = empty({rows}, {logits.dtype()});
  Tensor per_row = empty(lead, {logits.dtype()});
  dispatch_float(logits.dtype(), "cross_entropy", [&]<class T>() {
    Tensor xc = contiguous_data(logits), tc = contiguous_data(targets);
    cross_entropy_forward<T>(ptr<T>(xc), ptr<std::int64_t>(tc), o.ignore_index, ptr<T>(per_row), ptr<T>(lse), rows, n);
  });
  Tensor out = per_row;
  double scale = 1.0;
  if (o.reduction != Reduction::none) {
    out = sum(per_row);
    if (o.reduction == Reduction::mean) {
      scale = 1.0 / static_cast<double>(count);  // NaN when every target is ignored, like PyTorch
      out = out * scale;
    }
  }
  return autograd::record_fused("cross_entropy", {logits}, out,
                                CrossEntropyRule{Saved(logits), Saved(targets), lse, o.reduction, scale, o.ignore_index});
}

// ---- losses written with other ops -------------------------------------------------------------------

namespace {
/// Refuses what PyTorch would broadcast with only a warning: a target of another shape is almost always a
/// bug (a [N] target against a [N, 1] input gives an [N, N] loss).
void check_pair(const Tensor& input, const Tensor& target, std::string_view op) {
  XG_CHECK(input.defined() && target.defined(), "{}: input and target must be defined", op);
  XG_CHECK(is_floating(input.dtype()), "{}: input must be float32 or float64, got {} {}", op, dtype_name(input.dtype()),
           shape_str(input.shape()));
  XG_CHECK(input.shape() == target.shape(), "{}: target {} must have the input's shape {}", op,
           shape_str(target.shape()), shape_str(input.shape()));
  check_same_dtype(input, target, op);
}

Tensor reduce(const Tensor& per_element, Reduction r, std::string_view op) {
  switch (r) {
    case Reduction::none: return per_element;
    case Reduction::sum: return sum(per_element);
    case Reduction::mean: return mean(per_element);
    case Reduction::batchmean: break;
  }
  fail("{}: reduction batchmean is kl_div's; use mean, sum or none", op);
}
}  // namespace

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  check_pair(input, target, "mse_loss");
  Tensor d = input - target;
  return reduce(d * d, reduction, "mse_loss");
}

Tensor l1_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  check_pair(input, target, "l1_loss");
  return reduce(abs(input - target), reduction, "l1_loss");
}

Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, Reduction reduction, double beta) {
  check_pair(input, target, "smooth_l1_loss");
  XG_CHECK(beta >= 0 && std::isfinite(beta), "smooth_l1_loss: beta must be finite and >= 0, got {}", beta);
  if (beta == 0) return l1_loss(input, target, reduction);
  Tensor d = input - target, a = abs(d);
  return reduce(where(lt(a, beta), d * d * (0.5 / beta), a - 0.5 * beta), reduction, "smooth_l1_loss");
}

Tensor huber_loss(const Tensor& input, const Tensor& target, Reduction reduction, double delta) {
  check_pair(input, target, "huber_loss");
  XG_CHECK(delta > 0 && std::isfinite(delta), "huber_loss: delta must be finite and > 0, got {}", delta);
  Tensor d = input - target, a = abs(d);
  return reduce(where(lt(a, delta), d * d * 0.5, (a - 0.5 * delta) * delta), reduction, "huber_loss");
}

Tensor binary_cross_entropy_with_logits(const Tensor& input, const Tensor& target, const BCEWithLogitsOptions& o) {
  const std::string_view op = "binary_cross_entropy_with_logits";
  check_pair(input, target, op);
  // log(1 + exp(-|x|)) + max(-x, 0) = log(1 + exp(-x)), without overflow for large |x|.
  Tensor softplus_neg = log(1.0 + exp(-abs(input))) + relu(-input);
  Tensor loss;
  if (o.pos_weight.defined()) {
    XG_CHECK(input.dim() >= 1 && o.pos_weight.dim() == 1 && o.pos_weight.size(0) == input.shape().back(),
             "{}: pos_weight {} must be [C] for an input of {} (C = the last dim)", op, shape_str(o.pos_weight.shape()),
             shape_str(input.shape()));
    check_same_dtype(input, o.pos_weight, op);
    loss = (1.0 - target) * input + ((o.pos_weight - 1.0) * target + 1.0) * softplus_neg;
  } else {
    loss = (1.0 - target) * input + softplus_neg;
  }
  if (o.weight.defined()) {
    XG_CHECK(broadcast_shapes(o.weight.shape(), input.shape(), op) == input.shape(),
             "{}: weight {} must broadcast to the input's shape {}", op, shape_str(o.weight.shape()), shape_str(input.shape()));
    check_same_dtype(input, o.weight, op);
    loss = loss * o.weight;
  }
  return reduce(loss, o.reduction, op);
}

Tensor nll_loss(const Tensor& log_probs, const Tensor& targets, const NLLLossOptions& o) {
  XG_CHECK(log_probs.dim() >= 1 && is_floating(log_probs.dtype()),
           "nll_loss: log_probs must be a float tensor with a class dim, got {} {}", dtype_name(log_probs.dtype()),
           shape_str(log_probs.shape()));
  XG_CHECK(targets.dtype() == DType::int64, "nll_loss: targets must be int64 class indices, got {} {}",
           dtype_name(targets.dtype()), shape_str(targets.shape()));
  const Shape lead(log_probs.shape().begin(), log_probs.shape().end() - 1);
  XG_CHECK(targets.shape() == lead, "nll_loss: targets {} must have the shape of log_probs {} without the class dim, i.e. {}",
           shape_str(targets.shape()), shape_str(log_probs.shape()), shape_str(lead));
  const std::int64_t classes = log_probs.shape().back();
  {
    std::int64_t r = 0;
    for (auto t : targets.to_vector<std::int64_t>()) {
      XG_CHECK(t == o.ignore_index || (t >= 0 && t < classes),
               "nll_loss: target {} (at position {}) is out of range for {} classes", t, r, classes);
      ++r;
    }
  }
  if (o.weight.defined()) {
    XG_CHECK(o.weight.shape() == Shape{classes}, "nll_loss: weight {} must be [{}], one per class",
             shape_str(o.weight.shape()), classes);
    check_same_dtype(log_probs, o.weight, "nll_loss");
  }
  XG_CHECK(o.reduction != Reduction::batchmean, "nll_loss: reduction batchmean is kl_div's; use mean, sum or none");
  const Tensor valid = ne(targets, static_cast<double>(o.ignore_index));
  const Tensor safe = where(valid, targets, index_tensor({0}).reshape({}));
  Tensor w = valid.to(log_probs.dtype());
  if (o.weight.defined()) w = w * index_select(o.weight, 0, safe.reshape({-1})).reshape(lead);
  Tensor picked = squeeze(gather(log_probs, -1, unsqueeze(safe, -1)), -1);
  Tensor loss = -picked * w;
  if (o.reduction == Reduction::none) return loss;
  if (o.reduction == Reduction::sum) return sum(loss);
  return sum(loss) / sum(w);  // the weighted mean; NaN when every target is ignored, like PyTorch
}

Tensor kl_div(const Tensor& input, const Tensor& target, const KLDivOptions& o) {
  check_pair(input, target, "kl_div");
  Tensor pointwise;
  if (o.log_target) {
    pointwise = exp(target) * (target - input);
  } else {
    // target log target, taken as 0 where target is 0 (xlogy), so zero-probability classes add nothing.
    const Tensor positive = gt(target, 0.0);
    pointwise = where(positive, target * (log(where(positive, target, 1.0)) - input), 0.0);
  }
  if (o.reduction == Reduction::batchmean) {
    XG_CHECK(input.dim() >= 1, "kl_div: batchmean needs a batch dim, got a 0-d input");
    return sum(pointwise) / static_cast<double>(input.size(0));
  }
  return reduce(pointwise, o.reduction, "kl_div");
}

}  // namespace xg::nn::functional

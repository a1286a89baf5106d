// cross_entropy: log-softmax and the negative log-likelihood fused per row, keeping only each row's
// log-sum-exp for backward; the composite formula is the create_graph path.
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

}  // namespace xg::nn::functional

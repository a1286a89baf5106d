// matmul on BLAS gemm. Transposed operands are passed to gemm as transpose flags with their leading
// dimension, never copied; a (B, T, C) @ (C, D) product is one gemm over B*T rows.
#include <map>

#include "../internal.hpp"

namespace xg {
using namespace kernel;
using autograd::record;
using Grads = std::vector<Tensor>;

namespace {

/// How gemm reads the last two dims of an operand: transposed or not, with which leading dimension.
struct MatrixLayout {
  bool ok = false;
  bool trans = false;
  std::int64_t ld = 0;
};
MatrixLayout layout_of(const Tensor& t) {
  std::int64_t nd = t.dim();
  std::int64_t r = t.shape()[nd - 2], c = t.shape()[nd - 1];
  std::int64_t sr = t.strides()[nd - 2], sc = t.strides()[nd - 1];
  if (c == 1) sc = 1;  // a stride along a size-1 dim is never used
  if (r == 1) sr = std::max<std::int64_t>(c, 1);
  if (sc == 1 && sr >= std::max<std::int64_t>(c, 1)) return {true, false, sr};
  if (c > 1 && r > 1 && sr == 1 && sc >= r) return {true, true, sc};
  if (r == 1 && sc >= 1 && c > 1 && sc != 1) return {true, true, sc};  // a row read with a stride is a column
  return {};
}

/// a (..., m, k) @ b (..., k, n) for nd >= 2 on both, with broadcast batch dims.
Tensor matmul_nd(const Tensor& a_in, const Tensor& b_in) {
  check_same_dtype(a_in, b_in, "matmul");
  const Shape &sa = a_in.shape(), &sb = b_in.shape();
  std::int64_t m = sa[sa.size() - 2], k = sa.back(), k2 = sb[sb.size() - 2], n = sb.back();
  XG_CHECK(k == k2, "matmul: inner dimensions differ: {} @ {} ({} vs {})", shape_str(sa), shape_str(sb), k, k2);
  Shape ba(sa.begin(), sa.end() - 2), bb(sb.begin(), sb.end() - 2);
  Shape batch = broadcast_shapes(ba, bb, "matmul (batch dims)");
  Shape shape = batch;
  shape.push_back(m);
  shape.push_back(n);

  Tensor a = a_in, b = b_in;
  MatrixLayout la = layout_of(a), lb = layout_of(b);
  if (!la.ok) {
    a = contiguous_data(a);
    la = layout_of(a);
  }
  if (!lb.ok) {
    b = contiguous_data(b);
    lb = layout_of(b);
  }
  Tensor out = empty(shape, {a.dtype()});
  if (out.numel() == 0) return out;
  if (k == 0) return zeros(shape, {a.dtype()});

  // Fold the batch of a into the rows when b has no batch and a's rows are evenly spaced: one big gemm.
  std::int64_t nb = numel_of(batch);
  bool fold = bb.empty() && !la.trans && a.is_contiguous();
  dispatch_float(a.dtype(), "matmul", [&]<class T>() {
    const T* pa = ptr<T>(a);
    const T* pb = ptr<T>(b);
    T* po = ptr<T>(out);
    if (fold || nb == 1) {
      gemm(la.trans, lb.trans, fold ? m * nb : m, n, k, T(1), pa, la.ld, pb, lb.ld, T(0), po, n);
      return;
    }
    // Batch loop: offsets of each operand through its own (broadcast) batch strides.
    Shape bsa = broadcast_strides(make_view(a, ba, Shape(a.strides().begin(), a.strides().end() - 2), 0), batch);
    Shape bsb = broadcast_strides(make_view(b, bb, Shape(b.strides().begin(), b.strides().end() - 2), 0), batch);
    Shape bso = contiguous_strides(batch);
    for (auto& s : bso) s *= m * n;
    strided_loop<3>(batch, {&bsa, &bsb, &bso}, {0, 0, 0}, [&](const auto& o, std::int64_t cnt, const auto& in) {
      for (std::int64_t i = 0; i < cnt; ++i)
        gemm(la.trans, lb.trans, m, n, k, T(1), pa + o[0] + i * in[0], la.ld, pb + o[1] + i * in[1], lb.ld, T(0),
             po + o[2] + i * in[2], n);
    });
  });
  return out;
}

/// True when the last two dims are laid out column-major (a transposed view of a contiguous matrix).
bool stored_transposed(const Tensor& t) {
  std::int64_t nd = t.dim();
  return t.shape()[nd - 2] > 1 && t.shape()[nd - 1] > 1 && t.strides()[nd - 2] == 1;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  XG_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: both arguments need at least 1 dim, got shapes {} and {}",
           shape_str(a.shape()), shape_str(b.shape()));
  // 1-D operands become matrices and the added dim is removed again, as in torch.matmul.
  if (a.dim() == 1 && b.dim() == 1) {
    XG_CHECK(a.shape()[0] == b.shape()[0], "matmul: inner dimensions differ: {} @ {}", shape_str(a.shape()),
             shape_str(b.shape()));
    return reshape(matmul(unsqueeze(a, 0), unsqueeze(b, 1)), {});
  }
  if (a.dim() == 1) return squeeze(matmul(unsqueeze(a, 0), b), -2);
  if (b.dim() == 1) return squeeze(matmul(a, unsqueeze(b, 1)), -1);

  Tensor out = matmul_nd(a, b);
  bool ga = a.requires_grad(), gb = b.requires_grad();
  // Recorded under autocast, the backward products run in bf16 too, wherever backward is called.
  return record("matmul", {a, b}, out, [sa = autograd::Saved(a), sb = autograd::Saved(b), ga, gb,
                                        bf16 = is_autocast_enabled()](const Tensor& g) {
    autocast precision(bf16);
    const Tensor &x = sa.get(), &y = sb.get();
    Tensor gx, gy;
    // A gradient is computed in the memory layout of its input: for nn.Linear's weight.t() (a transposed
    // view) dW^T = dC^T A is produced directly, so no transposed copy is made on the way to .grad.
    if (ga) {
      gx = stored_transposed(x) ? transpose(matmul(y, transpose(g, -1, -2)), -1, -2)  // dA = (B dC^T)^T
                                : matmul(g, transpose(y, -1, -2));                    // dA = dC B^T
      gx = sum_to(gx, x.shape());
    }
    if (gb) {
      if (y.dim() == 2 && x.dim() > 2) {
        // dB = A^T dC summed over the batch: one gemm with the batch folded into the inner dimension.
        std::int64_t k = x.shape().back(), n = g.shape().back();
        Tensor x2 = reshape(x, {-1, k}), g2 = reshape(g, {-1, n});
        gy = stored_transposed(y) ? transpose(matmul(transpose(g2, 0, 1), x2), 0, 1)
                                  : matmul(transpose(x2, 0, 1), g2);
      } else {
        gy = stored_transposed(y) ? transpose(matmul(transpose(g, -1, -2), x), -1, -2)  // dB = (dC^T A)^T
                                  : matmul(transpose(x, -1, -2), g);                    // dB = A^T dC
        gy = sum_to(gy, y.shape());
      }
    }
    return Grads{gx, gy};
  });
}


// ---- einsum ---------------------------------------------------------------------------------------------

namespace {
/// An operand with one letter per dim.
struct Labeled {
  Tensor t;
  std::string letters;
};

/// t with its dims in the order of `order` (a permutation of its letters).
Tensor arrange(const Labeled& x, const std::string& order) {
  Shape perm;
  for (char c : order) perm.push_back(static_cast<std::int64_t>(x.letters.find(c)));
  return permute(x.t, perm);
}

/// Sums out the letters of x that are not in `keep`.
Labeled reduce_to(const Labeled& x, const std::string& keep) {
  Shape dims;
  std::string left;
  for (std::size_t i = 0; i < x.letters.size(); ++i) {
    if (keep.find(x.letters[i]) == std::string::npos) dims.push_back(static_cast<std::int64_t>(i));
    else left += x.letters[i];
  }
  return dims.empty() ? x : Labeled{sum(x.t, dims), left};
}

/// a and b contracted over their shared letters that `keep` does not hold, as one batched matmul:
/// [batch, a-only, shared] @ [batch, shared, b-only].
Labeled contract(Labeled a, Labeled b, const std::string& keep, const std::map<char, std::int64_t>& size) {
  // Letters only one operand has and nothing later needs are summed out first.
  a = reduce_to(a, keep + b.letters);
  b = reduce_to(b, keep + a.letters);
  std::string batch, contracted, a_only, b_only;
  for (char c : a.letters) {
    const bool in_b = b.letters.find(c) != std::string::npos, kept = keep.find(c) != std::string::npos;
    (in_b ? (kept ? batch : contracted) : a_only) += c;
  }
  for (char c : b.letters)
    if (a.letters.find(c) == std::string::npos) b_only += c;
  auto count = [&](const std::string& ls) {
    std::int64_t n = 1;
    for (char c : ls) n = checked_mul(n, size.at(c), "einsum");
    return n;
  };
  Tensor ta = arrange(a, batch + a_only + contracted).reshape({count(batch), count(a_only), count(contracted)});
  Tensor tb = arrange(b, batch + contracted + b_only).reshape({count(batch), count(contracted), count(b_only)});
  Shape out_shape;
  for (char c : batch + a_only + b_only) out_shape.push_back(size.at(c));
  return {matmul(ta, tb).reshape(out_shape), batch + a_only + b_only};
}
}  // namespace

Tensor einsum(const std::string& equation, const std::vector<Tensor>& operands) {
  std::string eq;
  for (char c : equation)
    if (c != ' ') eq += c;
  const auto arrow = eq.find("->");
  std::string lhs = eq.substr(0, arrow), out;
  std::vector<std::string> inputs;
  for (std::size_t start = 0;;) {
    const auto comma = lhs.find(',', start);
    inputs.push_back(lhs.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  XG_CHECK(inputs.size() == operands.size(), "einsum: \"{}\" names {} operands, {} given", equation, inputs.size(),
           operands.size());
  std::map<char, std::int64_t> size, uses;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    const std::string& ls = inputs[k];
    XG_CHECK(operands[k].defined() && static_cast<std::int64_t>(ls.size()) == operands[k].dim(),
             "einsum: operand {} has {} dims, but \"{}\" names {}", k, operands[k].defined() ? operands[k].dim() : 0, ls,
             ls.size());
    for (std::size_t i = 0; i < ls.size(); ++i) {
      const char c = ls[i];
      XG_CHECK((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'), "einsum: \"{}\": '{}' is not a letter", equation, c);
      XG_CHECK(ls.find(c) == i, "einsum: \"{}\": '{}' appears twice in operand {} (diagonals are not supported)",
               equation, c, k);
      const std::int64_t n = operands[k].size(static_cast<std::int64_t>(i));
      auto [it, fresh] = size.emplace(c, n);
      XG_CHECK(fresh || it->second == n, "einsum: \"{}\": '{}' is {} in one operand and {} in another", equation, c,
               it->second, n);
      ++uses[c];
    }
  }
  if (arrow == std::string::npos) {
    for (auto [c, n] : uses)
      if (n == 1) out += c;  // std::map: alphabetical
  } else {
    out = eq.substr(arrow + 2);
    for (std::size_t i = 0; i < out.size(); ++i) {
      XG_CHECK(size.count(out[i]), "einsum: \"{}\": the output's '{}' is in no operand", equation, out[i]);
      XG_CHECK(out.find(out[i]) == i, "einsum: \"{}\": '{}' appears twice in the output", equation, out[i]);
    }
  }
  // Left to right: each step keeps the letters the output or a later operand needs.
  Labeled acc{operands[0], inputs[0]};
  for (std::size_t k = 1; k < operands.size(); ++k) {
    std::string keep = out;
    for (std::size_t j = k + 1; j < inputs.size(); ++j) keep += inputs[j];
    acc = contract(acc, Labeled{operands[k], inputs[k]}, keep, size);
  }
  acc = reduce_to(acc, out);
  return out.empty() ? acc.t.reshape({}) : arrange(acc, out);
}

}  // namespace xg

// RNN, LSTM and GRU: the input projections of a whole sequence in one GEMM per layer, then one small step
// per position, all in Tensor ops.
#include "xgrad/nn/layers.hpp"

#include <fmt/format.h>

#include <cmath>

#include "xgrad/check.hpp"
#include "xgrad/nn/init.hpp"

namespace xg::nn {

RecurrentBase::RecurrentBase(std::string name, const RNNOptions& o, std::int64_t gates, Generator* gen)
    : Module(std::move(name)), options_(o), gen_(gen) {
  if (o.input_ <= 0 || o.hidden_ <= 0 || o.num_layers_ <= 0)
    fail("{}: input_size {}, hidden_size {} and num_layers {} must be positive", type_name(), o.input_, o.hidden_,
         o.num_layers_);
  if (!(o.dropout_ >= 0 && o.dropout_ < 1)) fail("{}: dropout must be in [0, 1), got {}", type_name(), o.dropout_);
  // PyTorch's initialisation: every weight and bias uniform in +-1/sqrt(hidden_size).
  const double k = 1.0 / std::sqrt(static_cast<double>(o.hidden_));
  for (std::int64_t l = 0; l < o.num_layers_; ++l) {
    const std::int64_t in = l == 0 ? o.input_ : o.hidden_;
    auto param = [&](const std::string& n, const Shape& s) {
      Tensor t = register_parameter(fmt::format("{}_l{}", n, l), empty(s, {o.dtype_}));
      init::uniform_(t, -k, k, gen);
      return t;
    };
    weight_ih_.push_back(param("weight_ih", {gates * o.hidden_, in}));
    weight_hh_.push_back(param("weight_hh", {gates * o.hidden_, o.hidden_}));
    if (o.bias_) {
      bias_ih_.push_back(param("bias_ih", {gates * o.hidden_}));
      bias_hh_.push_back(param("bias_hh", {gates * o.hidden_}));
    }
  }
}

Tensor RecurrentBase::hidden_projection(std::int64_t layer, const Tensor& h) const {
  const auto l = static_cast<std::size_t>(layer);
  Tensor p = matmul(h, weight_hh_[l].t());
  return options_.bias_ ? p + bias_hh_[l] : p;
}

std::pair<Tensor, std::vector<std::vector<Tensor>>> RecurrentBase::run(
    const Tensor& x_in, std::vector<std::vector<Tensor>> initial,
    const std::function<std::vector<Tensor>(std::int64_t, const Tensor&, const std::vector<Tensor>&)>& cell) {
  const RNNOptions& o = options_;
  XG_CHECK(x_in.dim() == 2 || x_in.dim() == 3, "{}: expected input [T, B, {}] ({}), got {}", type_name(), o.input_,
           o.batch_first_ ? "[B, T, in] with batch_first" : "or [T, in] unbatched", shape_str(x_in.shape()));
  const bool unbatched = x_in.dim() == 2;
  Tensor x = unbatched ? unsqueeze(x_in, 1) : (o.batch_first_ ? transpose(x_in, 0, 1) : x_in);  // [T, B, in]
  XG_CHECK(x.size(2) == o.input_, "{}: input {} has {} features, expected {}", type_name(), shape_str(x_in.shape()),
           x.size(2), o.input_);
  const std::int64_t steps = x.size(0), batch = x.size(1);
  std::vector<std::vector<Tensor>> finals;
  for (std::int64_t l = 0; l < o.num_layers_; ++l) {
    const auto li = static_cast<std::size_t>(l);
    std::vector<Tensor> state = initial[li];
    for (auto& s : state) {
      if (!s.defined()) s = zeros({batch, o.hidden_}, {x.dtype()});
    }
    // The input's share of every gate at every step: one GEMM over the whole sequence.
    Tensor xw = matmul(x, weight_ih_[li].t());
    if (o.bias_) xw = xw + bias_ih_[li];
    std::vector<Tensor> outputs;
    for (std::int64_t t = 0; t < steps; ++t) {
      state = cell(l, xw.select(0, t), state);
      outputs.push_back(state[0]);
    }
    x = steps == 0 ? zeros({0, batch, o.hidden_}, {x.dtype()}) : stack(outputs, 0);
    if (l + 1 < o.num_layers_) x = functional::dropout(x, o.dropout_, is_training(), gen_);
    finals.push_back(state);
  }
  Tensor out = unbatched ? squeeze(x, 1) : (o.batch_first_ ? transpose(x, 0, 1) : x);
  return {out, finals};
}

std::string RecurrentBase::extra_repr() const {
  std::string s = fmt::format("{}, {}", options_.input_, options_.hidden_);
  if (options_.num_layers_ != 1) s += fmt::format(", num_layers={}", options_.num_layers_);
  if (!options_.bias_) s += ", bias=False";
  if (options_.batch_first_) s += ", batch_first=True";
  if (options_.dropout_ > 0) s += fmt::format(", dropout={}", options_.dropout_);
  return s;
}

namespace {
/// Initial states [num_layers, B, H] (or [num_layers, H] unbatched) split per layer; undefined: zeros.
std::vector<Tensor> per_layer(const Tensor& s, const RNNOptions& o, const Tensor& x, const std::string& name, const char* what) {
  std::vector<Tensor> out(static_cast<std::size_t>(o.num_layers_));
  if (!s.defined()) return out;
  const bool unbatched = x.dim() == 2;
  const std::int64_t batch = unbatched ? 1 : x.size(o.batch_first_ ? 0 : 1);
  const Shape want = unbatched ? Shape{o.num_layers_, o.hidden_} : Shape{o.num_layers_, batch, o.hidden_};
  XG_CHECK(s.shape() == want, "{}: {} has shape {}, expected {}", name, what, shape_str(s.shape()), shape_str(want));
  for (std::int64_t l = 0; l < o.num_layers_; ++l) {
    Tensor layer = s.select(0, l);
    out[static_cast<std::size_t>(l)] = unbatched ? unsqueeze(layer, 0) : layer;
  }
  return out;
}
/// Each layer's final state stacked to [num_layers, B, H] ([num_layers, H] unbatched).
Tensor stacked(const std::vector<std::vector<Tensor>>& finals, std::size_t which, bool unbatched) {
  std::vector<Tensor> parts;
  for (const auto& f : finals) parts.push_back(unbatched ? squeeze(f[which], 0) : f[which]);
  return stack(parts, 0);
}
}  // namespace

RNN::RNN(const RNNOptions& o, Generator* gen) : RecurrentBase("RNN", o, 1, gen) {}

std::pair<Tensor, Tensor> RNN::forward(const Tensor& x, const Tensor& h0) {
  std::vector<std::vector<Tensor>> initial;
  for (auto& h : per_layer(h0, options_, x, type_name(), "h0")) initial.push_back({h});
  auto [out, finals] = run(x, initial, [&](std::int64_t l, const Tensor& xw, const std::vector<Tensor>& s) {
    Tensor pre = xw + hidden_projection(l, s[0]);
    return std::vector<Tensor>{options_.relu_ ? relu(pre) : tanh(pre)};
  });
  return {out, stacked(finals, 0, x.dim() == 2)};
}

LSTM::LSTM(const RNNOptions& o, Generator* gen) : RecurrentBase("LSTM", o, 4, gen) {}

std::tuple<Tensor, Tensor, Tensor> LSTM::forward(const Tensor& x, const Tensor& h0, const Tensor& c0) {
  auto hs = per_layer(h0, options_, x, type_name(), "h0"), cs = per_layer(c0, options_, x, type_name(), "c0");
  std::vector<std::vector<Tensor>> initial;
  for (std::size_t l = 0; l < hs.size(); ++l) initial.push_back({hs[l], cs[l]});
  auto [out, finals] = run(x, initial, [&](std::int64_t l, const Tensor& xw, const std::vector<Tensor>& s) {
    auto g = chunk(xw + hidden_projection(l, s[0]), 4, -1);  // i, f, g, o
    Tensor c = sigmoid(g[1]) * s[1] + sigmoid(g[0]) * tanh(g[2]);
    return std::vector<Tensor>{sigmoid(g[3]) * tanh(c), c};
  });
  return {out, stacked(finals, 0, x.dim() == 2), stacked(finals, 1, x.dim() == 2)};
}

GRU::GRU(const RNNOptions& o, Generator* gen) : RecurrentBase("GRU", o, 3, gen) {}

std::pair<Tensor, Tensor> GRU::forward(const Tensor& x, const Tensor& h0) {
  std::vector<std::vector<Tensor>> initial;
  for (auto& h : per_layer(h0, options_, x, type_name(), "h0")) initial.push_back({h});
  auto [out, finals] = run(x, initial, [&](std::int64_t l, const Tensor& xw, const std::vector<Tensor>& s) {
    auto gx = chunk(xw, 3, -1), gh = chunk(hidden_projection(l, s[0]), 3, -1);  // r, z, n
    Tensor r = sigmoid(gx[0] + gh[0]), z = sigmoid(gx[1] + gh[1]);
    Tensor n = tanh(gx[2] + r * gh[2]);
    return std::vector<Tensor>{(1.0 - z) * n + z * s[0]};
  });
  return {out, stacked(finals, 0, x.dim() == 2)};
}

}  // namespace xg::nn

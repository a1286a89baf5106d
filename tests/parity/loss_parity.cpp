// Writes the losses of nn::functional, with their gradients, on seeded float64 inputs to a safetensors file,
// for loss_parity.py to compare with torch.nn.functional on the same inputs.
//   loss_parity OUT.safetensors
#include <cstdio>

#include <xgrad/xgrad.hpp>

using xg::Tensor;
namespace F = xg::nn::functional;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: loss_parity OUT.safetensors\n");
    return 2;
  }
  try {
    xg::Generator gen(7);
    auto randn = [&](const xg::Shape& s) { return xg::randn(s, {xg::float64}, &gen); };
    xg::StateDict out;
    // Inputs, shared by every case (loss_parity.py reads them back).
    Tensor x = randn({6, 5}) * 2.0, y = randn({6, 5}) * 2.0, w = xg::exp(randn({6, 5}) * 0.3),
           pw = xg::exp(randn({5}) * 0.5), cw = xg::exp(randn({5}) * 0.3);
    Tensor p = xg::sigmoid(randn({6, 5}) * 2.0);  // probabilities, for bce targets
    Tensor t = xg::index_tensor({0, 4, 2, -100, 1, 4});
    for (auto& [k, v] : xg::StateDict{{"x", x}, {"y", y}, {"w", w}, {"pw", pw}, {"cw", cw}, {"p", p}, {"t", t}})
      out.emplace_back(k, v);
    // Each case: the loss of (a, b) and its gradients with respect to both, a cotangent of ones.
    auto record = [&](const std::string& name, const std::function<Tensor(const Tensor&, const Tensor&)>& f,
                      const Tensor& a, const Tensor& b) {
      Tensor ga = a.detach().requires_grad_(), gb = b.detach().requires_grad_();
      Tensor l = f(ga, gb);
      auto g = xg::autograd::grad({l}, {ga, gb}, {xg::ones_like(l)}, {.allow_unused = true});
      out.emplace_back(name + ".loss", l.detach());
      out.emplace_back(name + ".grad_a", g[0].defined() ? g[0] : xg::zeros_like(a));
      out.emplace_back(name + ".grad_b", g[1].defined() ? g[1] : xg::zeros_like(b));
    };
    using R = F::Reduction;
    for (const auto& reduction : {std::pair{R::mean, "mean"}, {R::sum, "sum"}, {R::none, "none"}}) {
      const R r = reduction.first;  // a plain variable: the lambdas capture it (clang 14 refuses bindings)
      const std::string s = reduction.second;
      record("mse_loss." + s, [r](auto& a, auto& b) { return F::mse_loss(a, b, r); }, x, y);
      record("l1_loss." + s, [r](auto& a, auto& b) { return F::l1_loss(a, b, r); }, x, y);
      record("smooth_l1_loss." + s, [r](auto& a, auto& b) { return F::smooth_l1_loss(a, b, r, 0.8); }, x, y);
      record("huber_loss." + s, [r](auto& a, auto& b) { return F::huber_loss(a, b, r, 1.3); }, x, y);
      record("bce_with_logits." + s, [r](auto& a, auto& b) { return F::binary_cross_entropy_with_logits(a, b, {.reduction = r}); }, x, p);
      record("bce_with_logits_weighted." + s, [&, r](auto& a, auto& b) {
        return F::binary_cross_entropy_with_logits(a, b, {.weight = w, .pos_weight = pw, .reduction = r});
      }, x, p);
      record("nll_loss." + s, [&, r](auto& a, auto&) { return F::nll_loss(F::log_softmax(a, -1), t, {.reduction = r}); }, x, y);
      record("nll_loss_weighted." + s, [&, r](auto& a, auto&) {
        return F::nll_loss(F::log_softmax(a, -1), t, {.weight = cw, .reduction = r});
      }, x, y);
      record("kl_div." + s, [r](auto& a, auto& b) { return F::kl_div(F::log_softmax(a, -1), F::softmax(b, -1), {.reduction = r}); }, x, y);
      record("kl_div_log_target." + s, [r](auto& a, auto& b) {
        return F::kl_div(F::log_softmax(a, -1), F::log_softmax(b, -1), {.reduction = r, .log_target = true});
      }, x, y);
    }
    record("kl_div.batchmean", [](auto& a, auto& b) {
      return F::kl_div(F::log_softmax(a, -1), F::softmax(b, -1), {.reduction = R::batchmean});
    }, x, y);
    xg::save_safetensors(argv[1], out);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loss_parity: %s\n", e.what());
    return 1;
  }
  return 0;
}

// Writes xg::func's results on fixed functions and seeded inputs to a safetensors file, with the inputs,
// for func_parity.py to compare with torch.autograd.functional on the same functions.
//   func_parity OUT.safetensors
#include <cstdio>

#include <xgrad/xgrad.hpp>

using xg::Tensor;
namespace func = xg::func;

namespace {
// The same three functions are written out in func_parity.py.
Tensor rosenbrock(const std::vector<Tensor>& v) {
  Tensor x = v[0].narrow(0, 0, v[0].size(0) - 1), y = v[0].narrow(0, 1, v[0].size(0) - 1);
  return xg::sum((1.0 - x) * (1.0 - x) + 100.0 * (y - x * x) * (y - x * x));
}
Tensor mixed(const std::vector<Tensor>& v) {
  Tensor a = v[0], b = v[1];
  return xg::stack({xg::sum(xg::sin(a) * a) * xg::exp(b.select(0, 0)), xg::tanh(a.select(0, 1) * b.select(0, 1)),
                    a.select(0, 2) * a.select(0, 2), b.select(0, 0) * 3.0});
}
Tensor layer(const Tensor& w, const Tensor& x) {
  Tensor h = xg::tanh(xg::matmul(w, x));
  return xg::sum(h * h) + xg::sum(xg::log(1.0 + xg::exp(x)));
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: func_parity OUT.safetensors\n");
    return 2;
  }
  try {
    xg::Generator gen(2024);
    auto randn = [&](const xg::Shape& s) { return xg::randn(s, {xg::float64}, &gen); };
    xg::StateDict out;
    // Rosenbrock in 5 dimensions: Hessian and hvp.
    Tensor r = randn({5}), rv = randn({5});
    out.emplace_back("rosen.x", r);
    out.emplace_back("rosen.v", rv);
    out.emplace_back("rosen.hessian", func::hessian(rosenbrock, {r})[0][0]);
    out.emplace_back("rosen.hvp", func::hvp(rosenbrock, {r}, {rv}).second[0]);
    // Two inputs, four outputs: Jacobians (both modes), jvp and vjp.
    Tensor a = randn({3}), b = randn({2}), ta = randn({3}), tb = randn({2}), u = randn({4});
    for (auto& [k, t] : xg::StateDict{{"mixed.a", a}, {"mixed.b", b}, {"mixed.ta", ta}, {"mixed.tb", tb}, {"mixed.u", u}})
      out.emplace_back(k, t);
    auto jr = func::jacobian(mixed, {a, b}, func::Mode::reverse), jf = func::jacobian(mixed, {a, b}, func::Mode::forward);
    out.emplace_back("mixed.jacobian.a", jr[0]);
    out.emplace_back("mixed.jacobian.b", jr[1]);
    out.emplace_back("mixed.jacobian_forward.a", jf[0]);
    out.emplace_back("mixed.jacobian_forward.b", jf[1]);
    out.emplace_back("mixed.jvp", func::jvp(mixed, {a, b}, {ta, tb}).second);
    auto vj = func::vjp(mixed, {a, b}, u).second;
    out.emplace_back("mixed.vjp.a", vj[0]);
    out.emplace_back("mixed.vjp.b", vj[1]);
    // A layer's Hessian with respect to its input and its weight together.
    Tensor w = randn({3, 4}), x = randn({4});
    out.emplace_back("layer.w", w);
    out.emplace_back("layer.x", x);
    auto h = func::hessian([](const std::vector<Tensor>& v) { return layer(v[0], v[1]); }, {w, x});
    out.emplace_back("layer.hessian.ww", h[0][0]);
    out.emplace_back("layer.hessian.wx", h[0][1]);
    out.emplace_back("layer.hessian.xw", h[1][0]);
    out.emplace_back("layer.hessian.xx", h[1][1]);
    xg::save_safetensors(argv[1], out);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "func_parity: %s\n", e.what());
    return 1;
  }
  return 0;
}

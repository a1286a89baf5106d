#include <xgrad/xgrad.hpp>

int main() {
  xg::Tensor x = xg::tensor({1.0, 2.0, 3.0}, {3}, {xg::float64, true});
  (x * x).sum().backward();  // d/dx sum(x^2) = 2x
  auto g = x.grad().to_vector<double>();
  fmt::print("grad = [{:.4f}, {:.4f}, {:.4f}]\n", g[0], g[1], g[2]);
  return 0;
}

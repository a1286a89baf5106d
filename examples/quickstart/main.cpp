// The README's first program: a tiny model, one backward, printed like PyTorch.
#include <xgrad/xgrad.hpp>

int main() {
  xg::manual_seed(0);
  xg::Tensor x = xg::randn({4, 3}, {xg::float64});
  xg::Tensor w = xg::randn({3, 2}, {xg::float64, /*requires_grad=*/true});
  xg::Tensor loss = xg::mean(xg::pow(xg::tanh(xg::matmul(x, w)), 2.0));
  loss.backward();
  fmt::print("{}\n{}\n", loss, w.grad());
}


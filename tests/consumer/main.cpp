#include <xgrad/kernel.hpp>
#include <xgrad/xgrad.hpp>

// A user's own op written with the installed kernel header, as the built-in ops are.
xg::Tensor my_square(const xg::Tensor& x) {
  xg::Tensor y = xg::empty(x.shape(), {x.dtype()});
  xg::kernel::dispatch_float(x.dtype(), "my_square", [&]<class T>() {
    xg::Tensor xc = xg::kernel::contiguous_data(x);
    const T* a = xg::kernel::ptr<T>(xc);
    T* out = xg::kernel::ptr<T>(y);
    for (std::int64_t i = 0; i < x.numel(); ++i) out[i] = a[i] * a[i];
  });
  return xg::autograd::record("my_square", {x}, y, [sx = xg::autograd::Saved(x)](const xg::Tensor& g) {
    return std::vector<xg::Tensor>{g * 2.0 * sx.get()};  // d/dx x^2 = 2x
  });
}

int main() {
  xg::Tensor x = xg::tensor({1.0, 2.0, 3.0}, {3}, {xg::float64, true});
  my_square(x).sum().backward();  // d/dx sum(x^2) = 2x
  auto g = x.grad().to_vector<double>();
  const bool ok = xg::autograd::gradcheck([](const auto& v) { return my_square(v[0]); }, {x.detach().requires_grad_()});
  fmt::print("grad = [{:.4f}, {:.4f}, {:.4f}], gradcheck {}\n", g[0], g[1], g[2], ok ? "passed" : "failed");
  return ok ? 0 : 1;
}

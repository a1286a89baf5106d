// Interop with xtensor: tensors from xtensor expressions, and xtensor views of tensor memory.
#include <xgrad/xtensor.hpp>

#include <xtensor/xbuilder.hpp>
#include <xtensor/xmath.hpp>

#include "helpers.hpp"

TEST_CASE("tensors convert to and from xtensor arrays", "[xtensor]") {
  xt::xarray<double> a = {{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}};
  xg::Tensor t = xg::from_xtensor(a);
  CHECK(t.dtype() == xg::float64);
  CHECK(t.shape() == xg::Shape{2, 3});
  CHECK(test::values(t) == std::vector<double>{1, 2, 3, 4, 5, 6});
  CHECK(xg::from_xtensor(xt::arange<std::int64_t>(4)).dtype() == xg::int64);
  CHECK(xg::from_xtensor(a * 2.0, {xg::float32}).dtype() == xg::float32);

  xt::xarray<double> back = xg::to_xarray<double>(xg::transpose(t, 0, 1));  // a non-contiguous view
  CHECK(back.shape(0) == 3);
  CHECK(back(2, 1) == 6.0);

  xg::Tensor z = xg::zeros({2, 2}, {xg::float32});
  auto view = xg::as_xtensor<float>(z);
  view(1, 0) = 7.0f;  // writes through to the tensor's memory
  CHECK(test::values(z) == std::vector<double>{0, 0, 7, 0});
  CHECK(xt::sum(view)() == 7.0f);
  test::require_error([&] { xg::as_xtensor<float>(z.t()); }, {"as_xtensor", "not contiguous"});
}

// xgrad <-> xtensor. Opt-in: this header pulls in xtensor, so include it only where you need the data
// as xtensor expressions (the rest of xgrad's headers stay xtensor-free).
#pragma once

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>

#include <cstdint>
#include <vector>

#include "xgrad/check.hpp"
#include "xgrad/tensor.hpp"

namespace xg {

/// A copy of the tensor's elements as an xt::xarray<T> (T must match the dtype).
template <class T>
xt::xarray<T> to_xarray(const Tensor& t) {
  std::vector<std::size_t> shape(t.shape().begin(), t.shape().end());
  xt::xarray<T> out = xt::xarray<T>::from_shape(shape);
  std::vector<T> v = t.to_vector<T>();
  std::copy(v.begin(), v.end(), out.begin());
  return out;
}

/// The tensor's memory as an xtensor expression, without copying (the tensor must be contiguous and
/// outlive the adaptor). Writes through it bypass the version counter: do them outside of any graph.
template <class T>
auto as_xtensor(const Tensor& t) {
  if (!t.is_contiguous()) xg::fail("as_xtensor: tensor of shape {} is not contiguous; call contiguous() first", shape_str(t.shape()));
  std::vector<std::size_t> shape(t.shape().begin(), t.shape().end());
  return xt::adapt(t.data_ptr<T>(), static_cast<std::size_t>(t.numel()), xt::no_ownership(), shape);
}

/// A new tensor holding the values of an xtensor expression, converted to options.dtype.
template <class E>
Tensor from_xtensor(const xt::xexpression<E>& expr, TensorOptions options) {
  using T = typename E::value_type;
  xt::xarray<T> a = expr;
  Shape shape(a.shape().begin(), a.shape().end());
  std::vector<T> values(a.begin(), a.end());
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, std::int64_t>) {
    return tensor(values, shape, options);
  } else {
    return tensor(std::vector<double>(values.begin(), values.end()), shape, options);
  }
}

/// A new tensor holding the values of an xtensor expression; the dtype follows the element type
/// (double -> float64, std::int64_t -> int64, anything else -> float32).
template <class E>
Tensor from_xtensor(const xt::xexpression<E>& expr) {
  using T = typename E::value_type;
  DType dt = std::is_same_v<T, double> ? DType::float64 : std::is_same_v<T, std::int64_t> ? DType::int64 : DType::float32;
  return from_xtensor(expr, TensorOptions{dt, false});
}

}  // namespace xg

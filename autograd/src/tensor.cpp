// The Tensor handle: accessors, autograd state, views, dtype conversion and copies.
#include "xgrad/kernel.hpp"


namespace xg {
using namespace kernel;

Tensor kernel::make_view(const Tensor& base, Shape shape, Shape strides, std::int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.impl()->storage;
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

// ---------------------------------------------------------------------------------------------------------
// Tensor accessors

const TensorImpl& Tensor::checked() const {
  if (!impl_) fail("xgrad: use of an undefined Tensor (default-constructed, or a gradient that was never computed)");
  return *impl_;
}
DType Tensor::dtype() const { return checked().dtype; }
const Shape& Tensor::shape() const { return checked().shape; }
const Shape& Tensor::strides() const { return checked().strides; }
std::int64_t Tensor::offset() const { return checked().offset; }
std::int64_t Tensor::size(std::int64_t d) const {
  XG_CHECK(dim() > 0, "size: a 0-d tensor has no dim {}; use numel()", d);
  return shape()[wrap_dim(d, dim(), "size", shape())];
}
std::int64_t Tensor::numel() const { return numel_of(shape()); }
bool Tensor::is_contiguous() const {
  const auto& s = shape();
  const auto& st = strides();
  std::int64_t expect = 1;
  for (std::size_t i = s.size(); i-- > 0;) {
    if (s[i] == 1) continue;
    if (st[i] != expect) return false;
    expect *= s[i];
  }
  return true;
}

template <class T>
T* Tensor::data_ptr() const {
  XG_CHECK(dtype() == dtype_of<T>(), "data_ptr: tensor {} is {}, not {}", shape_str(shape()), dtype_name(dtype()),
           dtype_name(dtype_of<T>()));
  return ptr<T>(*this);
}
template float* Tensor::data_ptr<float>() const;
template double* Tensor::data_ptr<double>() const;
template std::int64_t* Tensor::data_ptr<std::int64_t>() const;

template <class T>
std::vector<T> Tensor::to_vector() const {
  std::vector<T> out(static_cast<std::size_t>(numel()));
  dispatch_all(dtype(), [&]<class S>() {
    std::vector<S> tmp(out.size());
    if (!tmp.empty()) copy_to_contiguous<S>(*this, tmp.data());
    for (std::size_t i = 0; i < tmp.size(); ++i) out[i] = static_cast<T>(tmp[i]);
  });
  return out;
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<std::int64_t> Tensor::to_vector<std::int64_t>() const;

double Tensor::item() const { return item<double>(); }
template <class T>
T Tensor::item() const {
  XG_CHECK(numel() == 1, "item: only a one-element tensor converts to a number; got shape {}", shape_str(shape()));
  return dispatch_all(dtype(), [&]<class S>() { return static_cast<T>(*ptr<S>(*this)); });
}
template double Tensor::item<double>() const;
template float Tensor::item<float>() const;
template std::int64_t Tensor::item<std::int64_t>() const;

bool Tensor::requires_grad() const { return checked().requires_grad || impl_->grad_fn != nullptr; }
Tensor& Tensor::requires_grad_(bool value) {
  const auto& im = checked();
  XG_CHECK(!im.grad_fn, "requires_grad_: only leaf tensors can change requires_grad (tensor {} has grad_fn {}); use "
           "detach() for a new leaf", shape_str(im.shape), im.grad_fn->name());
  XG_CHECK(!value || is_floating(im.dtype), "requires_grad_: only floating-point tensors can require gradients, got {} {}",
           dtype_name(im.dtype), shape_str(im.shape));
  impl_->requires_grad = value;
  return *this;
}
Tensor Tensor::grad() const { return Tensor(checked().grad); }
void Tensor::set_grad(const Tensor& g) const {
  checked();
  if (g.defined())
    XG_CHECK(g.shape() == shape() && g.dtype() == dtype(), "set_grad: gradient {} {} does not match tensor {} {}",
             dtype_name(g.dtype()), shape_str(g.shape()), dtype_name(dtype()), shape_str(shape()));
  impl_->grad = g.impl();
}
bool Tensor::is_leaf() const { return checked().grad_fn == nullptr; }
void Tensor::retain_grad() const {
  XG_CHECK(requires_grad(), "retain_grad: tensor {} does not require grad", shape_str(shape()));
  impl_->retains_grad = true;
  if (impl_->grad_fn) impl_->grad_fn->retain_output(impl_);
}
bool Tensor::retains_grad() const { return checked().retains_grad; }
const std::shared_ptr<autograd::Node>& Tensor::grad_fn() const { return checked().grad_fn; }
std::uint32_t Tensor::version() const { return checked().storage->version; }
const std::string& Tensor::name() const { return checked().name; }
Tensor& Tensor::set_name(std::string n) {
  checked();
  impl_->name = std::move(n);
  return *this;
}
void Tensor::backward(const Tensor& gradient, bool retain_graph, bool create_graph) const {
  std::vector<Tensor> grads;
  if (gradient.defined()) grads.push_back(gradient);
  autograd::backward({*this}, grads, retain_graph, create_graph);
}

void Tensor::set_data(const Tensor& other) const {
  checked();
  const TensorImpl& o = other.checked();
  XG_CHECK(is_floating(o.dtype) || !requires_grad(), "set_data: a tensor that requires grad cannot hold {} data",
           dtype_name(o.dtype));
  impl_->storage = o.storage;
  impl_->shape = o.shape;
  impl_->strides = o.strides;
  impl_->offset = o.offset;
  impl_->dtype = o.dtype;
  impl_->grad.reset();
}

Tensor Tensor::detach() const {
  Tensor t = make_view(*this, shape(), strides(), offset());
  t.impl()->name = impl_->name;
  return t;
}

// ---------------------------------------------------------------------------------------------------------
// dtype conversion, contiguous, clone

namespace {
Tensor convert(const Tensor& x, DType to) {
  Tensor out = empty(x.shape(), {to});
  if (out.numel() == 0) return out;
  dispatch_all(x.dtype(), [&]<class S>() {
    dispatch_all(to, [&]<class D>() {
      D* o = ptr<D>(out);
      const S* s = static_cast<const S*>(x.impl()->storage->data);
      Shape cs = contiguous_strides(x.shape());
      strided_loop<2>(x.shape(), {&x.strides(), &cs}, {x.offset(), 0},
                      [&](const auto& off, std::int64_t n, const auto& in) {
                        for (std::int64_t i = 0; i < n; ++i) o[off[1] + i] = convert_value<D>(s[off[0] + i * in[0]], "to(int64)");
                      });
    });
  });
  return out;
}
}  // namespace

Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return *this;
  XG_CHECK(!(requires_grad() && autograd::is_grad_enabled() && dt == DType::int64),
           "to: cannot convert a tensor that requires grad to int64 (shape {}); detach() it first", shape_str(shape()));
  Tensor out = convert(*this, dt);
  DType from = dtype();
  return autograd::record("to", {*this}, out, [from](const Tensor& g) {
    return std::vector<Tensor>{g.to(from)};  // d/dx cast(x) = 1
  });
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), {dtype()});
  if (out.numel() > 0) dispatch_all(dtype(), [&]<class T>() { copy_to_contiguous<T>(*this, ptr<T>(out)); });
  return autograd::record("clone", {*this}, out, [](const Tensor& g) { return std::vector<Tensor>{g}; });
}

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }
}  // namespace xg

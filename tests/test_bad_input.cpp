// Bad input through the C++ API, one row per case: every public function that takes a size, an index or
// a tensor it keeps is given what a careless or hostile caller might pass. Each row asserts an xg::Error
// whose message names the problem; none may crash, hang or return garbage (CI runs this file under
// AddressSanitizer and UBSan too). The command line and crafted files have their own table in
// tests/bad_input/cli_cases.py.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

#include <xgrad/kernel.hpp>

#include "helpers.hpp"

namespace nn = xg::nn;
namespace F = xg::nn::functional;
using xg::Shape;
using xg::Tensor;

namespace {

constexpr std::int64_t kBig = std::int64_t(1) << 40;
constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();
const double kNaN = std::numeric_limits<double>::quiet_NaN();

struct BadCase {
  std::string name;
  std::function<void()> call;
  std::vector<std::string> fragments;  // each must appear in the error message
};

Tensor f64(const Shape& s, bool grad = false) { return xg::ones(s, {xg::float64, grad}); }
Tensor idx(std::vector<std::int64_t> v, const Shape& s = {}) { return xg::index_tensor(v, s); }

/// A backward that must notice `change(saved)` made between forward and backward.
void changed_before_backward(const std::function<Tensor(const Tensor& x, const Tensor& saved)>& op, Tensor saved,
                             const std::function<void(Tensor&)>& change) {
  Tensor x = xg::randn({4, 5}, {xg::float64, true});
  Tensor y = op(x, saved);
  change(saved);
  xg::sum(y * y).backward();
}

// One row per case: the table is as long as the list of misuses it covers.
const std::vector<BadCase>& cases() {
  static const std::vector<BadCase> c = {
      // ---- sizes and creation ----
      {"zeros, element count overflows", [] { xg::zeros({kBig, kBig}); }, {"more elements than fit in 64 bits"}},
      {"zeros, negative size", [] { xg::zeros({3, -1}); }, {"negative"}},
      {"empty, byte count overflows", [] { xg::empty({std::int64_t(1) << 31, std::int64_t(1) << 30}, {xg::float64}); }, {"empty", "overflows"}},
      {"ones, overflow across many dims", [] { xg::ones({kBig, 1, kBig}); }, {"more elements than fit"}},
      {"full, overflow", [] { xg::full({kMax, 2}, 1.0); }, {"more elements than fit"}},
      {"arange, too many elements", [] { xg::arange(0.0, 1e30); }, {"more than any memory"}},
      {"arange, step 0", [] { xg::arange(0.0, 1.0, 0.0); }, {"step must be finite and nonzero"}},
      {"arange, step against the bounds", [] { xg::arange(0.0, 5.0, -1.0); }, {"inconsistent with the sign of step -1"}},
      {"arange, int64 past int64", [] { xg::arange(0.0, 3.0, 1.0, {xg::int64}).add_(0x1p70); }, {"cannot be an int64"}},
      {"eye, negative m", [] { xg::eye(3, -7); }, {"non-negative", "-7"}},
      {"full, int64 NaN", [] { xg::full({2}, kNaN, {xg::int64}); }, {"nan cannot be an int64"}},
      {"fill_, int64 beyond int64", [] { xg::zeros({2}, {xg::int64}).fill_(1e30); }, {"cannot be an int64"}},
      {"to(int64) of NaN", [] { xg::tensor({1.0, kNaN}).to(xg::int64); }, {"to(int64)", "nan"}},
      {"to(int64) of infinity", [] { xg::tensor({std::numeric_limits<double>::infinity()}).to(xg::int64); }, {"inf"}},
      {"to(int64) of 1e30", [] { xg::tensor({1e30}, {}, {xg::float64}).to(xg::int64); }, {"cannot be an int64"}},
      {"int64 + float32 suggests the float", [] { xg::index_tensor({1, 2}) + xg::tensor({1.0, 2.0}); },
       {"convert the int64 one with .to(xg::float32)"}},
      {"Linear on int64 input suggests the float",
       [] { xg::nn::Linear l(2, 3); l.forward(xg::index_tensor({1, 2})); }, {".to(xg::float32)"}},
      {"arange, NaN bound", [] { xg::arange(0.0, kNaN); }, {"finite"}},
      {"eye, negative", [] { xg::eye(-1); }, {"non-negative"}},
      {"eye, overflow", [] { xg::eye(kBig); }, {"more elements than fit"}},
      {"tensor, values do not fill the shape", [] { xg::tensor({1.0, 2.0, 3.0}, {2, 2}); }, {"do not fill"}},
      {"randint, empty range", [] { xg::randint(5, 5, {3}); }, {"empty range"}},
      {"randn, int64", [] { xg::randn({3}, {xg::int64}); }, {"floating-point"}},
      {"Generator, all-zero state", [] { xg::Generator g; g.set_state({0, 0, 0, 0, 0, 0}); }, {"all-zero"}},
      {"Generator, short state", [] { xg::Generator g; g.set_state({1, 2}); }, {"expected 6 words"}},
      {"set_num_threads(0)", [] { xg::set_num_threads(0); }, {"at least 1"}},
      // ---- shapes and views ----
      {"reshape, overflowing shape", [] { f64({4}).reshape({kBig, kBig}); }, {"reshape"}},
      {"reshape, two -1", [] { f64({4}).reshape({-1, -1}); }, {"only one dimension can be -1"}},
      {"reshape, size -2", [] { f64({4}).reshape({-2, -2}); }, {"invalid size -2"}},
      {"reshape, wrong count", [] { f64({4}).reshape({3}); }, {"invalid for input of shape [4]"}},
      {"reshape, -1 with a zero", [] { f64({0}).reshape({0, -1}); }, {"invalid"}},
      {"view, not viewable", [] { f64({3, 4}).t().view({12}); }, {"view"}},
      {"expand, overflowing view", [] { f64({1, 1}).expand({kBig, kBig}); }, {"more elements than fit"}},
      {"expand, negative size", [] { f64({1}).expand({-5}); }, {"invalid size -5"}},
      {"expand, mismatch", [] { f64({3}).expand({4}); }, {"must match"}},
      {"expand, fewer dims", [] { f64({2, 3}).expand({3}); }, {"fewer dims"}},
      {"size(0) of a 0-d tensor", [] { xg::scalar_tensor(1.0).size(0); }, {"0-d tensor has no dim"}},
      {"size, dim out of range", [] { f64({2}).size(3); }, {"out of range"}},
      {"split of a 0-d tensor", [] { xg::split(xg::scalar_tensor(1.0), 1, 0); }, {"cannot split a 0-d"}},
      {"chunk of a 0-d tensor", [] { xg::chunk(xg::scalar_tensor(1.0), 2, 0); }, {"cannot chunk a 0-d"}},
      {"chunk, 0 chunks", [] { xg::chunk(f64({4}), 0, 0); }, {"must be positive"}},
      {"split, sizes do not add up", [] { xg::split(f64({4}), std::vector<std::int64_t>{1, 2}, 0); }, {"add up to 3"}},
      {"split, sizes overflow", [] { xg::split(f64({4}), std::vector<std::int64_t>{kMax, kMax}, 0); }, {"do not add up"}},
      {"split, size 0", [] { xg::split(f64({4}), std::int64_t{0}, 0); }, {"must be positive"}},
      {"narrow, out of bounds", [] { xg::narrow(f64({4}), 0, 3, 2); }, {"out of bounds"}},
      {"narrow, huge length", [] { xg::narrow(f64({4}), 0, 1, kMax); }, {"out of bounds"}},
      {"narrow, start past the end", [] { xg::narrow(f64({4}), 0, 9, 0); }, {"out of bounds"}},
      {"slice, step 0", [] { xg::slice(f64({4}), 0, 0, 4, 0); }, {"step must be positive"}},
      {"slice of a 0-d tensor", [] { xg::slice(xg::scalar_tensor(1.0), 0, 0, 1); }, {"0-d"}},
      {"select, index out of range", [] { xg::select(f64({3}), 0, 3); }, {"out of range"}},
      {"transpose, dim out of range", [] { xg::transpose(f64({2, 3}), 0, 2); }, {"out of range"}},
      {"permute, repeated dim", [] { xg::permute(f64({2, 3}), {0, 0}); }, {"permute"}},
      {"squeeze, dim out of range", [] { xg::squeeze(f64({2}), 4); }, {"out of range"}},
      {"unsqueeze, dim out of range", [] { xg::unsqueeze(f64({2}), 5); }, {"out of range"}},
      {"cat, nothing to concatenate", [] { xg::cat({}); }, {"cat"}},
      {"cat, shapes differ", [] { xg::cat({f64({2, 3}), f64({2, 4})}, 0); }, {"cat"}},
      {"stack, shapes differ", [] { xg::stack({f64({2}), f64({3})}); }, {"stack"}},
      {"flatten, dims reversed", [] { xg::flatten(f64({2, 3, 4}), 2, 0); }, {"flatten"}},
      {"tril of a 1-d tensor", [] { xg::tril(f64({3})); }, {"tril"}},
      // ---- elementwise and reductions ----
      {"add, shapes do not broadcast", [] { f64({2, 3}) + f64({4}); }, {"cannot be broadcast"}},
      {"mul, dtypes differ", [] { f64({3}) * xg::ones({3}); }, {"dtype mismatch", "float64", "float32"}},
      {"int64 division by zero", [] { idx({4, 2}) / idx({2, 0}); }, {"integer division by zero"}},
      {"INT64_MIN / -1", [] { idx({kMin}) / idx({-1}); }, {"overflows int64"}},
      {"int64 div_ by zero", [] { Tensor t = idx({4}); t.div_(idx({0})); }, {"integer division by zero"}},
      {"int64 tensor times 0.5", [] { idx({4}) * 0.5; }, {"not a whole number"}},
      {"int64 tensor plus NaN", [] { idx({4}) + kNaN; }, {"not a whole number"}},
      {"mean of int64", [] { xg::mean(idx({1, 2})); }, {"mean: needs a floating-point"}},
      {"mean of an empty int64 tensor", [] { xg::mean(xg::zeros({0}, {xg::int64})); }, {"floating-point"}},
      {"var of int64", [] { xg::var(idx({1, 2}), {0}, 1, false); }, {"var: needs a floating-point"}},
      {"exp of int64", [] { xg::exp(idx({1})); }, {"floating-point"}},
      {"pow of int64", [] { xg::pow(idx({2}), 2.0); }, {"floating-point"}},
      {"sum, dim out of range", [] { xg::sum(f64({2}), {3}); }, {"out of range"}},
      {"max over an empty dim", [] { xg::max(f64({0, 3}), 0); }, {"undefined"}},
      {"clamp, min above max", [] { xg::clamp(f64({2}), 2.0, 1.0); }, {"greater than max"}},
      {"masked_fill, mask too big", [] { xg::masked_fill(f64({3}), f64({2, 3}), 0.0); }, {"masked_fill"}},
      {"where, shapes do not broadcast", [] { xg::where(f64({2}), f64({3}), f64({3})); }, {"cannot be broadcast"}},
      // ---- matmul ----
      {"matmul, inner dims differ", [] { xg::matmul(f64({2, 3}), f64({4, 2})); }, {"matmul"}},
      {"matmul of a 0-d tensor", [] { xg::matmul(xg::scalar_tensor(1.0, xg::float64), f64({2})); }, {"matmul"}},
      {"matmul of int64", [] { xg::matmul(idx({1, 2}, {1, 2}), idx({1, 2}, {2, 1})); }, {"matmul"}},
      // ---- indexing ----
      {"index_select, float index", [] { xg::index_select(f64({3}), 0, f64({1})); }, {"int64"}},
      {"index_select, index out of range", [] { xg::index_select(f64({3}), 0, idx({3})); }, {"out of range"}},
      {"index_select, negative index", [] { xg::index_select(f64({3}), 0, idx({-1})); }, {"out of range"}},
      {"index_select of a 0-d tensor", [] { xg::index_select(xg::scalar_tensor(1.0), 0, idx({0})); }, {"0-d"}},
      {"gather, index out of range", [] { xg::gather(f64({2, 3}), 1, idx({0, 3}, {2, 1})); }, {"out of range"}},
      {"gather, index too large", [] { xg::gather(f64({2, 3}), 1, idx({0, 0, 0}, {3, 1})); }, {"larger than input"}},
      {"scatter_add, shapes differ", [] { xg::scatter_add(f64({2, 3}), 1, idx({0}, {1, 1}), f64({1, 2})); }, {"must equal"}},
      {"index_add, wrong source shape", [] { xg::index_add(f64({3, 2}), 0, idx({0}), f64({2, 2})); }, {"does not match"}},
      {"index_add, 2-d index", [] { xg::index_add(f64({3}), 0, idx({0, 1}, {1, 2}), f64({2})); }, {"1-D"}},
      // ---- tensors kept for backward and changed in place ----
      {"gather index changed before backward",
       [] { changed_before_backward([](auto& x, auto& i) { return xg::gather(x, 1, i); }, idx({0, 1, 2, 3}, {4, 1}),
                                    [](Tensor& i) { i.fill_(99); }); },
       {"modified by an in-place operation"}},
      {"index_select index changed before backward",
       [] { changed_before_backward([](auto& x, auto& i) { return xg::index_select(x, 0, i); }, idx({0, 3}),
                                    [](Tensor& i) { i.fill_(1000000); }); },
       {"modified by an in-place operation"}},
      {"cross_entropy targets changed before backward",
       [] { changed_before_backward([](auto& x, auto& t) { return F::cross_entropy(x, t); }, idx({0, 1, 2, 3}),
                                    [](Tensor& t) { t.fill_(1000000); }); },
       {"modified by an in-place operation"}},
      {"max indices changed before backward",
       [] {
         Tensor x = xg::randn({4, 5}, {xg::float64, true});
         auto [v, i] = xg::max_with_indices(x, 1, false);
         i.fill_(77);
         xg::sum(v).backward();
       },
       {"modified by an in-place operation"}},
      {"saved input changed before backward",
       [] {
         Tensor a = f64({3}, true), b = f64({3});
         Tensor y = a * b;
         b.add_(1.0);
         xg::sum(y).backward();
       },
       {"modified by an in-place operation", "version"}},
      // ---- the engine ----
      {"backward of a non-scalar without a gradient", [] { (f64({3}, true) * 2.0).backward(); }, {"implicitly"}},
      {"backward of a tensor without grad", [] { f64({1}).backward(); }, {"does not require grad"}},
      {"backward twice", [] {
         Tensor x = f64({1}, true);
         Tensor y = xg::exp(x);
         y.backward();
         y.backward();
       }, {"second time"}},
      {"backward with a mis-shaped gradient", [] { (f64({3}, true) * 2.0).backward(f64({4})); }, {"does not match"}},
      {"grad, unused input", [] { Tensor a = f64({1}, true), b = f64({1}, true); xg::autograd::grad({a * 2.0}, {b}); }, {"not used"}},
      {"grad, gradients and outputs differ in count",
       [] { Tensor a = f64({1}, true); xg::autograd::grad({a * 2.0}, {a}, {f64({1}), f64({1})}); }, {"one gradient per output"}},
      {"in-place change of a leaf that requires grad", [] { Tensor a = f64({2}, true); a.add_(1.0); }, {"leaf tensor"}},
      {"in-place change of an expanded view", [] { Tensor e = f64({1}).expand({3}); e.add_(1.0); }, {"expanded view"}},
      {"requires_grad_ on int64", [] { idx({1}).requires_grad_(); }, {"floating-point"}},
      {"requires_grad_ on a non-leaf", [] { (f64({1}, true) * 2.0).requires_grad_(false); }, {"leaf"}},
      {"set_grad, wrong shape", [] { f64({2}, true).set_grad(f64({3})); }, {"does not match"}},
      {"item of many elements", [] { f64({2}).item(); }, {"one-element"}},
      {"data_ptr of the wrong type", [] { f64({2}).data_ptr<float>(); }, {"not float32"}},
      {"use of an undefined tensor", [] { Tensor().shape(); }, {"undefined Tensor"}},
      {"to(int64) of a tensor that requires grad", [] { f64({1}, true).to(xg::int64); }, {"detach"}},
      {"gradcheck in float32", [] { xg::autograd::gradcheck([](auto& v) { return v[0] * 2.0; }, {xg::ones({2}, {xg::float32, true})}); }, {"float64"}},
      // ---- nn::functional ----
      {"linear, weight does not fit", [] { F::linear(f64({2, 3}), f64({4, 5})); }, {"does not match weight"}},
      {"linear, bias does not fit", [] { F::linear(f64({2, 3}), f64({4, 3}), f64({5})); }, {"bias"}},
      {"linear, unknown activation", [] { F::linear(f64({2, 3}), f64({4, 3}), {}, static_cast<F::Activation>(7)); }, {"unknown activation 7"}},
      {"linear + gelu, bias does not fit", [] { F::linear(f64({2, 3}), f64({4, 3}), f64({5}), F::Activation::gelu); }, {"bias"}},
      {"layer_norm of a 0-d tensor", [] { F::layer_norm(xg::scalar_tensor(1.0, xg::float64)); }, {"0-d"}},
      {"layer_norm, weight shape", [] { F::layer_norm(f64({2, 3}), f64({4})); }, {"weight has shape [4]"}},
      {"layer_norm, dtypes differ", [] { F::layer_norm(f64({2, 3}), xg::ones({3})); }, {"dtype mismatch"}},
      {"add_layer_norm, residual shape", [] { F::add_layer_norm(f64({2, 3}), f64({3})); }, {"residual [3]", "[2, 3]"}},
      {"add_layer_norm, residual dtype", [] { F::add_layer_norm(f64({2, 3}), xg::ones({2, 3})); }, {"dtype mismatch"}},
      {"add_layer_norm, no residual", [] { F::add_layer_norm(f64({2, 3}), Tensor()); }, {"residual", "undefined"}},
      {"add_layer_norm of int64", [] { F::add_layer_norm(idx({1, 2}), idx({1, 2})); }, {"add_layer_norm"}},
      {"softmax, dim out of range", [] { F::softmax(f64({2, 3}), 2); }, {"out of range"}},
      {"cross_entropy, float targets", [] { F::cross_entropy(f64({2, 3}), f64({2})); }, {"int64"}},
      {"cross_entropy, target out of range", [] { F::cross_entropy(f64({2, 3}), idx({0, 3})); }, {"out of range for 3 classes"}},
      {"cross_entropy, negative target", [] { F::cross_entropy(f64({2, 3}), idx({0, -5})); }, {"out of range"}},
      {"cross_entropy, shape mismatch", [] { F::cross_entropy(f64({2, 3}), idx({0, 1, 2})); }, {"without the class dim"}},
      {"cross_entropy of a 0-d tensor", [] { F::cross_entropy(xg::scalar_tensor(1.0, xg::float64), idx({0})); }, {"0-d"}},
      {"embedding, id out of range", [] { F::embedding(idx({5}), f64({5, 2})); }, {"out of range for 5 embeddings"}},
      {"embedding, negative id", [] { F::embedding(idx({-1}), f64({5, 2})); }, {"out of range"}},
      {"embedding, float ids", [] { F::embedding(f64({1}), f64({5, 2})); }, {"int64"}},
      {"dropout, p above 1", [] { F::dropout(f64({3}), 1.5, true); }, {"[0, 1]"}},
      {"dropout, p NaN", [] { F::dropout(f64({3}), kNaN, true); }, {"[0, 1]"}},
      {"attention, shapes do not fit", [] { F::scaled_dot_product_attention(f64({2, 4, 3}), f64({2, 5, 4}), f64({2, 5, 2})); }, {"do not fit"}},
      {"attention, different ranks", [] { F::scaled_dot_product_attention(f64({4, 3}), f64({2, 5, 3}), f64({2, 5, 2})); }, {"same number of dims"}},
      {"attention, negative window", [] { F::scaled_dot_product_attention(f64({4, 3}), f64({5, 3}), f64({5, 2}), {.window = -1}); }, {"window"}},
      {"attention, dropout 1", [] { F::scaled_dot_product_attention(f64({4, 3}), f64({5, 3}), f64({5, 2}), {.dropout_p = 1.0}); }, {"dropout_p"}},
      {"attention, NaN scale", [] { F::scaled_dot_product_attention(f64({4, 3}), f64({5, 3}), f64({5, 2}), {.scale = kNaN}); }, {"scale must be finite"}},
      {"attention, mask shape", [] { F::scaled_dot_product_attention(f64({4, 3}), f64({5, 3}), f64({5, 2}), {.mask = f64({3, 5})}); }, {"mask"}},
      {"packed attention, 2-d input", [] { F::packed_self_attention(f64({4, 6}), 1); }, {"[B, T, 3 C]"}},
      {"packed attention, width not 3 C", [] { F::packed_self_attention(f64({2, 4, 7}), 1); }, {"[B, T, 3 C]"}},
      {"packed attention, 0 heads", [] { F::packed_self_attention(f64({2, 4, 12}), 0); }, {"0 heads"}},
      {"packed attention, heads do not divide", [] { F::packed_self_attention(f64({2, 4, 12}), 3); }, {"3 heads do not divide the width 4"}},
      {"packed attention, mask shape", [] { F::packed_self_attention(f64({2, 4, 12}), 2, {.mask = f64({3, 4})}); }, {"mask"}},
      {"linear, dtype mismatch", [] { F::linear(f64({2, 3}), xg::ones({4, 3})); }, {"linear", "float64", "float32"}},
      // ---- kernels: sizes past BLAS's 32-bit ints are refused before anything is read or written ----
      {"transpose, leading dimension past int", [] { float x = 1, xt = 2; xg::kernel::transpose(1, 1, &x, 3'000'000'000, &xt, 1); }, {"ld = 3000000000", "32-bit"}},
      {"transpose, rows past int", [] { double x = 1, xt = 2; xg::kernel::transpose(3'000'000'000, 1, &x, 1, &xt, 1); }, {"rows = 3000000000", "32-bit"}},
      {"linear_product, depth past int", [] { double x = 1, w = 1, y = 0; xg::kernel::linear_product(1, 1, 3'000'000'000, &x, 1, &w, 1, nullptr, &y, 1); }, {"k = 3000000000", "32-bit"}},
      // ---- modules ----
      {"load_state_dict, shape mismatch", [] { nn::Linear l(3, 2); l.load_state_dict({{"weight", xg::ones({2, 4})}, {"bias", xg::ones({2})}}); }, {"size mismatch for weight"}},
      {"load_state_dict, int64 weights", [] { nn::Linear l(3, 2); l.load_state_dict({{"weight", xg::zeros({2, 3}, {xg::int64})}, {"bias", xg::ones({2})}}); }, {"int64 in the checkpoint"}},
      {"load_state_dict, a key twice", [] { nn::Linear l(3, 2); l.load_state_dict({{"bias", xg::ones({2})}, {"bias", xg::ones({2})}}, false); }, {"twice"}},
      {"load_state_dict, undefined tensor", [] { nn::Linear l(3, 2); l.load_state_dict({{"bias", Tensor()}}, false); }, {"undefined"}},
      {"load_state_dict, missing key", [] { nn::Linear l(3, 2); l.load_state_dict({{"weight", xg::ones({2, 3})}}); }, {"missing keys: bias"}},
      {"Linear, negative size", [] { nn::Linear l(-3, 2); }, {"Linear"}},
      {"Embedding, overflowing table", [] { nn::Embedding e(kBig, kBig); }, {"more elements than fit"}},
      {"LayerNorm, zero width", [] { nn::LayerNorm ln(0); }, {"LayerNorm"}},
      // ---- optim ----
      {"AdamW, beta 1", [] { Tensor p = f64({2}, true); xg::optim::AdamW o({{{{"p", p}}}}, {.betas = {1.0, 0.9}}); }, {"betas"}},
      {"AdamW, empty parameter list", [] { xg::optim::AdamW o(std::vector<Tensor>{}); }, {"empty parameter list"}},
      {"AdamW, NaN lr", [] { Tensor p = f64({2}, true); xg::optim::AdamW o({{{{"p", p}}}}, {.lr = kNaN}); }, {"learning rate nan"}},
      {"SGD, infinite lr", [] { Tensor p = f64({2}, true); xg::optim::SGD o({{{{"p", p}}}}, {.lr = 1.0 / 0.0}); }, {"learning rate inf"}},
      {"AdamW, negative eps", [] { Tensor p = f64({2}, true); xg::optim::AdamW o({{{{"p", p}}}}, {.eps = -1}); }, {"eps"}},
      {"SGD, negative momentum", [] { Tensor p = f64({2}, true); xg::optim::SGD o({{{{"p", p}}}}, {.momentum = -1}); }, {"momentum"}},
      {"SGD, nesterov without momentum", [] { Tensor p = f64({2}, true); xg::optim::SGD o({{{{"p", p}}}}, {.nesterov = true}); }, {"nesterov"}},
      {"optimizer state after the model was converted",
       [] {
         nn::Linear l(3, 2);
         xg::optim::AdamW o(xg::optim::decay_groups(l.named_parameters(), 0.1), {});
         xg::sum(l.forward(xg::ones({1, 3}))).backward();
         o.step();
         l.to(xg::float64);
         xg::sum(l.forward(xg::ones({1, 3}, {xg::float64}))).backward();
         o.step();
       },
       {"is now float64"}},
      {"optimizer state after set_data to a bigger tensor",
       [] {
         Tensor p = xg::ones({2}, {xg::float32, true});
         xg::optim::SGD o({{{{"p", p}}}}, {.momentum = 0.9});
         p.set_grad(xg::ones({2}));
         o.step();
         p.set_data(xg::ones({5}));
         p.set_grad(xg::ones({5}));
         o.step();
       },
       {"[2]", "is now float32 [5]"}},
      {"optimizer load, NaN learning rate",
       [] { Tensor p = f64({2}, true); xg::optim::AdamW o({{{{"p", p}}}}, {}); o.load_state_dict({{"group.0.lr", xg::scalar_tensor(kNaN)}, {"group.0.weight_decay", xg::scalar_tensor(0.0)}}); },
       {"finite"}},
      {"optimizer load, negative step",
       [] { Tensor p = f64({2}, true); xg::optim::AdamW o({{{{"p", p}}}}, {}); o.load_state_dict({{"group.0.lr", xg::scalar_tensor(1e-3)}, {"group.0.weight_decay", xg::scalar_tensor(0.0)}, {"p.step", xg::scalar_tensor(-3.0)}}); },
       {"not a step count"}},
      {"optimizer load, state of an unknown parameter",
       [] { Tensor p = f64({2}, true); xg::optim::AdamW o({{{{"p", p}}}}, {}); o.load_state_dict({{"group.0.lr", xg::scalar_tensor(1e-3)}, {"group.0.weight_decay", xg::scalar_tensor(0.0)}, {"q.exp_avg", f64({2})}}); },
       {"unknown parameter \"q\""}},
      {"optimizer load, exp_avg without exp_avg_sq",
       [] { Tensor p = f64({2}, true); xg::optim::AdamW o({{{{"p", p}}}}, {}); o.load_state_dict({{"group.0.lr", xg::scalar_tensor(1e-3)}, {"group.0.weight_decay", xg::scalar_tensor(0.0)}, {"p.step", xg::scalar_tensor(2.0)}, {"p.exp_avg", f64({2})}}); },
       {"p.exp_avg_sq is missing"}},
      {"optimizer load, a buffer of another optimizer",
       [] { Tensor p = f64({2}, true); xg::optim::AdamW o({{{{"p", p}}}}, {}); o.load_state_dict({{"group.0.lr", xg::scalar_tensor(1e-3)}, {"group.0.weight_decay", xg::scalar_tensor(0.0)}, {"p.step", xg::scalar_tensor(2.0)}, {"p.exp_avg", f64({2})}, {"p.exp_avg_sq", f64({2})}, {"p.momentum_buffer", f64({2})}}); },
       {"p.momentum_buffer is not state of AdamW"}},
      {"optimizer load, state without a step",
       [] { Tensor p = f64({2}, true); xg::optim::SGD o({{{{"p", p}}}}, {.momentum = 0.9}); o.load_state_dict({{"group.0.lr", xg::scalar_tensor(1e-3)}, {"group.0.weight_decay", xg::scalar_tensor(0.0)}, {"p.momentum_buffer", f64({2})}}); },
       {"has state but no step count"}},
      {"optimizer load, mis-shaped state",
       [] { Tensor p = f64({2}, true); xg::optim::AdamW o({{{{"p", p}}}}, {}); o.load_state_dict({{"group.0.lr", xg::scalar_tensor(1e-3)}, {"group.0.weight_decay", xg::scalar_tensor(0.0)}, {"p.exp_avg", f64({3})}}); },
       {"has shape [3]"}},
      {"clip_grad_norm_, negative max", [] { xg::optim::clip_grad_norm_({f64({2}, true)}, -1.0); }, {"non-negative"}},
      {"get_total_norm, zero norm type", [] { xg::optim::get_total_norm({f64({2}, true)}, 0.0); }, {"get_total_norm", "norm_type"}},
      {"clip_coef, NaN norm", [] { xg::optim::clip_coef(kNaN, 1.0); }, {"clip_coef", "nan"}},
      {"clip_coef, negative max", [] { xg::optim::clip_coef(1.0, -2.0); }, {"clip_coef", "max_norm"}},
      {"AdamW step, negative grad_scale",
       [] { Tensor p = f64({2}, true); p.set_grad(f64({2})); xg::optim::AdamW o({{{{"p", p}}}}, {}); o.step(-1.0); },
       {"AdamW", "grad_scale", "-1"}},
      {"SGD step, NaN grad_scale",
       [] { Tensor p = f64({2}, true); p.set_grad(f64({2})); xg::optim::SGD o({{{{"p", p}}}}, {}); o.step(kNaN); },
       {"SGD", "grad_scale"}},
      {"schedule load, NaN step",
       [] { Tensor p = f64({2}, true); xg::optim::AdamW o({{{{"p", p}}}}, {}); xg::optim::CosineWarmupLR s(o, 1, 10, 0.0); s.load_state_dict({{"step", xg::scalar_tensor(kNaN)}}); },
       {"finite"}},
      {"schedule load, group index is not a number",
       [] { Tensor p = f64({2}, true); xg::optim::AdamW o({{{{"p", p}}}}, {}); xg::optim::CosineWarmupLR s(o, 1, 10, 0.0); s.load_state_dict({{"step", xg::scalar_tensor(1.0)}, {"base_lr.x", xg::scalar_tensor(1.0)}}); },
       {"base_lr.x"}},
      // ---- losses ----
      {"mse_loss, target of another shape", [] { nn::functional::mse_loss(f64({4, 1}), f64({4})); }, {"mse_loss", "target [4]", "[4, 1]"}},
      {"l1_loss, int64 input", [] { nn::functional::l1_loss(xg::index_tensor({1}), xg::index_tensor({1})); }, {"l1_loss", "float32 or float64"}},
      {"smooth_l1_loss, negative beta", [] { nn::functional::smooth_l1_loss(f64({2}), f64({2}), nn::functional::Reduction::mean, -1); }, {"beta"}},
      {"huber_loss, zero delta", [] { nn::functional::huber_loss(f64({2}), f64({2}), nn::functional::Reduction::mean, 0); }, {"delta"}},
      {"bce_with_logits, pos_weight of the wrong size", [] { nn::functional::binary_cross_entropy_with_logits(f64({2, 3}), f64({2, 3}), {.pos_weight = f64({2})}); }, {"pos_weight [2]"}},
      {"nll_loss, target out of range", [] { nn::functional::nll_loss(f64({2, 3}), xg::index_tensor({0, 3})); }, {"target 3", "3 classes"}},
      {"nll_loss, float targets", [] { nn::functional::nll_loss(f64({2, 3}), f64({2})); }, {"int64"}},
      {"mse_loss, batchmean", [] { nn::functional::mse_loss(f64({2}), f64({2}), nn::functional::Reduction::batchmean); }, {"batchmean is kl_div's"}},
      {"cross_entropy, batchmean", [] { nn::functional::cross_entropy(f64({2, 3}), xg::index_tensor({0, 1}), {.reduction = nn::functional::Reduction::batchmean}); }, {"batchmean is kl_div's"}},
      // ---- files through the API ----
      {"save, undefined tensor", [] { xg::save_safetensors(test::temp_file("bad_undef.safetensors"), {{"w", Tensor()}}); }, {"undefined"}},
      {"save, a name twice", [] { xg::save_safetensors(test::temp_file("bad_twice.safetensors"), {{"w", f64({1})}, {"w", f64({1})}}); }, {"twice"}},
      {"save, empty name", [] { xg::save_safetensors(test::temp_file("bad_name.safetensors"), {{"", f64({1})}}); }, {"invalid tensor name"}},
      {"save into a missing folder", [] { xg::save_safetensors("/nonexistent/dir/x.safetensors", {{"w", f64({1})}}); }, {"cannot write"}},
      {"load a folder", [] { xg::load_safetensors(std::filesystem::temp_directory_path().string()); }, {"not a regular file"}},
  };
  return c;
}

}  // namespace

TEST_CASE("bad input through the C++ API gives a clear error", "[bad_input]") {
  for (const auto& c : cases()) {
    DYNAMIC_SECTION(c.name) { test::require_error(c.call, c.fragments); }
  }
}

TEST_CASE("a failed load leaves a module and an optimizer as they were", "[bad_input]") {
  nn::Linear l(3, 2);
  const auto before = l.weight.to_vector<double>();
  test::require_error([&] { l.load_state_dict({{"weight", xg::zeros({2, 3})}, {"extra", xg::ones({1})}}); }, {"unexpected keys: extra"});
  CHECK(l.weight.to_vector<double>() == before);
  test::require_error([&] { l.load_state_dict({{"weight", xg::zeros({2, 3})}, {"bias", xg::ones({7})}}); }, {"size mismatch"});
  CHECK(l.weight.to_vector<double>() == before);

  Tensor p = f64({2}, true);
  xg::optim::AdamW o({{{{"p", p}}}}, {.lr = 0.5});
  test::require_error([&] {
    o.load_state_dict({{"group.0.lr", xg::scalar_tensor(0.1)}, {"group.0.weight_decay", xg::scalar_tensor(0.0)}, {"p.step", xg::scalar_tensor(kNaN)}});
  }, {"finite"});
  CHECK(o.lr() == 0.5);
}

TEST_CASE("in-place ops whose operand shares memory in another layout", "[bad_input]") {
  // copy_ reads its source through a temporary, as PyTorch does: the shifted copy is right.
  Tensor a = xg::tensor({0.0, 1.0, 2.0, 3.0, 4.0});
  a.slice(0, 1, 5).copy_(a.slice(0, 0, 4));
  CHECK(test::values(a) == std::vector<double>{0, 0, 1, 2, 3});
  // Other ops refuse, naming the fix; the tensor is left as it was.
  Tensor x = xg::tensor({1.0, 2.0, 3.0, 4.0}, {2, 2});
  test::require_error([&] { x.add_(x.t()); }, {"add_", "shares memory", ".clone() the operand"});
  test::require_error([&] { x.mul_(x.select(0, 0)); }, {"mul_", "shares memory"});
  CHECK(test::values(x) == std::vector<double>{1, 2, 3, 4});
  x.add_(x.t().clone());
  CHECK(test::values(x) == std::vector<double>{2, 5, 5, 8});
  // The same layout reads each element where it writes it: allowed, and right.
  x.add_(x);
  CHECK(test::values(x) == std::vector<double>{4, 10, 10, 16});
  // Views of one buffer that share no element: allowed.
  Tensor m = xg::tensor({1.0, 2.0, 3.0, 4.0, 5.0, 6.0}, {2, 3});
  m.select(1, 0).copy_(m.select(1, 2));
  CHECK(test::values(m) == std::vector<double>{3, 2, 3, 6, 5, 6});
  m.narrow(1, 0, 1).add_(m.narrow(1, 1, 1));
  CHECK(test::values(m) == std::vector<double>{5, 2, 3, 11, 5, 6});
}

TEST_CASE("API traps: dtype inference, empty tensors with huge dims, escaped messages", "[bad_input]") {
  // Integers make an int64 tensor, as torch.tensor infers; a dtype given still wins.
  CHECK(xg::tensor(std::vector<std::int64_t>{1, 2, 3}).dtype() == xg::int64);
  CHECK(xg::tensor(std::vector<std::int64_t>{1, 2}, {}, {xg::float32}).dtype() == xg::float32);
  // A tensor with no elements exists whatever its other dimensions (PyTorch accepts it).
  Tensor e = xg::zeros({0, std::int64_t(1) << 40, std::int64_t(1) << 40});
  CHECK(e.numel() == 0);
  CHECK(e.shape() == Shape{0, std::int64_t(1) << 40, std::int64_t(1) << 40});
  CHECK(xg::sum(e).item() == 0.0);
  test::require_error([] { xg::zeros({2, std::int64_t(1) << 40, std::int64_t(1) << 40}); }, {"more elements than fit"});
  // Control characters from names and files never reach a terminal raw.
  const xg::Error err(std::string("tensor \"a\x1b[2Jb\tc\nd\xc2\x9b\xff\" is bad"));
  CHECK(std::string(err.what()) == "tensor \"a\\x1b[2Jb\\tc\\nd\\xc2\\x9b\\xff\" is bad");
  CHECK(xg::escape_control_chars("caf\xc3\xa9 \xe2\x82\xac") == "caf\xc3\xa9 \xe2\x82\xac");  // UTF-8 text as it is
  Tensor named = xg::zeros({2});
  test::require_error([&] { xg::save_safetensors(test::temp_file("esc.safetensors"), {{"w", named}, {"w", named}}); }, {"twice"});
}

TEST_CASE("safetensors headers are read as the reference implementation reads them", "[bad_input]") {
  auto file = [](const std::string& header) {
    std::string bytes(8, '\0');
    const std::uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) bytes[std::size_t(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
    const std::string path = test::temp_file("header_rules.safetensors");
    std::ofstream(path, std::ios::binary) << bytes << header << std::string(8, '\0');
    return path;
  };
  const std::string x = R"({"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})";
  CHECK(xg::load_safetensors(file(x + "      ")).tensors.size() == 1);  // space padding: accepted
  test::require_error([&] { xg::load_safetensors(file(" " + x)); }, {"must start with '{' at byte 8"});
  test::require_error([&] { xg::load_safetensors(file(x + "\t")); }, {"padded at its end with spaces only"});
  test::require_error([&] { xg::load_safetensors(file(x + "\n  ")); }, {"padded at its end with spaces only"});
  test::require_error([&] { xg::load_safetensors(file(x + std::string(1, '\0'))); }, {"load_safetensors"});
}

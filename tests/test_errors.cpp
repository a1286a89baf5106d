// Every class of bad input throws an xg::Error naming the op and the shapes.
#include "helpers.hpp"

using xg::Tensor;
using test::require_error;

TEST_CASE("shape mismatches name the op and both shapes", "[errors]") {
  require_error([] { xg::matmul(xg::zeros({4, 3}), xg::zeros({5, 2})); }, {"matmul", "inner dimensions", "[4, 3] @ [5, 2]"});
  require_error([] { xg::zeros({2, 3}) + xg::zeros({4}); }, {"add", "[2, 3]", "[4]", "broadcast"});
  require_error([] { xg::matmul(xg::zeros({2, 2, 3}), xg::zeros({3, 3, 2})); }, {"matmul", "[2]", "[3]"});
  require_error([] { xg::reshape(xg::zeros({2, 3}), {4, 2}); }, {"reshape", "[4, 2]", "[2, 3]"});
  require_error([] { xg::cat({xg::zeros({2, 3}), xg::zeros({3, 2})}, 0); }, {"cat", "[3, 2]", "[2, 3]"});
  require_error([] { xg::expand(xg::zeros({2, 3}), {4, 3}); }, {"expand", "[2, 3]"});
  require_error([] { xg::zeros({2, 3}).t().view({6}); }, {"view", "without a copy", "reshape"});
  require_error([] { xg::split(xg::zeros({5}), std::vector<std::int64_t>{2, 2}); }, {"split", "5"});
  require_error([] { xg::tensor({1.0, 2.0, 3.0}, {2, 2}); }, {"tensor", "3 values", "[2, 2]"});
}

TEST_CASE("bad dims are rejected with the valid range", "[errors]") {
  require_error([] { xg::sum(xg::zeros({2, 3}), {2}); }, {"sum", "dim 2", "[2, 3]", "-2 to 1"});
  require_error([] { xg::transpose(xg::zeros({2, 3}), 0, -3); }, {"transpose", "dim -3"});
  require_error([] { xg::permute(xg::zeros({2, 3}), {0, 0}); }, {"permute", "repeats"});
  require_error([] { xg::unsqueeze(xg::zeros({2}), 3); }, {"unsqueeze", "dim 3"});
  require_error([] { xg::narrow(xg::zeros({4}), 0, 2, 3); }, {"narrow", "start 2 and length 3", "size 4"});
  require_error([] { xg::max(xg::zeros({0, 3}), 0); }, {"max", "size 0"});
  require_error([] { xg::tril(xg::zeros({3})); }, {"tril", "[3]"});
}

TEST_CASE("dtype mixes are refused with a conversion hint", "[errors]") {
  require_error([] { xg::zeros({2}) + xg::zeros({2}, {xg::float64}); }, {"add", "float32", "float64", ".to("});
  require_error([] { xg::exp(xg::zeros({2}, {xg::int64})); }, {"exp", "int64"});
  require_error([] { xg::zeros({2}, {xg::int64}).requires_grad_(); }, {"requires_grad_", "int64"});
  require_error([] { xg::index_select(xg::zeros({3}), 0, xg::zeros({1})); }, {"index_select", "int64", "float32"});
  require_error([] { xg::zeros({2}).data_ptr<double>(); }, {"data_ptr", "float32"});
}

TEST_CASE("indices out of range name the index and the size", "[errors]") {
  require_error([] { xg::index_select(xg::zeros({5, 2}), 0, xg::index_tensor({1, 7})); }, {"index_select", "index 7", "size 5"});
  require_error([] { xg::gather(xg::zeros({2, 3}), 1, xg::index_tensor({0, 3}, {2, 1})); }, {"gather", "index 3", "size 3"});
  require_error([] { xg::select(xg::zeros({2, 3}), 1, 3); }, {"select", "index 3", "size 3"});
  require_error([] { xg::scatter_add(xg::zeros({2}), 0, xg::index_tensor({-1}), xg::zeros({1})); }, {"scatter_add", "index -1"});
}

TEST_CASE("misuse of the autograd API is explained", "[errors]") {
  require_error([] { xg::zeros({2}).backward(); }, {"backward", "does not require grad", "requires_grad_"});
  require_error([] { (xg::ones({2, 2}, {xg::float64, true}) * 2.0).backward(); }, {"[2, 2]", "ones_like"});
  require_error([] { Tensor().shape(); }, {"undefined Tensor"});
  require_error([] { xg::ones({3}).item(); }, {"item", "[3]"});
  require_error([] { (xg::ones({2}, {xg::float64, true}) * 2.0).requires_grad_(); }, {"requires_grad_", "leaf"});
}

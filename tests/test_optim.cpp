// Optimizers against numbers computed with PyTorch, schedules, clipping, and resuming from saved state.
#include <cstdio>
#include <filesystem>

#include "helpers.hpp"

namespace optim = xg::optim;
using xg::Tensor;

namespace {
/// Five steps on loss = sum(sin(p) * c) + sum(p^2), c = [1, 2, 3], from p = [0.5, -1.5, 2.0] (float64).
template <class MakeOpt>
std::vector<double> run(MakeOpt make, int steps = 5) {
  Tensor p = xg::tensor({0.5, -1.5, 2.0}, {3}, {xg::float64, true});
  Tensor c = xg::tensor({1.0, 2.0, 3.0}, {3}, {xg::float64});
  auto opt = make(std::vector<Tensor>{p});
  for (int i = 0; i < steps; ++i) {
    opt.zero_grad();
    (xg::sum(xg::sin(p) * c) + xg::sum(p * p)).backward();
    opt.step();
  }
  return test::values(p);
}
void check_close(const std::vector<double>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(want[i]).epsilon(1e-12).margin(1e-14));
}
std::string temp_path(const std::string& name) { return (std::filesystem::temp_directory_path() / name).string(); }
}  // namespace

// Reference values: the same loop run with torch.optim (PyTorch 1.13, float64), e.g.
//   torch.optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)
TEST_CASE("optimizers match torch.optim step for step", "[optim]") {
  check_close(run([](auto ps) { return optim::SGD(ps, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01}); }),
              {-0.9730049893471078, -0.06206585740585173, -1.6436320855758784});
  check_close(run([](auto ps) { return optim::SGD(ps, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true}); }),
              {-0.814756081898894, -0.49714383550288654, -1.737198593443392});
  check_close(run([](auto ps) { return optim::Adam(ps, {.lr = 0.1, .betas = {0.9, 0.99}, .weight_decay = 0.1}); }),
              {0.0065733858416110735, -1.0124478982501863, 1.499131036380554});
  check_close(run([](auto ps) { return optim::Adam(ps, {.lr = 0.1, .amsgrad = true}); }),
              {0.006623766123824593, -1.0136395934283056, 1.4988741655957343});
  check_close(run([](auto ps) { return optim::AdamW(ps, {.lr = 0.1, .betas = {0.8, 0.95}, .weight_decay = 0.1}); }),
              {-0.004671715550068262, -0.9590573354011966, 1.409617013365725});
  check_close(run([](auto ps) { return optim::AdamW(ps, {.lr = 0.1, .weight_decay = 0.1, .amsgrad = true}); }),
              {-0.007599044468786703, -0.9534725716102118, 1.4105891845289438});
  check_close(run([](auto ps) { return optim::RMSprop(ps, {.lr = 0.01}); }),
              {0.19345618502688092, -1.2056618409392206, 1.6698541028646687});
  check_close(run([](auto ps) {
                return optim::RMSprop(ps, {.lr = 0.01, .alpha = 0.9, .weight_decay = 0.1, .momentum = 0.5, .centered = true});
              }),
              {0.3014375935851673, -1.304546815156271, 1.7950433671154695});
  check_close(run([](auto ps) { return optim::Adagrad(ps, {.lr = 0.1}); }),
              {0.19470943599137358, -1.206874648510726, 1.671151736175483});
  check_close(run([](auto ps) {
                return optim::Adagrad(ps, {.lr = 0.1, .lr_decay = 0.05, .weight_decay = 0.1, .initial_accumulator_value = 0.5});
              }),
              {0.2251381111571114, -1.2282560744775057, 1.700228669089514});
}

TEST_CASE("parameter groups have their own lr and weight decay", "[optim]") {
  Tensor w = xg::ones({2, 2}, {xg::float64, true});
  Tensor b = xg::ones({2}, {xg::float64, true});
  auto groups = optim::decay_groups({{"w", w}, {"b", b}}, 0.5);
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].params.size() == 1);
  CHECK(groups[0].params[0].first == "w");
  CHECK(groups[1].params[0].first == "b");
  groups[1].lr = 0.0;  // freeze the biases through their group's lr
  optim::SGD opt(groups, {.lr = 0.1});
  (xg::sum(w) + xg::sum(b)).backward();
  opt.step();
  CHECK(test::values(w)[0] == Approx(1.0 - 0.1 * (1.0 + 0.5 * 1.0)));  // grad 1 plus L2 decay 0.5
  CHECK(test::values(b)[0] == 1.0);
  CHECK(opt.lr(0) == 0.1);
  CHECK(opt.lr(1) == 0.0);
}

TEST_CASE("zero_grad sets gradients to none or zero", "[optim]") {
  Tensor p = xg::ones({3}, {xg::float64, true});
  optim::SGD opt(std::vector<Tensor>{p});
  xg::sum(p).backward();
  opt.zero_grad(false);
  CHECK(test::values(p.grad()) == std::vector<double>{0, 0, 0});
  opt.zero_grad();
  CHECK_FALSE(p.grad().defined());
}

TEST_CASE("schedules follow their formulas", "[optim]") {
  Tensor p = xg::ones({1}, {xg::float64, true});
  optim::AdamW opt(std::vector<Tensor>{p}, {.lr = 1e-3});
  optim::CosineWarmupLR sched(opt, 10, 100, 1e-4);  // nanoGPT's get_lr
  std::vector<double> lrs{opt.lr()};
  for (int i = 1; i <= 150; ++i) {
    sched.step();
    lrs.push_back(opt.lr());
  }
  CHECK(lrs[0] == Approx(1e-3 / 11));
  CHECK(lrs[9] == Approx(1e-3 * 10 / 11));
  CHECK(lrs[10] == Approx(1e-3));
  CHECK(lrs[55] == Approx(1e-4 + 0.5 * 9e-4));
  CHECK(lrs[100] == Approx(1e-4));
  CHECK(lrs[150] == Approx(1e-4));
  for (int i = 11; i <= 100; ++i) CHECK(lrs[i] <= lrs[i - 1]);  // monotone decay

  optim::SGD sgd(std::vector<Tensor>{p}, {.lr = 1.0});
  optim::StepLR step(sgd, 3, 0.5);
  for (int i = 0; i < 7; ++i) step.step();
  CHECK(sgd.lr() == Approx(0.25));  // step 7: 0.5^(7/3 = 2)
  optim::LambdaLR lam(sgd, [](std::int64_t s) { return 1.0 / (1.0 + static_cast<double>(s)); });
  lam.step();
  CHECK(sgd.lr() == Approx(0.125));  // base 0.25 (the lr when LambdaLR was made) / 2
  optim::SGD sgd2(std::vector<Tensor>{p}, {.lr = 2.0});
  optim::LinearWarmupLR warm(sgd2, 3);
  CHECK(sgd2.lr() == Approx(0.5));
  for (int i = 0; i < 5; ++i) warm.step();
  CHECK(sgd2.lr() == Approx(2.0));
  optim::ConstantLR constant(sgd2);
  constant.step();
  CHECK(sgd2.lr() == Approx(2.0));

  // A restored schedule continues where it was.
  auto state = sched.state_dict();
  optim::AdamW opt2(std::vector<Tensor>{p}, {.lr = 1e-3});
  optim::CosineWarmupLR sched2(opt2, 10, 100, 1e-4);
  sched2.load_state_dict(state);
  CHECK(sched2.last_step() == 150);
  CHECK(opt2.lr() == Approx(1e-4));
}

TEST_CASE("clip_grad_norm_ scales to the global norm and reports non-finite norms", "[optim]") {
  Tensor a = xg::zeros({2}, {xg::float64, true}), b = xg::zeros({1}, {xg::float64, true});
  a.set_grad(xg::tensor({3.0, 0.0}, {2}, {xg::float64}));
  b.set_grad(xg::tensor({4.0}, {1}, {xg::float64}));
  double norm = optim::clip_grad_norm_({a, b}, 1.0);
  CHECK(norm == Approx(5.0));
  CHECK(test::values(a.grad())[0] == Approx(0.6).epsilon(1e-5));
  CHECK(test::values(b.grad())[0] == Approx(0.8).epsilon(1e-5));
  CHECK(optim::clip_grad_norm_({a, b}, 10.0) == Approx(1.0).epsilon(1e-5));  // under the limit: unchanged
  CHECK(test::values(b.grad())[0] == Approx(0.8).epsilon(1e-5));
  CHECK(optim::clip_grad_norm_({a, b}, 10.0, std::numeric_limits<double>::infinity()) == Approx(0.8).epsilon(1e-5));
  b.set_grad(xg::tensor({std::nan("")}, {1}, {xg::float64}));
  CHECK(std::isnan(optim::clip_grad_norm_({a, b}, 1.0)));
  CHECK(test::values(a.grad())[0] == Approx(0.6).epsilon(1e-5));  // left untouched
  test::require_error([&] { optim::clip_grad_norm_({a, b}, 1.0, 2.0, true); }, {"clip_grad_norm_", "nan"});
  a.set_grad(xg::tensor({-3.0, 0.5}, {2}, {xg::float64}));
  optim::clip_grad_value_({a}, 1.0);
  CHECK(test::values(a.grad()) == std::vector<double>{-1.0, 0.5});
}

TEST_CASE("get_total_norm and clip_coef split clip_grad_norm_, and step(grad_scale) folds the factor in", "[optim]") {
  Tensor a = xg::zeros({2}, {xg::float64, true}), b = xg::zeros({1}, {xg::float64, true});
  a.set_grad(xg::tensor({3.0, 0.0}, {2}, {xg::float64}));
  b.set_grad(xg::tensor({-4.0}, {1}, {xg::float64}));
  CHECK(optim::get_total_norm({a, b}) == Approx(5.0));
  CHECK(optim::get_total_norm({a, b}, std::numeric_limits<double>::infinity()) == Approx(4.0));
  CHECK(test::values(b.grad()) == std::vector<double>{-4.0});  // measured, not changed
  CHECK(optim::clip_coef(5.0, 1.0) == Approx(0.2).epsilon(1e-6));
  CHECK(optim::clip_coef(5.0, 10.0) == 1.0);  // under the limit
  CHECK(optim::clip_coef(5.0, std::numeric_limits<double>::infinity()) == 1.0);
  b.set_grad(xg::tensor({std::nan("")}, {1}, {xg::float64}));
  CHECK(std::isnan(optim::get_total_norm({a, b})));
  test::require_error([&] { optim::get_total_norm({a, b}, 2.0, true); }, {"get_total_norm", "nan"});

  // Each optimizer's scaled step against clip_grad_norm_ and a plain step, over three steps (momentum and
  // moments carry the factor on): equal within rounding (the compiler may fuse g gs + wd p into one
  // multiply-add).
  auto compare = [](xg::DType dtype, auto make) {
    xg::Generator gen(3);
    Tensor init = xg::randn({257}, {dtype}, &gen), c = xg::randn({257}, {dtype}, &gen);
    Tensor p1 = init.clone().requires_grad_(true), p2 = init.clone().requires_grad_(true);
    auto o1 = make(std::vector<Tensor>{p1});
    auto o2 = make(std::vector<Tensor>{p2});
    for (int s = 0; s < 3; ++s) {
      {
        xg::autograd::NoGradGuard ng;
        for (auto* p : {&p1, &p2}) p->set_grad(xg::sin(*p * 3.0) * c + *p * (s + 1.0));
      }
      Tensor g_before = p2.grad().clone();
      optim::clip_grad_norm_({p1}, 0.5);
      o1.step();
      const double coef = optim::clip_coef(optim::get_total_norm({p2}), 0.5);
      REQUIRE(coef < 0.5);  // the factor matters
      o2.step(coef);
      CHECK(test::values(p2.grad()) == test::values(g_before));  // the gradients are left as they were
      const auto v1 = test::values(p1), v2 = test::values(p2);
      const double tol = dtype == xg::float64 ? 1e-13 : 1e-6;
      for (std::size_t i = 0; i < v1.size(); ++i) REQUIRE(v2[i] == Approx(v1[i]).epsilon(tol).margin(tol));
    }
  };
  for (auto dtype : {xg::float64, xg::float32}) {
    compare(dtype, [](auto ps) { return optim::AdamW(ps, {.lr = 0.05, .betas = {0.9, 0.99}, .weight_decay = 0.1}); });
    compare(dtype, [](auto ps) { return optim::Adam(ps, {.lr = 0.05, .weight_decay = 0.1, .amsgrad = true}); });
    compare(dtype, [](auto ps) { return optim::SGD(ps, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true}); });
  }
}

TEST_CASE("a refused grad_scale changes no parameter and no optimizer state", "[optim]") {
  Tensor p = xg::tensor({1.0, -2.0}, {2}, {xg::float64, true});
  optim::AdamW opt(std::vector<Tensor>{p}, {.lr = 0.1});
  p.set_grad(xg::tensor({0.5, 0.25}, {2}, {xg::float64}));
  opt.step();
  const auto before = test::values(p);
  std::vector<std::vector<double>> state;  // values now: state_dict may share the buffers
  for (const auto& [key, t] : opt.state_dict()) state.push_back(test::values(t));
  for (double bad : {-1.0, std::nan(""), std::numeric_limits<double>::infinity()})
    test::require_error([&] { opt.step(bad); }, {"AdamW", "grad_scale"});
  CHECK(test::values(p) == before);
  const auto after = opt.state_dict();
  REQUIRE(after.size() == state.size());
  for (std::size_t i = 0; i < state.size(); ++i) {
    INFO(after[i].first);
    CHECK(test::values(after[i].second) == state[i]);
  }
}

TEST_CASE("an optimizer without its own step(grad_scale) scales the gradients, then steps", "[optim]") {
  struct Plain : optim::Optimizer {  // p -= g
    explicit Plain(const std::vector<Tensor>& ps) : Optimizer("Plain", {{optim::name_params(ps)}}, 0.0, 0.0) {}
    using Optimizer::step;
    void step() override {
      xg::autograd::NoGradGuard ng;
      for (auto [_, p] : groups()[0].params) p.sub_(p.grad());
    }
  };
  Tensor p = xg::tensor({1.0, 2.0}, {2}, {xg::float64, true});
  Plain opt({p});
  p.set_grad(xg::tensor({4.0, -8.0}, {2}, {xg::float64}));
  opt.step(0.25);
  CHECK(test::values(p) == std::vector<double>{0.0, 4.0});
  CHECK(test::values(p.grad()) == std::vector<double>{1.0, -2.0});
}

TEST_CASE("a resumed optimizer takes exactly the steps the original would", "[optim]") {
  auto make_params = [] {
    xg::Generator gen(11);
    return std::vector<Tensor>{xg::randn({4, 3}, {xg::float64}, &gen).requires_grad_(),
                               xg::randn({3}, {xg::float64}, &gen).requires_grad_()};
  };
  Tensor x = test::uniform({5, 4}, -1, 1, 12, false);
  auto loss_of = [&](const std::vector<Tensor>& ps) { return xg::sum(xg::tanh(xg::matmul(x, ps[0]) + ps[1])); };
  auto train = [&](std::vector<Tensor>& ps, optim::AdamW& opt, int steps) {
    for (int i = 0; i < steps; ++i) {
      opt.zero_grad();
      loss_of(ps).backward();
      opt.step();
    }
  };
  std::vector<Tensor> ref = make_params();
  optim::AdamW ref_opt(ref, {.lr = 0.05, .amsgrad = true});
  train(ref, ref_opt, 6);

  std::vector<Tensor> a = make_params();
  optim::AdamW a_opt(a, {.lr = 0.05, .amsgrad = true});
  train(a, a_opt, 3);
  std::string path = temp_path("xgrad_test_adamw_state.safetensors");
  a_opt.save(path);
  std::vector<Tensor> b = {a[0].detach().clone().requires_grad_(), a[1].detach().clone().requires_grad_()};
  optim::AdamW b_opt(b, {.lr = 0.05, .amsgrad = true});
  b_opt.load(path);
  train(b, b_opt, 3);
  CHECK(test::values(b[0]) == test::values(ref[0]));
  CHECK(test::values(b[1]) == test::values(ref[1]));
  optim::SGD sgd(b);
  test::require_error([&] { sgd.load(path); }, {"SGD", "AdamW"});
  std::remove(path.c_str());
}

TEST_CASE("optimizers reject bad settings and parameters", "[optim]") {
  Tensor p = xg::ones({2}, {xg::float64, true});
  test::require_error([&] { optim::SGD(std::vector<Tensor>{p}, {.lr = -1.0}); }, {"SGD", "learning rate"});
  test::require_error([&] { optim::SGD(std::vector<Tensor>{p}, {.nesterov = true}); }, {"nesterov"});
  test::require_error([&] { optim::Adam(std::vector<Tensor>{p}, {.betas = {1.0, 0.9}}); }, {"Adam", "betas"});
  test::require_error([&] { optim::AdamW(std::vector<Tensor>{p, p}); }, {"appears twice"});
  test::require_error([&] { optim::SGD(std::vector<Tensor>{p * 2.0}); }, {"leaf"});
}

TEST_CASE("RMSprop and Adagrad resume to the same bits and refuse bad settings", "[optim]") {
  auto params = [] { return std::vector<Tensor>{xg::tensor({0.5, -1.5, 2.0}, {3}, {xg::float64, true})}; };
  auto steps = [](std::vector<Tensor>& ps, optim::Optimizer& opt, int n) {
    for (int i = 0; i < n; ++i) {
      opt.zero_grad();
      xg::sum(xg::sin(ps[0]) * ps[0]).backward();
      opt.step();
    }
  };
  auto check = [&](auto make) {
    auto ref = params();
    auto ref_opt = make(ref);
    steps(ref, ref_opt, 6);
    auto a = params();
    auto a_opt = make(a);
    steps(a, a_opt, 3);
    auto b = std::vector<Tensor>{a[0].detach().clone().requires_grad_()};
    auto b_opt = make(b);
    b_opt.load_state_dict(a_opt.state_dict());
    steps(b, b_opt, 3);
    CHECK(test::values(b[0]) == test::values(ref[0]));
  };
  check([](auto& ps) { return optim::RMSprop(ps, {.lr = 0.01, .momentum = 0.9, .centered = true}); });
  check([](auto& ps) { return optim::Adagrad(ps, {.lr = 0.1, .lr_decay = 0.01, .initial_accumulator_value = 0.1}); });
  Tensor p = xg::ones({2}, {xg::float64, true});
  test::require_error([&] { optim::RMSprop(std::vector<Tensor>{p}, {.alpha = 1.5}); }, {"RMSprop", "alpha"});
  test::require_error([&] { optim::Adagrad(std::vector<Tensor>{p}, {.eps = -1}); }, {"Adagrad", "eps"});
  optim::RMSprop centered(std::vector<Tensor>{p}, {.centered = true});
  test::require_error([&] {
    centered.load_state_dict({{"group.0.lr", xg::scalar_tensor(0.01)}, {"group.0.weight_decay", xg::scalar_tensor(0.0)},
                              {"0.step", xg::scalar_tensor(1.0)}, {"0.square_avg", xg::zeros({2}, {xg::float64})}});
  }, {"0.grad_avg is missing"});
}

TEST_CASE("OneCycleLR follows torch's OneCycleLR (cycle_momentum=False)", "[optim]") {
  // Reference: torch.optim.lr_scheduler.OneCycleLR(SGD(lr=0.1), max_lr=0.5, total_steps=20, cycle_momentum=False,
  // ...) in PyTorch 1.13: the lr after each of 19 steps, the first at construction.
  const std::vector<std::pair<optim::OneCycleOptions, std::vector<double>>> cases = {
      {{}, {0.020000000000000018, 0.06583592135001265, 0.18583592135001265, 0.3341640786499874, 0.45416407864998737, 0.5,
            0.49373200311754367, 0.47524231600673683, 0.445458088785525, 0.40587282697488153, 0.3584715008956504,
            0.30563101096814466, 0.250001, 0.19437098903185537, 0.14153049910434962, 0.09412917302511849,
            0.05454391121447502, 0.024759683993263143, 0.006269996882456277, 2e-06}},
      {{.pct_start = 0.25, .cos_anneal = false, .div_factor = 10, .final_div_factor = 100},
       {0.05, 0.1625, 0.275, 0.3875, 0.5, 0.4667, 0.4334, 0.4001, 0.3668, 0.3335, 0.3002, 0.2669, 0.23360000000000003,
        0.20030000000000003, 0.16700000000000004, 0.13370000000000004, 0.10039999999999999, 0.06709999999999999, 0.0338,
        0.0005000000000000004}},
      {{.three_phase = true},
       {0.020000000000000018, 0.06583592135001265, 0.18583592135001265, 0.3341640786499874, 0.45416407864998737, 0.5,
        0.45416407864998737, 0.3341640786499874, 0.18583592135001262, 0.06583592135001264, 0.02, 0.019396986515238298,
        0.01766067838674666, 0.015000500000000002, 0.01173730812849164, 0.008264691871508365, 0.005001500000000003,
        0.00234132161325334, 0.0006050134847617028, 2e-06}},
  };
  for (const auto& [options, want] : cases) {
    Tensor p = xg::zeros({1}, {xg::float64, true});
    optim::SGD opt(std::vector<Tensor>{p}, {.lr = 0.1});
    optim::OneCycleLR sched(opt, 0.5, 20, options);
    std::vector<double> got = {opt.lr()};
    for (int i = 0; i < 19; ++i) {
      sched.step();
      got.push_back(opt.lr());
    }
    check_close(got, want);
  }
  Tensor p = xg::zeros({1}, {xg::float64, true});
  optim::SGD opt(std::vector<Tensor>{p});
  optim::OneCycleLR sched(opt, 0.5, 2);
  sched.step();
  sched.step();
  test::require_error([&] { sched.step(); }, {"OneCycleLR", "stepped 3 times", "total_steps is 2"});
  test::require_error([&] { optim::OneCycleLR(opt, -1, 10); }, {"max_lr"});
}

TEST_CASE("LBFGS follows torch.optim.LBFGS, with a fixed step and with strong Wolfe", "[optim]") {
  auto rosen = [](const Tensor& p) {
    Tensor x = p.select(0, 0), y = p.select(0, 1);
    return (1.0 - x) * (1.0 - x) + 100.0 * (y - x * x) * (y - x * x);
  };
  // Three step() calls each; the first loss of each and the parameters after it. References: the same loop with
  // torch.optim.LBFGS in PyTorch 1.13, float64.
  auto check = [](const std::function<Tensor(const Tensor&)>& f, std::vector<double> start, optim::LBFGSOptions o,
                  const std::vector<std::vector<double>>& want) {
    Tensor p = xg::tensor(start, {static_cast<std::int64_t>(start.size())}, {xg::float64, true});
    optim::LBFGS opt(std::vector<Tensor>{p}, o);
    auto closure = [&] {
      opt.zero_grad();
      Tensor l = f(p);
      l.backward();
      return l.item();
    };
    for (const auto& w : want) {
      // The same operations in the same order as PyTorch, up to the dot products' summation order.
      CHECK(opt.step(closure) == Approx(w[0]).epsilon(1e-9).margin(1e-14));
      for (std::size_t i = 0; i < start.size(); ++i) CHECK(test::values(p)[i] == Approx(w[i + 1]).epsilon(1e-9));
    }
  };
  // A fixed step (lr 0.5), 10 iterations per step over a history of 4: the history's oldest pairs drop out.
  // LBFGS(lr=0.5, max_iter=10, history_size=4) on sum(w (p - 1)^2) + 0.1 sum(p^4) + 0.3 p0 p1.
  check([](const Tensor& p) {
          Tensor w = xg::tensor({1.0, 2.0, 5.0, 0.5}, {4}, {xg::float64});
          return xg::sum(w * (p - 1.0) * (p - 1.0)) + 0.1 * xg::sum(p * p * p * p) + 0.3 * p.select(0, 0) * p.select(0, 1);
        },
        {0.5, -1.5, 2.0, 3.0}, {.lr = 0.5, .max_iter = 10, .history_size = 4},
        {{29.737499999999997, 0.7749040104678184, 0.8703595452640984, 0.9671594676150572, 0.8323482601525066},
         {0.534997302781751, 0.7754935504153602, 0.8748718892800597, 0.9641457977255822, 0.7973017971747862},
         {0.533797810481972, 0.7754935504153602, 0.8748718892800597, 0.9641457977255822, 0.7973017971747862}});
  // Strong Wolfe on Rosenbrock's function from (-1.5, 2): LBFGS(lr=1, max_iter=20, history_size=10,
  // line_search_fn="strong_wolfe").
  check(rosen, {-1.5, 2.0}, {.max_iter = 20, .history_size = 10, .strong_wolfe = true},
        {{12.5, -0.08523120550524242, -0.02882464531631397},
         {1.3079683882673427, 0.9997609786712734, 0.9995387882216061},
         {8.526705732565528e-08, 0.9999834179208867, 0.9999669023996953}});
  // Resumed from its state_dict, it takes the steps the original would.
  Tensor a = xg::tensor({-1.5, 2.0}, {2}, {xg::float64, true}), b = a.detach().clone().requires_grad_();
  optim::LBFGS oa(std::vector<Tensor>{a}, {.max_iter = 4, .strong_wolfe = true});
  auto closure_of = [&](Tensor& p, optim::LBFGS& o) {
    return [&] {
      o.zero_grad();
      Tensor l = rosen(p);
      l.backward();
      return l.item();
    };
  };
  oa.step(closure_of(a, oa));
  optim::LBFGS ob(std::vector<Tensor>{b}, {.max_iter = 4, .strong_wolfe = true});
  {
    xg::autograd::NoGradGuard ng;
    b.copy_(a);
  }
  ob.load_state_dict(oa.state_dict());
  oa.step(closure_of(a, oa));
  ob.step(closure_of(b, ob));
  CHECK(test::values(a) == test::values(b));
  test::require_error([&] { oa.step(); }, {"LBFGS", "closure"});
  test::require_error([&] { ob.load_state_dict({{"group.0.lr", xg::scalar_tensor(1.0)}, {"group.0.weight_decay", xg::scalar_tensor(0.0)}}); },
                      {"lbfgs.n_iter is missing"});
}

// L-BFGS as torch/optim/lbfgs.py computes it (two-loop recursion, minFunc's cubic interpolation and strong
// Wolfe zoom), over the parameters flattened into one float64 vector.
#include "xgrad/optim/lbfgs.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "xgrad/autograd.hpp"
#include "xgrad/check.hpp"
#include "xgrad/ops.hpp"

namespace xg::optim {

namespace {
double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}
double abs_max(const std::vector<double>& a) {
  double m = 0;
  for (double v : a) m = std::max(m, std::abs(v));
  return m;
}

/// The minimiser of the cubic through (x1, f1, g1) and (x2, f2, g2), clamped to the bounds (default: the
/// interval between x1 and x2); the midpoint when the cubic has none.
double cubic_interpolate(double x1, double f1, double g1, double x2, double f2, double g2,
                         std::optional<std::pair<double, double>> bounds = std::nullopt) {
  auto [lo, hi] = bounds ? *bounds : (x1 <= x2 ? std::pair{x1, x2} : std::pair{x2, x1});
  const double d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2);
  const double d2_square = d1 * d1 - g1 * g2;
  if (d2_square >= 0) {
    const double d2 = std::sqrt(d2_square);
    const double min_pos = x1 <= x2 ? x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
                                    : x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2));
    return std::min(std::max(min_pos, lo), hi);
  }
  return (lo + hi) / 2;
}

struct LineSearchResult {
  double f;
  std::vector<double> g;
  double t;
  std::int64_t evals;
};

/// The strong Wolfe line search of torch's _strong_wolfe: bracketing, then zoom.
template <class Eval>
LineSearchResult strong_wolfe(Eval&& eval, double t, const std::vector<double>& d, double f, const std::vector<double>& g,
                              double gtd, double tolerance_change, double c1 = 1e-4, double c2 = 0.9,
                              std::int64_t max_ls = 25) {
  const double d_norm = abs_max(d);
  auto [f_new, g_new] = eval(t);
  std::int64_t evals = 1, ls_iter = 0;
  double gtd_new = dot(g_new, d);
  double t_prev = 0, f_prev = f, gtd_prev = gtd;
  std::vector<double> g_prev = g;
  bool done = false;
  std::vector<double> bracket, bracket_f, bracket_gtd;
  std::vector<std::vector<double>> bracket_g;
  while (ls_iter < max_ls) {
    if (f_new > f + c1 * t * gtd || (ls_iter > 1 && f_new >= f_prev)) {
      bracket = {t_prev, t}, bracket_f = {f_prev, f_new}, bracket_g = {g_prev, g_new}, bracket_gtd = {gtd_prev, gtd_new};
      break;
    }
    if (std::abs(gtd_new) <= -c2 * gtd) {
      bracket = {t}, bracket_f = {f_new}, bracket_g = {g_new};
      done = true;
      break;
    }
    if (gtd_new >= 0) {
      bracket = {t_prev, t}, bracket_f = {f_prev, f_new}, bracket_g = {g_prev, g_new}, bracket_gtd = {gtd_prev, gtd_new};
      break;
    }
    const double min_step = t + 0.01 * (t - t_prev), max_step = t * 10, tmp = t;
    t = cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, std::pair{min_step, max_step});
    t_prev = tmp, f_prev = f_new, g_prev = g_new, gtd_prev = gtd_new;
    std::tie(f_new, g_new) = eval(t);
    ++evals;
    gtd_new = dot(g_new, d);
    ++ls_iter;
  }
  if (ls_iter == max_ls) bracket = {0, t}, bracket_f = {f, f_new}, bracket_g = {g, g_new};
  bool insuf_progress = false;
  std::size_t low = bracket_f.front() <= bracket_f.back() ? 0 : 1, high = 1 - low;
  while (!done && ls_iter < max_ls) {
    if (std::abs(bracket[1] - bracket[0]) * d_norm < tolerance_change) break;
    t = cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1]);
    const double bmax = std::max(bracket[0], bracket[1]), bmin = std::min(bracket[0], bracket[1]);
    const double eps = 0.1 * (bmax - bmin);
    if (std::min(bmax - t, t - bmin) < eps) {
      if (insuf_progress || t >= bmax || t <= bmin) {
        t = std::abs(t - bmax) < std::abs(t - bmin) ? bmax - eps : bmin + eps;
        insuf_progress = false;
      } else {
        insuf_progress = true;
      }
    } else {
      insuf_progress = false;
    }
    std::tie(f_new, g_new) = eval(t);
    ++evals;
    gtd_new = dot(g_new, d);
    ++ls_iter;
    if (f_new > f + c1 * t * gtd || f_new >= bracket_f[low]) {
      bracket[high] = t, bracket_f[high] = f_new, bracket_g[high] = g_new, bracket_gtd[high] = gtd_new;
      low = bracket_f[0] <= bracket_f[1] ? 0 : 1, high = 1 - low;
    } else {
      if (std::abs(gtd_new) <= -c2 * gtd) {
        done = true;
      } else if (gtd_new * (bracket[high] - bracket[low]) >= 0) {
        bracket[high] = bracket[low], bracket_f[high] = bracket_f[low], bracket_g[high] = bracket_g[low],
        bracket_gtd[high] = bracket_gtd[low];
      }
      bracket[low] = t, bracket_f[low] = f_new, bracket_g[low] = g_new, bracket_gtd[low] = gtd_new;
    }
  }
  return {bracket_f[low], bracket_g[low], bracket[low], evals};
}

Tensor scalar(double v) { return scalar_tensor(v, DType::float64); }
Tensor vec(const std::vector<double>& v) { return tensor(v, {static_cast<std::int64_t>(v.size())}, {DType::float64}); }
}  // namespace

LBFGS::LBFGS(const NamedTensors& params, LBFGSOptions o) : Optimizer("LBFGS", {ParamGroup{params}}, o.lr, 0.0), options_(o) {
  XG_CHECK(o.lr > 0 && std::isfinite(o.lr), "LBFGS: lr must be finite and positive, got {}", o.lr);
  XG_CHECK(o.max_iter > 0, "LBFGS: max_iter must be positive, got {}", o.max_iter);
  XG_CHECK(o.max_eval >= 0, "LBFGS: max_eval must be >= 0 (0: max_iter * 5 / 4), got {}", o.max_eval);
  XG_CHECK(o.history_size > 0, "LBFGS: history_size must be positive, got {}", o.history_size);
  XG_CHECK(o.tolerance_grad >= 0 && o.tolerance_change >= 0, "LBFGS: tolerances must be >= 0, got {} and {}",
           o.tolerance_grad, o.tolerance_change);
  if (options_.max_eval == 0) options_.max_eval = options_.max_iter * 5 / 4;
}

void LBFGS::step(double) { step(); }
void LBFGS::step() { fail("LBFGS: step() needs a closure that re-evaluates the loss: opt.step([&] {{ ...; return loss; }})"); }

std::vector<double> LBFGS::flat_grad() const {
  std::vector<double> out;
  for (const auto& [_, p] : groups()[0].params) {
    const Tensor g = p.grad();
    if (!g.defined()) {
      out.insert(out.end(), static_cast<std::size_t>(p.numel()), 0.0);
      continue;
    }
    const auto v = g.to_vector<double>();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

std::vector<double> LBFGS::flat_params() const {
  std::vector<double> out;
  for (const auto& [_, p] : groups()[0].params) {
    const auto v = p.to_vector<double>();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

void LBFGS::set_params(const std::vector<double>& values) {
  autograd::NoGradGuard ng;
  std::size_t at = 0;
  for (const auto& [_, p] : groups()[0].params) {
    const auto n = static_cast<std::size_t>(p.numel());
    std::vector<double> part(values.begin() + static_cast<std::ptrdiff_t>(at), values.begin() + static_cast<std::ptrdiff_t>(at + n));
    Tensor target = p;
    target.copy_(tensor(part, p.shape(), {DType::float64}));
    at += n;
  }
}

void LBFGS::add_to_params(double step, const std::vector<double>& direction) {
  std::vector<double> x = flat_params();
  for (std::size_t i = 0; i < x.size(); ++i) x[i] += step * direction[i];
  set_params(x);
}

std::pair<double, std::vector<double>> LBFGS::evaluate_at(const std::function<double()>& closure,
                                                         const std::vector<double>& x, double t,
                                                         const std::vector<double>& d) {
  add_to_params(t, d);
  double loss;
  {
    autograd::GradModeGuard on(true);
    loss = closure();
  }
  std::vector<double> g = flat_grad();
  set_params(x);
  return {loss, g};
}

double LBFGS::step(const std::function<double()>& closure) {
  XG_CHECK(static_cast<bool>(closure), "LBFGS: step(closure) needs a closure");
  const LBFGSOptions& o = options_;
  const double lr = groups()[0].lr;  // a schedule may have changed it
  auto call = [&] {
    autograd::GradModeGuard on(true);
    const double v = closure();
    XG_CHECK(!std::isnan(v), "LBFGS: the closure returned NaN");
    return v;
  };
  const double orig_loss = call();
  double loss = orig_loss;
  std::int64_t current_evals = 1;
  ++func_evals_;
  std::vector<double> g = flat_grad();
  if (abs_max(g) <= o.tolerance_grad) return orig_loss;
  for (std::int64_t n_iter = 1; n_iter <= o.max_iter; ++n_iter) {
    ++n_iter_;
    if (n_iter_ == 1) {
      d_.resize(g.size());
      for (std::size_t i = 0; i < g.size(); ++i) d_[i] = -g[i];
      old_dirs_.clear(), old_stps_.clear(), ro_.clear();
      h_diag_ = 1;
    } else {
      // The curvature pair of the last step, kept when it is positive, then the two-loop recursion.
      std::vector<double> y(g.size()), s(g.size());
      for (std::size_t i = 0; i < g.size(); ++i) y[i] = g[i] - prev_flat_grad_[i], s[i] = d_[i] * t_;
      const double ys = dot(y, s);
      if (ys > 1e-10) {
        if (static_cast<std::int64_t>(old_dirs_.size()) == o.history_size) {
          old_dirs_.pop_front(), old_stps_.pop_front(), ro_.pop_front();
        }
        h_diag_ = ys / dot(y, y);
        old_dirs_.push_back(std::move(y)), old_stps_.push_back(std::move(s)), ro_.push_back(1.0 / ys);
      }
      const std::size_t k = old_dirs_.size();
      std::vector<double> al(k), q(g.size());
      for (std::size_t i = 0; i < g.size(); ++i) q[i] = -g[i];
      for (std::size_t i = k; i-- > 0;) {
        al[i] = dot(old_stps_[i], q) * ro_[i];
        for (std::size_t j = 0; j < q.size(); ++j) q[j] -= al[i] * old_dirs_[i][j];
      }
      for (auto& v : q) v *= h_diag_;
      for (std::size_t i = 0; i < k; ++i) {
        const double be = dot(old_dirs_[i], q) * ro_[i];
        for (std::size_t j = 0; j < q.size(); ++j) q[j] += (al[i] - be) * old_stps_[i][j];
      }
      d_ = std::move(q);
    }
    prev_flat_grad_ = g;
    prev_loss_ = loss;
    if (n_iter_ == 1) {
      double sum = 0;
      for (double v : g) sum += std::abs(v);
      t_ = std::min(1.0, 1.0 / sum) * lr;
    } else {
      t_ = lr;
    }
    const double gtd = dot(g, d_);
    if (gtd > -o.tolerance_change) break;
    std::int64_t ls_evals = 0;
    bool opt_cond = false;
    if (o.strong_wolfe) {
      const std::vector<double> x = flat_params();
      auto result = strong_wolfe([&](double t) { return evaluate_at(closure, x, t, d_); }, t_, d_, loss, g, gtd,
                                 o.tolerance_change);
      loss = result.f, g = std::move(result.g), t_ = result.t, ls_evals = result.evals;
      add_to_params(t_, d_);
      opt_cond = abs_max(g) <= o.tolerance_grad;
    } else {
      add_to_params(t_, d_);
      if (n_iter != o.max_iter) {
        loss = call();
        g = flat_grad();
        opt_cond = abs_max(g) <= o.tolerance_grad;
        ls_evals = 1;
      }
    }
    current_evals += ls_evals;
    func_evals_ += ls_evals;
    if (n_iter == o.max_iter || current_evals >= o.max_eval || opt_cond) break;
    if (abs_max(d_) * std::abs(t_) <= o.tolerance_change) break;
    if (std::abs(loss - prev_loss_) < o.tolerance_change) break;
  }
  return orig_loss;
}

StateDict LBFGS::state_dict() const {
  StateDict out = Optimizer::state_dict();
  out.emplace_back("lbfgs.n_iter", scalar(static_cast<double>(n_iter_)));
  out.emplace_back("lbfgs.func_evals", scalar(static_cast<double>(func_evals_)));
  out.emplace_back("lbfgs.t", scalar(t_));
  out.emplace_back("lbfgs.H_diag", scalar(h_diag_));
  out.emplace_back("lbfgs.prev_loss", scalar(prev_loss_));
  if (n_iter_ > 0) {
    out.emplace_back("lbfgs.d", vec(d_));
    out.emplace_back("lbfgs.prev_flat_grad", vec(prev_flat_grad_));
    out.emplace_back("lbfgs.ro", vec(std::vector<double>(ro_.begin(), ro_.end())));
    for (std::size_t i = 0; i < old_dirs_.size(); ++i) {
      out.emplace_back(fmt::format("lbfgs.old_dirs.{}", i), vec(old_dirs_[i]));
      out.emplace_back(fmt::format("lbfgs.old_stps.{}", i), vec(old_stps_[i]));
    }
  }
  return out;
}

void LBFGS::load_state_dict(const StateDict& state) {
  StateDict base;
  std::map<std::string, Tensor> mine;
  for (const auto& [k, t] : state) {
    if (k.rfind("lbfgs.", 0) == 0) {
      mine.emplace(k, t);
    } else {
      base.emplace_back(k, t);
    }
  }
  auto number = [&](const std::string& key) {
    auto it = mine.find(key);
    XG_CHECK(it != mine.end(), "LBFGS: load_state_dict: {} is missing", key);
    return state_scalar("LBFGS", key, it->second);
  };
  std::int64_t numel = 0;
  for (const auto& [_, p] : groups()[0].params) numel += p.numel();
  auto vector = [&](const std::string& key) {
    auto it = mine.find(key);
    XG_CHECK(it != mine.end(), "LBFGS: load_state_dict: {} is missing", key);
    XG_CHECK(it->second.dim() == 1 && is_floating(it->second.dtype()), "LBFGS: load_state_dict: {} must be a float vector", key);
    const auto v = it->second.to_vector<double>();
    for (double x : v) XG_CHECK(std::isfinite(x), "LBFGS: load_state_dict: {} holds a non-finite value", key);
    return v;
  };
  const double n_iter = number("lbfgs.n_iter"), func_evals = number("lbfgs.func_evals");
  XG_CHECK(n_iter >= 0 && n_iter == std::floor(n_iter) && func_evals >= 0 && func_evals == std::floor(func_evals),
           "LBFGS: load_state_dict: the counters must be whole numbers >= 0");
  std::vector<double> d, prev, ro;
  std::deque<std::vector<double>> dirs, stps;
  if (n_iter > 0) {
    d = vector("lbfgs.d"), prev = vector("lbfgs.prev_flat_grad"), ro = vector("lbfgs.ro");
    XG_CHECK(static_cast<std::int64_t>(d.size()) == numel && static_cast<std::int64_t>(prev.size()) == numel,
             "LBFGS: load_state_dict: the state is for {} parameters' elements, these have {}", d.size(), numel);
    XG_CHECK(static_cast<std::int64_t>(ro.size()) <= options_.history_size, "LBFGS: load_state_dict: {} curvature pairs "
             "for a history of {}", ro.size(), options_.history_size);
    for (std::size_t i = 0; i < ro.size(); ++i) {
      dirs.push_back(vector(fmt::format("lbfgs.old_dirs.{}", i)));
      stps.push_back(vector(fmt::format("lbfgs.old_stps.{}", i)));
      XG_CHECK(static_cast<std::int64_t>(dirs.back().size()) == numel && static_cast<std::int64_t>(stps.back().size()) == numel,
               "LBFGS: load_state_dict: curvature pair {} has the wrong size", i);
    }
  }
  const std::size_t known = 5 + (n_iter > 0 ? 3 + 2 * ro.size() : 0);
  XG_CHECK(mine.size() == known, "LBFGS: load_state_dict: unexpected lbfgs.* entries");
  Optimizer::load_state_dict(base);  // groups; LBFGS keeps no per-parameter buffers
  n_iter_ = static_cast<std::int64_t>(n_iter), func_evals_ = static_cast<std::int64_t>(func_evals);
  t_ = number("lbfgs.t"), h_diag_ = number("lbfgs.H_diag"), prev_loss_ = number("lbfgs.prev_loss");
  d_ = std::move(d), prev_flat_grad_ = std::move(prev), old_dirs_ = std::move(dirs), old_stps_ = std::move(stps);
  ro_.assign(ro.begin(), ro.end());
}

}  // namespace xg::optim

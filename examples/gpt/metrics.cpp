#include "metrics.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <vector>

extern char** environ;

namespace gpt {

Metrics::Metrics(const std::string& out_dir, bool resume, std::int64_t start) {
  std::string csv = out_dir + "/metrics.csv";
  std::vector<std::string> rows;
  if (resume && std::filesystem::exists(csv)) {
    std::ifstream in(csv);
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      std::int64_t iter = 0;
      auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), iter);
      if (ec == std::errc() && end != line.data() + line.size() && *end == ',' && iter <= start) rows.push_back(line);
    }
  }
  file_.open(csv, std::ios::trunc);
  file_ << "iter,train_loss,val_loss,lr,tokens_per_sec\n";
  for (auto& r : rows) file_ << r << "\n";
  file_.flush();
}

void Metrics::eval_row(std::int64_t iter, double train_loss, double val_loss, double lr, double tok_per_s) {
  file_ << fmt::format("{},{:.6f},{:.6f},{:.6g},{:.1f}\n", iter, train_loss, val_loss, lr, tok_per_s) << std::flush;
}
void Metrics::train_row(std::int64_t iter, double loss, double lr, double tok_per_s) {
  file_ << fmt::format("{},{:.6f},,{:.6g},{:.1f}\n", iter, loss, lr, tok_per_s);
}

void write_plot(const std::string& out_dir) {
  {
    std::ofstream gp(out_dir + "/loss.gnuplot");
    gp << "set terminal pngcairo size 900,500\nset output 'loss.png'\n"
       << "set datafile separator ','\nset key top right\nset xlabel 'iteration'\nset ylabel 'loss'\nset grid\n"
       << "plot 'metrics.csv' using 1:2 every ::1 with lines title 'train', "
       << "'' using 1:($3 > 0 ? $3 : 1/0) every ::1 with linespoints title 'validation'\n";
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addchdir_np(&actions, out_dir.c_str());
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  char prog[] = "gnuplot", script[] = "loss.gnuplot";
  char* argv[] = {prog, script, nullptr};
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, "gnuplot", &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return;  // no gnuplot: metrics.csv is still there
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fmt::print(stderr, "note: gnuplot could not draw {}/loss.png\n", out_dir);
}

Progress::Progress(std::int64_t max_iters, std::int64_t tokens_per_iter, std::int64_t log_interval)
    : max_iters_(max_iters),
      tokens_per_iter_(tokens_per_iter),
      log_interval_(log_interval),
      tty_(::isatty(STDOUT_FILENO)),
      start_(std::chrono::steady_clock::now()),
      last_(start_) {}

void Progress::step(std::int64_t iter, double loss, double lr) {
  auto now = std::chrono::steady_clock::now();
  double dt = std::chrono::duration<double>(now - last_).count();
  last_ = now;
  double rate = static_cast<double>(tokens_per_iter_) / dt;
  tok_per_s_ = tok_per_s_ == 0 ? rate : 0.9 * tok_per_s_ + 0.1 * rate;
  double eta = static_cast<double>((max_iters_ - iter - 1) * tokens_per_iter_) / tok_per_s_;
  if (tty_) {
    int width = 30, done = static_cast<int>(width * (iter + 1) / max_iters_);
    fmt::print("\r[{}{}] {}/{} loss {:.4f} lr {:.2e} {:.0f} tok/s ETA {}\033[K", std::string(done, '='),
               std::string(width - done, ' '), iter + 1, max_iters_, loss, lr, tok_per_s_, human_time(eta));
    std::fflush(stdout);
  } else if ((iter + 1) % log_interval_ == 0) {
    fmt::print("iter {:5d}: loss {:.4f}, lr {:.2e}, {:.0f} tok/s, ETA {}\n", iter + 1, loss, lr, tok_per_s_,
               human_time(eta));
    std::fflush(stdout);
  }
}

void Progress::clear_line() const {
  if (tty_) fmt::print("\r\033[K");
}

double Progress::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string human_time(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  auto t = static_cast<long>(s + 0.5);
  return t >= 3600 ? fmt::format("{}h{:02d}m", t / 3600, (t / 60) % 60) : fmt::format("{}m{:02d}s", t / 60, t % 60);
}

}  // namespace gpt

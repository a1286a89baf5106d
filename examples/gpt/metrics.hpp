// What a training run shows and keeps besides checkpoints: metrics.csv, the loss plot, and the progress
// bar (on a terminal) or log lines (elsewhere).
#pragma once

#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>

namespace gpt {

/// OUT/metrics.csv: a row per evaluation and per log interval.
class Metrics {
 public:
  /// Starts the file; a resumed run keeps the rows up to its starting iteration and rewrites the rest.
  Metrics(const std::string& out_dir, bool resume, std::int64_t start);
  void eval_row(std::int64_t iter, double train_loss, double val_loss, double lr, double tok_per_s);
  void train_row(std::int64_t iter, double loss, double lr, double tok_per_s);

 private:
  std::ofstream file_;
};

/// Draws OUT/loss.png from OUT/metrics.csv with gnuplot, if it is installed. gnuplot runs without a shell,
/// in OUT, on a script that names no path, so no directory name can reach a command line.
void write_plot(const std::string& out_dir);

/// Tokens/s (a moving average), ETA, and the progress bar or log line after each step.
class Progress {
 public:
  Progress(std::int64_t max_iters, std::int64_t tokens_per_iter, std::int64_t log_interval);
  /// Records that step `iter` (0-based) finished with this loss and learning rate.
  void step(std::int64_t iter, double loss, double lr);
  /// Clears the bar before a full line is printed.
  void clear_line() const;
  double tokens_per_sec() const { return tok_per_s_; }
  /// Seconds since the run started.
  double elapsed() const;

 private:
  std::int64_t max_iters_, tokens_per_iter_, log_interval_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_;
  double tok_per_s_ = 0;
};

/// "3m05s" or "1h02m" ("?" when unknown).
std::string human_time(double seconds);

}  // namespace gpt

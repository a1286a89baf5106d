// What the GPT benchmarks share: the two configurations, the clock and peak memory.
#pragma once

#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "gpt.hpp"
#include "machine.hpp"

namespace bench {

/// "baby": nanoGPT's baby GPT at batch 12; "gpt2": GPT-2 small (124M) at batch 4; both with 64 tokens.
struct GptSetup {
  gpt::GPTConfig config;
  std::int64_t batch = 12, seq = 64;
};
inline GptSetup gpt_setup(const std::string& name) {
  GptSetup s;
  if (name == "gpt2") {
    s.config.vocab_size = 50304;
    s.config.block_size = 1024;
    s.config.n_layer = 12;
    s.config.n_head = 12;
    s.config.n_embd = 768;
    s.batch = 4;
  }
  return s;
}

inline double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

/// The process's peak resident memory in MB.
inline double peak_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

}  // namespace bench

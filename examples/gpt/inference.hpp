// The commands that use a trained checkpoint: `gpt eval` and `gpt sample`.
#pragma once

#include <cstdint>
#include <string>

#include "gpt.hpp"

namespace gpt {

/// The flags of `gpt eval`.
struct EvalSettings {
  std::string dir = "out", data, dump;
  std::int64_t batches = 50, batch_size = 12;
  std::uint64_t seed = 1337;
  int threads = 0;
};

/// Loss of a checkpoint on a text file; with `dump`, the logits, loss and every parameter's gradient of
/// one batch written to a safetensors file (for parity checks against another implementation).
int evaluate(const EvalSettings& s);

/// The flags of `gpt sample`.
struct SampleSettings {
  std::string dir = "out", adapter, prompt;
  SampleOptions options;
  int threads = 0;
};

/// Continues the prompt from a checkpoint (or a base checkpoint with a LoRA adapter) and prints the text.
int sample(const SampleSettings& s);

}  // namespace gpt

// Training the reference GPT: the settings, the loop shared by train and finetune, and both commands.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint.hpp"

namespace gpt {

/// The flags of `gpt train` and `gpt finetune` besides the model's.
struct TrainSettings {
  std::string data, out = "out";
  bool resume = false;
  std::int64_t batch_size = 12, max_iters = 2000, grad_accum = 1;
  double lr = 1e-3, min_lr = 1e-4, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.99, grad_clip = 1.0;
  std::int64_t warmup_iters = 100, lr_decay_iters = 2000;
  std::int64_t eval_interval = 250, eval_iters = 200, log_interval = 10;
  std::uint64_t seed = 1337;
  int threads = 0;
  bool detect_anomaly = false;  // check every op's output and gradient for NaN/inf (slow)
  bool checkpoint_activations = false;  // recompute each block's activations in backward (less memory)
  std::string dtype = "float32";        // float32, or bf16: matrix products under xg::autocast
  // Under mpirun: data-parallel training.
  bool zero_optimizer = false;  // shard AdamW's moments over the ranks (ZeRO-1)
  double bucket_mb = 25.0;      // gradient buckets
  bool comm_thread = true;      // reduce buckets on a communication thread during backward
  double dist_timeout = 600.0;  // seconds a collective may wait for the other ranks
  std::string tokenizer = "char", bpe_dir = "data/gpt2";
};

/// `gpt train`. `given` names the model flags set on the command line: with --resume they must match
/// the checkpoint's config. Under mpirun every rank runs it: data-parallel, rank 0 logs and saves.
int train(const TrainSettings& s, GPTConfig cfg, const std::vector<std::string>& given);
/// `gpt finetune`: LoRA adapters on a base checkpoint; only the adapters train. They are saved alone
/// (adapter.safetensors) and, at the end, merged into a plain checkpoint (merged/model.safetensors).
int finetune(const TrainSettings& s, const LoRASettings& lora);

}  // namespace gpt

// Checkpoints of the reference GPT.
//   DIR/model.safetensors: the weights under nanoGPT's names, with the config, the tokenizer and the
//     iteration in the metadata (it loads into the same model in PyTorch).
//   DIR/train_state.safetensors: optimizer, schedule, random generators and the iteration, to resume.
//   ADAPTER_DIR/adapter.safetensors: LoRA adapters alone, naming their base checkpoint.
#pragma once

#include <xgrad/xgrad.hpp>

#include <map>
#include <memory>
#include <string>
#include <utility>

#include "gpt.hpp"
#include "tokenizer.hpp"

namespace gpt {

/// A model checkpoint as read from DIR/model.safetensors.
struct Checkpoint {
  GPTConfig config;
  std::shared_ptr<Tokenizer> tokenizer;
  std::int64_t iter = 0;
  xg::StateDict weights;
};

/// Reads and checks DIR/model.safetensors (an error names what is missing or wrong).
Checkpoint load_checkpoint(const std::string& dir);

/// Holds an output folder for one writer (train, resume, finetune) for the lifetime of the object: a second
/// writer is refused at start with a message naming the holder's pid, instead of interleaving checkpoints.
/// A lock left by a killed process is taken over with a note, and the temporaries of killed writers in the
/// folder are removed.
class OutputLock {
 public:
  explicit OutputLock(const std::string& dir);
  ~OutputLock();
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;

 private:
  std::string path_;
  int fd_ = -1;
};
/// The checkpoint's model with its weights loaded.
std::unique_ptr<GPT> make_model(const Checkpoint& ck);
/// The metadata a model file carries: config, tokenizer, iteration.
std::map<std::string, std::string> model_metadata(const GPTConfig& config, const Tokenizer& tok, std::int64_t iter);

/// What continues a run exactly besides the weights.
struct TrainingState {
  xg::optim::Optimizer& opt;
  xg::optim::LRScheduler& sched;
  xg::Generator& batches;  // the batch sampler's generator (the default generator is saved too)
  xg::distributed::Communicator& comm;  // each rank's generators are saved; rank 0 writes
  std::uint64_t seed = 0;               // seeds the generators of ranks a checkpoint has none for
};

/// Writes DIR/train_state.safetensors, then DIR/model.safetensors, each atomically. Every rank calls it
/// (the optimizer state and the generators are gathered); rank 0 writes.
void save_checkpoint(const std::string& dir, GPT& model, const Tokenizer& tok, const TrainingState& state,
                     std::int64_t iter, double best_val);
/// Restores DIR/train_state.safetensors into `state`, after checking it belongs to a model file at `iter`;
/// returns the best validation loss so far. Each rank takes its own generators; a run on more ranks than
/// the checkpoint's seeds the new ranks' generators from the seed, the rank and the iteration.
double load_training_state(const std::string& dir, std::int64_t iter, const TrainingState& state);

/// LoRA adapter settings, as stored with an adapter.
struct LoRASettings {
  std::string base = "out";
  std::int64_t rank = 8;
  double alpha = 16.0, dropout = 0.0;
  std::vector<std::string> targets = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
};

/// Writes ADAPTER_DIR/adapter.safetensors: the adapters of `model` with their base checkpoint and settings.
void save_adapter(const std::string& adapter_dir, GPT& model, const Checkpoint& base, const LoRASettings& lora,
                  std::int64_t iter);
/// A base checkpoint with the adapter stored in `adapter_dir` applied (unmerged).
std::pair<std::unique_ptr<GPT>, Checkpoint> load_with_adapter(const std::string& adapter_dir);

}  // namespace gpt

// gpt: train and sample the reference GPT. This file is the command line; each job has its own file:
// data.cpp (corpus, batches), checkpoint.cpp (save, load, resume, adapters), train.cpp (the training
// loop, train, finetune), metrics.cpp (metrics.csv, plot, progress), inference.cpp (eval, sample).
//
//   gpt train --data FILE --out DIR [--resume] [model and training flags]   (gpt train --help)
//   mpirun -np 2 gpt train ...   (data-parallel: the same command on every rank)
//   gpt sample --out DIR --prompt "ROMEO:" --num-tokens 300 --temperature 0.8 --top-k 40
//   gpt eval --out DIR --data FILE [--dump grads.safetensors]
//   gpt finetune --base DIR --data FILE --out ADAPTER_DIR [--rank 8 --alpha 16]
#include <CLI/CLI.hpp>

#include <functional>

#include "inference.hpp"
#include "train.hpp"

using gpt::TrainSettings;

namespace {

constexpr std::int64_t kMaxCount = std::int64_t(1) << 40;  // iterations, intervals: beyond any real run
constexpr std::int64_t kMaxBatch = std::int64_t(1) << 20;

/// Fails unless lo <= v <= hi, naming the flag.
void in_range(const char* flag, std::int64_t v, std::int64_t lo, std::int64_t hi) {
  if (v < lo || v > hi) xg::fail("{} is {}, outside [{}, {}]", flag, v, lo, hi);
}
/// Same for a real number, which must also be finite.
void in_range(const char* flag, double v, double lo, double hi) {
  if (!(v >= lo && v <= hi)) xg::fail("{} is {}, outside [{}, {}]", flag, v, lo, hi);
}

/// Ranges the training flags must be in (before any file is read).
void check_training_settings(const TrainSettings& s) {
  in_range("--batch-size", s.batch_size, 1, kMaxBatch);
  in_range("--grad-accum", s.grad_accum, 1, kMaxBatch);
  in_range("--max-iters", s.max_iters, 0, kMaxCount);
  in_range("--lr", s.lr, 0.0, 10.0);
  in_range("--min-lr", s.min_lr, 0.0, s.lr);
  in_range("--warmup-iters", s.warmup_iters, 0, kMaxCount);
  in_range("--lr-decay-iters", s.lr_decay_iters, 0, kMaxCount);
  in_range("--weight-decay", s.weight_decay, 0.0, 10.0);
  in_range("--beta1", s.beta1, 0.0, 0.999999);
  in_range("--beta2", s.beta2, 0.0, 0.999999);
  in_range("--grad-clip", s.grad_clip, 0.0, 1e6);
  in_range("--eval-interval", s.eval_interval, 1, kMaxCount);
  in_range("--eval-iters", s.eval_iters, 1, kMaxBatch);
  in_range("--log-interval", s.log_interval, 1, kMaxCount);
  in_range("--threads", std::int64_t{s.threads}, 0, 1024);
  if (s.dtype != "float32" && s.dtype != "bf16") xg::fail("--dtype must be float32 or bf16, got \"{}\"", s.dtype);
  in_range("--bucket-mb", s.bucket_mb, 0.001, 1e5);
  in_range("--dist-timeout", s.dist_timeout, 0.1, 1e7);
}

/// The optimisation and logging flags train and finetune share.
void add_training_flags(CLI::App* cmd, TrainSettings& s) {
  cmd->add_option("--batch-size", s.batch_size, "Sequences per micro-batch")->capture_default_str();
  cmd->add_option("--grad-accum", s.grad_accum, "Micro-batches per optimizer step")->capture_default_str();
  cmd->add_option("--max-iters", s.max_iters, "Optimizer steps")->capture_default_str();
  cmd->add_option("--lr", s.lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--min-lr", s.min_lr, "Learning rate at the end of the cosine decay")->capture_default_str();
  cmd->add_option("--warmup-iters", s.warmup_iters, "Linear warmup steps")->capture_default_str();
  cmd->add_option("--lr-decay-iters", s.lr_decay_iters, "Step where the cosine decay reaches min-lr")->capture_default_str();
  cmd->add_option("--weight-decay", s.weight_decay, "AdamW weight decay (weight matrices only when training)")->capture_default_str();
  cmd->add_option("--beta1", s.beta1, "AdamW beta1")->capture_default_str();
  cmd->add_option("--beta2", s.beta2, "AdamW beta2")->capture_default_str();
  cmd->add_option("--grad-clip", s.grad_clip, "Clip the global gradient norm (0: off)")->capture_default_str();
  cmd->add_option("--eval-interval", s.eval_interval, "Steps between validation runs and checkpoints")->capture_default_str();
  cmd->add_option("--eval-iters", s.eval_iters, "Batches per loss estimate")->capture_default_str();
  cmd->add_option("--log-interval", s.log_interval, "Steps between log lines")->capture_default_str();
  cmd->add_option("--seed", s.seed, "Random seed")->capture_default_str();
  cmd->add_option("--threads", s.threads, "threads of the kernels and BLAS (0: the default, OMP_NUM_THREADS or every core)")->capture_default_str();
  cmd->add_option("--dtype", s.dtype, "float32, or bf16: matrix products in bfloat16 with float32 sums, weights and "
                 "optimizer state (mixed precision)")->capture_default_str();
  cmd->add_flag("--checkpoint-activations", s.checkpoint_activations,
                "Recompute each block's activations in backward instead of keeping them: less memory, same gradients");
  cmd->add_flag("--detect-anomaly", s.detect_anomaly,
                "Check every op's output and gradient for NaN/inf and stop at the first, naming the op and layer (slow)");
}

/// Every flag of a subcommand and where its value goes; `run` is called if the subcommand was given.
struct Command {
  CLI::App* app;
  std::function<int()> run;
};

Command add_train(CLI::App& app, TrainSettings& s, gpt::GPTConfig& cfg) {
  auto* tr = app.add_subcommand("train", "Train a GPT (character-level or GPT-2 BPE) on a text file");
  tr->add_option("--data", s.data, "Training text (UTF-8)")->required()->check(CLI::ExistingFile);
  tr->add_option("--out", s.out, "Checkpoint directory")->capture_default_str();
  tr->add_flag("--resume", s.resume, "Continue from the checkpoint in --out");
  tr->add_option("--tokenizer", s.tokenizer, "char (vocabulary from the data) or gpt2 (byte-level BPE)")->capture_default_str();
  tr->add_option("--bpe-dir", s.bpe_dir, "Folder with GPT-2's encoder.json and vocab.bpe (for --tokenizer gpt2)")->capture_default_str();
  tr->add_option("--n-layer", cfg.n_layer, "Transformer blocks")->capture_default_str();
  tr->add_option("--n-head", cfg.n_head, "Attention heads")->capture_default_str();
  tr->add_option("--n-embd", cfg.n_embd, "Embedding size")->capture_default_str();
  tr->add_option("--block-size", cfg.block_size, "Context length")->capture_default_str();
  tr->add_option("--dropout", cfg.dropout, "Dropout probability")->capture_default_str();
  tr->add_option("--bias", cfg.bias, "Biases in Linear and LayerNorm layers")->capture_default_str();
  tr->add_flag("--gelu-tanh", cfg.gelu_tanh, "GPT-2's tanh GELU instead of the exact one");
  tr->add_option("--attention", cfg.attention, "dense, window or alternating")->capture_default_str();
  tr->add_option("--window", cfg.window, "Sliding-window size for windowed layers")->capture_default_str();
  add_training_flags(tr, s);
  tr->add_flag("--zero-optimizer", s.zero_optimizer,
               "Under mpirun: each rank keeps AdamW's moments for its shard of the parameters only (ZeRO-1)");
  tr->add_option("--bucket-mb", s.bucket_mb, "Under mpirun: gradients are averaged in buckets of this many MB")
      ->capture_default_str();
  tr->add_option("--comm-thread", s.comm_thread, "Under mpirun: average gradients on a thread while backward runs")
      ->capture_default_str();
  tr->add_option("--dist-timeout", s.dist_timeout,
                 "Under mpirun: seconds a rank waits for the others before ending the job")->capture_default_str();
  return {tr, [tr, &s, &cfg] {
            check_training_settings(s);
            std::vector<std::string> given;
            for (const char* f : {"--n-layer", "--n-head", "--n-embd", "--block-size", "--dropout", "--bias",
                                  "--gelu-tanh", "--attention", "--window"})
              if (tr->get_option(f)->count() > 0) given.emplace_back(f);
            return gpt::train(s, cfg, given);
          }};
}

Command add_sample(CLI::App& app, gpt::SampleSettings& s) {
  auto* sa = app.add_subcommand("sample", "Generate text from a checkpoint");
  sa->add_option("--out", s.dir, "Checkpoint directory")->capture_default_str();
  sa->add_option("--adapter", s.adapter, "A LoRA adapter directory (from finetune) to apply to its base model");
  sa->add_option("--prompt", s.prompt, "Text to continue (default: a newline)");
  sa->add_option("--num-tokens", s.options.max_new_tokens, "Tokens to generate")->capture_default_str();
  sa->add_option("--temperature", s.options.temperature, "Softmax temperature (0: greedy)")->capture_default_str();
  sa->add_option("--top-k", s.options.top_k, "Sample from the k most likely tokens (0: all)")->capture_default_str();
  sa->add_option("--top-p", s.options.top_p, "Nucleus sampling threshold (1: off)")->capture_default_str();
  sa->add_option("--seed", s.options.seed, "Random seed")->capture_default_str();
  sa->add_option("--cache", s.options.use_cache, "Incremental decoding with a key/value cache")->capture_default_str();
  sa->add_option("--threads", s.threads, "threads of the kernels and BLAS (0: 1 for models narrower than 512, else the default)")->capture_default_str();
  return {sa, [&s] {
            in_range("--num-tokens", s.options.max_new_tokens, 0, std::int64_t(1) << 24);
            in_range("--temperature", s.options.temperature, 0.0, 100.0);
            in_range("--top-k", s.options.top_k, 0, std::int64_t(1) << 24);
            if (!(s.options.top_p > 0.0 && s.options.top_p <= 1.0))
              xg::fail("--top-p is {}, outside (0, 1]", s.options.top_p);
            in_range("--threads", std::int64_t{s.threads}, 0, 1024);
            return gpt::sample(s);
          }};
}

Command add_eval(CLI::App& app, gpt::EvalSettings& s) {
  auto* ev = app.add_subcommand("eval", "Loss of a checkpoint on a text file");
  ev->add_option("--out", s.dir, "Checkpoint directory")->capture_default_str();
  ev->add_option("--data", s.data, "Text to evaluate on")->required()->check(CLI::ExistingFile);
  ev->add_option("--batches", s.batches, "Random batches to average")->capture_default_str();
  ev->add_option("--batch-size", s.batch_size, "Sequences per batch")->capture_default_str();
  ev->add_option("--seed", s.seed, "Random seed for the batches")->capture_default_str();
  ev->add_option("--dump", s.dump, "Write the logits, loss and gradients of one batch to this safetensors file");
  ev->add_option("--threads", s.threads, "threads of the kernels and BLAS (0: the default, OMP_NUM_THREADS or every core)")->capture_default_str();
  return {ev, [&s] {
            in_range("--batches", s.batches, 1, kMaxBatch);
            in_range("--batch-size", s.batch_size, 1, kMaxBatch);
            in_range("--threads", std::int64_t{s.threads}, 0, 1024);
            return gpt::evaluate(s);
          }};
}

Command add_finetune(CLI::App& app, TrainSettings& s, gpt::LoRASettings& lora) {
  s.out = "out/finetune";  // fine-tuning defaults: short, no decay on the adapters
  s.max_iters = 500;
  s.warmup_iters = 20;
  s.lr_decay_iters = 500;
  s.weight_decay = 0.0;
  s.eval_interval = 100;
  s.eval_iters = 50;
  auto* ft = app.add_subcommand("finetune", "LoRA fine-tuning of a trained checkpoint on another text file");
  ft->add_option("--base", lora.base, "Checkpoint directory of the base model")->capture_default_str();
  ft->add_option("--data", s.data, "Fine-tuning text (its characters must be in the base vocabulary)")->required()->check(CLI::ExistingFile);
  ft->add_option("--out", s.out, "Where the adapter and the merged model go")->capture_default_str();
  ft->add_option("--rank", lora.rank, "Adapter rank r")->capture_default_str();
  ft->add_option("--alpha", lora.alpha, "Adapter scale alpha (the update is scaled by alpha / r)")->capture_default_str();
  ft->add_option("--lora-dropout", lora.dropout, "Dropout on the adapters' input")->capture_default_str();
  ft->add_option("--targets", lora.targets, "Layers that get adapters (name suffixes)")->delimiter(',')->capture_default_str();
  add_training_flags(ft, s);
  return {ft, [&s, &lora] {
            check_training_settings(s);
            in_range("--rank", lora.rank, 1, 4096);
            in_range("--alpha", lora.alpha, 1e-6, 1e6);
            in_range("--lora-dropout", lora.dropout, 0.0, 0.999999);
            return gpt::finetune(s, lora);
          }};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train and sample a GPT with xgrad (nanoGPT-compatible checkpoints)"};
  app.require_subcommand(1);
  TrainSettings train_settings, finetune_settings;
  gpt::GPTConfig config;
  gpt::SampleSettings sample_settings;
  gpt::EvalSettings eval_settings;
  gpt::LoRASettings lora;
  const Command commands[] = {add_train(app, train_settings, config), add_sample(app, sample_settings),
                              add_eval(app, eval_settings), add_finetune(app, finetune_settings, lora)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "gpt: error: {} (gpt {} --help lists the flags)\n", xg::escape_control_chars(e.what()),
               app.get_subcommands().empty() ? std::string("") : app.get_subcommands().front()->get_name());
    return e.get_exit_code() != 0 ? e.get_exit_code() : 2;
  }
  try {
    for (const auto& c : commands)
      if (c.app->parsed()) return c.run();
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "gpt: error: {}\n", xg::escape_control_chars(e.what()));
    return 1;
  }
}

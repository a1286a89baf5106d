#include "train.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <cmath>

#include "data.hpp"
#include "metrics.hpp"

namespace fs = std::filesystem;
using xg::Tensor;

namespace gpt {

namespace {

/// Sum over the ranks (a no-op on one).
double sum_over_ranks(xg::distributed::Communicator& comm, double v) {
  if (comm.size() == 1) return v;
  Tensor t = xg::scalar_tensor(v, xg::float64);
  comm.all_reduce(t);
  return t.item();
}

/// Mean loss over `batches` batches, drawn the same way at every evaluation so the numbers compare. The
/// ranks share them: rank r evaluates batches r, r + n, ...
double estimate_loss(GPT& model, const std::vector<std::int64_t>& data, std::int64_t batches, std::int64_t b,
                     std::int64_t t, xg::distributed::Communicator& comm, bool bf16) {
  xg::autograd::NoGradGuard ng;
  xg::autocast precision(bf16);
  model.eval();
  xg::Generator gen(4242);
  double total = 0;
  for (std::int64_t i = 0; i < batches; ++i) {
    auto [x, y] = get_batch(data, b, t, gen);
    if (i % comm.size() == comm.rank()) total += model.loss(x, y).item();
  }
  model.train();
  return sum_over_ranks(comm, total) / static_cast<double>(batches);
}

/// One optimizer step over grad_accum micro-batches on every rank; returns the step's loss (the mean over
/// ranks). With data parallelism, gradients are averaged over the ranks in the last micro-batch's
/// backward. A step whose loss or gradient norm is not finite is skipped (the weights stay as they were)
/// and its loss returned as is.
double train_step(GPT& model, const Dataset& data, xg::optim::Optimizer& opt, xg::Generator& gen,
                  const TrainSettings& s, xg::distributed::DistributedDataParallel* ddp) {
  double loss_sum = 0;
  for (std::int64_t micro = 0; micro < s.grad_accum; ++micro) {
    auto [x, y] = get_batch(data.train, s.batch_size, model.config().block_size, gen);
    Tensor loss;
    {
      xg::autocast precision(s.dtype == "bf16");  // the backward of what is recorded here runs in bf16 too
      loss = model.loss(x, y);
    }
    if (s.grad_accum > 1) loss = loss / static_cast<double>(s.grad_accum);
    if (ddp && micro + 1 < s.grad_accum) {
      auto local = ddp->no_sync();
      loss.backward();
    } else {
      loss.backward();
    }
    loss_sum += loss.item();
  }
  if (ddp) loss_sum = sum_over_ranks(ddp->communicator(), loss_sum) / ddp->communicator().size();
  // Frozen parameters have no gradient and are left out; with clipping off the norm is only measured.
  // The clipping factor is applied in the optimizer's pass (clip_grad_norm_'s update, one pass fewer).
  const double max_norm = s.grad_clip > 0 ? s.grad_clip : std::numeric_limits<double>::infinity();
  const double norm = xg::optim::get_total_norm(model.parameters());
  if (std::isfinite(loss_sum) && std::isfinite(norm)) opt.step(xg::optim::clip_coef(norm, max_norm));
  opt.zero_grad();
  return std::isfinite(norm) ? loss_sum : std::numeric_limits<double>::quiet_NaN();
}

/// Counts steps skipped for a non-finite loss in a row, and ends the run after a few.
struct DivergenceGuard {
  static constexpr int kLimit = 3;
  int in_a_row = 0;
  bool quiet = false;  // ranks other than 0
  void after_step(std::int64_t iter, double loss) {
    if (std::isfinite(loss)) {
      in_a_row = 0;
      return;
    }
    if (!quiet) fmt::print(stderr, "\nwarning: iteration {}: the loss or gradient norm is {}; the step was skipped\n", iter + 1, loss);
    if (++in_a_row >= kLimit)
      xg::fail("training diverged: {} steps in a row had a non-finite loss or gradient (up to iteration {}); the last "
               "checkpoint is kept as it was. Lower --lr or raise --warmup-iters, then --resume", kLimit, iter + 1);
  }
};

/// The loop train and finetune share: evaluation, metrics, progress, and `checkpoint(iter, best_val)`
/// at every evaluation, which saves whatever the command keeps. Every rank runs it; rank 0 alone shows
/// progress and writes metrics.
void run_loop(const TrainSettings& s, GPT& model, const Dataset& data, const TrainingState& state, std::int64_t start,
              double best_val, xg::distributed::DistributedDataParallel* ddp,
              const std::function<void(std::int64_t, double)>& checkpoint) {
  std::optional<xg::autograd::DetectAnomalyGuard> anomaly;
  if (s.detect_anomaly) {
    // Parameters carry their dotted names, so an anomaly names the layer it happened in.
    for (auto& [name, p] : model.named_parameters()) p.set_name(name);
    anomaly.emplace();
  }
  xg::distributed::Communicator& comm = state.comm;
  const bool lead = comm.rank() == 0;
  std::optional<Metrics> metrics;
  if (lead) {
    fs::create_directories(s.out);
    metrics.emplace(s.out, s.resume, start);
  }
  Progress progress(s.max_iters, s.batch_size * model.config().block_size * s.grad_accum * comm.size(),
                    s.log_interval);
  const std::int64_t b = s.batch_size, t = model.config().block_size;
  model.set_activation_checkpointing(s.checkpoint_activations);
  DivergenceGuard divergence;
  divergence.quiet = !lead;
  model.train();
  for (std::int64_t iter = start;; ++iter) {
    if ((iter % s.eval_interval == 0 || iter == s.max_iters) && !(s.resume && iter == start)) {
      double tr = estimate_loss(model, data.train, s.eval_iters, b, t, comm, s.dtype == "bf16");
      double va = estimate_loss(model, data.val, s.eval_iters, b, t, comm, s.dtype == "bf16");
      if (lead) {
        progress.clear_line();
        fmt::print("iter {:5d}: train loss {:.4f}, val loss {:.4f}\n", iter, tr, va);
        std::fflush(stdout);
        metrics->eval_row(iter, tr, va, state.opt.lr(), progress.tokens_per_sec());
      }
      if (std::isfinite(tr) && std::isfinite(va)) {
        best_val = std::min(best_val, va);
        if (iter > 0) checkpoint(iter, best_val);
      } else if (lead) {
        fmt::print(stderr, "warning: iteration {}: the evaluated loss is not finite; no checkpoint written\n", iter);
      }
      if (lead) write_plot(s.out);
    }
    if (iter >= s.max_iters) break;
    const double lr = state.opt.lr();
    const double loss = train_step(model, data, state.opt, state.batches, s, ddp);
    divergence.after_step(iter, loss);
    state.sched.step();
    if (lead) progress.step(iter, loss, lr);
    if (lead && (iter + 1) % s.log_interval == 0) metrics->train_row(iter + 1, loss, lr, progress.tokens_per_sec());
  }
  if (lead) fmt::print("done in {}: best val loss {:.4f}\n", human_time(progress.elapsed()), best_val);
}

/// --resume: the model flags given on the command line must agree with the checkpoint's config.
void check_resume_flags(const std::string& dir, const GPTConfig& given_cfg, const GPTConfig& stored,
                        const std::vector<std::string>& given) {
  auto want = nlohmann::json::parse(given_cfg.to_json()), have = nlohmann::json::parse(stored.to_json());
  for (const auto& flag : given) {
    std::string key = flag.substr(2);
    std::replace(key.begin(), key.end(), '-', '_');
    if (have.contains(key) && want[key] != have[key])
      xg::fail("--resume: the checkpoint in {} has {} {}, but {} {} was given; a checkpoint keeps its model's config",
               dir, key, have[key].dump(), flag, want[key].dump());
  }
}

std::shared_ptr<Tokenizer> new_tokenizer(const TrainSettings& s, const std::string& text) {
  if (s.tokenizer == "char") return std::make_shared<CharTokenizer>(CharTokenizer::from_text(text));
  if (s.tokenizer == "gpt2") return GPT2Tokenizer::from_dir(s.bpe_dir);
  xg::fail("--tokenizer must be char or gpt2, got \"{}\"", s.tokenizer);
}

xg::optim::CosineWarmupLR cosine_schedule(xg::optim::Optimizer& opt, const TrainSettings& s) {
  return xg::optim::CosineWarmupLR(opt, s.warmup_iters, std::max(s.lr_decay_iters, s.warmup_iters + 1), s.min_lr);
}

}  // namespace

namespace {

/// The body of `gpt train` on one rank.
int train_rank(const TrainSettings& s, GPTConfig cfg, const std::vector<std::string>& given,
               const std::shared_ptr<xg::distributed::Communicator>& comm) {
  const int rank = comm->rank(), ranks = comm->size();
  Checkpoint ck;
  if (s.resume) {
    ck = load_checkpoint(s.out);
    check_resume_flags(s.out, cfg, ck.config, given);
    cfg = ck.config;
  }
  std::string text = read_text(s.data);
  std::shared_ptr<Tokenizer> tok = s.resume ? ck.tokenizer : new_tokenizer(s, text);
  if (!s.resume) cfg.vocab_size = tok->vocab_size();
  cfg.validate();
  cfg.check_fits(s.batch_size);
  Dataset data = Dataset::make(tok->encode(text), cfg.block_size);

  // Rank r draws dropout masks and batches from its own generators (rank 0's are a single run's).
  const auto offset = 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(rank);
  xg::manual_seed(s.seed + offset);
  xg::Generator batch_gen(s.seed + 1 + offset);
  GPT model(cfg);
  const auto groups = xg::optim::decay_groups(model.named_parameters(), s.weight_decay);
  const xg::optim::AdamWOptions adamw{.lr = s.lr, .betas = {s.beta1, s.beta2}};
  std::unique_ptr<xg::optim::Optimizer> opt;
  if (s.zero_optimizer)
    opt = std::make_unique<xg::distributed::ZeroRedundancyOptimizer>(groups, comm, [&](std::vector<xg::optim::ParamGroup> g) {
      return std::make_unique<xg::optim::AdamW>(std::move(g), adamw);
    });
  else
    opt = std::make_unique<xg::optim::AdamW>(groups, adamw);
  auto sched = cosine_schedule(*opt, s);
  TrainingState state{*opt, sched, batch_gen, *comm, s.seed};
  double best_val = 1e9;
  if (s.resume) {
    model.load_state_dict(ck.weights);
    best_val = load_training_state(s.out, ck.iter, state);
    fmt::print("resuming from {} at iteration {}\n", s.out, ck.iter);
  }
  fmt::print("{} parameters ({} without position embeddings); vocab {}; {} train / {} val tokens\n",
             model.num_parameters(false), model.num_parameters(true), cfg.vocab_size, data.train.size(), data.val.size());
  std::unique_ptr<xg::distributed::DistributedDataParallel> ddp;
  if (ranks > 1) {
    ddp = std::make_unique<xg::distributed::DistributedDataParallel>(
        model, comm, xg::distributed::DDPOptions{.bucket_cap_mb = s.bucket_mb, .overlap_communication = s.comm_thread});
    fmt::print("data parallel over {} ranks ({}): {} ranks x batch {} x {} accumulation = {} sequences, {} tokens per "
               "step{}\n", ranks, comm->backend(), ranks, s.batch_size, s.grad_accum,
               ranks * s.batch_size * s.grad_accum, ranks * s.batch_size * s.grad_accum * cfg.block_size,
               s.zero_optimizer ? "; AdamW state sharded (ZeRO-1)" : "");
  }
  // Rank 0 writes the folder: it holds it from here (everything before only reads) to the end of the run.
  std::optional<OutputLock> lock;
  if (rank == 0) lock.emplace(s.out);
  std::fflush(stdout);
  std::int64_t saved_at = -1;
  run_loop(s, model, data, state, s.resume ? ck.iter : 0, best_val, ddp.get(), [&](std::int64_t iter, double best) {
    save_checkpoint(s.out, model, *tok, state, iter, best);
    saved_at = iter;
  });
  // Name a file only when this run wrote it.
  if (saved_at >= 0)
    fmt::print("checkpoint in {}/model.safetensors (iteration {})\n", s.out, saved_at);
  else if (s.resume)
    fmt::print("no new checkpoint: {}/model.safetensors is still the one of iteration {}\n", s.out, ck.iter);
  else if (s.max_iters == 0)
    fmt::print("no checkpoint written: --max-iters 0 trains nothing\n");
  else
    fmt::print("no checkpoint written: no evaluation had a finite loss\n");
  return 0;
}

}  // namespace

int train(const TrainSettings& s, GPTConfig cfg, const std::vector<std::string>& given) {
  if (s.threads > 0) xg::set_num_threads(s.threads);
  auto comm = xg::distributed::init({.timeout_seconds = s.dist_timeout});
  if (comm->size() == 1) return train_rank(s, cfg, given, comm);
  // Rank 0 speaks for the job; a rank that fails ends every rank rather than leave them waiting.
  if (comm->rank() != 0 && !std::freopen("/dev/null", "w", stdout)) xg::fail("cannot silence rank {}'s output", comm->rank());
  try {
    return train_rank(s, cfg, given, comm);
  } catch (const std::exception& e) {
    comm->abort(fmt::format("gpt train: error: {}", xg::escape_control_chars(e.what())));
    return 1;
  }
}

int finetune(const TrainSettings& s, const LoRASettings& l) {
  if (s.threads > 0) xg::set_num_threads(s.threads);
  auto comm = xg::distributed::init();
  if (comm->size() > 1) xg::fail("gpt finetune runs on one process; start it without mpirun");
  if (s.max_iters == 0) xg::fail("finetune: --max-iters 0 trains nothing; no adapter to save");
  Checkpoint ck = load_checkpoint(l.base);
  ck.config.check_fits(s.batch_size);
  Dataset data = Dataset::make(ck.tokenizer->encode(read_text(s.data)), ck.config.block_size);
  xg::manual_seed(s.seed);
  xg::Generator batch_gen(s.seed + 1);
  std::unique_ptr<GPT> model = make_model(ck);
  xg::nn::LoRAOptions lo(l.rank);
  lo.alpha(l.alpha).dropout(l.dropout);
  int wrapped = xg::nn::apply_lora(*model, lo, l.targets);
  xg::optim::NamedTensors trainable;
  std::int64_t count = 0;
  for (auto& [n, p] : model->named_parameters())
    if (p.requires_grad()) {
      trainable.emplace_back(n, p);
      count += p.numel();
    }
  fmt::print("LoRA rank {} alpha {} on {} layers: {} trainable parameters of {}\n", l.rank, l.alpha, wrapped, count,
             model->num_parameters(false));
  xg::optim::AdamW opt(std::vector<xg::optim::ParamGroup>{{trainable}},
                       {.lr = s.lr, .betas = {s.beta1, s.beta2}, .weight_decay = s.weight_decay});
  auto sched = cosine_schedule(opt, s);
  OutputLock lock(s.out);
  bool adapter_saved = false;
  run_loop(s, *model, data, {opt, sched, batch_gen, *comm, s.seed}, 0, 1e9, nullptr, [&](std::int64_t iter, double) {
    save_adapter(s.out, *model, ck, l, iter);
    adapter_saved = true;
  });
  if (!adapter_saved) xg::fail("finetune: no evaluation had a finite loss; no adapter was saved");
  // The merged export: a plain GPT checkpoint with B A * alpha / r folded into each weight.
  xg::nn::merge_lora(*model);
  GPT plain(ck.config);
  plain.load_state_dict(model->state_dict(), /*strict=*/false);  // every key but the adapters
  fs::create_directories(s.out + "/merged");
  plain.save(s.out + "/merged/model.safetensors", model_metadata(ck.config, *ck.tokenizer, s.max_iters));
  fmt::print("adapter in {}/adapter.safetensors; merged model in {}/merged\n", s.out, s.out);
  return 0;
}

}  // namespace gpt

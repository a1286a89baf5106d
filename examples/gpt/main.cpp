// gpt: train and sample the reference GPT.
//
//   gpt train --data FILE --out DIR [--resume] [model and training flags]   (gpt train --help)
//   gpt sample --out DIR --prompt "ROMEO:" --num-tokens 300 --temperature 0.8 --top-k 40
//   gpt eval --out DIR --data FILE [--dump grads.safetensors]
//   gpt finetune --base DIR --data FILE --out ADAPTER_DIR [--rank 8 --alpha 16]
#include <CLI/CLI.hpp>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gpt.hpp"
#include "tokenizer.hpp"

namespace fs = std::filesystem;
using xg::Tensor;

namespace {

// ---- data -----------------------------------------------------------------------------------------------

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw xg::Error(fmt::format("cannot read the data file {}: {}", path, std::strerror(errno)));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (text.empty()) throw xg::Error(fmt::format("the data file {} is empty", path));
  return text;
}

/// Token ids split 90% / 10% into train and validation, as nanoGPT's prepare.py does.
struct Dataset {
  std::vector<std::int64_t> train, val;
  static Dataset make(const std::vector<std::int64_t>& ids, std::int64_t block_size) {
    Dataset d;
    auto n = static_cast<std::ptrdiff_t>(ids.size() * 9 / 10);
    d.train.assign(ids.begin(), ids.begin() + n);
    d.val.assign(ids.begin() + n, ids.end());
    for (auto* part : {&d.train, &d.val})
      if (static_cast<std::int64_t>(part->size()) <= block_size + 1)
        throw xg::Error(fmt::format("the data file is too small: {} tokens in the {} split, but block_size {} needs "
                                    "more than {}", part->size(), part == &d.train ? "train" : "validation", block_size,
                                    block_size + 1));
    return d;
  }
};

/// A batch of random windows: x = data[i : i+T], y = data[i+1 : i+T+1].
std::pair<Tensor, Tensor> get_batch(const std::vector<std::int64_t>& data, std::int64_t b, std::int64_t t,
                                    xg::Generator& gen) {
  std::vector<std::int64_t> x(static_cast<std::size_t>(b * t)), y(x.size());
  const auto span = static_cast<std::uint64_t>(data.size()) - static_cast<std::uint64_t>(t);
  for (std::int64_t r = 0; r < b; ++r) {
    auto i = static_cast<std::size_t>(gen.next_u64() % span);
    std::copy_n(data.begin() + static_cast<std::ptrdiff_t>(i), t, x.begin() + r * t);
    std::copy_n(data.begin() + static_cast<std::ptrdiff_t>(i + 1), t, y.begin() + r * t);
  }
  return {xg::index_tensor(x, {b, t}), xg::index_tensor(y, {b, t})};
}

// ---- settings -------------------------------------------------------------------------------------------

struct TrainSettings {
  std::string data, out = "out";
  bool resume = false;
  std::int64_t batch_size = 12, max_iters = 2000, grad_accum = 1;
  double lr = 1e-3, min_lr = 1e-4, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.99, grad_clip = 1.0;
  std::int64_t warmup_iters = 100, lr_decay_iters = 2000;
  std::int64_t eval_interval = 250, eval_iters = 200, log_interval = 10;
  std::uint64_t seed = 1337;
  int threads = 0;
  std::string tokenizer = "char", bpe_dir = "data/gpt2";
};

std::string human_time(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  auto t = static_cast<long>(s + 0.5);
  return t >= 3600 ? fmt::format("{}h{:02d}m", t / 3600, (t / 60) % 60) : fmt::format("{}m{:02d}s", t / 60, t % 60);
}

// ---- checkpoints ----------------------------------------------------------------------------------------
// DIR/model.safetensors: the weights under nanoGPT's names, with the config and the tokenizer in the metadata.
// DIR/train_state.safetensors: optimizer, schedule, random generators and the iteration, to resume.

struct Checkpoint {
  gpt::GPTConfig config;
  std::shared_ptr<gpt::Tokenizer> tokenizer;
  std::int64_t iter = 0;
};

Checkpoint read_model_meta(const std::string& dir, xg::SafetensorsFile& file) {
  std::string path = dir + "/model.safetensors";
  if (!fs::exists(path)) throw xg::Error(fmt::format("no checkpoint in {} (expected {})", dir, path));
  file = xg::load_safetensors(path);
  auto get = [&](const char* key) {
    auto it = file.metadata.find(key);
    if (it == file.metadata.end()) throw xg::Error(fmt::format("{} has no \"{}\" metadata: not a gpt checkpoint", path, key));
    return it->second;
  };
  return {gpt::GPTConfig::from_json(get("config")), gpt::tokenizer_from_metadata(file.metadata), std::stoll(get("iter"))};
}

/// Checkpoint metadata: the config, the tokenizer and the iteration.
std::map<std::string, std::string> model_meta(const gpt::GPTConfig& c, const gpt::Tokenizer& tok, std::int64_t iter) {
  auto meta = tok.metadata();
  meta["format"] = "pt";
  meta["config"] = c.to_json();
  meta["iter"] = std::to_string(iter);
  return meta;
}

void save_checkpoint(const std::string& dir, gpt::GPT& model, const gpt::Tokenizer& tok, xg::optim::Optimizer& opt,
                     xg::optim::LRScheduler& sched, xg::Generator& batch_gen, std::int64_t iter, double best_val) {
  fs::create_directories(dir);
  xg::StateDict state;
  for (auto& [k, t] : opt.state_dict()) state.emplace_back("optim." + k, t);
  for (auto& [k, t] : sched.state_dict()) state.emplace_back("sched." + k, t);
  auto words = [](const std::vector<std::uint64_t>& w) {
    return xg::index_tensor(std::vector<std::int64_t>(w.begin(), w.end()));
  };
  state.emplace_back("rng.batches", words(batch_gen.state()));
  state.emplace_back("rng.default", words(xg::default_generator().state()));
  std::map<std::string, std::string> meta = {{"iter", std::to_string(iter)}, {"best_val_loss", fmt::format("{}", best_val)}};
  // The training state first: if the process dies between the two writes, the iterations disagree and
  // --resume says so instead of continuing from mismatched state.
  xg::save_safetensors(dir + "/train_state.safetensors", state, meta);
  model.save(dir + "/model.safetensors", model_meta(model.config(), tok, iter));
}

std::vector<std::uint64_t> to_words(const Tensor& t) {
  auto v = t.to_vector<std::int64_t>();
  return {v.begin(), v.end()};
}

// ---- training -------------------------------------------------------------------------------------------

double estimate_loss(gpt::GPT& model, const std::vector<std::int64_t>& data, std::int64_t batches, std::int64_t b,
                     std::int64_t t) {
  xg::autograd::NoGradGuard ng;
  model.eval();
  xg::Generator gen(4242);  // the same batches at every evaluation, so the numbers compare
  double total = 0;
  for (std::int64_t i = 0; i < batches; ++i) {
    auto [x, y] = get_batch(data, b, t, gen);
    total += model.loss(x, y).item();
  }
  model.train();
  return total / static_cast<double>(batches);
}

void write_plot(const std::string& dir) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) return;
  std::string script = dir + "/loss.gnuplot";
  std::ofstream gp(script);
  gp << "set terminal pngcairo size 900,500\nset output '" << dir << "/loss.png'\n"
     << "set datafile separator ','\nset key top right\nset xlabel 'iteration'\nset ylabel 'loss'\nset grid\n"
     << "plot '" << dir << "/metrics.csv' using 1:2 every ::1 with lines title 'train', "
     << "'' using 1:($3 > 0 ? $3 : 1/0) every ::1 with linespoints title 'validation'\n";
  gp.close();
  if (std::system(fmt::format("gnuplot '{}' 2>/dev/null", script).c_str()) != 0)
    fmt::print(stderr, "note: gnuplot could not draw {}/loss.png\n", dir);
}

/// The training loop shared by train and finetune: evaluation, metrics, progress, checkpoints.
/// `checkpoint(iter, best_val)` saves whatever the command keeps.
int run_loop(const TrainSettings& s, gpt::GPT& model, const Dataset& data, xg::optim::Optimizer& opt,
             xg::optim::LRScheduler& sched, xg::Generator& batch_gen, std::int64_t start, double best_val,
             const std::function<void(std::int64_t, double)>& checkpoint) {
  const gpt::GPTConfig& cfg = model.config();
  fs::create_directories(s.out);
  std::string csv = s.out + "/metrics.csv";
  {
    // Keep the rows up to the checkpoint's iteration (a resumed run rewrites what comes after).
    std::vector<std::string> rows;
    if (s.resume && fs::exists(csv)) {
      std::ifstream in(csv);
      std::string line;
      std::getline(in, line);
      while (std::getline(in, line))
        if (!line.empty() && std::stoll(line.substr(0, line.find(','))) <= start) rows.push_back(line);
    }
    std::ofstream out(csv, std::ios::trunc);
    out << "iter,train_loss,val_loss,lr,tokens_per_sec\n";
    for (auto& r : rows) out << r << "\n";
  }
  std::ofstream metrics(csv, std::ios::app);

  const bool tty = ::isatty(STDOUT_FILENO);
  const std::int64_t tokens_per_iter = s.batch_size * cfg.block_size * s.grad_accum;
  auto t0 = std::chrono::steady_clock::now();
  auto last = t0;
  double tok_per_s = 0;
  model.train();
  for (std::int64_t iter = start;; ++iter) {
    if ((iter % s.eval_interval == 0 || iter == s.max_iters) && !(s.resume && iter == start)) {
      double tr = estimate_loss(model, data.train, s.eval_iters, s.batch_size, cfg.block_size);
      double va = estimate_loss(model, data.val, s.eval_iters, s.batch_size, cfg.block_size);
      if (tty) fmt::print("\r\033[K");
      fmt::print("iter {:5d}: train loss {:.4f}, val loss {:.4f}\n", iter, tr, va);
      metrics << fmt::format("{},{:.6f},{:.6f},{:.6g},{:.1f}\n", iter, tr, va, opt.lr(), tok_per_s) << std::flush;
      std::fflush(stdout);
      best_val = std::min(best_val, va);
      if (iter > 0) checkpoint(iter, best_val);
      write_plot(s.out);
    }
    if (iter >= s.max_iters) break;

    double loss_sum = 0;
    for (std::int64_t micro = 0; micro < s.grad_accum; ++micro) {
      auto [x, y] = get_batch(data.train, s.batch_size, cfg.block_size, batch_gen);
      Tensor loss = model.loss(x, y);
      if (s.grad_accum > 1) loss = loss / static_cast<double>(s.grad_accum);
      loss.backward();
      loss_sum += loss.item();
    }
    if (s.grad_clip > 0) xg::optim::clip_grad_norm_(model.parameters(), s.grad_clip);  // frozen ones have no grad
    opt.step();
    opt.zero_grad();
    double lr = opt.lr();
    sched.step();

    auto now = std::chrono::steady_clock::now();
    double dt = std::chrono::duration<double>(now - last).count();
    last = now;
    tok_per_s = tok_per_s == 0 ? tokens_per_iter / dt : 0.9 * tok_per_s + 0.1 * tokens_per_iter / dt;
    double eta = static_cast<double>(s.max_iters - iter - 1) * tokens_per_iter / tok_per_s;
    if (tty) {
      int width = 30, done = static_cast<int>(width * (iter + 1) / s.max_iters);
      fmt::print("\r[{}{}] {}/{} loss {:.4f} lr {:.2e} {:.0f} tok/s ETA {}\033[K", std::string(done, '='),
                 std::string(width - done, ' '), iter + 1, s.max_iters, loss_sum, lr, tok_per_s, human_time(eta));
      std::fflush(stdout);
    }
    if ((iter + 1) % s.log_interval == 0) {
      if (!tty) {
        fmt::print("iter {:5d}: loss {:.4f}, lr {:.2e}, {:.0f} tok/s, ETA {}\n", iter + 1, loss_sum, lr, tok_per_s, human_time(eta));
        std::fflush(stdout);
      }
      metrics << fmt::format("{},{:.6f},,{:.6g},{:.1f}\n", iter + 1, loss_sum, lr, tok_per_s);
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print("done in {}: best val loss {:.4f}\n", human_time(secs), best_val);
  return 0;
}

/// `given` names the model flags set on the command line: with --resume they must match the checkpoint.
int train(const TrainSettings& s, gpt::GPTConfig cfg, const std::vector<std::string>& given) {
  if (s.threads > 0) xg::set_num_threads(s.threads);
  std::shared_ptr<gpt::Tokenizer> tok;
  Checkpoint ck;
  xg::SafetensorsFile model_file;
  if (s.resume) {
    ck = read_model_meta(s.out, model_file);
    auto want = nlohmann::json::parse(cfg.to_json()), have = nlohmann::json::parse(ck.config.to_json());
    for (const auto& flag : given) {
      std::string key = flag.substr(2);
      std::replace(key.begin(), key.end(), '-', '_');
      if (have.contains(key) && want[key] != have[key])
        throw xg::Error(fmt::format("--resume: the checkpoint in {} has {} {}, but {} {} was given; a checkpoint keeps "
                                    "its model's config", s.out, key, have[key].dump(), flag, want[key].dump()));
    }
    cfg = ck.config;
    tok = ck.tokenizer;
  }
  std::string text = read_text(s.data);
  if (!s.resume) {
    if (s.tokenizer == "char") {
      tok = std::make_shared<gpt::CharTokenizer>(gpt::CharTokenizer::from_text(text));
    } else if (s.tokenizer == "gpt2") {
      tok = gpt::GPT2Tokenizer::from_dir(s.bpe_dir);
    } else {
      throw xg::Error(fmt::format("--tokenizer must be char or gpt2, got \"{}\"", s.tokenizer));
    }
    cfg.vocab_size = tok->vocab_size();
  }
  cfg.validate();
  Dataset data = Dataset::make(tok->encode(text), cfg.block_size);

  xg::manual_seed(s.seed);
  xg::Generator batch_gen(s.seed + 1);
  gpt::GPT model(cfg);
  xg::optim::AdamW opt(xg::optim::decay_groups(model.named_parameters(), s.weight_decay),
                       {.lr = s.lr, .betas = {s.beta1, s.beta2}});
  xg::optim::CosineWarmupLR sched(opt, s.warmup_iters, std::max(s.lr_decay_iters, s.warmup_iters + 1), s.min_lr);
  std::int64_t start = 0;
  double best_val = 1e9;
  if (s.resume) {
    model.load_state_dict(model_file.tensors);
    auto state = xg::load_safetensors(s.out + "/train_state.safetensors");
    if (state.metadata["iter"] != std::to_string(ck.iter))
      throw xg::Error(fmt::format("{}: model.safetensors is at iteration {} but train_state.safetensors at {}; the "
                                  "checkpoint is inconsistent", s.out, ck.iter, state.metadata["iter"]));
    xg::StateDict o, sc;
    for (auto& [k, t] : state.tensors) {
      if (k.rfind("optim.", 0) == 0) o.emplace_back(k.substr(6), t);
      else if (k.rfind("sched.", 0) == 0) sc.emplace_back(k.substr(6), t);
      else if (k == "rng.batches") batch_gen.set_state(to_words(t));
      else if (k == "rng.default") xg::default_generator().set_state(to_words(t));
    }
    opt.load_state_dict(o);
    sched.load_state_dict(sc);
    start = ck.iter;
    best_val = std::stod(state.metadata["best_val_loss"]);
    fmt::print("resuming from {} at iteration {}\n", s.out, start);
  }
  fmt::print("{} parameters ({} without position embeddings); vocab {}; {} train / {} val tokens\n",
             model.num_parameters(false), model.num_parameters(true), cfg.vocab_size, data.train.size(), data.val.size());

  int rc = run_loop(s, model, data, opt, sched, batch_gen, start, best_val, [&](std::int64_t iter, double best) {
    save_checkpoint(s.out, model, *tok, opt, sched, batch_gen, iter, best);
  });
  fmt::print("checkpoint in {}/model.safetensors\n", s.out);
  return rc;
}


// ---- LoRA fine-tuning ----------------------------------------------------------------------------------

struct LoRASettings {
  std::string base = "out";
  std::int64_t rank = 8;
  double alpha = 16.0, dropout = 0.0;
  std::vector<std::string> targets = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
};

std::string join(const std::vector<std::string>& v) { return fmt::format("{}", fmt::join(v, ",")); }

/// A base checkpoint with the LoRA adapter stored in `adapter_dir` applied (unmerged).
std::pair<std::unique_ptr<gpt::GPT>, Checkpoint> load_with_adapter(const std::string& adapter_dir) {
  std::string path = adapter_dir + "/adapter.safetensors";
  if (!fs::exists(path)) throw xg::Error(fmt::format("no adapter in {} (expected {})", adapter_dir, path));
  auto adapter = xg::load_safetensors(path);
  auto meta = [&](const char* k) {
    auto it = adapter.metadata.find(k);
    if (it == adapter.metadata.end()) throw xg::Error(fmt::format("{} has no \"{}\" metadata: not a gpt adapter", path, k));
    return it->second;
  };
  xg::SafetensorsFile base_file;
  Checkpoint ck = read_model_meta(meta("base"), base_file);
  if (ck.config.to_json() != meta("config"))
    throw xg::Error(fmt::format("{} was trained on a base model with another config than {}", path, meta("base")));
  auto model = std::make_unique<gpt::GPT>(ck.config);
  model->load_state_dict(base_file.tensors);
  std::vector<std::string> targets;
  std::stringstream ss(meta("lora_targets"));
  for (std::string t; std::getline(ss, t, ',');) targets.push_back(t);
  xg::nn::apply_lora(*model, xg::nn::LoRAOptions(std::stoll(meta("lora_rank"))).alpha(std::stod(meta("lora_alpha"))), targets);
  model->load_state_dict(adapter.tensors, /*strict=*/false);
  return {std::move(model), ck};
}

/// Fine-tunes low-rank adapters on a base checkpoint: only the adapters train; they are saved alone
/// (adapter.safetensors) and, at the end, merged into a plain checkpoint (merged/model.safetensors).
int finetune(TrainSettings s, const LoRASettings& l) {
  if (s.threads > 0) xg::set_num_threads(s.threads);
  xg::SafetensorsFile base_file;
  Checkpoint ck = read_model_meta(l.base, base_file);
  Dataset data = Dataset::make(ck.tokenizer->encode(read_text(s.data)), ck.config.block_size);
  xg::manual_seed(s.seed);
  xg::Generator batch_gen(s.seed + 1);
  gpt::GPT model(ck.config);
  model.load_state_dict(base_file.tensors);
  xg::nn::LoRAOptions lo(l.rank);
  lo.alpha(l.alpha).dropout(l.dropout);
  int wrapped = xg::nn::apply_lora(model, lo, l.targets);
  xg::optim::NamedTensors trainable;
  for (auto& [n, p] : model.named_parameters())
    if (p.requires_grad()) trainable.emplace_back(n, p);
  std::int64_t count = 0;
  for (auto& [_, p] : trainable) count += p.numel();
  fmt::print("LoRA rank {} alpha {} on {} layers: {} trainable parameters of {}\n", l.rank, l.alpha, wrapped, count,
             model.num_parameters(false));
  xg::optim::AdamW opt(std::vector<xg::optim::ParamGroup>{{trainable}}, {.lr = s.lr, .betas = {s.beta1, s.beta2}, .weight_decay = s.weight_decay});
  xg::optim::CosineWarmupLR sched(opt, s.warmup_iters, std::max(s.lr_decay_iters, s.warmup_iters + 1), s.min_lr);
  std::map<std::string, std::string> meta = {{"base", fs::absolute(l.base).string()}, {"config", ck.config.to_json()},
                                             {"lora_rank", std::to_string(l.rank)}, {"lora_alpha", fmt::format("{}", l.alpha)},
                                             {"lora_targets", join(l.targets)}};
  int rc = run_loop(s, model, data, opt, sched, batch_gen, 0, 1e9, [&](std::int64_t iter, double) {
    meta["iter"] = std::to_string(iter);
    xg::save_safetensors(s.out + "/adapter.safetensors", xg::nn::lora_state_dict(model), meta);
  });
  // The merged export: a plain GPT checkpoint with B A * alpha / r folded into each weight.
  xg::nn::merge_lora(model);
  gpt::GPT plain(ck.config);
  plain.load_state_dict(model.state_dict(), /*strict=*/false);  // every key but the adapters
  fs::create_directories(s.out + "/merged");
  plain.save(s.out + "/merged/model.safetensors", model_meta(ck.config, *ck.tokenizer, s.max_iters));
  fmt::print("adapter in {}/adapter.safetensors; merged model in {}/merged\n", s.out, s.out);
  return rc;
}

struct EvalSettings {
  std::string dir = "out", data, dump;
  std::int64_t batches = 50, batch_size = 12;
  std::uint64_t seed = 1337;
  int threads = 0;
  std::string tokenizer = "char", bpe_dir = "data/gpt2";
};

/// Loss of a checkpoint on a text file; optionally the logits, loss and every parameter's gradient of one
/// batch written to a safetensors file (for parity checks against another implementation).
int evaluate(const EvalSettings& s) {
  if (s.threads > 0) xg::set_num_threads(s.threads);
  xg::SafetensorsFile file;
  Checkpoint ck = read_model_meta(s.dir, file);
  gpt::GPT model(ck.config);
  model.load_state_dict(file.tensors);
  std::vector<std::int64_t> ids = ck.tokenizer->encode(read_text(s.data));
  const std::int64_t t = ck.config.block_size;
  if (static_cast<std::int64_t>(ids.size()) <= t + 1)
    throw xg::Error(fmt::format("{} has {} tokens; evaluating with block_size {} needs more than {}", s.data, ids.size(), t, t + 1));
  xg::Generator gen(s.seed);
  double total = 0;
  {
    xg::autograd::NoGradGuard ng;
    model.eval();
    for (std::int64_t i = 0; i < s.batches; ++i) {
      auto [x, y] = get_batch(ids, s.batch_size, t, gen);
      total += model.loss(x, y).item();
    }
  }
  fmt::print("loss {:.4f} on {} batches of {} x {} tokens from {}\n", total / static_cast<double>(s.batches), s.batches,
             s.batch_size, t, s.data);
  if (!s.dump.empty()) {
    xg::Generator dump_gen(s.seed);
    auto [x, y] = get_batch(ids, s.batch_size, t, dump_gen);
    model.eval();
    Tensor logits = model.forward(x);
    Tensor loss = xg::nn::functional::cross_entropy(logits, y, {.ignore_index = -1});
    loss.backward();
    xg::StateDict out = {{"x", x}, {"y", y}, {"logits", logits.detach()}, {"loss", loss.detach()}};
    for (auto& [name, p] : model.state_dict()) out.emplace_back("grad." + name, p.grad());
    xg::save_safetensors(s.dump, out);
    fmt::print("wrote the logits, loss and gradients of one batch to {}\n", s.dump);
  }
  return 0;
}

int sample(const std::string& dir, const std::string& adapter, const std::string& prompt, gpt::SampleOptions o, int threads) {
  std::unique_ptr<gpt::GPT> model;
  Checkpoint ck;
  if (!adapter.empty()) {
    std::tie(model, ck) = load_with_adapter(adapter);
  } else {
    xg::SafetensorsFile file;
    ck = read_model_meta(dir, file);
    model = std::make_unique<gpt::GPT>(ck.config);
    model->load_state_dict(file.tensors);
  }
  // Decoding multiplies tiny matrices; for small models a second BLAS thread spins more than it helps
  // (measured: 300 tokens of the baby GPT took 3.0 s with 2 threads, 0.6 s with 1).
  if (threads > 0) {
    xg::set_num_threads(threads);
  } else if (ck.config.n_embd < 512) {
    xg::set_num_threads(1);
  }
  std::vector<std::int64_t> ids = ck.tokenizer->encode(prompt.empty() ? "\n" : prompt);
  auto out = gpt::generate(*model, ids, o);
  fmt::print("{}\n", ck.tokenizer->decode(out));
  return 0;
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
  cmd->add_option("--threads", s.threads, "BLAS threads (0: the default)")->capture_default_str();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train and sample a GPT with xgrad (nanoGPT-compatible checkpoints)"};
  app.require_subcommand(1);

  TrainSettings s;
  gpt::GPTConfig cfg;
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

  std::string dir = "out", prompt;
  gpt::SampleOptions so;
  int threads = 0;
  auto* sa = app.add_subcommand("sample", "Generate text from a checkpoint");
  std::string adapter;
  sa->add_option("--out", dir, "Checkpoint directory")->capture_default_str();
  sa->add_option("--adapter", adapter, "A LoRA adapter directory (from finetune) to apply to its base model");
  sa->add_option("--prompt", prompt, "Text to continue (default: a newline)");
  sa->add_option("--num-tokens", so.max_new_tokens, "Tokens to generate")->capture_default_str();
  sa->add_option("--temperature", so.temperature, "Softmax temperature (0: greedy)")->capture_default_str();
  sa->add_option("--top-k", so.top_k, "Sample from the k most likely tokens (0: all)")->capture_default_str();
  sa->add_option("--top-p", so.top_p, "Nucleus sampling threshold (1: off)")->capture_default_str();
  sa->add_option("--seed", so.seed, "Random seed")->capture_default_str();
  sa->add_option("--cache", so.use_cache, "Incremental decoding with a key/value cache")->capture_default_str();
  sa->add_option("--threads", threads, "BLAS threads (0: 1 for models narrower than 512, else the default)")->capture_default_str();

  EvalSettings es;
  auto* ev = app.add_subcommand("eval", "Loss of a checkpoint on a text file");
  ev->add_option("--out", es.dir, "Checkpoint directory")->capture_default_str();
  ev->add_option("--data", es.data, "Text to evaluate on")->required()->check(CLI::ExistingFile);
  ev->add_option("--batches", es.batches, "Random batches to average")->capture_default_str();
  ev->add_option("--batch-size", es.batch_size, "Sequences per batch")->capture_default_str();
  ev->add_option("--seed", es.seed, "Random seed for the batches")->capture_default_str();
  ev->add_option("--dump", es.dump, "Write the logits, loss and gradients of one batch to this safetensors file");
  ev->add_option("--threads", es.threads, "BLAS threads (0: the default)")->capture_default_str();

  TrainSettings fts;
  fts.out = "out/finetune";
  fts.max_iters = 500;
  fts.warmup_iters = 20;
  fts.lr_decay_iters = 500;
  fts.weight_decay = 0.0;
  fts.eval_interval = 100;
  fts.eval_iters = 50;
  LoRASettings lora;
  auto* ft = app.add_subcommand("finetune", "LoRA fine-tuning of a trained checkpoint on another text file");
  ft->add_option("--base", lora.base, "Checkpoint directory of the base model")->capture_default_str();
  ft->add_option("--data", fts.data, "Fine-tuning text (its characters must be in the base vocabulary)")->required()->check(CLI::ExistingFile);
  ft->add_option("--out", fts.out, "Where the adapter and the merged model go")->capture_default_str();
  ft->add_option("--rank", lora.rank, "Adapter rank r")->capture_default_str();
  ft->add_option("--alpha", lora.alpha, "Adapter scale alpha (the update is scaled by alpha / r)")->capture_default_str();
  ft->add_option("--lora-dropout", lora.dropout, "Dropout on the adapters' input")->capture_default_str();
  ft->add_option("--targets", lora.targets, "Layers that get adapters (name suffixes)")->delimiter(',')->capture_default_str();
  add_training_flags(ft, fts);

  CLI11_PARSE(app, argc, argv);
  try {
    if (tr->parsed()) {
      if (s.eval_interval <= 0 || s.log_interval <= 0 || s.eval_iters <= 0 || s.batch_size <= 0 || s.grad_accum <= 0 ||
          s.max_iters < 0)
        throw xg::Error("intervals, batch sizes and iteration counts must be positive");
      std::vector<std::string> given;
      for (const char* f : {"--n-layer", "--n-head", "--n-embd", "--block-size", "--dropout", "--bias", "--gelu-tanh",
                            "--attention", "--window"})
        if (tr->get_option(f)->count() > 0) given.emplace_back(f);
      return train(s, cfg, given);
    }
    if (ev->parsed()) {
      if (es.batches <= 0 || es.batch_size <= 0) throw xg::Error("--batches and --batch-size must be positive");
      return evaluate(es);
    }
    if (ft->parsed()) {
      if (fts.eval_interval <= 0 || fts.log_interval <= 0 || fts.eval_iters <= 0 || fts.batch_size <= 0 ||
          fts.grad_accum <= 0 || fts.max_iters < 0 || lora.rank <= 0)
        throw xg::Error("intervals, batch sizes, iteration counts and the rank must be positive");
      return finetune(fts, lora);
    }
    return sample(dir, adapter, prompt, so, threads);
  } catch (const std::exception& e) {
    fmt::print(stderr, "gpt: error: {}\n", e.what());
    return 1;
  }
}

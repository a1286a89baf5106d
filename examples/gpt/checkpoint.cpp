#include "checkpoint.hpp"

#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <sstream>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace fs = std::filesystem;

namespace gpt {

namespace {

/// A metadata field, or an error naming the file and the field.
const std::string& meta_field(const xg::SafetensorsFile& file, const std::string& path, const char* key,
                              const char* what) {
  auto it = file.metadata.find(key);
  if (it == file.metadata.end()) xg::fail("{} has no \"{}\" metadata: not a {}", path, key, what);
  return it->second;
}

/// A metadata field that must be a whole number in [lo, hi].
std::int64_t meta_int(const xg::SafetensorsFile& file, const std::string& path, const char* key, const char* what,
                      std::int64_t lo, std::int64_t hi) {
  const std::string& text = meta_field(file, path, key, what);
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v < lo || v > hi)
    xg::fail("{}: \"{}\" is \"{}\", expected a whole number in [{}, {}]", path, key, text, lo, hi);
  return v;
}

/// A metadata field that must be a number (finite, or inf for "none yet").
double meta_real(const xg::SafetensorsFile& file, const std::string& path, const char* key, const char* what) {
  const std::string& text = meta_field(file, path, key, what);
  double v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || std::isnan(v))
    xg::fail("{}: \"{}\" is \"{}\", expected a number", path, key, text);
  return v;
}

xg::Tensor to_words(const std::vector<std::uint64_t>& w) {
  return xg::index_tensor(std::vector<std::int64_t>(w.begin(), w.end()));
}
/// A generator state stored as int64 words, checked as the generator would check it.
std::vector<std::uint64_t> from_words(const std::string& path, const std::string& key, const xg::Tensor& t) {
  if (t.dtype() != xg::int64 || t.dim() != 1 || t.numel() != 6)
    xg::fail("{}: {} is {} {}, expected 6 int64 words of generator state", path, key, xg::dtype_name(t.dtype()),
             xg::shape_str(t.shape()));
  auto v = t.to_vector<std::int64_t>();
  std::vector<std::uint64_t> words(v.begin(), v.end());
  try {
    xg::Generator probe;
    probe.set_state(words);
  } catch (const xg::Error& e) {
    xg::fail("{}: {}: {}", path, key, e.what());
  }
  return words;
}

constexpr const char* kState = "train_state.safetensors";
constexpr const char* kPrevState = "train_state.prev.safetensors";

}  // namespace

Checkpoint load_checkpoint(const std::string& dir) {
  std::string path = dir + "/model.safetensors";
  if (!fs::exists(path)) xg::fail("no checkpoint in {} (expected {})", dir, path);
  xg::SafetensorsFile file = xg::load_safetensors(path);
  Checkpoint ck;
  ck.config = GPTConfig::from_json(meta_field(file, path, "config", "gpt checkpoint"));
  ck.tokenizer = tokenizer_from_metadata(file.metadata);
  ck.iter = meta_int(file, path, "iter", "gpt checkpoint", 0, std::int64_t(1) << 40);
  ck.weights = std::move(file.tensors);
  return ck;
}

std::unique_ptr<GPT> make_model(const Checkpoint& ck) {
  auto model = std::make_unique<GPT>(ck.config);
  model->load_state_dict(ck.weights);
  return model;
}

std::map<std::string, std::string> model_metadata(const GPTConfig& config, const Tokenizer& tok, std::int64_t iter) {
  auto meta = tok.metadata();
  meta["format"] = "pt";
  meta["config"] = config.to_json();
  meta["iter"] = std::to_string(iter);
  return meta;
}

void save_checkpoint(const std::string& dir, GPT& model, const Tokenizer& tok, const TrainingState& s,
                     std::int64_t iter, double best_val) {
  xg::StateDict state;
  for (auto& [k, t] : s.opt.state_dict()) state.emplace_back("optim." + k, t);  // a collective under ZeRO
  for (auto& [k, t] : s.sched.state_dict()) state.emplace_back("sched." + k, t);
  // Every rank's generators: rank 0's under the names a single-process run uses, rank r's with ".r".
  std::vector<std::uint64_t> words = s.batches.state(), global = xg::default_generator().state();
  words.insert(words.end(), global.begin(), global.end());
  const auto all = s.comm.all_gather(to_words(words)).to_vector<std::int64_t>();
  if (s.comm.rank() != 0) return;
  for (int r = 0; r < s.comm.size(); ++r) {
    const std::string suffix = r == 0 ? "" : fmt::format(".{}", r);
    auto at = all.begin() + static_cast<std::ptrdiff_t>(r) * 12;
    state.emplace_back("rng.batches" + suffix, xg::index_tensor(std::vector<std::int64_t>(at, at + 6)));
    state.emplace_back("rng.default" + suffix, xg::index_tensor(std::vector<std::int64_t>(at + 6, at + 12)));
  }
  std::map<std::string, std::string> meta = {{"iter", std::to_string(iter)},
                                             {"best_val_loss", fmt::format("{}", best_val)},
                                             {"ranks", std::to_string(s.comm.size())}};
  fs::create_directories(dir);
  // Committed as a pair: the state that matches the current model is kept as train_state.prev until the
  // new model is in place, so a process killed at any point leaves a model with a matching state.
  const fs::path cur = fs::path(dir) / kState, prev = fs::path(dir) / kPrevState;
  if (fs::exists(cur)) fs::rename(cur, prev);
  try {
    xg::save_safetensors(cur.string(), state, meta);
    model.save(dir + "/model.safetensors", model_metadata(model.config(), tok, iter));
  } catch (const xg::Error& e) {
    // Say what is left: the model on disk with its matching state (train_state.prev), which --resume takes.
    std::string left = "no checkpoint is left to resume from";
    try {
      const auto file = xg::load_safetensors(dir + "/model.safetensors");
      left = fmt::format("--resume continues from the checkpoint of iteration {}",
                         meta_int(file, dir + "/model.safetensors", "iter", "gpt checkpoint", 0, std::int64_t(1) << 40));
    } catch (const xg::Error&) {
    }
    xg::fail("{}; {}", e.what(), left);
  }
  fs::remove(prev);
}

OutputLock::OutputLock(const std::string& dir) {
  fs::create_directories(dir);
  path_ = dir + "/.gpt.lock";
  for (int attempt = 0;; ++attempt) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd_ < 0) xg::fail("cannot lock {}: {}", path_, std::strerror(errno));
    std::string holder(32, '\0');
    const ssize_t n = ::pread(fd_, holder.data(), holder.size() - 1, 0);
    holder.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    holder.erase(std::find_if(holder.begin(), holder.end(), [](char c) { return c < '0' || c > '9'; }), holder.end());
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd_);
      fd_ = -1;
      if (err == EWOULDBLOCK)
        xg::fail("{} is being written by another gpt process{}; wait for it to finish or choose another --out", dir,
                 holder.empty() ? std::string() : fmt::format(" (pid {})", holder));
      xg::fail("cannot lock {}: {}", path_, std::strerror(err));
    }
    // The holder may have removed the file between our open and our lock: lock the file that is there.
    struct stat opened {}, named {};
    if (::fstat(fd_, &opened) == 0 && ::stat(path_.c_str(), &named) == 0 && opened.st_ino == named.st_ino &&
        opened.st_dev == named.st_dev)
      {
        // A lock file whose process is gone was left by a run that was killed: taken over.
        if (!holder.empty() && holder != std::to_string(::getpid()))
          fmt::print(stderr, "note: taking over the lock of {} left by process {}, which is no longer running\n", dir, holder);
        break;
      }
    ::close(fd_);
    fd_ = -1;
    if (attempt == 100) xg::fail("cannot lock {}: it keeps being replaced", path_);
  }
  const std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size()))
    xg::fail("cannot lock {}: {}", path_, std::strerror(errno));
  // Temporaries of writers killed mid-save (their pid is gone) would otherwise stay until the same file is
  // written again.
  if (int n = xg::remove_dead_writers_temporaries(dir); n > 0)
    fmt::print(stderr, "note: removed {} temporary file{} of killed writers in {}\n", n, n == 1 ? "" : "s", dir);
}

OutputLock::~OutputLock() {
  if (fd_ < 0) return;
  ::unlink(path_.c_str());  // while still holding it: the next writer finds no stale holder
  ::close(fd_);
}

namespace {
/// The training state file that belongs to a model at `iter`: train_state, or train_state.prev when a
/// save was interrupted between the two files.
xg::SafetensorsFile matching_state(const std::string& dir, std::int64_t iter, std::string& path) {
  std::vector<std::string> seen;
  for (const char* name : {kState, kPrevState}) {
    path = dir + "/" + name;
    if (!fs::exists(path)) continue;
    xg::SafetensorsFile file = xg::load_safetensors(path);
    const std::int64_t at = meta_int(file, path, "iter", "gpt training state", 0, std::int64_t(1) << 40);
    if (at == iter) return file;
    seen.push_back(fmt::format("{} at iteration {}", name, at));
  }
  xg::fail("{}: model.safetensors is at iteration {} but no training state matches it ({}); the checkpoint is "
           "inconsistent", dir, iter, seen.empty() ? std::string("none found") : fmt::format("{}", fmt::join(seen, ", ")));
}
}  // namespace

namespace {
/// "rng.batches" -> rank 0, "rng.batches.3" -> rank 3; -1 if `key` is not `base` with a rank.
int rank_of(const std::string& key, const std::string& base) {
  if (key == base) return 0;
  if (key.rfind(base + ".", 0) != 0) return -1;
  int r = 0;
  const char* b = key.data() + base.size() + 1;
  auto [end, ec] = std::from_chars(b, key.data() + key.size(), r);
  return ec == std::errc() && end == key.data() + key.size() && r >= 1 && r < (1 << 20) && *b != '0' ? r : -1;
}
}  // namespace

double load_training_state(const std::string& dir, std::int64_t iter, const TrainingState& s) {
  std::string path;
  xg::SafetensorsFile file = matching_state(dir, iter, path);
  const double best = meta_real(file, path, "best_val_loss", "gpt training state");
  // Everything is read and checked before the optimizer, schedule or generators change.
  xg::StateDict opt, sched;
  std::map<int, std::vector<std::uint64_t>> batches, global;
  for (auto& [k, t] : file.tensors) {
    if (k.rfind("optim.", 0) == 0) opt.emplace_back(k.substr(6), t);
    else if (k.rfind("sched.", 0) == 0) sched.emplace_back(k.substr(6), t);
    else if (int r = rank_of(k, "rng.batches"); r >= 0) batches[r] = from_words(path, k, t);
    else if (int q = rank_of(k, "rng.default"); q >= 0) global[q] = from_words(path, k, t);
    else xg::fail("{}: unexpected entry \"{}\"", path, k);
  }
  if (!batches.count(0) || !global.count(0)) xg::fail("{}: the random generators' state is missing", path);
  const int top = std::max(batches.rbegin()->first, global.rbegin()->first);
  for (int r = 0; r <= top; ++r)
    if (!batches.count(r) || !global.count(r))
      xg::fail("{}: the generators of rank {} are incomplete (ranks must be 0..n-1, each with rng.batches and "
               "rng.default)", path, r);
  const int saved = static_cast<int>(batches.size()), rank = s.comm.rank();
  if (saved != s.comm.size() && rank == 0)
    fmt::print("note: the checkpoint was written by {} rank{} and this run has {}: {}\n", saved, saved == 1 ? "" : "s",
               s.comm.size(), saved < s.comm.size() ? "the new ranks draw from new generators"
                                                   : "the other ranks' generators are not used");
  // Each validates its whole state before changing; the optimizer is put back if the schedule refuses.
  const xg::StateDict opt_before = s.opt.state_dict();
  s.opt.load_state_dict(opt);
  try {
    s.sched.load_state_dict(sched);
  } catch (...) {
    s.opt.load_state_dict(opt_before);
    throw;
  }
  if (rank < saved) {
    s.batches.set_state(batches[rank]);
    xg::default_generator().set_state(global[rank]);
  } else {
    const std::uint64_t fresh = s.seed + 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(rank) + static_cast<std::uint64_t>(iter);
    s.batches.manual_seed(fresh + 1);
    xg::default_generator().manual_seed(fresh);
  }
  return best;
}

void save_adapter(const std::string& adapter_dir, GPT& model, const Checkpoint& base, const LoRASettings& l,
                  std::int64_t iter) {
  std::map<std::string, std::string> meta = {{"base", fs::absolute(l.base).string()},
                                             {"config", base.config.to_json()},
                                             {"lora_rank", std::to_string(l.rank)},
                                             {"lora_alpha", fmt::format("{}", l.alpha)},
                                             {"lora_targets", fmt::format("{}", fmt::join(l.targets, ","))},
                                             {"iter", std::to_string(iter)}};
  fs::create_directories(adapter_dir);
  xg::save_safetensors(adapter_dir + "/adapter.safetensors", xg::nn::lora_state_dict(model), meta);
}

std::pair<std::unique_ptr<GPT>, Checkpoint> load_with_adapter(const std::string& adapter_dir) {
  std::string path = adapter_dir + "/adapter.safetensors";
  if (!fs::exists(path)) xg::fail("no adapter in {} (expected {})", adapter_dir, path);
  xg::SafetensorsFile adapter = xg::load_safetensors(path);
  auto meta = [&](const char* k) -> const std::string& { return meta_field(adapter, path, k, "gpt adapter"); };
  Checkpoint ck = load_checkpoint(meta("base"));
  if (ck.config.to_json() != meta("config"))
    xg::fail("{} was trained on a base model with another config than {}", path, meta("base"));
  auto model = make_model(ck);
  std::vector<std::string> targets;
  const std::int64_t rank = meta_int(adapter, path, "lora_rank", "gpt adapter", 1, 4096);
  const double alpha = meta_real(adapter, path, "lora_alpha", "gpt adapter");
  if (!(alpha > 0 && std::isfinite(alpha))) xg::fail("{}: \"lora_alpha\" must be a positive number", path);
  std::stringstream ss(meta("lora_targets"));
  for (std::string t; std::getline(ss, t, ',');) targets.push_back(t);
  xg::nn::apply_lora(*model, xg::nn::LoRAOptions(rank).alpha(alpha),
                     targets);
  for (const auto& [name, t] : adapter.tensors)
    if (!name.ends_with(".lora_A") && !name.ends_with(".lora_B"))
      xg::fail("{}: \"{}\" is not a LoRA adapter tensor; an adapter must not replace base weights", path, name);
  model->load_state_dict(adapter.tensors, /*strict=*/false);
  return {std::move(model), std::move(ck)};
}

}  // namespace gpt

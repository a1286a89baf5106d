#include "checkpoint.hpp"

#include <fmt/ranges.h>

#include <filesystem>
#include <sstream>

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

xg::Tensor to_words(const std::vector<std::uint64_t>& w) {
  return xg::index_tensor(std::vector<std::int64_t>(w.begin(), w.end()));
}
std::vector<std::uint64_t> from_words(const xg::Tensor& t) {
  auto v = t.to_vector<std::int64_t>();
  return {v.begin(), v.end()};
}

}  // namespace

Checkpoint load_checkpoint(const std::string& dir) {
  std::string path = dir + "/model.safetensors";
  if (!fs::exists(path)) xg::fail("no checkpoint in {} (expected {})", dir, path);
  xg::SafetensorsFile file = xg::load_safetensors(path);
  Checkpoint ck;
  ck.config = GPTConfig::from_json(meta_field(file, path, "config", "gpt checkpoint"));
  ck.tokenizer = tokenizer_from_metadata(file.metadata);
  ck.iter = std::stoll(meta_field(file, path, "iter", "gpt checkpoint"));
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
  fs::create_directories(dir);
  xg::StateDict state;
  for (auto& [k, t] : s.opt.state_dict()) state.emplace_back("optim." + k, t);
  for (auto& [k, t] : s.sched.state_dict()) state.emplace_back("sched." + k, t);
  state.emplace_back("rng.batches", to_words(s.batches.state()));
  state.emplace_back("rng.default", to_words(xg::default_generator().state()));
  std::map<std::string, std::string> meta = {{"iter", std::to_string(iter)}, {"best_val_loss", fmt::format("{}", best_val)}};
  // The training state first: if the process dies between the two writes, the iterations disagree and
  // --resume says so instead of continuing from mismatched state.
  xg::save_safetensors(dir + "/train_state.safetensors", state, meta);
  model.save(dir + "/model.safetensors", model_metadata(model.config(), tok, iter));
}

double load_training_state(const std::string& dir, std::int64_t iter, const TrainingState& s) {
  std::string path = dir + "/train_state.safetensors";
  xg::SafetensorsFile file = xg::load_safetensors(path);
  const std::string& at = meta_field(file, path, "iter", "gpt training state");
  if (at != std::to_string(iter))
    xg::fail("{}: model.safetensors is at iteration {} but train_state.safetensors at {}; the checkpoint is "
             "inconsistent", dir, iter, at);
  xg::StateDict opt, sched;
  for (auto& [k, t] : file.tensors) {
    if (k.rfind("optim.", 0) == 0) opt.emplace_back(k.substr(6), t);
    else if (k.rfind("sched.", 0) == 0) sched.emplace_back(k.substr(6), t);
    else if (k == "rng.batches") s.batches.set_state(from_words(t));
    else if (k == "rng.default") xg::default_generator().set_state(from_words(t));
  }
  s.opt.load_state_dict(opt);
  s.sched.load_state_dict(sched);
  return std::stod(meta_field(file, path, "best_val_loss", "gpt training state"));
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
  std::stringstream ss(meta("lora_targets"));
  for (std::string t; std::getline(ss, t, ',');) targets.push_back(t);
  xg::nn::apply_lora(*model, xg::nn::LoRAOptions(std::stoll(meta("lora_rank"))).alpha(std::stod(meta("lora_alpha"))),
                     targets);
  model->load_state_dict(adapter.tensors, /*strict=*/false);
  return {std::move(model), std::move(ck)};
}

}  // namespace gpt

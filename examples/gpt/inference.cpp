#include "inference.hpp"

#include "checkpoint.hpp"
#include "data.hpp"

using xg::Tensor;

namespace gpt {

int evaluate(const EvalSettings& s) {
  if (s.threads > 0) xg::set_num_threads(s.threads);
  Checkpoint ck = load_checkpoint(s.dir);
  ck.config.check_fits(s.batch_size);
  std::unique_ptr<GPT> model = make_model(ck);
  std::vector<std::int64_t> ids = ck.tokenizer->encode(read_text(s.data));
  const std::int64_t t = ck.config.block_size;
  if (static_cast<std::int64_t>(ids.size()) <= t + 1)
    xg::fail("{} has {} tokens; evaluating with block_size {} needs more than {}", s.data, ids.size(), t, t + 1);
  xg::Generator gen(s.seed);
  double total = 0;
  {
    xg::autograd::NoGradGuard ng;
    model->eval();
    for (std::int64_t i = 0; i < s.batches; ++i) {
      auto [x, y] = get_batch(ids, s.batch_size, t, gen);
      total += model->loss(x, y).item();
    }
  }
  fmt::print("loss {:.4f} on {} batches of {} x {} tokens from {}\n", total / static_cast<double>(s.batches), s.batches,
             s.batch_size, t, s.data);
  if (s.dump.empty()) return 0;
  xg::Generator dump_gen(s.seed);
  auto [x, y] = get_batch(ids, s.batch_size, t, dump_gen);
  Tensor logits = model->forward(x);
  Tensor loss = xg::nn::functional::cross_entropy(logits, y, {.ignore_index = -1});
  loss.backward();
  xg::StateDict out = {{"x", x}, {"y", y}, {"logits", logits.detach()}, {"loss", loss.detach()}};
  for (auto& [name, p] : model->state_dict()) out.emplace_back("grad." + name, p.grad());
  xg::save_safetensors(s.dump, out);
  fmt::print("wrote the logits, loss and gradients of one batch to {}\n", s.dump);
  return 0;
}

int sample(const SampleSettings& s) {
  std::unique_ptr<GPT> model;
  Checkpoint ck;
  if (!s.adapter.empty()) {
    std::tie(model, ck) = load_with_adapter(s.adapter);
  } else {
    ck = load_checkpoint(s.dir);
    model = make_model(ck);
  }
  // Decoding multiplies tiny matrices; for small models a second BLAS thread spins more than it helps
  // (measured: 300 tokens of the baby GPT took 3.0 s with 2 threads, 0.6 s with 1).
  if (s.threads > 0) {
    xg::set_num_threads(s.threads);
  } else if (ck.config.n_embd < 512) {
    xg::set_num_threads(1);
  }
  std::vector<std::int64_t> ids = ck.tokenizer->encode(s.prompt.empty() ? "\n" : s.prompt);
  auto out = generate(*model, ids, s.options);
  fmt::print("{}\n", ck.tokenizer->decode(out));
  return 0;
}

}  // namespace gpt

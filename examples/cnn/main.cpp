// Trains a small CNN on Fashion-MNIST (70,000 real 28x28 images of clothing in 10 classes, from Debian's
// dataset-fashion-mnist package, which scripts/setup.sh installs and scripts/prepare_data.sh unpacks into
// data/fashion-mnist/), and reports the test accuracy after every epoch.
//
//   build/examples/cnn [--data data/fashion-mnist] [--epochs 4] [--batch-size 64] [--lr 2e-3] [--threads 2]
//                      [--limit N]   # train on the first N images only (a quick check)
#include <CLI/CLI.hpp>
#include <xgrad/kernel.hpp>
#include <xgrad/xgrad.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>

namespace nn = xg::nn;
namespace F = xg::nn::functional;

namespace {

/// An IDX file (the MNIST format): a big-endian header of magic, dims, then unsigned bytes. Validated whole:
/// magic, dimensions, and the file size they imply.
std::pair<std::vector<std::int64_t>, std::vector<unsigned char>> read_idx(const std::string& path, int want_dims) {
  std::ifstream in(path, std::ios::binary);
  if (!in) xg::fail("cannot open {} (bash scripts/setup.sh installs and unpacks Fashion-MNIST into data/fashion-mnist)", path);
  auto u32 = [&]() {
    unsigned char b[4];
    if (!in.read(reinterpret_cast<char*>(b), 4)) xg::fail("{}: truncated header", path);
    return (std::uint32_t(b[0]) << 24) | (std::uint32_t(b[1]) << 16) | (std::uint32_t(b[2]) << 8) | b[3];
  };
  const std::uint32_t magic = u32();
  if ((magic >> 8) != 0x08 || static_cast<int>(magic & 0xff) != want_dims)
    xg::fail("{}: not an IDX file of unsigned bytes with {} dims (magic {:#x})", path, want_dims, magic);
  std::vector<std::int64_t> dims;
  std::int64_t count = 1;
  for (int i = 0; i < want_dims; ++i) {
    dims.push_back(u32());
    if (dims.back() <= 0 || dims.back() > (std::int64_t(1) << 24)) xg::fail("{}: dimension {} is {}", path, i, dims.back());
    count = xg::kernel::checked_mul(count, dims.back(), "IDX file");
  }
  std::vector<unsigned char> bytes(static_cast<std::size_t>(count));
  if (!in.read(reinterpret_cast<char*>(bytes.data()), count)) xg::fail("{}: truncated: {} bytes of data expected", path, count);
  if (in.peek() != EOF) xg::fail("{}: {} bytes of data expected, the file has more", path, count);
  return {dims, bytes};
}

/// Images [N, 1, 28, 28] scaled to [0, 1] and normalised with the training set's mean and deviation, and
/// labels [N].
std::pair<xg::Tensor, xg::Tensor> load_split(const std::string& dir, const std::string& prefix) {
  auto [idims, pixels] = read_idx(dir + "/" + prefix + "-images-idx3-ubyte", 3);
  auto [ldims, labels] = read_idx(dir + "/" + prefix + "-labels-idx1-ubyte", 1);
  if (idims[0] != ldims[0] || idims[1] != 28 || idims[2] != 28)
    xg::fail("{}: {} images of {}x{} but {} labels; expected 28x28 images, one label each", dir, idims[0], idims[1], idims[2], ldims[0]);
  std::vector<float> x(pixels.size());
  constexpr float kMean = 0.2860f, kStd = 0.3530f;  // Fashion-MNIST's training pixels
  for (std::size_t i = 0; i < pixels.size(); ++i) x[i] = (static_cast<float>(pixels[i]) / 255.f - kMean) / kStd;
  std::vector<std::int64_t> y(labels.begin(), labels.end());
  for (auto v : y)
    if (v > 9) xg::fail("{}: label {} is not one of the 10 classes", dir, v);
  return {xg::tensor(x, {idims[0], 1, 28, 28}), xg::index_tensor(y)};
}

/// conv(1 -> 32) -> pool -> conv(32 -> 64) -> pool -> 128 -> 10, with batch norm and dropout.
struct CNN : nn::Module {
  std::shared_ptr<nn::Sequential> body;
  CNN() : nn::Module("CNN") {
    body = register_module("body", std::make_shared<nn::Sequential>());
    body->push_back(std::make_shared<nn::Conv2d>(nn::Conv2dOptions(1, 32, 3).padding({1, 1})))
        .push_back(std::make_shared<nn::BatchNorm2d>(32))
        .push_back(std::make_shared<nn::ReLU>())
        .push_back(std::make_shared<nn::MaxPool2d>(2))
        .push_back(std::make_shared<nn::Conv2d>(nn::Conv2dOptions(32, 64, 3).padding({1, 1})))
        .push_back(std::make_shared<nn::BatchNorm2d>(64))
        .push_back(std::make_shared<nn::ReLU>())
        .push_back(std::make_shared<nn::MaxPool2d>(2))
        .push_back(std::make_shared<nn::Flatten>())
        .push_back(std::make_shared<nn::Linear>(64 * 7 * 7, 128))
        .push_back(std::make_shared<nn::ReLU>())
        .push_back(std::make_shared<nn::Dropout>(0.3))
        .push_back(std::make_shared<nn::Linear>(128, 10));
  }
  xg::Tensor forward(const xg::Tensor& x) override { return body->forward(x); }
};

double accuracy(CNN& model, const xg::Tensor& x, const xg::Tensor& y) {
  xg::autograd::NoGradGuard ng;
  model.eval();
  std::int64_t correct = 0;
  const std::int64_t n = x.size(0);
  for (std::int64_t b = 0; b < n; b += 500) {
    const std::int64_t len = std::min<std::int64_t>(500, n - b);
    xg::Tensor pred = xg::argmax(model.forward(x.narrow(0, b, len)), 1);
    correct += static_cast<std::int64_t>(xg::sum(xg::eq(pred, y.narrow(0, b, len))).item());
  }
  model.train();
  return static_cast<double>(correct) / static_cast<double>(n);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Trains a small CNN on Fashion-MNIST and reports the test accuracy"};
  std::string dir = "data/fashion-mnist";
  std::int64_t epochs = 4, batch = 64, limit = 0, seed = 1;
  double lr = 2e-3;
  int threads = 2;
  app.add_option("--data", dir, "Folder with the four unpacked IDX files")->capture_default_str();
  app.add_option("--epochs", epochs, "Passes over the training set")->capture_default_str()->check(CLI::Range(1, 1000));
  app.add_option("--batch-size", batch, "Images per step")->capture_default_str()->check(CLI::Range(1, 60000));
  app.add_option("--lr", lr, "AdamW's peak learning rate (one-cycle schedule)")->capture_default_str()->check(CLI::Range(1e-6, 1.0));
  app.add_option("--threads", threads, "Threads")->capture_default_str()->check(CLI::Range(1, 256));
  app.add_option("--limit", limit, "Train on the first N images only (0: all)")->capture_default_str()->check(CLI::Range(0, 60000));
  app.add_option("--seed", seed, "Seed of the weights, the dropout and the shuffles")->capture_default_str()->check(CLI::Range(0, 1 << 30));
  CLI11_PARSE(app, argc, argv);
  try {
    xg::set_num_threads(threads);
    xg::manual_seed(static_cast<std::uint64_t>(seed));
    auto [x_train, y_train] = load_split(dir, "train");
    auto [x_test, y_test] = load_split(dir, "t10k");
    if (limit > 0) {
      x_train = x_train.narrow(0, 0, limit);
      y_train = y_train.narrow(0, 0, limit);
    }
    auto dataset = std::make_shared<xg::data::TensorDataset>(std::vector<xg::Tensor>{x_train, y_train});
    xg::data::DataLoader loader(dataset, {.batch_size = batch, .shuffle = true, .seed = static_cast<std::uint64_t>(seed), .prefetch = 2});
    CNN model;
    std::printf("%lld train / %lld test images; %lld parameters; %s\n", static_cast<long long>(x_train.size(0)),
                static_cast<long long>(x_test.size(0)), static_cast<long long>([&] {
                  std::int64_t n = 0;
                  for (auto& p : model.parameters()) n += p.numel();
                  return n;
                }()), xg::kernel::gemm_backend_name().c_str());
    xg::optim::AdamW opt(model.parameters(), {.lr = lr, .weight_decay = 1e-4});
    xg::optim::OneCycleLR schedule(opt, lr, epochs * loader.size());
    for (std::int64_t epoch = 1; epoch <= epochs; ++epoch) {
      const auto start = std::chrono::steady_clock::now();
      double loss_sum = 0;
      std::int64_t steps = 0, images = 0;
      for (const auto& b : loader) {
        xg::Tensor loss = F::cross_entropy(model.forward(b[0]), b[1]);
        opt.zero_grad();
        loss.backward();
        opt.step();
        schedule.step();
        loss_sum += loss.item();
        ++steps;
        images += b[0].size(0);
      }
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("epoch %lld: train loss %.4f, test accuracy %.2f%%, %.0f images/s\n", static_cast<long long>(epoch),
                  loss_sum / static_cast<double>(steps), 100 * accuracy(model, x_test, y_test),
                  static_cast<double>(images) / seconds);
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cnn: error: %s\n", xg::escape_control_chars(e.what()).c_str());
    return 1;
  }
  return 0;
}

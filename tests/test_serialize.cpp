// safetensors: the exact byte layout, validation of bad files, atomic writes, module state round trips.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include "helpers.hpp"

namespace fs = std::filesystem;
using xg::Tensor;

namespace {
std::string temp_path(const std::string& name) { return (fs::temp_directory_path() / name).string(); }

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}
/// A safetensors file from a header JSON and raw data, as another tool would write it.
std::string make_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);  // little-endian by hand
  return out + header + data;
}
std::string floats(std::initializer_list<float> v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.begin(), s.size());
  return s;
}

}  // namespace

TEST_CASE("safetensors files have the spec's exact layout", "[serialize]") {
  std::string path = temp_path("xgrad_layout.safetensors");
  Tensor a = xg::tensor({1.0, 2.0, 3.0, 4.0}, {2, 2});
  Tensor b = xg::index_tensor({7, -1});
  xg::save_safetensors(path, {{"a", a}, {"b", b}}, {{"format", "pt"}});
  std::string bytes = read_bytes(path);
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  REQUIRE(bytes.size() == 8 + n + 16 + 16);
  auto header = nlohmann::json::parse(bytes.substr(8, n));
  CHECK(header["a"]["dtype"] == "F32");
  CHECK(header["a"]["shape"] == nlohmann::json::array({2, 2}));
  CHECK(header["a"]["data_offsets"] == nlohmann::json::array({0, 16}));
  CHECK(header["b"]["dtype"] == "I64");
  CHECK(header["b"]["data_offsets"] == nlohmann::json::array({16, 32}));
  CHECK(header["__metadata__"]["format"] == "pt");
  float first;
  std::memcpy(&first, bytes.data() + 8 + n, 4);
  CHECK(first == 1.0f);
  auto back = xg::load_safetensors(path);
  REQUIRE(back.tensors.size() == 2);
  CHECK(back.tensors[0].first == "a");
  CHECK(test::values(back.tensors[0].second) == test::values(a));
  CHECK(back.tensors[1].second.to_vector<std::int64_t>() == std::vector<std::int64_t>{7, -1});
  CHECK(back.metadata.at("format") == "pt");
  std::remove(path.c_str());
}

TEST_CASE("files written by other tools load, in data order", "[serialize]") {
  std::string path = temp_path("xgrad_foreign.safetensors");
  write_bytes(path, make_file(R"({"y":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},)"
                              R"("x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  )",
                              floats({1.5f, 2.5f, 9.0f})));
  auto f = xg::load_safetensors(path);
  REQUIRE(f.tensors.size() == 2);
  CHECK(f.tensors[0].first == "x");
  CHECK(test::values(f.tensors[0].second) == std::vector<double>{1.5, 2.5});
  CHECK(test::values(f.tensors[1].second) == std::vector<double>{9.0});
  std::remove(path.c_str());
}

// One line per kind of bad file, so it grows with the rules the reader enforces.
TEST_CASE("bad safetensors files are rejected with the reason", "[serialize]") {
  std::string path = temp_path("xgrad_bad.safetensors");
  auto expect_bad = [&](const std::string& bytes, const std::vector<std::string>& frags) {
    write_bytes(path, bytes);
    test::require_error([&] { xg::load_safetensors(path); }, frags);
  };
  const std::string x = R"("x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  expect_bad("abc", {"too short"});
  expect_bad(std::string("\xff\xff\xff\xff\x00\x00\x00\x00", 8) + "{}", {"header size"});
  expect_bad(make_file("{" + x + "}", floats({1.0f})), {"outside", "truncated"});                  // truncated data
  expect_bad(make_file("{\"x\": [1, 2", ""), {"not valid JSON"});
  expect_bad(make_file(R"({"x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", floats({1.0f})), {"F16"});
  expect_bad(make_file(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", floats({1.0f, 2.0f})), {"needs 12 bytes"});
  expect_bad(make_file("{" + x + R"(,"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", floats({1.0f, 2.0f})),
             {"overlapping"});
  expect_bad(make_file(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", floats({1.0f, 2.0f})), {"gap"});
  expect_bad(make_file("{" + x + "}", floats({1.0f, 2.0f, 3.0f})), {"cover 8 bytes", "12"});
  expect_bad(make_file(R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", floats({1.0f, 2.0f})), {"shape"});
  expect_bad(make_file(R"({"x":{"dtype":"F32","data_offsets":[0,8]}})", floats({1.0f, 2.0f})), {"exactly dtype, shape"});
  // Deep nesting is refused before any parser or message recurses into it.
  expect_bad(make_file(R"({"x":{"dtype":"F32","shape":)" + std::string(100000, '[') + std::string(100000, ']') + "}}", ""),
             {"nests deeper"});
  expect_bad(make_file("{" + x + "," + x + "}", floats({1.0f, 2.0f})), {"key \"x\" twice"});
  expect_bad(make_file(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}})", floats({1.0f, 2.0f})),
             {"exactly dtype"});
  test::require_error([] { xg::load_safetensors("/nonexistent/x.safetensors"); }, {"cannot open", "/nonexistent"});
  test::require_error([] { xg::load_safetensors(fs::temp_directory_path().string()); }, {"not a regular file"});
  std::string fifo = temp_path("xgrad_fifo.safetensors");
  std::remove(fifo.c_str());
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  test::require_error([&] { xg::load_safetensors(fifo); }, {"not a regular file"});  // and no hang
  std::remove(fifo.c_str());
  std::remove(path.c_str());
}

TEST_CASE("an empty tensor may share its offset with the next one, as the spec's reader allows", "[serialize]") {
  std::string path = temp_path("xgrad_empty_first.safetensors");
  write_bytes(path, make_file(R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})", floats({1.0f, 2.0f})));
  auto f = xg::load_safetensors(path);
  REQUIRE(f.tensors.size() == 2);
  CHECK(f.tensors[0].first == "a");
  CHECK(f.tensors[0].second.numel() == 0);
  CHECK(test::values(f.tensors[1].second) == std::vector<double>{1.0, 2.0});
  std::remove(path.c_str());
}

TEST_CASE("a failed save leaves the previous file intact and no temporary behind", "[serialize]") {
  fs::path dir = fs::temp_directory_path() / "xgrad_atomic";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string path = (dir / "model.safetensors").string();
  xg::save_safetensors(path, {{"w", xg::ones({3})}});
  std::string before = read_bytes(path);
  test::require_error([&] { xg::save_safetensors(path, {{"w", xg::ones({3})}, {"bad", Tensor()}}); }, {"undefined"});
  // The target is a directory, so the final rename fails after the data was written.
  fs::create_directories(dir / "taken.safetensors" / "child");
  test::require_error([&] { xg::save_safetensors((dir / "taken.safetensors").string(), {{"w", xg::ones({3})}}); },
                      {"cannot write", "untouched"});
  CHECK(read_bytes(path) == before);
  int files = 0;
  for (auto& e : fs::directory_iterator(dir)) files += e.is_regular_file() ? 1 : 0;
  CHECK(files == 1);  // no .tmp files left
  fs::remove_all(dir);
}

TEST_CASE("a save keeps the file's mode and clears temporaries of killed writers", "[serialize]") {
  fs::path dir = fs::temp_directory_path() / "xgrad_mode";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string path = (dir / "m.safetensors").string();
  xg::save_safetensors(path, {{"w", xg::ones({3})}});
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
  // A temporary from a process that no longer exists (pid 2^22 + 1 is above Linux's pid_max default),
  // and one from this live process, which must stay.
  std::string dead = path + ".tmp.4194305.abc", live = path + ".tmp." + std::to_string(::getpid()) + ".def";
  write_bytes(dead, "partial");
  write_bytes(live, "partial");
  xg::save_safetensors(path, {{"w", xg::zeros({3})}});
  CHECK((fs::status(path).permissions() & fs::perms::all) == (fs::perms::owner_read | fs::perms::owner_write));
  CHECK(!fs::exists(dead));
  CHECK(fs::exists(live));
  CHECK(test::values(xg::load_safetensors(path).tensors[0].second) == std::vector<double>{0, 0, 0});
  fs::remove_all(dir);
}

TEST_CASE("module state round trips through a file, tied weights stored once", "[serialize]") {
  struct Net : xg::nn::Module {
    std::shared_ptr<xg::nn::Embedding> wte;
    std::shared_ptr<xg::nn::LayerNorm> ln;
    Tensor head;  // tied to wte.weight
    Net() : Module("Net") {
      wte = register_module("wte", std::make_shared<xg::nn::Embedding>(5, 3));
      ln = register_module("ln", std::make_shared<xg::nn::LayerNorm>(3));
      head = register_parameter("head_weight", wte->weight);
    }
  };
  xg::manual_seed(1);
  Net a;
  CHECK(a.parameters().size() == 3);  // the tied tensor counts once
  CHECK(a.state_dict().size() == 4);  // but appears under both names
  std::string path = temp_path("xgrad_net.safetensors");
  a.save(path, {{"note", "test"}});
  auto file = xg::load_safetensors(path);
  CHECK(file.tensors.size() == 3);
  CHECK(file.metadata.at("tied:wte.weight") == "head_weight");  // own parameters come before submodules'
  xg::manual_seed(2);
  Net b;
  b.load(path);
  CHECK(test::values(b.wte->weight) == test::values(a.wte->weight));
  CHECK(b.head.is_same(b.wte->weight));  // still tied after loading
  std::remove(path.c_str());
}

TEST_CASE("load_state_dict names missing, unexpected and mis-shaped keys", "[serialize]") {
  xg::nn::Linear lin(3, 2);
  xg::StateDict sd = lin.state_dict();
  xg::StateDict missing = {sd[0]};
  test::require_error([&] { lin.load_state_dict(missing); }, {"missing keys: bias", "strict"});
  lin.load_state_dict(missing, false);
  xg::StateDict extra = sd;
  extra.emplace_back("scale", xg::ones({1}));
  test::require_error([&] { lin.load_state_dict(extra); }, {"unexpected keys: scale"});
  xg::StateDict wrong = {{"weight", xg::ones({2, 4})}, sd[1]};
  test::require_error([&] { lin.load_state_dict(wrong, false); }, {"size mismatch for weight", "[2, 4]", "[2, 3]"});
}

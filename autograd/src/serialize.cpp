// safetensors reading and writing, with strict validation and atomic writes.
#include "xgrad/serialize.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>

#include "internal.hpp"

namespace xg {
using namespace kernel;

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; xgrad writes it raw");

namespace {

std::string st_dtype(DType dt) {
  switch (dt) {
    case DType::float32: return "F32";
    case DType::float64: return "F64";
    case DType::int64: return "I64";
  }
  return "?";
}

DType parse_dtype(const std::string& s, const std::string& path, const std::string& name) {
  if (s == "F32") return DType::float32;
  if (s == "F64") return DType::float64;
  if (s == "I64") return DType::int64;
  fail("load_safetensors: {}: tensor \"{}\" has dtype {}, which xgrad does not support (F32, F64, I64)", path, name, s);
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& bytes) {
  std::string dir = ".";
  if (auto slash = path.find_last_of('/'); slash != std::string::npos) dir = slash == 0 ? "/" : path.substr(0, slash);
  std::string tmp = fmt::format("{}.tmp.{}.{:x}", path, ::getpid(), std::random_device{}());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  XG_CHECK(fd >= 0, "cannot write {}: {} (creating {})", path, std::strerror(errno), tmp);
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail("cannot write {}: {}; the previous file is untouched", path, std::strerror(err));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    fail("cannot write {}: {}; the previous file is untouched", path, std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    fail("cannot write {}: rename failed: {}; the previous file is untouched", path, std::strerror(err));
  }
  // Make the rename itself durable.
  if (int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void save_safetensors(const std::string& path, const StateDict& tensors, const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::size_t offset = 0;
  std::vector<std::pair<const Tensor*, std::size_t>> parts;
  for (const auto& [name, t] : tensors) {
    XG_CHECK(!name.empty() && name != "__metadata__", "save_safetensors: invalid tensor name \"{}\"", name);
    XG_CHECK(!header.contains(name), "save_safetensors: tensor name \"{}\" appears twice", name);
    XG_CHECK(t.defined(), "save_safetensors: tensor \"{}\" is undefined", name);
    std::size_t nbytes = static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype());
    header[name] = {{"dtype", st_dtype(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + nbytes}}};
    parts.emplace_back(&t, nbytes);
    offset += nbytes;
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // pad so the data starts 8-byte aligned, as the spec allows
  std::string bytes(8, '\0');
  std::uint64_t n = json.size();
  std::memcpy(bytes.data(), &n, 8);
  bytes += json;
  bytes.reserve(bytes.size() + offset);
  for (auto& [t, nbytes] : parts) {
    Tensor c = contiguous_data(t->detach());
    bytes.append(static_cast<const char*>(c.impl()->storage->data) + c.offset() * dtype_size(c.dtype()), nbytes);
  }
  write_file_atomic(path, bytes);
}

SafetensorsFile load_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  XG_CHECK(in, "load_safetensors: cannot open {}: {}", path, std::strerror(errno));
  const auto file_size = static_cast<std::uint64_t>(in.tellg());
  in.seekg(0);
  XG_CHECK(file_size >= 8, "load_safetensors: {} is {} bytes, too short for a safetensors header (truncated?)", path,
           file_size);
  std::uint64_t header_size = 0;
  in.read(reinterpret_cast<char*>(&header_size), 8);
  XG_CHECK(header_size <= file_size - 8 && header_size <= (std::uint64_t(100) << 20),
           "load_safetensors: {}: header size {} does not fit the file size {} (truncated or not a safetensors file)",
           path, header_size, file_size);
  std::string json(header_size, '\0');
  in.read(json.data(), static_cast<std::streamsize>(header_size));
  XG_CHECK(in, "load_safetensors: {}: cannot read the header", path);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(json);
  } catch (const nlohmann::json::exception& e) {
    fail("load_safetensors: {}: the header is not valid JSON ({})", path, e.what());
  }
  XG_CHECK(header.is_object(), "load_safetensors: {}: the header is not a JSON object", path);
  const std::uint64_t data_size = file_size - 8 - header_size;

  SafetensorsFile out;
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    std::uint64_t begin, end;
  };
  std::vector<Entry> entries;
  try {
    for (auto& [name, v] : header.items()) {
      if (name == "__metadata__") {
        XG_CHECK(v.is_object(), "load_safetensors: {}: __metadata__ must be an object of strings", path);
        for (auto& [k, val] : v.items()) {
          XG_CHECK(val.is_string(), "load_safetensors: {}: __metadata__ value for \"{}\" is not a string", path, k);
          out.metadata[k] = val.get<std::string>();
        }
        continue;
      }
      XG_CHECK(v.is_object() && v.contains("dtype") && v.contains("shape") && v.contains("data_offsets"),
               "load_safetensors: {}: entry \"{}\" needs dtype, shape and data_offsets", path, name);
      Entry e{name, parse_dtype(v.at("dtype").get<std::string>(), path, name), {}, 0, 0};
      std::uint64_t numel = 1;
      for (auto& d : v.at("shape")) {
        XG_CHECK(d.is_number_unsigned(), "load_safetensors: {}: tensor \"{}\" has an invalid shape {}", path, name,
                 v.at("shape").dump());
        auto dim = d.get<std::uint64_t>();
        XG_CHECK(dim <= (std::uint64_t(1) << 40) && (dim == 0 || numel <= (std::uint64_t(1) << 40) / dim),
                 "load_safetensors: {}: tensor \"{}\" has an absurd shape {}", path, name, v.at("shape").dump());
        numel *= dim;
        e.shape.push_back(static_cast<std::int64_t>(dim));
      }
      auto& offs = v.at("data_offsets");
      XG_CHECK(offs.is_array() && offs.size() == 2 && offs[0].is_number_unsigned() && offs[1].is_number_unsigned(),
               "load_safetensors: {}: tensor \"{}\" has invalid data_offsets {}", path, name, offs.dump());
      e.begin = offs[0].get<std::uint64_t>();
      e.end = offs[1].get<std::uint64_t>();
      XG_CHECK(e.begin <= e.end && e.end <= data_size,
               "load_safetensors: {}: tensor \"{}\" has data_offsets [{}, {}] outside the {} data bytes (truncated?)",
               path, name, e.begin, e.end, data_size);
      XG_CHECK(e.end - e.begin == numel * dtype_size(e.dtype),
               "load_safetensors: {}: tensor \"{}\" of shape {} and dtype {} needs {} bytes, but its data_offsets span {}",
               path, name, shape_str(e.shape), dtype_name(e.dtype), numel * dtype_size(e.dtype), e.end - e.begin);
      entries.push_back(std::move(e));
    }
  } catch (const nlohmann::json::exception& e) {
    fail("load_safetensors: {}: malformed header ({})", path, e.what());
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  std::uint64_t expect = 0;
  for (const auto& e : entries) {
    XG_CHECK(e.begin == expect, "load_safetensors: {}: tensor \"{}\" starts at byte {} but the previous data ends at "
             "{} (overlapping tensors or a gap)", path, e.name, e.begin, expect);
    expect = e.end;
  }
  XG_CHECK(expect == data_size, "load_safetensors: {}: the tensors cover {} bytes but the file holds {} data bytes",
           path, expect, data_size);
  for (const auto& e : entries) {
    Tensor t = empty(e.shape, {e.dtype});
    in.seekg(static_cast<std::streamoff>(8 + header_size + e.begin));
    in.read(static_cast<char*>(t.impl()->storage->data), static_cast<std::streamsize>(e.end - e.begin));
    XG_CHECK(in, "load_safetensors: {}: cannot read the data of tensor \"{}\"", path, e.name);
    out.tensors.emplace_back(e.name, t);
  }
  return out;
}

}  // namespace xg

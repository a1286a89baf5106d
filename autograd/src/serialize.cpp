// safetensors reading and writing, with strict validation and atomic writes.
#include "xgrad/serialize.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <tuple>

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

namespace {
/// Removes temporary files of write_file_atomic ("<file>.tmp.<pid>.<hex>", of `path` alone when given) that
/// writers killed mid-write left (their pid is gone), so repeated crashes do not fill the disk.
int remove_stale_temporaries(const std::string& dir, const std::string& path) {
  const std::string base = path.empty() ? std::string() : path.substr(path.find_last_of('/') + 1) + ".tmp.";
  std::error_code ec;
  int removed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    std::size_t at = 0;
    if (!base.empty()) {
      if (name.rfind(base, 0) != 0) continue;
      at = base.size();
    } else {
      const auto tmp = name.rfind(".tmp.");
      if (tmp == std::string::npos || tmp == 0) continue;
      at = tmp + 5;
    }
    char* end = nullptr;
    const long pid = std::strtol(name.c_str() + at, &end, 10);
    if (end == name.c_str() + at || *end != '.' || !entry.is_regular_file(ec)) continue;
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH && std::filesystem::remove(entry.path(), ec))
      ++removed;
  }
  return removed;
}
}  // namespace

int remove_dead_writers_temporaries(const std::string& dir) { return remove_stale_temporaries(dir, ""); }

void write_file_atomic(const std::string& path, const std::string& bytes) {
  std::string dir = ".";
  if (auto slash = path.find_last_of('/'); slash != std::string::npos) dir = slash == 0 ? "/" : path.substr(0, slash);
  remove_stale_temporaries(dir, path);
  std::string tmp = fmt::format("{}.tmp.{}.{:x}", path, ::getpid(), std::random_device{}());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  XG_CHECK(fd >= 0, "cannot write {}: {} (creating {})", path, std::strerror(errno), tmp);
  auto give_up = [&](const char* what) {
    int err = errno;
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    std::error_code ec;
    fail("cannot write {}: {}{}{}", path, what, std::strerror(err),
         std::filesystem::exists(path, ec) ? "; the previous file is untouched" : "");
  };
  // A file that is replaced keeps its permissions.
  if (struct stat old {}; ::stat(path.c_str(), &old) == 0 && S_ISREG(old.st_mode) &&
                          ::fchmod(fd, old.st_mode & 07777) != 0)
    give_up("chmod failed: ");
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) give_up("");
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) give_up("");
  int rc = ::close(fd);
  fd = -1;
  if (rc != 0) give_up("");
  if (::rename(tmp.c_str(), path.c_str()) != 0) give_up("rename failed: ");
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

namespace {

/// A file descriptor closed on every path out.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

/// Reads exactly n bytes at offset, or fails naming the file.
void read_at(int fd, char* dst, std::uint64_t n, std::uint64_t offset, const std::string& path) {
  while (n > 0) {
    ssize_t got = ::pread(fd, dst, std::min<std::uint64_t>(n, std::uint64_t(1) << 30), static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    XG_CHECK(got > 0, "{}: cannot read {} bytes at offset {}: {}", path, n, offset,
             got == 0 ? "unexpected end of file" : std::strerror(errno));
    dst += got;
    n -= static_cast<std::uint64_t>(got);
    offset += static_cast<std::uint64_t>(got);
  }
}

/// Refuses JSON nested deeper than a safetensors header can be (object / entry / array), before any parser
/// or error message recurses into it.
void check_depth(const std::string& json, const std::string& path) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < json.size(); ++i) {
    char c = json[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      XG_CHECK(++depth <= 3, "load_safetensors: {}: the header nests deeper than a safetensors header can (byte {})",
               path, i + 8);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
}

/// Parses the header, refusing duplicate keys in any object (a JSON parser would keep one silently).
nlohmann::json parse_header(const std::string& json, const std::string& path) {
  check_depth(json, path);
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  auto callback = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) keys.emplace_back();
    if (event == E::object_end) keys.pop_back();
    if (event == E::key && !keys.empty() && !keys.back().insert(parsed.get<std::string>()).second && duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(json, callback);
  } catch (const nlohmann::json::exception& e) {
    fail("load_safetensors: {}: the header is not valid JSON ({})", path, e.what());
  }
  XG_CHECK(duplicate.empty(), "load_safetensors: {}: the header has the key \"{}\" twice", path, duplicate);
  XG_CHECK(header.is_object(), "load_safetensors: {}: the header is not a JSON object", path);
  return header;
}

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  std::uint64_t begin, end;
};

/// One tensor's header entry, checked against the data section's size.
Entry parse_entry(const std::string& name, const nlohmann::json& v, std::uint64_t data_size, const std::string& path) {
  XG_CHECK(v.is_object() && v.size() == 3 && v.contains("dtype") && v.contains("shape") && v.contains("data_offsets"),
           "load_safetensors: {}: entry \"{}\" must hold exactly dtype, shape and data_offsets", path, name);
  const auto& dt = v.at("dtype");
  XG_CHECK(dt.is_string(), "load_safetensors: {}: tensor \"{}\" has a dtype that is not a string", path, name);
  Entry e{name, parse_dtype(dt.get<std::string>(), path, name), {}, 0, 0};
  const auto& shape = v.at("shape");
  XG_CHECK(shape.is_array(), "load_safetensors: {}: tensor \"{}\" has a shape that is not an array", path, name);
  std::uint64_t numel = 1;
  for (const auto& d : shape) {
    XG_CHECK(d.is_number_unsigned(), "load_safetensors: {}: tensor \"{}\" has a shape entry that is not a size", path, name);
    auto dim = d.get<std::uint64_t>();
    XG_CHECK(dim <= (std::uint64_t(1) << 40) && (dim == 0 || numel <= (std::uint64_t(1) << 40) / dim),
             "load_safetensors: {}: tensor \"{}\" has a shape with more than 2^40 elements", path, name);
    numel *= dim;
    e.shape.push_back(static_cast<std::int64_t>(dim));
  }
  const auto& offs = v.at("data_offsets");
  XG_CHECK(offs.is_array() && offs.size() == 2 && offs[0].is_number_unsigned() && offs[1].is_number_unsigned(),
           "load_safetensors: {}: tensor \"{}\" needs data_offsets [begin, end] of two sizes", path, name);
  e.begin = offs[0].get<std::uint64_t>();
  e.end = offs[1].get<std::uint64_t>();
  XG_CHECK(e.begin <= e.end && e.end <= data_size,
           "load_safetensors: {}: tensor \"{}\" has data_offsets [{}, {}] outside the {} data bytes (truncated?)", path,
           name, e.begin, e.end, data_size);
  XG_CHECK(e.end - e.begin == numel * dtype_size(e.dtype),
           "load_safetensors: {}: tensor \"{}\" of shape {} and dtype {} needs {} bytes, but its data_offsets span {}",
           path, name, shape_str(e.shape), dtype_name(e.dtype), numel * dtype_size(e.dtype), e.end - e.begin);
  return e;
}

/// The tensors must tile the data section exactly: sorted by (begin, end), as the reference reader does, so
/// an empty tensor may share its offset with the next one.
void check_layout(std::vector<Entry>& entries, std::uint64_t data_size, const std::string& path) {
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return std::tie(a.begin, a.end) < std::tie(b.begin, b.end); });
  std::uint64_t expect = 0;
  for (const auto& e : entries) {
    XG_CHECK(e.begin == expect, "load_safetensors: {}: tensor \"{}\" starts at byte {} but the previous data ends at "
             "{} (overlapping tensors or a gap)", path, e.name, e.begin, expect);
    expect = e.end;
  }
  XG_CHECK(expect == data_size, "load_safetensors: {}: the tensors cover {} bytes but the file holds {} data bytes",
           path, expect, data_size);
}

}  // namespace

std::string read_file(const std::string& path, std::uint64_t max_bytes) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK)};
  XG_CHECK(f.fd >= 0, "cannot open {}: {}", path, std::strerror(errno));
  struct stat st {};
  XG_CHECK(::fstat(f.fd, &st) == 0 && S_ISREG(st.st_mode), "{} is not a regular file", path);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  XG_CHECK(size <= max_bytes, "{} is {} bytes, more than the {} allowed", path, size, max_bytes);
  std::string bytes(size, '\0');
  read_at(f.fd, bytes.data(), size, 0, path);
  return bytes;
}

SafetensorsFile load_safetensors(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; only regular files are read.
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK)};
  XG_CHECK(f.fd >= 0, "load_safetensors: cannot open {}: {}", path, std::strerror(errno));
  struct stat st {};
  XG_CHECK(::fstat(f.fd, &st) == 0 && S_ISREG(st.st_mode), "load_safetensors: {} is not a regular file", path);
  const auto file_size = static_cast<std::uint64_t>(st.st_size);
  XG_CHECK(file_size >= 8, "load_safetensors: {} is {} bytes, too short for a safetensors header (truncated?)", path,
           file_size);
  std::uint64_t header_size = 0;
  read_at(f.fd, reinterpret_cast<char*>(&header_size), 8, 0, path);
  XG_CHECK(header_size <= file_size - 8 && header_size <= (std::uint64_t(100) << 20),
           "load_safetensors: {}: header size {} does not fit the file size {} (truncated or not a safetensors file)",
           path, header_size, file_size);
  std::string json(header_size, '\0');
  read_at(f.fd, json.data(), header_size, 8, path);
  // As the reference implementation reads it: the JSON object starts at byte 8, and only spaces may pad its end.
  const std::size_t end = json.find_last_not_of(' ');
  XG_CHECK(end != std::string::npos, "load_safetensors: {}: the header is empty", path);
  const nlohmann::json header = parse_header(json.substr(0, end + 1), path);
  XG_CHECK(json.front() == '{', "load_safetensors: {}: the header must start with '{{' at byte 8", path);
  XG_CHECK(json[end] == '}', "load_safetensors: {}: the header may be padded at its end with spaces only (byte {} is {:#04x})",
           path, 8 + end, static_cast<unsigned char>(json[end]));
  const std::uint64_t data_size = file_size - 8 - header_size;

  SafetensorsFile out;
  std::vector<Entry> entries;
  for (const auto& [name, v] : header.items()) {
    if (name != "__metadata__") {
      entries.push_back(parse_entry(name, v, data_size, path));
      continue;
    }
    XG_CHECK(v.is_object(), "load_safetensors: {}: __metadata__ must be an object of strings", path);
    for (const auto& [k, val] : v.items()) {
      XG_CHECK(val.is_string(), "load_safetensors: {}: __metadata__ value for \"{}\" is not a string", path, k);
      out.metadata[k] = val.get<std::string>();
    }
  }
  check_layout(entries, data_size, path);
  for (const auto& e : entries) {
    Tensor t = empty(e.shape, {e.dtype});
    read_at(f.fd, static_cast<char*>(t.impl()->storage->data), e.end - e.begin, 8 + header_size + e.begin, path);
    out.tensors.emplace_back(e.name, t);
  }
  return out;
}

}  // namespace xg

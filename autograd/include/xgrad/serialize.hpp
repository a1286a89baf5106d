// xgrad: safetensors files, the checkpoint format Hugging Face and nanoGPT users already have.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "xgrad/tensor.hpp"

namespace xg {

/// Named tensors in order: what a module's state_dict() returns and a safetensors file holds.
using StateDict = std::vector<std::pair<std::string, Tensor>>;

/// The contents of a safetensors file.
struct SafetensorsFile {
  StateDict tensors;                            // in the order of their data in the file
  std::map<std::string, std::string> metadata;  // the optional "__metadata__" entry
};

/// Writes tensors (float32, float64, int64) in the safetensors format: an 8-byte little-endian header
/// size, a JSON header naming each tensor's dtype, shape and data offsets, then the raw little-endian
/// data. Tensors that share one storage (tied weights) must be deduplicated by the caller. The write is
/// atomic: the data goes to a temporary file in the same folder, is flushed to disk, then renamed over
/// `path`, so a crash never leaves a half-written file or destroys the previous one.
void save_safetensors(const std::string& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata = {});

/// Reads a safetensors file, validating everything: the header size against the file size, the JSON,
/// dtypes, shapes, and the data offsets (in bounds, matching each tensor's size, no overlaps, no gaps).
/// A bad file raises an Error naming the file and the problem.
SafetensorsFile load_safetensors(const std::string& path);

/// The bytes of a regular file (a FIFO, device or folder is refused rather than waited on); `max_bytes`
/// bounds what is read. Errors name the file and the reason.
std::string read_file(const std::string& path, std::uint64_t max_bytes = std::uint64_t(1) << 34);
/// Writes bytes to `path` atomically (temporary file, flush, fsync, rename).
void write_file_atomic(const std::string& path, const std::string& bytes);
/// Removes the temporary files write_file_atomic left in `dir` when their writer was killed mid-write (its
/// process is gone); returns how many.
int remove_dead_writers_temporaries(const std::string& dir);

}  // namespace xg

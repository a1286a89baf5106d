// What a benchmark ran on: the CPU model and the GEMM backend, printed with every result.
#pragma once

#include <fstream>
#include <string>

extern "C" char* openblas_get_config();

namespace bench {

inline std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

inline std::string gemm_backend() { return std::string("OpenBLAS ") + openblas_get_config(); }

}  // namespace bench

// libFuzzer harness: any bytes as a safetensors file. The reader must return tensors that match the
// header or raise xg::Error; anything else (a crash, a sanitizer report, a hang) is a finding.
#include <unistd.h>

#include <cstdio>
#include <string>

#include <xgrad/xgrad.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = "/tmp/xgrad_fuzz_safetensors." + std::to_string(::getpid());
  if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  try {
    xg::SafetensorsFile file = xg::load_safetensors(path);
    for (auto& [name, t] : file.tensors) (void)t.numel();
  } catch (const xg::Error&) {
  }
  return 0;
}

// A libFuzzer target for the .npy header parser (tools/cli/npy.h). Built only with Clang and
// -DBIGARRAY_FUZZ=ON (tests/cli/CMakeLists.txt); seeds: tests/cli/data/*.npy.
//   build/bin/npy_fuzz -max_len=4096 tests/cli/data
#include <cstddef>
#include <cstdint>
#include <span>

#include "npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto header = bigarray::npy::ParseNpyHeader(std::as_bytes(std::span(data, size)));
  if (header.ok() && (header->data_offset > size || header->data_bytes < 0 || header->shape.size() > 32)) {
    __builtin_trap();
  }
  return 0;
}

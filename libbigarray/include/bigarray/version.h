// bigarray/version.h: the version of the library linked in, and the on-disk format it writes.
//
// The library's version is the project's (CMakeLists.txt, project(bigarray VERSION ...)); the
// format version is the one docs/format.md describes: this build writes it and opens databases
// of that version or older. Both are fixed at build time; version() may be called from any
// thread.
#pragma once

#include <cstdint>
#include <string>

namespace bigarray {

struct Version {
  int major = 0;
  int minor = 0;
  int patch = 0;
  uint32_t format = 0;  // the on-disk format version

  // "MAJOR.MINOR.PATCH", e.g. "0.1.0".
  std::string str() const;
};

// The version of the bigarray library this program runs with (for a shared library, the one
// loaded at run time, which may differ from the headers it was compiled with).
Version version() noexcept;

}  // namespace bigarray

// bigarray::version(): the numbers come from CMake (project(bigarray VERSION ...)) as compile
// definitions, the format version from the storage layer's constant.
#include "bigarray/version.h"

#include "bigarray/storage/block_store.h"

namespace bigarray {

Version version() noexcept {
  return Version{BIGARRAY_VERSION_MAJOR, BIGARRAY_VERSION_MINOR, BIGARRAY_VERSION_PATCH, storage::kFormatVersion};
}

std::string Version::str() const {
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

}  // namespace bigarray

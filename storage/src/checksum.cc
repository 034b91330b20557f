#include "checksum.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace bigarray::storage::internal {

uint64_t BlockChecksum(ArrayId array, BlockIndex index, CommitId commit,
                       std::span<const std::byte> payload) noexcept {
  const uint64_t key[3] = {array, index, commit};
  const uint64_t seed = XXH3_64bits(key, sizeof key);
  return XXH3_64bits_withSeed(payload.data(), payload.size(), seed);
}

}  // namespace bigarray::storage::internal

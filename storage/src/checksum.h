// checksum.h: the block checksum (docs/format.md): XXH3-64 of the payload, seeded with the
// block's key and commit id so that a block stored under the wrong key or with a stale header
// fails the check as surely as flipped payload bytes do.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "bigarray/storage/block_store.h"

namespace bigarray::storage::internal {

uint64_t BlockChecksum(ArrayId array, BlockIndex index, CommitId commit,
                       std::span<const std::byte> payload) noexcept;

// The same checksum over a payload that arrives in pieces: hashing each piece as soon as it is
// read, while it is still in the CPU cache, costs less than a second pass over the block.
class BlockHasher {
 public:
  BlockHasher(ArrayId array, BlockIndex index, CommitId commit) noexcept;
  explicit BlockHasher(uint64_t seed) noexcept;
  // XXH3-64 of `data` with `seed`, in one call.
  static uint64_t Of(uint64_t seed, std::span<const std::byte> data) noexcept;
  void Update(std::span<const std::byte> piece) noexcept;
  uint64_t Digest() const noexcept;

 private:
  alignas(64) std::byte state_[640];  // an XXH3_state_t (checked in checksum.cc)
};

}  // namespace bigarray::storage::internal

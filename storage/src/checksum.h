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

}  // namespace bigarray::storage::internal

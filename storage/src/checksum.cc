#include "checksum.h"

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t
#include <xxhash.h>
#if defined(__x86_64__)
#include <xxh_x86dispatch.h>  // libxxhash picks SSE2, AVX2 or AVX-512 at run time: 2-3x SSE2's speed
#endif

#include <new>

namespace bigarray::storage::internal {
namespace {

uint64_t Seed(ArrayId array, BlockIndex index, CommitId commit) noexcept {
  const uint64_t key[3] = {array, index, commit};
  return XXH3_64bits(key, sizeof key);
}

}  // namespace

uint64_t BlockChecksum(ArrayId array, BlockIndex index, CommitId commit,
                       std::span<const std::byte> payload) noexcept {
  return XXH3_64bits_withSeed(payload.data(), payload.size(), Seed(array, index, commit));
}

static_assert(sizeof(XXH3_state_t) <= sizeof(BlockHasher) && alignof(XXH3_state_t) <= alignof(BlockHasher));

BlockHasher::BlockHasher(ArrayId array, BlockIndex index, CommitId commit) noexcept
    : BlockHasher(Seed(array, index, commit)) {}

BlockHasher::BlockHasher(uint64_t seed) noexcept {
  auto* st = new (state_) XXH3_state_t;  // trivial: the reset below initializes it
  XXH3_INITSTATE(st);
  XXH3_64bits_reset_withSeed(st, seed);
}

uint64_t BlockHasher::Of(uint64_t seed, std::span<const std::byte> data) noexcept {
  return XXH3_64bits_withSeed(data.data(), data.size(), seed);
}

void BlockHasher::Update(std::span<const std::byte> piece) noexcept {
  XXH3_64bits_update(std::launder(reinterpret_cast<XXH3_state_t*>(state_)), piece.data(), piece.size());
}

uint64_t BlockHasher::Digest() const noexcept {
  return XXH3_64bits_digest(std::launder(reinterpret_cast<const XXH3_state_t*>(state_)));
}

}  // namespace bigarray::storage::internal

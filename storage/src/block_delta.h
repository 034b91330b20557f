// block_delta.h: delta records (docs/format.md, "blocks"): the byte runs in which a block's new
// content differs from its stored content, so that a commit that changes a few bytes of a block
// writes those bytes and not the block.
//
// A delta body is repeated { u32 LE offset, u32 LE length, bytes }, runs in increasing offset
// order, not overlapping.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "bigarray/status.h"

namespace bigarray::storage::internal {

// Builds a delta body from a block compared piece by piece, giving up as soon as the body would
// exceed `budget` bytes (a whole-block record is then the cheaper write).
class DeltaEncoder {
 public:
  explicit DeltaEncoder(size_t budget) : budget_(budget) {}

  // Compares the old and new bytes at `offset` of the block (equal lengths; pieces come in
  // increasing offset order and adjoin). False once over budget.
  bool Add(size_t offset, std::span<const std::byte> old_bytes, std::span<const std::byte> new_bytes);
  // The body (empty when nothing differed). REQUIRES: every Add returned true.
  std::string Finish();

 private:
  void Close();  // ends the open run

  size_t budget_;
  std::string body_;
  size_t run_start_ = 0, run_end_ = 0;  // the open run [start, end); empty when start == end
  std::string run_;                     // its bytes
};

// Applies a delta body to `block`; kCorruption naming `what` when a run is malformed or falls
// outside the block.
Status ApplyDelta(std::string_view what, std::span<const std::byte> delta, std::span<std::byte> block);

// The end of the last run of a delta body (0 for an empty or malformed body).
size_t DeltaExtent(std::span<const std::byte> delta);

}  // namespace bigarray::storage::internal

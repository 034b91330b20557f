// lmdb_records.h: the records of format version 2 of the LMDB store (docs/format.md): how each
// value is sealed with a checksum, the block header, and the tallies that say what must exist.
//
// Nothing here touches LMDB: these are pure encodings, shared by the store, its verifier and
// the converter from version 1.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "bigarray/storage/block_store.h"

namespace bigarray::storage::internal {

inline void PutLE64(unsigned char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i, v >>= 8) p[i] = static_cast<unsigned char>(v);
}
inline uint64_t GetLE64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline void PutBE64(unsigned char* p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<unsigned char>(v);
}
inline uint64_t GetBE64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

// ---- sealed records (the meta and log databases) ------------------------------------------
//
// value = u64 LE checksum + body; the checksum is XXH3-64 of the body seeded with XXH3-64 of
// the key, so that a record under a damaged key fails as surely as a damaged body.

std::string SealRecord(std::string_view key, std::string_view body);
// The body of a sealed record; kCorruption naming `what` when the checksum does not match.
Result<std::string_view> OpenRecord(std::string_view key, std::string_view sealed, std::string_view what);
// The checksum a sealed value carries (0 for a value too short to carry one).
uint64_t SealedChecksum(std::string_view sealed);

// ---- blocks ---------------------------------------------------------------------------------
//
// A block record's value is a header and a payload. A payload of at least kLongPayload bytes
// gets the long header (4080 bytes): LMDB stores such a value on overflow pages whose data
// starts 16 bytes into the first page, so the payload then starts exactly on a page boundary of
// data.mdb and can be mapped from the file. Smaller payloads get the short header.
//
//   offset size  field
//   0      8     checksum: XXH3-64 of the payload, seeded with (array, index, commit, kind,
//                header length)
//   8      8     commit id that wrote the record
//   16     4     header length: 32 or 4080
//   20     4     kind: 0 a whole block (trailing zeros trimmed to a page), 1 a delta
//   24     8     zero
//   32     ...   zero up to the header length (long header)
//
// A delta record (key: array, index, commit) holds changed byte runs of the block, applied in
// commit order over the whole-block record: repeated { u32 LE offset, u32 LE length, bytes }.

inline constexpr size_t kShortHeader = 32;
inline constexpr size_t kLongHeader = 4080;
inline constexpr size_t kLongPayload = 2048;
inline constexpr uint32_t kWholeBlock = 0;
inline constexpr uint32_t kDelta = 1;

struct BlockHeader {
  uint64_t checksum = 0;
  CommitId commit = 0;
  uint32_t header_bytes = kShortHeader;
  uint32_t kind = kWholeBlock;
};

inline size_t HeaderBytesFor(size_t payload) { return payload >= kLongPayload ? kLongHeader : kShortHeader; }

// Writes the first kShortHeader bytes of the header (the rest of a long header is zero).
void EncodeBlockHeader(const BlockHeader& h, unsigned char out[kShortHeader]);
// Parses the first kShortHeader bytes of a value of `value_bytes`; kCorruption naming `what`
// when a field is impossible.
Result<BlockHeader> DecodeBlockHeader(const unsigned char in[kShortHeader], size_t value_bytes, std::string_view what);

uint64_t PayloadSeed(ArrayId array, BlockIndex index, const BlockHeader& h) noexcept;

// ---- tallies --------------------------------------------------------------------------------
//
// What must exist, kept up to date by every commit: the number of records of a set, their
// payload bytes, and the XOR of a 64-bit hash of each record's (key, checksum). One per array
// over its block records (meta key "\0a/" + u64 BE array id), one per class of metadata keys
// (the key up to its first '/'; meta key "\0c/" + class). A missing, extra or moved record
// makes the tally disagree with what a walk finds.

struct Tally {
  uint64_t records = 0;
  uint64_t bytes = 0;
  uint64_t digest = 0;

  void Add(std::string_view key, uint64_t checksum, uint64_t payload_bytes);
  void Remove(std::string_view key, uint64_t checksum, uint64_t payload_bytes);
  bool operator==(const Tally&) const = default;
  std::string Encode() const;
  static Result<Tally> Decode(std::string_view body, std::string_view what);
};

std::string ArrayTallyKey(ArrayId array);
// The class of a metadata key ("n/" for "n/x"); empty for keys of the store ("\0...").
std::string_view MetaClass(std::string_view key);
std::string ClassTallyKey(std::string_view cls);

// ---- commit record --------------------------------------------------------------------------
//
// Meta key "\0commit": the commit id (LMDB's transaction id) and wall-clock time of the last
// commit. Every snapshot checks it against the transaction LMDB opened: a damaged meta page that
// makes LMDB open an older (or no longer existing) state is reported, never read as good.

struct CommitRecord {
  CommitId commit = 0;
  uint64_t unix_nanos = 0;
  std::string Encode() const;
  static Result<CommitRecord> Decode(std::string_view body);
};

}  // namespace bigarray::storage::internal

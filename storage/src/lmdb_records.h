// lmdb_records.h: the records of format version 3 of the LMDB store (docs/format.md): how each
// value is sealed with a checksum, the block header, and the tallies that say what must exist.
//
// Nothing here touches LMDB: these are pure encodings, shared by the store, its verifier and
// the converter from version 1.
#pragma once

#include <cstddef>
#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

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
// data.mdb and can be mapped from the file. Smaller payloads get the short header. A whole
// block whose payload is more than half a slot and at most a slot (kSlotBytes) is not in
// data.mdb at all: its record (kind 2, a slot record) says which slot of blocks.dat holds it.
//
//   offset size  field
//   0      8     checksum: XXH3-64 of the payload, seeded with (array, index, commit, kind,
//                header length)
//   8      8     commit id that wrote the record
//   16     4     header length: 32, 4080, or 48 (a slot record, which has no payload here)
//   20     4     kind: 0 a whole block (trailing zeros trimmed to a page), 1 a delta, 2 a slot
//   24     8     zero; in a slot record the location check: XXH3-64 of bytes 32..48 seeded
//                with the checksum and the commit id
//   32     ...   zero up to the header length (long header); in a slot record:
//   32     8     slot: the payload is at byte slot * kSlotBytes of blocks.dat
//   40     8     payload length (a multiple of the page size)
//
// A delta record (key: array, index, commit) holds changed byte runs of the block, applied in
// commit order over the whole-block record: repeated { u32 LE offset, u32 LE length, bytes }.

inline constexpr size_t kShortHeader = 32;
inline constexpr size_t kLongHeader = 4080;
inline constexpr size_t kSlotHeader = 48;
inline constexpr size_t kLongPayload = 2048;
inline constexpr uint32_t kWholeBlock = 0;
inline constexpr uint32_t kDelta = 1;
inline constexpr uint32_t kSlotted = 2;
// blocks.dat is an array of slots of this size: a slot's payload starts 2 MiB-aligned in the
// file, so that the kernel can map it with one page-table entry (a PMD) where it keeps the
// file's page cache in 2 MiB folios.
inline constexpr uint64_t kSlotBytes = 2u << 20;
// A slot's payload is a whole number of these (zero-padded), so that it maps as whole pages.
inline constexpr size_t kSlotPage = 4096;
inline constexpr size_t SlotLength(size_t payload) { return (payload + kSlotPage - 1) / kSlotPage * kSlotPage; }

struct BlockHeader {
  uint64_t checksum = 0;
  CommitId commit = 0;
  uint32_t header_bytes = kShortHeader;
  uint32_t kind = kWholeBlock;
  uint64_t slot = 0;    // slot records only
  uint64_t length = 0;  // slot records only: the payload's bytes in its slot

  bool slotted() const { return kind == kSlotted; }
  // The payload's bytes, of a record whose value has `value_bytes`.
  uint64_t PayloadBytes(size_t value_bytes) const { return slotted() ? length : value_bytes - header_bytes; }
};

inline size_t HeaderBytesFor(size_t payload) { return payload >= kLongPayload ? kLongHeader : kShortHeader; }
// Whether a whole block's payload of `payload` bytes goes to a slot (as SlotLength(payload) bytes).
inline bool SlotFor(size_t payload) { return payload > kSlotBytes / 2 && SlotLength(payload) <= kSlotBytes; }

// Writes the header: kShortHeader bytes (the rest of a long header is zero), or kSlotHeader
// bytes for a slot record.
void EncodeBlockHeader(const BlockHeader& h, unsigned char out[kSlotHeader]);
// Parses a header from the first `available` bytes of a value of `value_bytes` (at least
// kShortHeader; a slot record needs kSlotHeader); kCorruption naming `what` when a field is
// impossible or a slot record's location check fails.
Result<BlockHeader> DecodeBlockHeader(const unsigned char* in, size_t available, size_t value_bytes, std::string_view what);

uint64_t PayloadSeed(ArrayId array, BlockIndex index, const BlockHeader& h) noexcept;

// ---- slots of blocks.dat ---------------------------------------------------------------------
//
// Meta key "\0slots": u64 LE the number of slots blocks.dat has (its high-water mark), then the
// slots free for reuse, u64 LE each, in ascending order (the lowest is taken first). Meta key
// "\0freed/" + u64 BE commit id: the slots that commit freed, u64 LE each; they become free for
// reuse (and their disk space is given back) once no snapshot of any process can see that
// commit's predecessor.

struct SlotTable {
  uint64_t high_water = 0;
  std::set<uint64_t> free;
  std::string Encode() const;
  static Result<SlotTable> Decode(std::string_view body, std::string_view what);
};
std::string EncodeSlotList(const std::vector<uint64_t>& slots);
Result<std::vector<uint64_t>> DecodeSlotList(std::string_view body, std::string_view what);

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

#include "lmdb_records.h"

#include <xxhash.h>

#include <cstring>

namespace bigarray::storage::internal {

namespace {
uint64_t BodyChecksum(std::string_view key, std::string_view body) {
  return XXH3_64bits_withSeed(body.data(), body.size(), XXH3_64bits(key.data(), key.size()));
}

// A printable rendering of a key for messages: the store's keys begin with a NUL byte.
std::string Printable(std::string_view key) {
  std::string out;
  for (unsigned char c : key) {
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}
}  // namespace

std::string SealRecord(std::string_view key, std::string_view body) {
  std::string out(8, '\0');
  PutLE64(reinterpret_cast<unsigned char*>(out.data()), BodyChecksum(key, body));
  out.append(body);
  return out;
}

uint64_t SealedChecksum(std::string_view sealed) {
  return sealed.size() < 8 ? 0 : GetLE64(reinterpret_cast<const unsigned char*>(sealed.data()));
}

Result<std::string_view> OpenRecord(std::string_view key, std::string_view sealed, std::string_view what) {
  if (sealed.size() < 8) {
    return Corruption(std::string(what) + " record '" + Printable(key) + "' is damaged (" +
                      std::to_string(sealed.size()) + " bytes, too short to be one)");
  }
  std::string_view body = sealed.substr(8);
  if (BodyChecksum(key, body) != SealedChecksum(sealed)) {
    return Corruption(std::string(what) + " record '" + Printable(key) +
                      "' is damaged (its checksum does not match its key and value)");
  }
  return body;
}

namespace {
uint64_t LocationCheck(const unsigned char* header) {
  return XXH3_64bits_withSeed(header + kShortHeader, kSlotHeader - kShortHeader, GetLE64(header) ^ GetLE64(header + 8));
}
}  // namespace

void EncodeBlockHeader(const BlockHeader& h, unsigned char out[kSlotHeader]) {
  std::memset(out, 0, kSlotHeader);
  PutLE64(out, h.checksum);
  PutLE64(out + 8, h.commit);
  for (int i = 0; i < 4; ++i) {
    out[16 + i] = static_cast<unsigned char>(h.header_bytes >> (8 * i));
    out[20 + i] = static_cast<unsigned char>(h.kind >> (8 * i));
  }
  if (h.slotted()) {
    PutLE64(out + 32, h.slot);
    PutLE64(out + 40, h.length);
    PutLE64(out + 24, LocationCheck(out));
  }
}

Result<BlockHeader> DecodeBlockHeader(const unsigned char* in, size_t available, size_t value_bytes, std::string_view what) {
  BlockHeader h;
  h.checksum = GetLE64(in);
  h.commit = GetLE64(in + 8);
  h.header_bytes = in[16] | in[17] << 8 | in[18] << 16 | uint32_t{in[19]} << 24;
  h.kind = in[20] | in[21] << 8 | in[22] << 16 | uint32_t{in[23]} << 24;
  if (h.kind != kWholeBlock && h.kind != kDelta && h.kind != kSlotted) {
    return Corruption(std::string(what) + ": damaged header (record kind " + std::to_string(h.kind) + ")");
  }
  if (h.slotted()) {
    if (h.header_bytes != kSlotHeader || value_bytes != kSlotHeader || available < kSlotHeader) {
      return Corruption(std::string(what) + ": damaged header (a slot record of " + std::to_string(value_bytes) +
                        " bytes with a header of " + std::to_string(h.header_bytes) + ")");
    }
    h.slot = GetLE64(in + 32);
    h.length = GetLE64(in + 40);
    if (GetLE64(in + 24) != LocationCheck(in)) {
      return Corruption(std::string(what) + ": damaged slot record (its slot, length, checksum and commit fail their check)");
    }
    if (!SlotFor(h.length) || h.length % kSlotPage != 0 || h.slot > (uint64_t{1} << 40)) {
      return Corruption(std::string(what) + ": damaged header (slot " + std::to_string(h.slot) + ", length " +
                        std::to_string(h.length) + ")");
    }
    return h;
  }
  if (h.header_bytes != kShortHeader && h.header_bytes != kLongHeader) {
    return Corruption(std::string(what) + ": damaged header (header length " + std::to_string(h.header_bytes) + ")");
  }
  if (value_bytes < h.header_bytes || h.header_bytes != HeaderBytesFor(value_bytes - h.header_bytes)) {
    return Corruption(std::string(what) + ": damaged header (a value of " + std::to_string(value_bytes) +
                      " bytes cannot have a header of " + std::to_string(h.header_bytes) + ")");
  }
  if (GetLE64(in + 24) != 0) return Corruption(std::string(what) + ": damaged header (reserved field not zero)");
  return h;
}

uint64_t PayloadSeed(ArrayId array, BlockIndex index, const BlockHeader& h) noexcept {
  const uint64_t key[4] = {array, index, h.commit, uint64_t{h.kind} << 32 | h.header_bytes};
  return XXH3_64bits(key, sizeof key);
}

namespace {
uint64_t RecordHash(std::string_view key, uint64_t checksum) {
  return XXH3_64bits_withSeed(key.data(), key.size(), checksum);
}
}  // namespace

void Tally::Add(std::string_view key, uint64_t checksum, uint64_t payload_bytes) {
  ++records;
  bytes += payload_bytes;
  digest ^= RecordHash(key, checksum);
}

void Tally::Remove(std::string_view key, uint64_t checksum, uint64_t payload_bytes) {
  --records;
  bytes -= payload_bytes;
  digest ^= RecordHash(key, checksum);
}

std::string Tally::Encode() const {
  std::string out(24, '\0');
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  PutLE64(p, records);
  PutLE64(p + 8, bytes);
  PutLE64(p + 16, digest);
  return out;
}

Result<Tally> Tally::Decode(std::string_view body, std::string_view what) {
  if (body.size() != 24) return Corruption(std::string(what) + ": malformed tally record");
  const auto* p = reinterpret_cast<const unsigned char*>(body.data());
  return Tally{GetLE64(p), GetLE64(p + 8), GetLE64(p + 16)};
}

std::string ArrayTallyKey(ArrayId array) {
  std::string key("\0a/", 3);
  key.resize(11);
  PutBE64(reinterpret_cast<unsigned char*>(key.data() + 3), array);
  return key;
}

std::string_view MetaClass(std::string_view key) {
  if (key.empty() || key[0] == kReservedMetaPrefix) return {};
  const size_t slash = key.find('/');
  return slash == std::string_view::npos ? key : key.substr(0, slash + 1);
}

std::string ClassTallyKey(std::string_view cls) { return std::string("\0c/", 3) + std::string(cls); }

std::string EncodeSlotList(const std::vector<uint64_t>& slots) {
  std::string out(8 * slots.size(), '\0');
  for (size_t n = 0; n < slots.size(); ++n) PutLE64(reinterpret_cast<unsigned char*>(out.data()) + 8 * n, slots[n]);
  return out;
}

Result<std::vector<uint64_t>> DecodeSlotList(std::string_view body, std::string_view what) {
  if (body.size() % 8 != 0) return Corruption(std::string(what) + ": malformed slot list");
  std::vector<uint64_t> slots(body.size() / 8);
  for (size_t n = 0; n < slots.size(); ++n) slots[n] = GetLE64(reinterpret_cast<const unsigned char*>(body.data()) + 8 * n);
  return slots;
}

std::string SlotTable::Encode() const {
  std::string out(8, '\0');
  PutLE64(reinterpret_cast<unsigned char*>(out.data()), high_water);
  return out + EncodeSlotList(std::vector<uint64_t>(free.begin(), free.end()));
}

Result<SlotTable> SlotTable::Decode(std::string_view body, std::string_view what) {
  if (body.size() < 8) return Corruption(std::string(what) + ": malformed slot table");
  SlotTable t;
  t.high_water = GetLE64(reinterpret_cast<const unsigned char*>(body.data()));
  BA_ASSIGN_OR_RETURN(std::vector<uint64_t> free, DecodeSlotList(body.substr(8), what));
  for (size_t n = 0; n < free.size(); ++n) {
    if (free[n] >= t.high_water || (n > 0 && free[n] <= free[n - 1])) {
      return Corruption(std::string(what) + ": malformed slot table (free slots out of order or past its end)");
    }
  }
  t.free.insert(free.begin(), free.end());
  return t;
}

std::string CommitRecord::Encode() const {
  std::string out(16, '\0');
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  PutLE64(p, commit);
  PutLE64(p + 8, unix_nanos);
  return out;
}

Result<CommitRecord> CommitRecord::Decode(std::string_view body) {
  if (body.size() != 16) return Corruption("the commit record is malformed");
  const auto* p = reinterpret_cast<const unsigned char*>(body.data());
  return CommitRecord{GetLE64(p), GetLE64(p + 8)};
}

}  // namespace bigarray::storage::internal

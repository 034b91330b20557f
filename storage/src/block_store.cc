// WriteBatch, ChangeSet and the change-log record encoding.
#include <algorithm>
#include <cstring>
#include <tuple>
#include <unordered_set>

#include "bigarray/storage/block_store.h"
#include "change_log.h"
#include "checksum.h"

namespace bigarray::storage {

bool ChangeSet::BlockChanged(ArrayId a, BlockIndex i) const {
  if (!complete) return true;
  return std::any_of(blocks.begin(), blocks.end(),
                     [&](const BlockRange& r) { return r.Contains(a, i); });
}

bool ChangeSet::MetaChanged(std::string_view key) const {
  if (!complete) return true;
  return std::find(meta_keys.begin(), meta_keys.end(), key) != meta_keys.end();
}

struct BlockRangeChecker::Hasher : internal::BlockHasher {
  using BlockHasher::BlockHasher;
};

BlockRangeChecker::BlockRangeChecker(BlockFileRange range)
    : range_(std::move(range)), hasher_(std::make_unique<Hasher>(range_.seed)) {}

BlockRangeChecker::~BlockRangeChecker() = default;

void BlockRangeChecker::Update(std::span<const std::byte> piece) noexcept { hasher_->Update(piece); }

Status BlockRangeChecker::Finish() const {
  if (hasher_->Digest() == range_.checksum) return Status::Ok();
  return Corruption(range_.what + ": checksum mismatch (the data on disk is damaged)");
}

size_t TrimmedSize(std::span<const std::byte> data) noexcept {
  // Scan words from the end; blocks are page-aligned in practice but need not be.
  const std::byte* p = data.data();
  size_t n = data.size();
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p + n - 8, 8);
    if (w != 0) break;
    n -= 8;
  }
  while (n > 0 && p[n - 1] == std::byte{0}) --n;
  return n;
}

void WriteBatch::PutBlock(ArrayId array, BlockIndex index, size_t max_size, DataFn data) {
  puts_.push_back(Put{array, index, max_size, std::move(data)});
}

void WriteBatch::PutBlock(ArrayId array, BlockIndex index, std::span<const std::byte> data) {
  auto copy = std::make_shared<const std::vector<std::byte>>(data.begin(),
                                                             data.begin() + TrimmedSize(data));
  puts_.push_back(Put{array, index, copy->size(), [copy]() -> Result<std::span<const std::byte>> {
                        return std::span<const std::byte>(*copy);
                      }});
}

void WriteBatch::DeleteBlock(ArrayId array, BlockIndex index) {
  puts_.push_back(Put{array, index, 0, nullptr});
}

void WriteBatch::DeleteBlocks(ArrayId array, BlockIndex first, BlockIndex end) {
  if (first < end) deletes_.push_back(BlockRange{array, first, end});
}

void WriteBatch::PutMeta(std::string key, std::string value) {
  meta_.emplace_back(std::move(key), std::move(value));
}

void WriteBatch::DeleteMeta(std::string key) { meta_.emplace_back(std::move(key), std::nullopt); }

void WriteBatch::CheckMeta(std::string key) { checks_.push_back(std::move(key)); }

void WriteBatch::CheckMetaPrefix(std::string prefix) { prefix_checks_.push_back(std::move(prefix)); }

Result<uint64_t> Snapshot::VerifyBlocks(ArrayId array, size_t block_size,
                              const std::function<void(BlockIndex, const Status&)>& damaged) {
  std::vector<BlockIndex> stored;
  BA_RETURN_IF_ERROR(ForEachBlock(array, [&](const BlockInfo& b) {
    stored.push_back(b.index);
    return true;
  }));
  std::vector<std::byte> block(block_size);
  for (BlockIndex i : stored) {
    Status st = ReadBlock(array, i, block);
    if (st.code() != Code::kCorruption) BA_RETURN_IF_ERROR(st);
    if (!st.ok()) damaged(i, st);
  }
  return stored.size();
}

uint64_t WriteBatch::PayloadBytes() const {
  uint64_t n = 0;
  for (const Put& p : puts_) n += p.size;
  for (const auto& [k, v] : meta_) n += k.size() + (v ? v->size() : 0);
  return n;
}

std::optional<std::string> WriteBatch::FindConflict(const ChangeSet& changes) const {
  auto block_name = [](ArrayId a, BlockIndex i) {
    return "array #" + std::to_string(a) + " block " + std::to_string(i);
  };
  if (!changes.complete) {
    return "the change log no longer reaches back to commit " + std::to_string(changes.from) +
           ", so the transaction cannot be checked for conflicts (its snapshot was released)";
  }
  auto changed = [&](std::string what) {
    return what + " was changed by another transaction after commit " + std::to_string(changes.from);
  };
  if (!changes.blocks.empty()) {
    std::vector<std::pair<ArrayId, BlockIndex>> keys;
    keys.reserve(puts_.size());
    for (const Put& p : puts_) keys.emplace_back(p.array, p.index);
    std::sort(keys.begin(), keys.end());
    for (const BlockRange& r : changes.blocks) {
      auto it = std::lower_bound(keys.begin(), keys.end(), std::make_pair(r.array, r.first));
      if (it != keys.end() && it->first == r.array && it->second < r.end) {
        return changed(block_name(it->first, it->second));
      }
      for (const BlockRange& d : deletes_) {
        if (d.array == r.array && d.first < r.end && r.first < d.end) {
          return changed(block_name(r.array, std::max(d.first, r.first)));
        }
      }
    }
  }
  if (!changes.meta_keys.empty()) {
    std::unordered_set<std::string_view> keys(changes.meta_keys.begin(), changes.meta_keys.end());
    for (const auto& [k, v] : meta_) {
      if (keys.count(k)) return changed("key '" + k + "'");
    }
    for (const std::string& k : checks_) {
      if (keys.count(k)) return changed("key '" + k + "'");
    }
    for (const std::string& prefix : prefix_checks_) {
      for (const std::string& k : changes.meta_keys) {
        if (k.starts_with(prefix)) return changed("key '" + k + "'");
      }
    }
  }
  return std::nullopt;
}

namespace internal {
namespace {

void AppendU64(std::string& s, uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(v >> (8 * i));
  s.append(b, 8);
}

void AppendU32(std::string& s, uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>(v >> (8 * i));
  s.append(b, 4);
}

bool ReadU64(std::string_view& in, uint64_t& v) {
  if (in.size() < 8) return false;
  v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<unsigned char>(in[i])} << (8 * i);
  in.remove_prefix(8);
  return true;
}

bool ReadU32(std::string_view& in, uint32_t& v) {
  if (in.size() < 4) return false;
  v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<unsigned char>(in[i])} << (8 * i);
  in.remove_prefix(4);
  return true;
}

constexpr char kBlockRangeKind = 1;
constexpr char kMetaKind = 2;

}  // namespace

std::string EncodeChanges(const WriteBatch& batch) {
  std::vector<BlockRange> ranges;
  {
    std::vector<std::pair<ArrayId, BlockIndex>> keys;
    keys.reserve(batch.puts().size());
    for (const auto& p : batch.puts()) keys.emplace_back(p.array, p.index);
    std::sort(keys.begin(), keys.end());
    for (const auto& [a, i] : keys) {
      if (!ranges.empty() && ranges.back().array == a && ranges.back().end >= i) {
        ranges.back().end = std::max(ranges.back().end, i + 1);
      } else {
        ranges.push_back(BlockRange{a, i, i + 1});
      }
    }
  }
  ranges.insert(ranges.end(), batch.deletes().begin(), batch.deletes().end());
  std::string s;
  s.reserve(ranges.size() * 25);
  for (const BlockRange& r : ranges) {
    s.push_back(kBlockRangeKind);
    AppendU64(s, r.array);
    AppendU64(s, r.first);
    AppendU64(s, r.end);
  }
  for (const auto& [k, v] : batch.meta()) {
    s.push_back(kMetaKind);
    AppendU32(s, static_cast<uint32_t>(k.size()));
    s += k;
  }
  return s;
}

Status DecodeChanges(std::string_view in, ChangeSet& out) {
  while (!in.empty()) {
    char kind = in[0];
    in.remove_prefix(1);
    if (kind == kBlockRangeKind) {
      BlockRange r;
      if (!ReadU64(in, r.array) || !ReadU64(in, r.first) || !ReadU64(in, r.end) || r.end < r.first) {
        return Corruption("change log record: truncated or invalid block range");
      }
      out.blocks.push_back(r);
    } else if (kind == kMetaKind) {
      uint32_t n;
      if (!ReadU32(in, n) || in.size() < n) return Corruption("change log record: truncated key");
      out.meta_keys.emplace_back(in.substr(0, n));
      in.remove_prefix(n);
    } else {
      return Corruption("change log record: unknown entry kind " + std::to_string(int(kind)));
    }
  }
  return Status::Ok();
}

}  // namespace internal
}  // namespace bigarray::storage

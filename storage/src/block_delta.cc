#include "block_delta.h"

#include <cstdint>
#include <cstring>

namespace bigarray::storage::internal {
namespace {

constexpr size_t kRunHeader = 8;
// Equal bytes between two differing ones that are cheaper to repeat than to start a new run.
constexpr size_t kJoinGap = kRunHeader;
constexpr size_t kPage = 4096;

void PutU32(std::string& out, uint64_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t GetU32(const std::byte* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return u[0] | u[1] << 8 | u[2] << 16 | uint64_t{u[3]} << 24;
}

}  // namespace

bool DeltaEncoder::Add(size_t offset, std::span<const std::byte> old_bytes, std::span<const std::byte> new_bytes) {
  // Whole equal pages are skipped with memcmp; differing pages are scanned byte by byte.
  for (size_t p = 0; p < new_bytes.size(); p += kPage) {
    const size_t n = std::min(kPage, new_bytes.size() - p);
    if (std::memcmp(old_bytes.data() + p, new_bytes.data() + p, n) == 0) continue;
    for (size_t i = p; i < p + n; ++i) {
      if (old_bytes[i] == new_bytes[i]) continue;
      const size_t at = offset + i;
      if (run_end_ > run_start_ && run_end_ >= offset && at - run_end_ <= kJoinGap) {
        // Join: carry the equal bytes in between (new values == old values).
        for (size_t j = run_end_; j < at; ++j) run_.push_back(static_cast<char>(new_bytes[j - offset]));
      } else {
        Close();
        run_start_ = at;
      }
      run_.push_back(static_cast<char>(new_bytes[i]));
      run_end_ = at + 1;
      if (body_.size() + kRunHeader + run_.size() > budget_) return false;
    }
  }
  return true;
}

void DeltaEncoder::Close() {
  if (run_end_ == run_start_) return;
  PutU32(body_, run_start_);
  PutU32(body_, run_end_ - run_start_);
  body_ += run_;
  run_.clear();
  run_start_ = run_end_ = 0;
}

std::string DeltaEncoder::Finish() {
  Close();
  return std::move(body_);
}

Status ApplyDelta(std::string_view what, std::span<const std::byte> delta, std::span<std::byte> block) {
  size_t at = 0;
  while (at < delta.size()) {
    if (delta.size() - at < kRunHeader) return Corruption(std::string(what) + ": malformed delta");
    const uint64_t offset = GetU32(delta.data() + at), length = GetU32(delta.data() + at + 4);
    at += kRunHeader;
    if (length > delta.size() - at || offset > block.size() || length > block.size() - offset) {
      return Corruption(std::string(what) + ": malformed delta (a run past the block or the record)");
    }
    std::memcpy(block.data() + offset, delta.data() + at, length);
    at += length;
  }
  return Status::Ok();
}

size_t DeltaExtent(std::span<const std::byte> delta) {
  size_t at = 0, end = 0;
  while (delta.size() - at >= kRunHeader) {
    const uint64_t offset = GetU32(delta.data() + at), length = GetU32(delta.data() + at + 4);
    at += kRunHeader;
    if (length > delta.size() - at) break;
    end = offset + length;
    at += length;
  }
  return end;
}

}  // namespace bigarray::storage::internal

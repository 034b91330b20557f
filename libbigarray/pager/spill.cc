// Scratch space (docs/pager.md, section 8, "Scratch space"; invariant I18): the spill file,
// its offsets, the space reserved ahead for dirty data beyond the cache, and WriteReservation,
// which announces writes before they happen. Spilling a page is part of AllocateSlot (pool.cc).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "pager/pager_impl.h"

namespace bigarray::pager {

Status PagerImpl::OpenSpill() {
  if (spill_fd_ >= 0) return Status::Ok();
  spill_fd_ = open(options_.spill_dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (spill_fd_ < 0) {
    std::string tmpl = options_.spill_dir + "/bigarray-spill-XXXXXX";
    spill_fd_ = mkostemp(tmpl.data(), O_CLOEXEC);
    if (spill_fd_ < 0) return ErrnoStatus(errno, "create a spill file in " + options_.spill_dir);
    if (unlink(tmpl.c_str()) != 0 && options_.logger) {
      options_.logger->warn("could not remove the name of the spill file {}: {}", tmpl, std::strerror(errno));
    }
  }
  return Status::Ok();
}

Result<uint64_t> PagerImpl::AllocSpill(size_t block_size) {
  BA_RETURN_IF_ERROR(OpenSpill());
  ++spilled_pages_;
  auto& free = spill_free_[block_size];
  if (!free.empty()) {
    uint64_t off = free.back();
    free.pop_back();
    return off;
  }
  uint64_t off = spill_end_;
  spill_end_ += block_size;
  return off;
}

void PagerImpl::FreeSpill(uint64_t offset, size_t block_size) {
  spill_free_[block_size].push_back(offset);
  if (--spilled_pages_ == 0) {  // nothing spilled: every offset is free again
    spill_free_.clear();
    spill_end_ = 0;
    ReleaseSpillIfClean();
  }
}

void PagerImpl::ReleaseSpillIfClean() {
  if (spilled_pages_ != 0 || dirty_blocks_ != 0 || write_credit_ != 0 || reserving_) return;
  reserve_failed_ = false;
  if (spill_reserved_ == 0 && spill_end_ == 0) return;
  spill_free_.clear();
  spill_end_ = 0;
  spill_reserved_ = 0;
  if (spill_fd_ >= 0 && ftruncate(spill_fd_, 0) != 0 && options_.logger) {  // give the disk space back
    options_.logger->warn("could not truncate the spill file: {}", std::strerror(errno));
  }
}

uint64_t PagerImpl::DirtyBytesInRam() const {
  // Spills begin when the budget is full, or when a pool is full by its own capacity (capped
  // by kMaxSlots): the smaller of the two is what dirty pages may hold. Less two of the largest
  // blocks: the slot being allocated when a spill starts, and one for rounding.
  uint64_t ram = Budget();
  for (const auto& [bs, pool] : pools_) ram = std::min<uint64_t>(ram, uint64_t{pool->capacity} * bs);
  const uint64_t margin = 2 * max_block_size_;
  return ram > margin ? ram - margin : 0;
}

uint64_t PagerImpl::SpillSpaceFor(uint64_t dirty) const {
  const uint64_t ram = DirtyBytesInRam();
  return std::max(spill_end_, dirty > ram ? dirty - ram : 0);
}

Status PagerImpl::ReserveSpill(std::unique_lock<std::mutex>& lk, uint64_t bytes, bool loader) {
  while (spill_reserved_ < bytes) {
    if (reserving_) {  // another thread extends it: wait (a loader as busy, so faults find another)
      if (loader) BeginIo();
      settled_cv_.wait(lk);
      if (loader) EndIo();
      continue;
    }
    BA_RETURN_IF_ERROR(OpenSpill());
    // Chunks of 16 of the largest blocks (at least 16 MiB): few system calls, little excess.
    const uint64_t chunk = std::max<uint64_t>(16 * max_block_size_, 16u << 20);
    const uint64_t from = spill_reserved_;
    uint64_t to = (bytes + chunk - 1) / chunk * chunk;
    const int fd = spill_fd_;
    reserving_ = true;
    lk.unlock();
    auto allocate = [&](uint64_t end) {
      int err;
      while ((err = posix_fallocate(fd, static_cast<off_t>(from), static_cast<off_t>(end - from))) == EINTR) {
      }
      return err;
    };
    int err = allocate(to);
    if ((err == ENOSPC || err == EDQUOT || err == EFBIG) && to > bytes) {
      to = bytes;  // no room for a whole chunk: what is needed may still fit
      err = allocate(to);
    }
    lk.lock();
    reserving_ = false;
    settled_cv_.notify_all();
    if (err != 0) {
      return ErrnoStatus(err, "reserve " + std::to_string(to - from) + " bytes of scratch space in " +
                                  options_.spill_dir + " for dirty data beyond the cache (" +
                                  std::to_string(spill_reserved_) + " reserved)");
    }
    spill_reserved_ = std::max(spill_reserved_, to);
    reserve_failed_ = false;  // there was room again: faults may try again
  }
  return Status::Ok();
}

bool PagerImpl::AnyTransientSlot() const {
  for (const auto& [id, f] : files_) {
    for (const auto& [b, p] : f->pages) {
      // A block being mapped from its file holds room but no slot: it settles too.
      if ((p.slot >= 0 || p.room) && (p.state == Page::kLoading || p.state == Page::kSpilling)) return true;
    }
  }
  return false;
}

namespace {
// Dirty data: what a commit would store (DIRTY, SPILLED, on its way to or from the spill file).
bool HoldsDirtyData(const Page& p) {
  return p.state == Page::kDirty || p.state == Page::kSpilled || p.state == Page::kSpilling ||
         (p.state == Page::kLoading && p.from_spill);
}
}  // namespace

Result<WriteReservation> PagedFile::ReserveForWrite(uint64_t first, uint64_t end, uint64_t max_blocks) {
  return pager_->ReserveForWrite(state_, first, end, max_blocks);
}

Result<WriteReservation> PagerImpl::ReserveForWrite(FileState* f, uint64_t first, uint64_t end, uint64_t max_blocks) {
  std::unique_lock lk(mu_);
  // Blocks of the range that are not dirty yet: looked up one by one, or found among the
  // file's pages when those are fewer.
  uint64_t already = 0;
  const uint64_t span = end > first ? end - first : 0;
  if (span <= f->pages.size()) {
    for (uint64_t b = first; b < end; ++b) {
      auto it = f->pages.find(b);
      already += it != f->pages.end() && HoldsDirtyData(it->second);
    }
  } else {
    for (const auto& [b, p] : f->pages) already += b >= first && b < end && HoldsDirtyData(p);
  }
  const uint64_t blocks = std::min(span - already, max_blocks);
  const uint64_t bytes = blocks * f->block_size;
  const std::string name = f->name;  // f may go while mu_ is released
  write_credit_ += bytes;
  Status st = ReserveSpill(lk, SpillSpaceFor(dirty_bytes_ + write_credit_), false);
  if (!st.ok()) {
    write_credit_ -= bytes;
    ReleaseSpillIfClean();
    return st.WithContext("prepare to write " + std::to_string(blocks) + " block(s) of " + name);
  }
  lk.unlock();  // a WriteReservation's destructor takes mu_
  WriteReservation r;
  r.pager_ = shared_from_this();
  r.bytes_ = bytes;
  return r;
}

void PagerImpl::EndReservation(uint64_t bytes) {
  std::lock_guard lock(mu_);
  write_credit_ -= bytes;
  ReleaseSpillIfClean();
}

WriteReservation::WriteReservation(WriteReservation&& other) noexcept { *this = std::move(other); }

WriteReservation& WriteReservation::operator=(WriteReservation&& other) noexcept {
  if (this != &other) {
    if (pager_) pager_->EndReservation(bytes_);
    pager_ = std::move(other.pager_);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

WriteReservation::~WriteReservation() {
  if (pager_) pager_->EndReservation(bytes_);
}

}  // namespace bigarray::pager

// Transaction boundaries (docs/pager.md, section 1, "Transaction boundaries"; W1-W5 of
// semantics.md): invalidation, the extent read-ahead stops at, the writeout of dirty pages at a
// commit (BeginWriteout, Writeout::Data, FinishWriteout) and Abort.
#include <sys/types.h>

#include <cerrno>
#include <string>
#include <vector>

#include "pager/io.h"
#include "pager/pager_impl.h"

namespace bigarray::pager {

void PagedFile::Invalidate(uint64_t block) { pager_->Invalidate(state_, block, block + 1); }
void PagedFile::InvalidateRange(uint64_t first, uint64_t end) { pager_->Invalidate(state_, first, end); }
void PagedFile::InvalidateAll() { pager_->Invalidate(state_, 0, UINT64_MAX); }
void PagedFile::Truncate(uint64_t block_count) { pager_->Invalidate(state_, block_count, UINT64_MAX); }

void PagerImpl::Invalidate(FileState* f, uint64_t first, uint64_t end) {
  std::lock_guard lock(mu_);
  if (end - first == 1) {
    auto it = f->pages.find(first);
    if (it == f->pages.end()) return;  // W4: not resident: nothing to do
  }
  std::vector<Page*> victims;
  for (auto& [block, p] : f->pages) {
    if (block >= first && block < end) victims.push_back(&p);
  }
  for (Page* p : victims) {
    if (p->writeout) continue;  // boundaries never overlap a writeout (thread contract)
    switch (p->state) {
      case Page::kLoading:
      case Page::kSpilling:
        p->invalidated = true;  // W5: the loader discards its result
        break;
      default:
        (void)Erase(*p);  // or doomed: then the next BeginWriteout or Abort reports it
    }
  }
  ReleaseSpillIfClean();
}

void PagedFile::SetExtent(uint64_t block_count) { pager_->SetExtent(state_, block_count); }

void PagerImpl::SetExtent(FileState* f, uint64_t blocks) {
  std::lock_guard lock(mu_);
  f->extent = blocks;
}

Result<std::unique_ptr<Writeout>> Pager::BeginWriteout() { return impl_->BeginWriteout(); }
Status Pager::Abort() { return impl_->Abort(); }

Result<std::unique_ptr<Writeout>> PagerImpl::BeginWriteout() {
  std::unique_ptr<Writeout> w(new Writeout());
  w->pager_ = shared_from_this();
  std::unique_lock lk(mu_);
  // Let spills and spill read-backs finish: their pages are dirty data in motion.
  settled_cv_.wait(lk, [&] {
    for (auto& [id, f] : files_) {
      for (auto& [b, p] : f->pages) {
        if (p.state == Page::kSpilling || (p.state == Page::kLoading && p.from_spill)) return false;
      }
    }
    return true;
  });
  // A page that an Abort or Invalidate could not drop still shows bytes that must not be stored.
  RetryDoomed();
  if (!doomed_.empty()) {
    w->finished_ = true;
    return DoomedError();
  }
  for (auto& [id, f] : files_) {
    auto handle = f->handle.lock();
    if (!handle) continue;
    for (auto& [block, p] : f->pages) {
      if (p.state != Page::kDirty && p.state != Page::kSpilled) continue;
      if (!WriteProtect(p)) {  // writes would slip past the commit: give up, everything stays dirty
        const Status st = ErrnoStatus(errno, "write-protect " + f->name + " block " + std::to_string(block) +
                                                 " for the commit" +
                                                 (errno == ENOMEM ? " (map entries: vm.max_map_count reached)" : ""));
        for (void* vp : w->pages_) static_cast<Page*>(vp)->writeout = false;
        w->finished_ = true;
        return st;
      }
      p.writeout = true;  // writes from now on fault and wait for Finish
      w->entries_.push_back(Writeout::Entry{handle, block});
      w->pages_.push_back(&p);
    }
  }
  return w;
}

Result<std::span<const std::byte>> Writeout::Data(size_t i) { return pager_->WriteoutData(*this, i); }

Result<std::span<const std::byte>> PagerImpl::WriteoutData(Writeout& w, size_t i) {
  Page* p = static_cast<Page*>(w.pages_.at(i));
  std::unique_lock lk(mu_);
  FileState* f = p->file;
  const size_t bs = f->block_size;
  if (p->state == Page::kSpilled) {
    const uint64_t offset = p->spill_offset;
    lk.unlock();
    w.buffer_.resize(bs);
    BA_RETURN_IF_ERROR(PreadFull(spill_fd_, w.buffer_.data(), bs, static_cast<off_t>(offset),
                                 "read a spilled page of " + f->name));
    std::span<const std::byte> all(w.buffer_.data(), bs);
    return all;
  }
  // The page is pinned by the writeout and write-protected: read it where its page-table
  // entries are, keeping that mapping alive until Finish.
  const std::byte* addr = f->pool->SlotAddr(p->slot);
  if (p->home >= 0) {
    const MappingSlot& m = f->mappings[p->home];
    if (auto owner = m.owner.lock()) {
      addr = m.base + (p->block - m.first) * bs;
      w.held_.push_back(std::move(owner));
    }
  }
  lk.unlock();
  std::span<const std::byte> all(addr, bs);
  return all;
}

void Writeout::Finish(bool committed) {
  if (finished_) return;
  finished_ = true;
  pager_->FinishWriteout(*this, committed);
  held_.clear();  // outside the pager's lock: this may release a mapping
}

Writeout::~Writeout() { Finish(false); }

void PagerImpl::FinishWriteout(Writeout& w, bool committed) {
  std::lock_guard lock(mu_);
  for (void* vp : w.pages_) {
    Page& p = *static_cast<Page*>(vp);
    p.writeout = false;
    if (committed) {
      if (p.state == Page::kDirty) {
        p.state = Page::kClean;  // W1: clean, still resident and mapped read-only
        --dirty_blocks_, dirty_bytes_ -= p.file->block_size;
        WakeWaiters(p);
      } else if (p.state == Page::kSpilled) {
        Erase(p);  // its committed bytes are in storage now; the next access reads them
      }
    } else {
      WakeWaiters(p);  // W2: stays dirty
    }
  }
  w.pages_.clear();
  ReleaseSpillIfClean();
}

Status PagerImpl::Abort() {
  std::lock_guard lock(mu_);
  for (auto& [id, f] : files_) {
    std::vector<Page*> dirty;
    for (auto& [block, p] : f->pages) {
      if (p.writeout) continue;
      if (p.state == Page::kDirty || p.state == Page::kSpilled) {
        dirty.push_back(&p);
      } else if (p.state == Page::kSpilling || (p.state == Page::kLoading && p.from_spill)) {
        p.invalidated = true;
      }
    }
    for (Page* p : dirty) (void)Erase(*p);  // W3: the next access reads the committed bytes
  }
  RetryDoomed();
  ReleaseSpillIfClean();
  return DoomedError();
}

}  // namespace bigarray::pager

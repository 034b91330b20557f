// Address ranges and page-table moves (docs/pager.md, section 1, "Regions" and "Memory";
// section 3b, "Mapped blocks"; section 9, "Map entries and limits"): the reservation of a view
// (Map, Unmap), showing a page in a view by moving its slot's page-table entries there or mapping
// it (MapInto, MapFileInto), taking it out again (UnmapAll), write protection, and the map
// entries charged to MapBudget.
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "pager/fault_source.h"
#include "pager/file_ranges.h"
#include "pager/io.h"
#include "pager/map_budget.h"
#include "pager/pager_impl.h"

namespace bigarray::pager {

Result<std::shared_ptr<Mapping>> PagedFile::Map(uint64_t first_block, uint64_t block_count) {
  return pager_->Map(*this, first_block, block_count);
}

namespace {
// Reserves `size` bytes of address space, inaccessible. When blocks are whole multiples of 2 MiB
// the reservation starts 2 MiB-aligned, so that a block mapped from a file at a 2 MiB-aligned
// offset can be shown with one page-table entry per 2 MiB (a PMD), as the kernel shows a plain
// mmap of the file (docs/pager.md, "Mapped blocks").
void* ReserveAligned(size_t size, size_t block_size) {
  constexpr int kFlags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
  if (block_size % kHuge != 0) return mmap(nullptr, size, PROT_NONE, kFlags, -1, 0);
  return MapAligned(size, PROT_NONE, kFlags, -1, 0);
}
}  // namespace

Result<std::shared_ptr<Mapping>> PagerImpl::Map(PagedFile& file, uint64_t first, uint64_t count) {
  const size_t bs = file.block_size_;
  if (count == 0) count = 1;  // an empty view still gets a valid, distinct address
  if (count > (uint64_t{1} << 62) / bs) {
    return ResourceExhausted("cannot reserve " + std::to_string(count) + " blocks of address space for " +
                             file.name_ + ": larger than the address space");
  }
  const size_t size = count * bs;
  std::lock_guard lock(mu_);
  FileState* f = file.state_;
  unsigned index = 0;
  while (index < f->mappings.size() && f->mappings[index].serial != 0) ++index;
  if (index == kMaxMappingsPerFile) {
    return ResourceExhausted(file.name_ + ": too many simultaneous mappings (" +
                             std::to_string(kMaxMappingsPerFile) + ")");
  }
  // A reservation is one map entry (and splits as pages are mapped into it: MapInto charges that).
  if (!MapBudget::Get().Fits(1)) ReclaimMapEntries(1, nullptr);
  void* base = ReserveAligned(size, bs);
  if (base == MAP_FAILED && errno == ENOMEM && ReclaimMapEntries(64, nullptr)) base = ReserveAligned(size, bs);
  if (base == MAP_FAILED) {
    return ResourceExhausted("cannot reserve " + std::to_string(size) + " bytes of address space for " +
                             file.name_ + ": " + std::strerror(errno) +
                             " (map a smaller part of the array, or drop views)");
  }
  if (index == f->mappings.size()) f->mappings.emplace_back();
  Status st = SignalFaultSource::Get().AddRange(reinterpret_cast<uintptr_t>(base), size, this);
  if (!st.ok()) {
    munmap(base, size);
    return st;
  }
  MapBudget::Get().Charge(1);
  ++map_entries_;
  MappingSlot& slot = f->mappings[index];
  slot.serial = next_mapping_serial_++;
  slot.base = static_cast<std::byte*>(base);
  slot.first = first;
  slot.count = count;
  mappings_by_address_[reinterpret_cast<uintptr_t>(base)] = MappingRef{f->id, index, slot.serial};
  auto m = std::shared_ptr<Mapping>(new Mapping());
  m->file_ = file.shared_from_this();
  m->base_ = slot.base;
  m->size_ = size;
  m->first_block_ = first;
  m->index_ = index;
  slot.owner = m;
  return m;
}

Mapping::~Mapping() { file_->pager_->Unmap(*this); }

void PagerImpl::Unmap(Mapping& m) {
  std::unique_lock lock(mu_);
  FileState* f = m.file_->state_;
  // A PopulateShown at work in the range would otherwise populate whatever the address space
  // holds there next. None starts meanwhile (read-aheads queued for this view may still map).
  f->mappings[m.index_].closing = true;
  settled_cv_.wait(lock, [&] { return f->mappings[m.index_].populating == 0; });
  const uint64_t bit = uint64_t{1} << m.index_;
  // munmap of whole map entries never needs a new one, so it cannot fail for the limit. Were it
  // to fail, the range would stay reserved (and unreachable: nobody holds it) rather than be
  // handed to another mmap while pages are still shown in it.
  SignalFaultSource::Get().RemoveRange(reinterpret_cast<uintptr_t>(m.base_));
  if (munmap(m.base_, m.size_) != 0 && options_.logger) {
    options_.logger->warn("could not release a mapping of {}: {}", f->name, std::strerror(errno));
  }
  // First forget the mapping everywhere (a reclaim started below must not touch its range,
  // which is no longer ours), then give the pool ranges of the pages it was home to their write
  // access back.
  std::vector<Page*> homed;
  for (auto& [block, p] : f->pages) {
    if (!(p.mapped & bit)) continue;
    p.ForgetReadRetries(static_cast<int>(m.index_));
    ChargeMapEntries(p, -ViewCost(p));
    p.mapped &= ~bit;
    p.writable &= ~bit;
    if (p.home == static_cast<int8_t>(m.index_)) {  // its entries died with the range
      p.home = -1;
      ChargeMapEntries(p, -2);
      if (p.slot >= 0) homed.push_back(&p);
    }
  }
  mappings_by_address_.erase(reinterpret_cast<uintptr_t>(m.base_));
  f->mappings[m.index_] = MappingSlot{};
  for (Page* p : homed) MakeSlotWritable(*f->pool, static_cast<uint32_t>(p->slot), nullptr);
  MapBudget::Get().Release(1);
  --map_entries_;
}

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4  // Linux 5.7; for shared mappings 5.13
#endif

// Makes [addr, addr + len) an inaccessible reservation again, so that the next access faults.
// A fresh PROT_NONE mapping merges with the reservation around it, which gives back the entries
// the page cost. If that fails (at the map-entry limit, replacing part of a map entry needs a new
// one), mprotect(PROT_NONE) still makes the range inaccessible when it is a map entry of its own.
static bool Reserve(std::byte* addr, size_t len) {
  if (mmap(addr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) != MAP_FAILED) {
    return true;
  }
  return mprotect(addr, len, PROT_NONE) == 0;
}

// Shows page p in mapping `ref`. System calls that fail for want of map entries are retried
// once after ReclaimMapEntries has freed some (never touching p).
bool PagerImpl::MapInto(Page& p, const MappingRef& ref) {
  FileState* f = p.file;
  const MappingSlot& m = f->mappings[ref.index];
  if (m.serial != ref.serial) return true;  // the mapping went away: nothing to map
  if (p.block < m.first || p.block >= m.first + m.count) return true;
  const uint64_t bit = uint64_t{1} << ref.index;
  const size_t bs = f->block_size;
  std::byte* addr = m.base + (p.block - m.first) * bs;
  const bool want_write = p.state == Page::kDirty && !p.writeout;  // a writeout write-protects
  if (p.state == Page::kMapped) {  // read-only wherever it is shown
    return (p.mapped & bit) || MapFileInto(p, addr, bit);
  }
  auto retry = [&](auto op) {
    if (op()) return true;
    if (errno != ENOMEM || !ReclaimMapEntries(16, &p)) return false;
    return op();
  };
  if (p.mapped & bit) {
    if (want_write && !(p.writable & bit)) {
      if (!retry([&] { return mprotect(addr, bs, PROT_READ | PROT_WRITE) == 0; })) return false;
      p.writable |= bit;
    }
    return true;
  }
  // A page in a reservation splits it into three map entries (+2); moving its entries out of
  // the pool splits the pool mapping too (+2).
  const int cost = p.home < 0 ? 4 : 2;
  if (!MapBudget::Get().Fits(static_cast<uint64_t>(cost))) ReclaimMapEntries(static_cast<uint64_t>(cost), &p);
  bool moved = false;
  // A slot whose pool range was left read-only (I14) is not moved: the move would carry that
  // protection into a page that is to be writable. The plain mapping below sets its own.
  if (p.home < 0 && !f->pool->read_only[static_cast<size_t>(p.slot)]) {
    // Move the slot's page-table entries from the pool mapping here: no new faults, and the
    // page stays counted once in RSS. The moved range keeps the access of the pool range, so a
    // clean page is made read-only *before* the move: were it write-protected after, a thread
    // running into the new page at that instant could write it unnoticed (a lost update).
    std::byte* slot = f->pool->SlotAddr(p.slot);
    if (!want_write && !retry([&] { return mprotect(slot, bs, PROT_READ) == 0; })) return false;
    void* r = mremap(slot, bs, bs, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, addr);
    if (r != MAP_FAILED) {
      moved = true;
      p.home = static_cast<int8_t>(ref.index);
    } else if (!want_write) {
      MakeSlotWritable(*f->pool, static_cast<uint32_t>(p.slot), &p);
    }
  }
  if (!moved) {  // a second mapping of the page (or a kernel without MREMAP_DONTUNMAP)
    const int prot = want_write ? PROT_READ | PROT_WRITE : PROT_READ;
    const off_t off = static_cast<off_t>(p.slot) * static_cast<off_t>(bs);
    if (!retry([&] { return mmap(addr, bs, prot, MAP_SHARED | MAP_FIXED, f->pool->fd, off) != MAP_FAILED; })) {
      return false;
    }
  }
  p.mapped |= bit;
  if (want_write) p.writable |= bit;
  ChargeMapEntries(p, moved ? 4 : 2);
  return true;
}

void PagerImpl::PopulateShown(std::unique_lock<std::mutex>& lk, Page& p, const MappingRef& ref) {
  FileState* f = p.file;
  MappingSlot& m = f->mappings[ref.index];
  const uint64_t bit = uint64_t{1} << ref.index;
  if (m.serial != ref.serial || m.closing || !(p.mapped & bit) || p.state != Page::kMapped || p.range.length == 0) {
    return;
  }
  std::byte* addr = m.base + (p.block - m.first) * f->block_size;
  const size_t length = p.range.length;
  const unsigned index = ref.index;
  const bool slot = ShownLazily(p.range);  // advised by MapFileInto
  ++m.populating;
  // Not under mu_, and as I/O: the pages may have left the page cache since the check (or never
  // been read: a read-ahead without a check), and populating then reads them from the disk.
  // Meanwhile the range may be unmapped from this view (eviction, invalidation: the populate then
  // fails, or fills what replaced it); Unmap waits. A failure is left to the reader's own fault,
  // as under mmap.
  BeginIo();
  lk.unlock();
  PopulateRead(addr, length);
  // Filled: the reader's accesses count as uses of the pages again (io.h, BeginExactRead). A
  // range unmapped meanwhile is a reservation (or a copy of the block in a slot of the pool),
  // which this leaves as it is, or this block's range mapped again, which then reads as usual.
  if (slot) EndExactRead(addr, length);
  lk.lock();
  EndIo();
  if (--f->mappings[index].populating == 0) settled_cv_.notify_all();  // mappings may have grown
}

// Shows a block mapped from its file at addr (one block of a view, mapping bit `bit`), read-only:
// its populated file_map moved there, or a new mapping of its range (filled by PopulateShown),
// then anonymous zeros for the rest of the block. On failure the block's range of the view is an
// inaccessible reservation again, or, if even that failed, still counted as mapped (UnmapAll
// retries it).
bool PagerImpl::MapFileInto(Page& p, std::byte* addr, uint64_t bit) {
  const size_t bs = p.file->block_size, len = p.range.length;
  const int cost = ViewCost(p);
  if (!MapBudget::Get().Fits(static_cast<uint64_t>(cost))) ReclaimMapEntries(static_cast<uint64_t>(cost), &p);
  auto retry = [&](auto op) {
    if (op()) return true;
    if (errno != ENOMEM || !ReclaimMapEntries(16, &p)) return false;
    return op();
  };
  bool ok = true;
  if (len > 0 && p.file_map) {
    ok = retry([&] { return mremap(p.file_map, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, addr) != MAP_FAILED; });
    if (ok) {
      p.file_map = nullptr;  // moved, page tables and all
      ChargeMapEntries(p, -1);
    }
  } else if (len > 0) {
    // Not populated here: under mu_, populating could read the block from disk (its pages may
    // have left the page cache since the check). The loader fills them after (PopulateShown).
    ok = retry([&] {
      return mmap(addr, len, PROT_READ, MAP_SHARED | MAP_FIXED, p.range.fd, p.range.offset) != MAP_FAILED;
    });
    if (ok && ShownLazily(p.range)) AdviseSlotReads(addr, len, /*exact=*/true);  // until PopulateShown
  }
  if (ok && len < bs) {
    ok = retry([&] {
      return mmap(addr + len, bs - len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) !=
             MAP_FAILED;
    });
  }
  if (!ok) {
    const int err = errno;
    // A failed MAP_FIXED may have unmapped the range: never leave a hole. If not even the
    // reservation can be put back, the range counts as mapped in this view, so that UnmapAll
    // retries it at the next eviction or boundary (and Erase dooms the page meanwhile, I15).
    if (!Reserve(addr, bs)) {
      p.mapped |= bit;
      ChargeMapEntries(p, cost);
    }
    errno = err;
    return false;
  }
  p.mapped |= bit;
  ChargeMapEntries(p, cost);
  return true;
}

void PagerImpl::DropFileMap(Page& p) {
  if (!p.file_map) return;
  munmap(p.file_map, p.range.length);  // whole map entries: cannot fail for the map-entry limit
  p.file_map = nullptr;
  ChargeMapEntries(p, -1);
}

bool PagerImpl::UnmapAll(Page& p) {
  FileState* f = p.file;
  const size_t bs = f->block_size;
  int error = 0;
  for (uint64_t bits = p.mapped; bits; bits &= bits - 1) {
    const unsigned i = static_cast<unsigned>(__builtin_ctzll(bits));
    const uint64_t bit = uint64_t{1} << i;
    const MappingSlot& m = f->mappings[i];
    std::byte* addr = m.base + (p.block - m.first) * bs;
    if (static_cast<int>(i) == p.home) {
      // Move the entries back to the pool, where the next use of the slot finds them. (Until
      // the reservation below replaces it, the range left here still maps the slot; an access
      // in that instant sees the slot's current bytes, which the caller copies after us.) If the
      // move fails, the entries stay here and die with the reservation: the pool mapping faults
      // the memfd's pages in again, only slower.
      std::byte* slot = f->pool->SlotAddr(p.slot);
      void* r = mremap(addr, bs, bs, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, slot);
      // The pool range must be writable again for the slot's next load: it is read-only if it
      // came back from a read-only mapping, or if the move failed and the range left behind by
      // the first move (made read-only before it) is still there.
      if (r == MAP_FAILED || !(p.writable & bit)) MakeSlotWritable(*f->pool, static_cast<uint32_t>(p.slot), &p);
      p.home = -1;
      ChargeMapEntries(p, -2);
    }
    const bool reserved = Reserve(addr, bs) || (errno == ENOMEM && ReclaimMapEntries(16, &p) && Reserve(addr, bs));
    if (!reserved) {  // still visible here: the bits stay, and the caller must keep the slot
      error = errno;
      continue;
    }
    p.mapped &= ~bit;
    p.writable &= ~bit;
    p.ForgetReadRetries(static_cast<int>(i));
    ChargeMapEntries(p, -ViewCost(p));
  }
  errno = error;
  return error == 0;
}

bool PagerImpl::WriteProtect(Page& p) {
  FileState* f = p.file;
  for (uint64_t bits = p.writable; bits; bits &= bits - 1) {
    const unsigned i = static_cast<unsigned>(__builtin_ctzll(bits));
    const MappingSlot& m = f->mappings[i];
    std::byte* addr = m.base + (p.block - m.first) * f->block_size;
    auto protect = [&] { return mprotect(addr, f->block_size, PROT_READ) == 0; };
    if (!protect() && !(errno == ENOMEM && ReclaimMapEntries(16, &p) && protect())) return false;
    p.writable &= ~(uint64_t{1} << i);
  }
  return true;
}

bool PagerImpl::MakeSlotWritable(Pool& pool, uint32_t slot, const Page* keep) {
  std::byte* addr = pool.SlotAddr(static_cast<int32_t>(slot));
  auto unprotect = [&] { return mprotect(addr, pool.block_size, PROT_READ | PROT_WRITE) == 0; };
  const bool ok = unprotect() || (errno == ENOMEM && ReclaimMapEntries(16, keep) && unprotect());
  pool.read_only[slot] = ok ? 0 : 1;
  return ok;
}

void PagerImpl::ChargeMapEntries(Page& p, int delta) {
  p.map_cost = static_cast<uint8_t>(p.map_cost + delta);
  if (delta > 0) {
    MapBudget::Get().Charge(static_cast<uint64_t>(delta));
    map_entries_ += static_cast<uint64_t>(delta);
  } else {
    MapBudget::Get().Release(static_cast<uint64_t>(-delta));
    map_entries_ -= static_cast<uint64_t>(-delta);
  }
}

bool PagerImpl::ReclaimMapEntries(uint64_t need, const Page* keep) {
  if (reclaiming_) return false;  // UnmapAll below may ask again: one pass at a time
  reclaiming_ = true;
  MapBudget& budget = MapBudget::Get();
  // Free at least `need`, and down to 1/16 below the budget, so that the next pages map at once.
  const uint64_t target = budget.limit() - std::min<uint64_t>(budget.limit() / 16, 4096);
  const uint64_t before = map_entries_;
  for (Page* p = lru_head_; p && (budget.used() + need > target || map_entries_ + need > before);) {
    Page* next = p->lru_next;
    if (p != keep && p->mapped != 0 && !p->writeout && !p->doomed) {
      // Dirty pages too: their bytes stay in the slot, and the next write faults and maps the
      // page writable again, so nothing is lost.
      (void)UnmapAll(*p);
      ++map_reclaims_;
    }
    if (p != keep && p->file_map) {  // a mapped block's own mapping: mapped again on its next use
      DropFileMap(*p);
    }
    p = next;
  }
  reclaiming_ = false;
  return map_entries_ < before;
}

}  // namespace bigarray::pager

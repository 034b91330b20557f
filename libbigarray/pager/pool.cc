// Room in the RAM pool (docs/pager.md, section 1, "RAM pool"; section 8, "Eviction, spill,
// read-ahead"): the cache budget, AllocateSlot, which evicts clean pages and spills dirty ones to
// find a slot, and FreeSlot. struct Pool is in pool.h, the spill file's space in spill.cc.
#include <sys/types.h>

#include <algorithm>
#include <string>

#include "pager/io.h"
#include "pager/pager_impl.h"

namespace bigarray::pager {

uint64_t PagerImpl::Budget() const {
  return std::max<uint64_t>(options_.cache_bytes, kMinBudgetBlocks * max_block_size_);
}

std::optional<uint32_t> PagerImpl::AllocateSlot(std::unique_lock<std::mutex>& lk, Pool& pool,
                                                bool prefetch, Status* error, bool need_slot) {
  const uint64_t bs = pool.block_size;
  // Clean pages go first, pages of the pool and pages mapped from files alike.
  auto clean = [](const Page& p) { return (p.state == Page::kClean || p.state == Page::kMapped) && !p.writeout; };
  for (;;) {
    const uint64_t budget = Budget();
    if (!need_slot && resident_bytes_ + bs <= budget) {
      resident_bytes_ += bs;
      return 0;
    }
    if (resident_bytes_ + bs <= budget &&
        (!pool.free.empty() || pool.next_fresh < pool.capacity)) {
      uint32_t slot;
      if (!pool.free.empty()) {
        slot = pool.free.back();
        pool.free.pop_back();
      } else {
        slot = pool.next_fresh++;
      }
      if (pool.read_only[slot] && !MakeSlotWritable(pool, slot, nullptr)) {  // loads write through the pool
        pool.free.push_back(slot);
        *error = ErrnoStatus(errno, "make a page of the cache writable (map entries: vm.max_map_count reached)");
        return std::nullopt;
      }
      resident_bytes_ += bs;
      return slot;
    }
    if (prefetch) {
      // Read-ahead never waits and never spills: it may only displace the least recently used
      // clean page, if there is one.
      Page* victim = nullptr;
      for (Page* p = lru_head_; p; p = p->lru_next) {
        if (clean(*p) && (p->slot >= 0 || resident_bytes_ + bs > budget)) {  // a slot, or room it needs
          victim = p;
          break;
        }
      }
      if (!victim || !Evict(*victim)) return std::nullopt;
      ++evictions_;
      continue;
    }
    // Evict clean pages, least recently used first, in a batch: down to 1/16 of the budget
    // below it (at most 16 blocks), so that the next loads find room at once (P5). A pool that
    // is full by its own capacity needs a page of its own freed.
    auto pool_full = [&] { return need_slot && pool.free.empty() && pool.next_fresh >= pool.capacity; };
    const uint64_t target = budget - std::min<uint64_t>(budget / 16, 16 * bs);
    bool evicted = false;
    for (Page* p = lru_head_; p && (resident_bytes_ + bs > target || pool_full());) {
      Page* next = p->lru_next;
      // A pool full by its capacity needs a slot freed: mapped pages (no slot) go only for room.
      if (clean(*p) && p->file->pool == &pool && (p->slot >= 0 || resident_bytes_ + bs > target) && Evict(*p)) {
        ++evictions_;
        evicted = true;
      }
      p = next;
    }
    if (!evicted && !pool_full()) {  // over budget: pages of other block sizes count too
      for (Page* p = lru_head_; p;) {
        Page* next = p->lru_next;  // Erase frees p, or takes it off the list when it fails
        if (clean(*p) && Evict(*p)) {
          ++evictions_;
          evicted = true;
          break;
        }
        p = next;
      }
    }
    if (evicted) continue;
    // Only dirty pages left: spill the least recently used one (P6).
    Page* victim = nullptr;
    for (Page* p = lru_head_; p; p = p->lru_next) {
      if (p->state == Page::kDirty && !p->writeout && (!pool_full() || p->file->pool == &pool)) {
        victim = p;
        break;
      }
    }
    if (!victim) {
      // Every page is in flight or held by a writeout: wait for one to settle (as busy, so that
      // other faults still find an idle loader).
      BeginIo();
      settled_cv_.wait(lk);
      EndIo();
      continue;
    }
    const std::string no_spill = "the transaction is larger than the cache and a dirty page of " +
                                 victim->file->name + " could not be spilled";
    const size_t vbs = victim->file->block_size;
    if (auto it = spill_free_.find(vbs); (it == spill_free_.end() || it->second.empty()) && spill_end_ + vbs > spill_reserved_) {
      // Beyond the scratch space set aside: only when a fault could not reserve, or when pages
      // in I/O held the room that dirty pages were counted on. Extend it; if the disk is full,
      // wait for those pages instead (they will free room or settle), and fail only without.
      Status st = ReserveSpill(lk, spill_end_ + vbs, true);
      if (!st.ok() && AnyTransientSlot()) {
        BeginIo();
        settled_cv_.wait(lk);
        EndIo();
      } else if (!st.ok()) {
        *error = st.WithContext(no_spill);
        return std::nullopt;
      }
      continue;  // mu_ was released: look again
    }
    auto offset = AllocSpill(vbs);
    if (!offset.ok()) {
      *error = offset.status();
      return std::nullopt;
    }
    Page& v = *victim;
    FileState* vf = v.file;
    if (!UnmapAll(v)) {  // still writable somewhere: its bytes could change during the write
      *error = ErrnoStatus(errno, "unmap a dirty page of " + vf->name + " to spill it");
      FreeSpill(*offset, vf->block_size);
      return std::nullopt;
    }
    LruRemove(v);
    v.state = Page::kSpilling;
    ++vf->in_flight;
    BeginIo();
    const uint32_t vslot = static_cast<uint32_t>(v.slot);
    lk.unlock();
    Status st = PwriteFull(spill_fd_, vf->pool->SlotAddr(static_cast<int32_t>(vslot)), vf->block_size,
                           static_cast<off_t>(*offset), "spill a dirty page of " + vf->name);
    lk.lock();
    EndIo();
    --vf->in_flight;
    if (!st.ok()) {
      FreeSpill(*offset, vf->block_size);
      v.state = Page::kDirty;
      if (v.invalidated) {  // aborted meanwhile: its changes are gone anyway
        v.invalidated = false;
        Erase(v);
      } else {
        LruPush(v);
        WakeWaiters(v);
      }
      *error = st.WithContext(no_spill);
      return std::nullopt;
    }
    ++spills_;
    (void)FreeSlot(v);  // unmapped above: cannot fail
    v.spill_offset = *offset;
    v.state = Page::kSpilled;
    if (v.invalidated) {
      v.invalidated = false;
      Erase(v);
    } else {
      WakeWaiters(v);
    }
  }
}

bool PagerImpl::FreeSlot(Page& p) {
  if (p.room) {  // mapped from its file: no slot, but its room in the budget
    if (!UnmapAll(p)) return false;
    DropFileMap(p);
    p.room = false;
    resident_bytes_ -= p.file->block_size;
    if (p.state == Page::kMapped) file_bytes_ -= p.file->block_size;
    settled_cv_.notify_all();
    return true;
  }
  if (p.slot < 0) return true;
  if (!UnmapAll(p)) return false;  // a view still shows the slot: it must not be reused
  Pool& pool = *p.file->pool;
  pool.free.push_back(static_cast<uint32_t>(p.slot));
  p.slot = -1;
  resident_bytes_ -= pool.block_size;
  settled_cv_.notify_all();
  return true;
}

}  // namespace bigarray::pager

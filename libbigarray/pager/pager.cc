// The pager (docs/pager.md): the page state machine that joins the pool, the page tables, the
// loaders and the writeout (section 3, "Page states"; section 3b, "Mapped blocks"): Process,
// MapFromFile, Erase, Evict and doomed pages, the LRU list; construction, files and stats. The
// locking and memory rules of the whole pager are at the top of pager_impl.h, which lists the
// other files.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <string>
#include <system_error>

#include "pager/fault_source.h"
#include "pager/file_ranges.h"
#include "pager/io.h"
#include "pager/map_budget.h"
#include "pager/pager_impl.h"

namespace bigarray::pager {

// ---- construction ----------------------------------------------------------------------------

PagerImpl::PagerImpl(const PagerOptions& o) : options_(o) { sem_init(&work_, 0, 0); }

PagerImpl::~PagerImpl() {
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    threads = std::move(loaders_);
  }
  for (size_t i = 0; i < threads.size(); ++i) sem_post(&work_);
  for (auto& t : threads) t.join();
  if (spill_fd_ >= 0) close(spill_fd_);
  sem_destroy(&work_);
}

Result<std::shared_ptr<Pager>> Pager::Create(const PagerOptions& options) {
  auto impl = std::make_shared<PagerImpl>(options);
  BA_RETURN_IF_ERROR(impl->Start());
  return std::shared_ptr<Pager>(new Pager(std::move(impl)));
}

Pager::~Pager() = default;

// ---- files -----------------------------------------------------------------------------------

Result<std::shared_ptr<PagedFile>> Pager::OpenFile(std::shared_ptr<BlockSource> source,
                                                   size_t block_size, std::string name) {
  return impl_->OpenFile(std::move(source), block_size, std::move(name));
}

Result<std::shared_ptr<PagedFile>> PagerImpl::OpenFile(std::shared_ptr<BlockSource> source,
                                                       size_t block_size, std::string name) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  if (block_size == 0 || block_size % page != 0) {
    return InvalidArgument("block size " + std::to_string(block_size) +
                           " is not a positive multiple of the page size " + std::to_string(page));
  }
  std::lock_guard lock(mu_);
  auto& pool = pools_[block_size];
  if (!pool) {
    max_block_size_ = std::max<uint64_t>(max_block_size_, block_size);
    auto p = std::make_unique<Pool>();
    p->block_size = block_size;
    uint64_t slots = std::max<uint64_t>(Budget() / block_size, kMinBudgetBlocks);
    if (slots > kMaxSlots) {
      if (options_.logger) {
        options_.logger->warn("cache of {} blocks of {} bytes capped at {} blocks (mapping limit)",
                              slots, block_size, kMaxSlots);
      }
      slots = kMaxSlots;
    }
    p->capacity = static_cast<uint32_t>(slots);
    p->fd = memfd_create("bigarray-cache", MFD_CLOEXEC);
    if (p->fd < 0) return ErrnoStatus(errno, "create the page cache (memfd_create)");
    if (ftruncate(p->fd, static_cast<off_t>(slots * block_size)) != 0) {
      return ErrnoStatus(errno, "size the page cache");
    }
    // Blocks of whole 2 MiB pages get a 2 MiB-aligned pool that asks for huge pages: where the
    // kernel gives them to a memfd (transparent_hugepage/shmem_enabled advise, always or
    // within_size), a slot is one 2 MiB page, moved into views as one PMD entry, and its first
    // access after a move costs one page-table entry instead of 512 (docs/pager.md, "Huge pages").
    const bool huge = block_size % kHuge == 0;
    const size_t bytes = slots * block_size;
    void* base = huge ? MapAligned(bytes, PROT_READ | PROT_WRITE, MAP_SHARED, p->fd, 0)
                      : mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, p->fd, 0);
    if (base == MAP_FAILED) return ErrnoStatus(errno, "map the page cache");
    // A hint: refused (a kernel without THP), the pool has pages of 4 KiB, as it would anyway.
    if (huge) (void)madvise(base, bytes, MADV_HUGEPAGE);
    p->base = static_cast<std::byte*>(base);
    p->read_only.assign(slots, 0);
    if (options_.prefault_cache) {
      try {
        p->StartPrefault();
      } catch (const std::system_error& e) {
        // Only an optimization: without it, each page's first load faults its memory in.
        if (options_.logger) {
          options_.logger->warn("could not create a thread to prefault the cache ({}); going on without", ErrorText(e));
        }
      }
    }
    pool = std::move(p);
  }
  auto state = std::make_unique<FileState>();
  state->id = next_file_id_++;
  state->source = std::move(source);
  state->block_size = block_size;
  state->name = name;
  state->pool = pool.get();
  auto file = std::shared_ptr<PagedFile>(new PagedFile());
  file->pager_ = shared_from_this();
  file->source_ = state->source;
  file->block_size_ = block_size;
  file->name_ = std::move(name);
  file->state_ = state.get();
  state->handle = file;
  files_[state->id] = std::move(state);
  return file;
}

PagedFile::~PagedFile() { pager_->CloseFile(state_); }

void PagerImpl::CloseFile(FileState* f) {
  std::unique_lock lk(mu_);
  settled_cv_.wait(lk, [&] { return f->in_flight == 0; });
  for (auto& [block, p] : f->pages) {
    LruRemove(p);
    if (p.state == Page::kDirty || p.state == Page::kSpilled) --dirty_blocks_, dirty_bytes_ -= p.file->block_size;
    if (p.state == Page::kSpilled) FreeSpill(p.spill_offset, p.file->block_size);
    (void)FreeSlot(p);  // every Mapping of the file is gone: nothing is mapped
    for (Request& r : p.waiters) Complete(r, FaultOutcome::kForeign, Status());
  }
  files_.erase(f->id);
  ReleaseSpillIfClean();
  settled_cv_.notify_all();
}

FileState* PagerImpl::FindFile(uint64_t id) {
  auto it = files_.find(id);
  return it == files_.end() ? nullptr : it->second.get();
}

// The state machine of one request. See docs/pager.md for the diagram.
void PagerImpl::Process(Request req) {
  std::unique_lock lk(mu_);
  FileState* f = FindFile(req.file_id);
  if (!f) {
    Complete(req, FaultOutcome::kForeign, Status());
    return;
  }
  bool copy = false;  // the file cannot show this block: load a copy
  for (;;) {
    auto it = f->pages.find(req.block);
    if (it == f->pages.end() && !req.write && !copy && f->source->MapsBlocks()) {
      // Empty, and a read wants it: show it from its file if the file can.
      const MapOutcome outcome = MapFromFile(lk, f, req);
      if (outcome == MapOutcome::kDone) return;
      copy = outcome == MapOutcome::kCopy;
      continue;
    }
    if (it == f->pages.end()) {
      // Empty: load it.
      Status error;
      auto slot = AllocateSlot(lk, *f->pool, req.prefetch, &error);
      if (!slot) {
        if (!error.ok()) Complete(req, FaultOutcome::kFatal, error);
        return;  // prefetch given up
      }
      if (f->pages.count(req.block)) {  // someone loaded it while AllocateSlot had the lock released
        f->pool->free.push_back(*slot);
        resident_bytes_ -= f->block_size;
        continue;
      }
      if (req.prefetch) ++readahead_loads_;
      Page& p = f->pages[req.block];
      p.file = f;
      p.block = req.block;
      p.state = Page::kLoading;
      p.slot = static_cast<int32_t>(*slot);
      ++f->in_flight;
      BeginIo();
      YieldReadaheadTurn();  // a copy reads its source (the disk, a server): reads overlap
      Status st;
      do {
        p.invalidated = false;
        lk.unlock();
        ++loads_;
        st = f->source->LoadBlock(req.block, std::span<std::byte>(f->pool->SlotAddr(p.slot), f->block_size));
        lk.lock();
      } while (st.ok() && p.invalidated);  // W5: invalidated while loading: load again
      EndIo();
      --f->in_flight;
      if (!st.ok()) {
        const Status failed = st.WithContext(f->name + " block " + std::to_string(req.block));
        (void)FreeSlot(p);  // never mapped: cannot fail
        std::vector<Request> waiters = std::move(p.waiters);
        f->pages.erase(req.block);
        settled_cv_.notify_all();
        for (Request& r : waiters) Complete(r, FaultOutcome::kFatal, failed);
        Complete(req, FaultOutcome::kFatal, failed);
        return;
      }
      p.state = Page::kClean;
      LruPush(p);
      WakeWaiters(p);
      if (req.prefetch) {
        if (req.map_after_prefetch) MapInto(p, req.mapping);  // no fault when the run gets here
        return;
      }
      continue;
    }

    Page& p = it->second;
    if (p.doomed) {  // to be dropped but still visible: try again; nobody may use it meanwhile
      if (Erase(p)) continue;
      if (!req.prefetch) Complete(req, FaultOutcome::kFatal, DoomedError());
      return;
    }
    switch (p.state) {
      case Page::kLoading:
      case Page::kSpilling:
        if (req.prefetch) return;
        p.waiters.push_back(std::move(req));
        return;
      case Page::kSpilled: {
        if (req.prefetch) return;
        if (p.writeout) {
          p.waiters.push_back(std::move(req));
          return;
        }
        // Bring the dirty data back from the scratch file.
        const std::string what = f->name + " block " + std::to_string(req.block);
        auto give_up = [&](const Status& st) {  // back to kSpilled, or dropped if aborted meanwhile
          --f->in_flight;
          p.from_spill = false;
          if (p.invalidated) {
            p.invalidated = false;
            p.state = Page::kSpilled;
            Erase(p);
          } else {
            p.state = Page::kSpilled;
            WakeWaiters(p);
          }
          Complete(req, FaultOutcome::kFatal, st.WithContext(what));
        };
        Status error;
        const uint64_t offset = p.spill_offset;
        p.state = Page::kSpilling;  // pinned while we find a slot
        ++f->in_flight;
        auto slot = AllocateSlot(lk, *f->pool, false, &error);
        if (!slot) {
          give_up(error);
          return;
        }
        p.state = Page::kLoading;
        p.from_spill = true;
        p.slot = static_cast<int32_t>(*slot);
        BeginIo();
        lk.unlock();
        Status st = PreadFull(spill_fd_, f->pool->SlotAddr(p.slot), f->block_size,
                              static_cast<off_t>(offset), "read back a spilled page");
        lk.lock();
        EndIo();
        if (!st.ok()) {
          (void)FreeSlot(p);  // never mapped: cannot fail
          give_up(st);
          return;
        }
        --f->in_flight;
        p.from_spill = false;
        FreeSpill(offset, f->block_size);
        if (p.invalidated) {  // aborted or invalidated meanwhile: the changes are gone
          p.invalidated = false;
          p.state = Page::kDirty;
          Erase(p);
          continue;
        }
        p.state = Page::kDirty;
        LruPush(p);
        WakeWaiters(p);
        continue;
      }
      case Page::kClean:
      case Page::kDirty:
      case Page::kMapped: {
        if (req.prefetch) return;
        const uint64_t bit = uint64_t{1} << req.mapping.index;
        const bool here = req.mapping.serial != 0 && req.mapping.serial == f->mappings[req.mapping.index].serial;
        auto read_only_here = [&] { return here && (p.mapped & bit) && !(p.writable & bit); };
        // Read or write, where the CPU does not say (pager.md, "Read or write"). The page being
        // mapped read-only here now proves nothing: read-ahead, another thread or a Load may
        // have mapped it after this access faulted. It is a write only if this thread's earlier
        // read fault here was retried against the page mapped read-only, and the page stayed so.
        if (req.access_unknown && read_only_here()) {
          for (const Page::ReadRetry& r : p.read_retries) {
            if (r.tid == req.tid && r.index == static_cast<int8_t>(req.mapping.index)) req.write = true;
          }
        }
        if (req.write && p.state == Page::kMapped) {
          // A first write to a block shown from its file: it becomes a copy in the pool (the
          // file's pages are the committed state, shared with every reader).
          if (!Evict(p)) {
            Complete(req, FaultOutcome::kFatal,
                     ErrnoStatus(errno, "unmap " + f->name + " block " + std::to_string(req.block) + " to write it"));
            return;
          }
          copy = true;
          continue;
        }
        if (req.write && p.writeout) {  // being committed: the write belongs to the next transaction
          p.waiters.push_back(std::move(req));
          return;
        }
        if (req.write && p.state == Page::kClean && !reserve_failed_ &&
            SpillSpaceFor(dirty_bytes_ + f->block_size) > spill_reserved_) {
          // Set aside the scratch space this page may need once spilled, before it is dirty. A
          // write announced with ReserveForWrite never gets here; an unannounced one (a raw
          // view) that finds the disk full goes on without: the disk may have room again when
          // a spill really needs it, and only then would the fault have to fail.
          Status st = ReserveSpill(lk, SpillSpaceFor(dirty_bytes_ + f->block_size), true);
          if (!st.ok()) {
            reserve_failed_ = true;
            if (options_.logger) options_.logger->warn("{} (a write to {} block {} goes on without)", st.ToString(), f->name, req.block);
          }
          f = FindFile(req.file_id);  // mu_ was released: look again
          if (!f) {
            Complete(req, FaultOutcome::kForeign, Status());
            return;
          }
          continue;
        }
        if (req.write && p.state == Page::kClean) {
          p.state = Page::kDirty;
          ++dirty_blocks_, dirty_bytes_ += p.file->block_size;
        }
        const bool moves_populated = p.state == Page::kMapped && p.file_map;  // its entries go along
        if (req.mapping.serial != 0 && !MapInto(p, req.mapping)) {
          Complete(req, FaultOutcome::kFatal,
                   ErrnoStatus(errno, "map " + f->name + " block " + std::to_string(req.block) +
                                          (errno == ENOMEM ? " (map entries: vm.max_map_count reached)" : "")));
          return;
        }
        if (req.access_unknown && !req.write && read_only_here()) {
          p.read_retries[p.next_read_retry++ % 4] = Page::ReadRetry{req.tid, static_cast<int8_t>(req.mapping.index)};
        }
        LruRemove(p);
        LruPush(p);
        // A block mapped from its file without its entries: filled before the access goes on,
        // which would fault them in otherwise (section 3b, step 3). Releases mu_: p unused after.
        if (req.mapping.serial != 0 && !moves_populated) PopulateShown(lk, p, req.mapping);
        Complete(req, FaultOutcome::kRetry, Status());
        return;
      }
    }
  }
}

namespace {
// Whether `r` is shown lazily for `req` (file_ranges.h): a slot with a check, or one a read-ahead
// asks for; a reader that waits for a slot without a check gets a populated mapping, whose
// populate reports a read error as an error (MapChecked).
bool Lazily(const Request& req, const FileRange& r) { return ShownLazily(r) && (r.check || req.prefetch); }

// Prepares `r` (Lazily) to be shown lazily: checks it (CheckRange), or (a read-ahead without a
// check) reads it into the page cache through its file's window (CheckWindows::Read); filling
// the view's entries (PopulateShown), or the reader's faults where that failed, read what it did
// not. `how`: as CheckRange. False when it could not be read (the caller loads a copy, whose own
// read reports the error) or, with *error set, when the check failed.
bool PrepareLazily(const FileRange& r, SlotRead how, CheckWindows& windows, Status* error) {
  if (r.check) return CheckRange(r, how, windows, error);
  // A hint (file_ranges.h, Cached), read in 2 MiB folios through the file's window if it can be.
  if (!how.cached && !windows.Read(r)) (void)readahead(r.fd, r.offset, r.length);
  return true;
}
}  // namespace

PagerImpl::MapOutcome PagerImpl::MapFromFile(std::unique_lock<std::mutex>& lk, FileState* f, Request& req) {
  Status error;
  if (!AllocateSlot(lk, *f->pool, req.prefetch, &error, /*need_slot=*/false)) {
    if (!error.ok()) Complete(req, FaultOutcome::kFatal, error);
    return MapOutcome::kDone;  // or a prefetch given up
  }
  if (f->pages.count(req.block)) {  // someone loaded it while AllocateSlot had the lock released
    resident_bytes_ -= f->block_size;
    return MapOutcome::kRetry;
  }
  Page& p = f->pages[req.block];
  p.file = f;
  p.block = req.block;
  p.state = Page::kLoading;
  p.from_file = true;
  p.room = true;
  ++f->in_flight;
  BeginIo();
  // A read-ahead that will map the block into a view announces it there while it checks a
  // cached slot: the reader, if it gets there first, polls for the end instead of posting a
  // fault (section 6, "Announced loads"). Withdrawn on return, after the MapInto below.
  uintptr_t view_addr = 0;
  if (req.prefetch && req.map_after_prefetch && req.mapping.serial != 0) {
    const MappingSlot& m = f->mappings[req.mapping.index];
    if (m.serial == req.mapping.serial && req.block >= m.first && req.block - m.first < m.count) {
      view_addr = reinterpret_cast<uintptr_t>(m.base + (req.block - m.first) * f->block_size);
    }
  }
  Announcement announced;
  Result<std::optional<FileRange>> range = std::optional<FileRange>();
  std::byte* map = nullptr;
  bool lazy = false;  // shown by mapping the range into views (their entries filled by PopulateShown)
  Status check;
  do {
    p.invalidated = false;
    if (map) munmap(map, (*range)->length);  // W5: invalidated meanwhile: map the new one
    map = nullptr;
    lazy = false;
    check = Status();
    lk.unlock();
    range = f->source->MapBlock(req.block);
    if (range.ok() && *range && (*range)->length > 0) {
      // Neither way retries the other: a range that could not be read is loaded by copy, whose
      // read reports the error (and a check is fed each byte once).
      // A read-ahead keeps its turn (section 8, "Read-ahead loaders") for a slot it checks,
      // whether in the page cache (CPU work) or not: the slots of a run are then read from the
      // disk one after the other, in file order, which the kernel's read-ahead follows (several
      // loaders reading a slot each read slower here: section 8). Any other read of the disk
      // lets another loader take the next read-ahead meanwhile: such reads overlap.
      const bool lazily = Lazily(req, **range);
      const bool cached = lazily && Cached(**range);
      if (req.prefetch && !cached && !(lazily && (*range)->check)) {
        lk.lock();
        YieldReadaheadTurn();
        lk.unlock();
      }
      if (lazily) {
        if (cached && view_addr != 0 && (*range)->check) announced.Make(view_addr, f->block_size);
        // A fault's slot is read exactly; a run's, with the kernel reading on (io.h, SlotRead).
        lazy = PrepareLazily(**range, SlotRead{.cached = cached, .fault = !req.prefetch}, check_windows_, &check);
      } else {
        map = MapChecked(**range, &check);
      }
    }
    lk.lock();
  } while (p.invalidated);  // W5: whatever it found, the block changed meanwhile
  EndIo();
  --f->in_flight;
  p.from_file = false;
  const bool mapped = range.ok() && *range && ((*range)->length == 0 || map || lazy);
  if (!mapped) {
    // Dropped: either the file cannot show it (load a copy) or reading it failed.
    std::vector<Request> waiters = std::move(p.waiters);
    resident_bytes_ -= f->block_size;
    f->pages.erase(req.block);
    settled_cv_.notify_all();
    for (Request& r : waiters) Enqueue(std::move(r));
    Status failed = !range.ok() ? range.status() : check;
    if (failed.ok()) return MapOutcome::kCopy;
    if (!req.prefetch) Complete(req, FaultOutcome::kFatal, failed.WithContext(f->name + " block " + std::to_string(req.block)));
    return MapOutcome::kDone;
  }
  ++file_maps_;
  if (req.prefetch) ++readahead_loads_;
  p.state = Page::kMapped;
  p.range = std::move(**range);
  p.range.check = nullptr;  // checked: the closure is not needed any more
  p.file_map = map;
  if (map) ChargeMapEntries(p, 1);
  file_bytes_ += f->block_size;
  LruPush(p);
  WakeWaiters(p);
  if (!req.prefetch) return MapOutcome::kRetry;  // the page state machine maps it and completes
  // A populated file_map takes its entries along into the view; a lazy slot gets them filled.
  const bool populated = p.file_map != nullptr;
  if (req.map_after_prefetch && MapInto(p, req.mapping) && !populated) PopulateShown(lk, p, req.mapping);
  return MapOutcome::kDone;
}

// Drops a stable page (clean or dirty) and its RAM. If a view still shows it (its mapping could
// not be replaced: map entries ran out), the page is doomed instead: off the LRU list, kept with
// its slot, and retried by RetryDoomed at every boundary, which fails while any is left.
bool PagerImpl::Erase(Page& p) {
  LruRemove(p);
  if (!FreeSlot(p)) {
    if (!p.doomed) {
      p.doomed = true;
      doomed_.emplace_back(p.file->id, p.block);
    }
    return false;
  }
  if (p.state == Page::kDirty || p.state == Page::kSpilled) --dirty_blocks_, dirty_bytes_ -= p.file->block_size;
  if (p.state == Page::kSpilled) FreeSpill(p.spill_offset, p.file->block_size);
  std::vector<Request> waiters = std::move(p.waiters);
  FileState* f = p.file;
  f->pages.erase(p.block);
  for (Request& r : waiters) Enqueue(std::move(r));
  return true;
}

bool PagerImpl::Evict(Page& p) { return UnmapAll(p) && Erase(p); }

void PagerImpl::RetryDoomed() {
  std::vector<std::pair<uint64_t, uint64_t>> still;
  for (const auto& [file_id, block] : std::exchange(doomed_, {})) {
    FileState* f = FindFile(file_id);
    if (!f) continue;
    auto it = f->pages.find(block);
    if (it == f->pages.end() || !it->second.doomed) continue;  // dropped meanwhile
    if (!Erase(it->second)) still.emplace_back(file_id, block);
  }
  doomed_.insert(doomed_.end(), still.begin(), still.end());
}

Status PagerImpl::DoomedError() const {
  if (doomed_.empty()) return Status::Ok();
  const auto& [file_id, block] = doomed_.front();
  auto it = files_.find(file_id);
  const std::string first = (it == files_.end() ? std::string("a closed file") : it->second->name) + " block " +
                            std::to_string(block);
  return ResourceExhausted(std::to_string(doomed_.size()) + " cached block(s) (first: " + first +
                           ") must be dropped from the views but could not be unmapped: the process is at "
                           "its limit of memory map entries (vm.max_map_count); release views or other "
                           "mappings, then abort again");
}

void PagerImpl::LruRemove(Page& p) {
  if (!p.in_lru) return;
  (p.lru_prev ? p.lru_prev->lru_next : lru_head_) = p.lru_next;
  (p.lru_next ? p.lru_next->lru_prev : lru_tail_) = p.lru_prev;
  p.lru_prev = p.lru_next = nullptr;
  p.in_lru = false;
}

void PagerImpl::LruPush(Page& p) {
  p.lru_prev = lru_tail_;
  p.lru_next = nullptr;
  (lru_tail_ ? lru_tail_->lru_next : lru_head_) = &p;
  lru_tail_ = &p;
  p.in_lru = true;
}

PagerStats Pager::stats() const { return impl_->Stats(); }

PagerStats PagerImpl::Stats() {
  PagerStats s;
  s.faults = faults_;
  s.loads = loads_;
  s.file_maps = file_maps_;
  s.readahead_loads = readahead_loads_;
  s.evictions = evictions_;
  s.spills = spills_;
  s.map_reclaims = map_reclaims_;
  std::lock_guard lock(mu_);
  s.resident_bytes = resident_bytes_;
  s.file_mapped_bytes = file_bytes_;
  s.dirty_blocks = dirty_blocks_;
  s.dirty_bytes = dirty_bytes_;
  s.map_entries = map_entries_;
  s.loader_threads = loaders_.size();
  s.scratch_reserved_bytes = spill_reserved_;
  return s;
}

}  // namespace bigarray::pager

// The pager (docs/pager.md): page table, RAM pool, loader threads, eviction, spill, writeout.
//
// Locking: one mutex, mu_, guards every page record, the LRU list, the pools' free lists, the
// files and mappings tables and the request queue. It is never held across a BlockSource load,
// a spill read or write, or a wait for a fault: a page is put in a transient state (kLoading,
// kSpilling) first, which pins it, and mu_ is released for the I/O. Threads that need a page in
// a transient state park their request on the page; whoever ends the transient state re-queues
// the parked requests. So different blocks load in parallel, and no thread waits behind
// another block's I/O (semantics.md P9).
//
// Memory: a page's RAM is a slot of a memfd pool (one per block size), which the pager maps once
// to copy into and out of. Mapping a page into a Mapping moves the slot's page-table entries
// there (mremap with MREMAP_DONTUNMAP) instead of creating new ones, and unmapping moves them
// back: building page tables costs far more here than copying 2 MiB, and this way a page costs
// no new faults and is counted once in RSS. Freed slots keep their RAM and their entries: a
// load is a copy into warm, mapped memory.
#include "pager/pager.h"

#include <semaphore.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "pager/fault_source.h"
#include "pager/map_budget.h"

namespace bigarray::pager {
namespace {


constexpr unsigned kMaxMappingsPerFile = 64;  // bits of Page::mapped
constexpr uint32_t kMaxSlots = 16384;  // bounds a pool's memfd and bookkeeping; map entries
                                       // are budgeted separately (MapBudget)
constexpr unsigned kMinBudgetBlocks = 8;

// "Resource temporarily unavailable (EAGAIN)": the text and the name of a system error.
std::string ErrorText(const std::system_error& e) {
  const char* name = e.code().category() == std::generic_category() || e.code().category() == std::system_category()
                         ? strerrorname_np(e.code().value())
                         : nullptr;
  return e.code().message() + (name ? std::string(" (") + name + ")" : std::string());
}

Status PreadFull(int fd, std::byte* dst, size_t n, off_t off, const std::string& what) {
  while (n > 0) {
    ssize_t r = pread(fd, dst, n, off);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, what);
    }
    if (r == 0) return IOError(what + ": unexpected end of file");
    dst += r;
    off += r;
    n -= static_cast<size_t>(r);
  }
  return Status::Ok();
}

Status PwriteFull(int fd, const std::byte* src, size_t n, off_t off, const std::string& what) {
  while (n > 0) {
    ssize_t r = pwrite(fd, src, n, off);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, what);
    }
    src += r;
    off += r;
    n -= static_cast<size_t>(r);
  }
  return Status::Ok();
}

// A pool of RAM pages of one size: slots of a memfd, mapped once (read-write) for the pager's own
// copies. A slot's page-table entries live either here or, while the page is mapped, in its
// home Mapping (moved there by MapInto and back by UnmapAll): RSS counts each page once, and a
// recycled slot is written without faults.
struct Pool {
  size_t block_size = 0;
  int fd = -1;
  std::byte* base = nullptr;     // capacity * block_size bytes, MAP_SHARED
  uint32_t capacity = 0;
  uint32_t next_fresh = 0;       // slots at or above it were never used
  std::vector<uint32_t> free;    // used before, RAM still allocated: reuse first
  // 1: the slot's range of the pool mapping was left read-only (a failed mprotect while map
  // entries ran out); AllocateSlot makes it writable again before handing the slot out.
  std::vector<uint8_t> read_only;
  std::byte* SlotAddr(int32_t slot) const { return base + static_cast<size_t>(slot) * block_size; }

  // Faults the whole pool in, on a thread of its own (PagerOptions::prefault_cache). Throws
  // std::system_error when no thread can be created.
  void StartPrefault() {
    warmer = std::thread([this] {
      constexpr int kPopulateWrite = 23;  // MADV_POPULATE_WRITE, Linux 5.14
      const size_t chunk = std::max<size_t>(block_size, 8u << 20);
      const size_t total = static_cast<size_t>(capacity) * block_size;
      for (size_t off = 0; off < total && !stop_warming.load(std::memory_order_relaxed); off += chunk) {
        // A range whose pages were moved into a view (and write-protected) fails: skip it.
        (void)madvise(base + off, std::min(chunk, total - off), kPopulateWrite);
      }
    });
  }
  ~Pool() {
    stop_warming = true;
    if (warmer.joinable()) warmer.join();
    if (base) munmap(base, static_cast<size_t>(capacity) * block_size);
    if (fd >= 0) close(fd);
  }
  std::thread warmer;
  std::atomic<bool> stop_warming{false};
};

struct LoadWaiter {
  std::mutex mu;
  std::condition_variable cv;
  size_t remaining = 0;
  Status error;
};

struct MappingRef {
  uint64_t file_id = 0;
  unsigned index = 0;
  uint64_t serial = 0;  // distinguishes a mapping from a later one in the same index
};

struct Request {
  uint64_t file_id = 0;
  uint64_t block = 0;
  bool write = false;
  bool access_unknown = false;  // a fault the CPU did not say was a read or a write
  pid_t tid = 0;                // the faulting thread
  bool prefetch = false;
  MappingRef mapping;  // where to map the page once resident; serial 0: nowhere
  bool map_after_prefetch = false;  // a prefetch maps its page too (all but the run's marker)
  FaultRecord* fault = nullptr;
  std::shared_ptr<LoadWaiter> waiter;
};

}  // namespace

struct Page {
  enum State : uint8_t { kLoading, kClean, kDirty, kSpilling, kSpilled };
  State state = kLoading;
  bool from_spill = false;   // kLoading: the data comes from the spill file; becomes kDirty
  bool invalidated = false;  // kLoading/kSpilling: drop the result when done
  bool writeout = false;     // held by a Writeout: write-protected, not evictable
  bool doomed = false;       // to be dropped, but still visible in a mapping (map entries ran
                             // out): retried at every boundary, which fails meanwhile
  uint8_t map_cost = 0;      // map entries charged for this page's mappings (MapBudget)
  int8_t home = -1;          // the mapping holding the slot's page-table entries; -1: the pool
  int32_t slot = -1;
  uint64_t spill_offset = 0;
  uint64_t mapped = 0;    // bit i: mapped in the file's mapping i
  uint64_t writable = 0;  // subset of mapped with PROT_WRITE
  FileState* file = nullptr;
  uint64_t block = 0;
  Page* lru_prev = nullptr;  // in the LRU list iff state is kClean or kDirty
  Page* lru_next = nullptr;
  bool in_lru = false;
  std::vector<Request> waiters;
  // Read or write, where the CPU does not say (FaultRecord::kUnknown): threads whose read fault
  // on this page was retried while the page was mapped read-only in mapping `index`. Another
  // fault of such a thread there, with the page still mapped read-only, can only be a write.
  struct ReadRetry {
    pid_t tid = 0;
    int8_t index = -1;
  };
  ReadRetry read_retries[4];
  uint8_t next_read_retry = 0;
  void ForgetReadRetries(int index) {  // -1: every mapping
    for (ReadRetry& r : read_retries) {
      if (index < 0 || r.index == index) r = ReadRetry{};
    }
  }
};

struct MappingSlot {
  uint64_t serial = 0;  // 0: free
  std::weak_ptr<Mapping> owner;
  std::byte* base = nullptr;
  uint64_t first = 0;
  uint64_t count = 0;
};

class FileState {
 public:
  uint64_t id = 0;
  std::weak_ptr<PagedFile> handle;
  std::shared_ptr<BlockSource> source;
  size_t block_size = 0;
  std::string name;
  Pool* pool = nullptr;
  std::unordered_map<uint64_t, Page> pages;
  std::vector<MappingSlot> mappings;  // grows on demand, up to kMaxMappingsPerFile
  uint64_t last_fault = UINT64_MAX;  // read-ahead: where the last fault was
  uint64_t extent = UINT64_MAX;      // blocks the file has now: read-ahead stops there
  unsigned in_flight = 0;               // pages in a transient state
};

class PagerImpl final : public FaultTarget, public std::enable_shared_from_this<PagerImpl> {
 public:
  explicit PagerImpl(const PagerOptions& o);
  virtual ~PagerImpl();
  Status Start();

  void NotifyFault() noexcept override { sem_post(&work_); }

  Result<std::shared_ptr<PagedFile>> OpenFile(std::shared_ptr<BlockSource> source, size_t block_size,
                                              std::string name);
  void CloseFile(FileState* f);
  Result<std::shared_ptr<Mapping>> Map(PagedFile& file, uint64_t first, uint64_t count);
  void Unmap(Mapping& m);
  Status Load(Mapping& m, size_t offset, size_t length);
  Result<WriteReservation> ReserveForWrite(FileState* f, uint64_t first, uint64_t end, uint64_t max_blocks);
  void EndReservation(uint64_t bytes);
  void Invalidate(FileState* f, uint64_t first, uint64_t end);
  Result<std::unique_ptr<Writeout>> BeginWriteout();
  Result<std::span<const std::byte>> WriteoutData(Writeout& w, size_t i);
  void FinishWriteout(Writeout& w, bool committed);
  Status Abort();
  PagerStats Stats();
  void SetExtent(FileState* f, uint64_t blocks);

 private:
  void LoaderMain();
  // Bracket blocking I/O on a loader thread. BeginIo starts another loader when none would be
  // left idle, so a new fault never waits behind another block's I/O (P9). REQUIRES: mu_ held.
  void BeginIo();
  void EndIo() { --busy_loaders_; }
  void HandleFault(FaultRecord* r);
  void Process(Request req);
  void Complete(Request& req, FaultOutcome outcome, const Status& error);
  void WakeWaiters(Page& p);
  void Enqueue(Request req);  // REQUIRES: mu_ held

  // REQUIRES: mu_ held (lk). May release and re-acquire it (to spill). nullopt: no slot
  // (prefetch only, or an error stored in *error).
  std::optional<uint32_t> AllocateSlot(std::unique_lock<std::mutex>& lk, Pool& pool, bool prefetch,
                                       Status* error);
  // The rest REQUIRE mu_ held. Those returning bool report failure with errno set.
  bool FreeSlot(Page& p);                        // false: still mapped somewhere, slot kept
  bool MapInto(Page& p, const MappingRef& ref);
  bool UnmapAll(Page& p);                        // false: still visible in some mapping
  bool WriteProtect(Page& p);
  bool Erase(Page& p);                           // p stable; false: p is doomed instead
  // Map entries (MapBudget): unmaps least recently used pages (they stay resident) until `need`
  // more entries fit with room to spare. Never touches `keep`. Returns whether any was freed.
  bool ReclaimMapEntries(uint64_t need, const Page* keep);
  void ChargeMapEntries(Page& p, int delta);
  bool MakeSlotWritable(Pool& pool, uint32_t slot, const Page* keep);
  // Unmaps a clean page for eviction, then erases it; false (the page untouched but for the
  // mappings it could leave) when it is still visible somewhere. Eviction is optional: a page
  // that cannot go now stays clean and resident, and is never doomed for it.
  bool Evict(Page& p);
  void RetryDoomed();
  Status DoomedError() const;
  void LruRemove(Page& p);
  void LruPush(Page& p);
  FileState* FindFile(uint64_t id);
  uint64_t Budget() const;
  // Scratch space (docs/pager.md, "Scratch space"). The rest REQUIRE mu_ held.
  Status OpenSpill();
  Result<uint64_t> AllocSpill(size_t block_size);  // an offset below spill_reserved_ (see AllocateSlot)
  void FreeSpill(uint64_t offset, size_t block_size);
  // Dirty bytes the cache holds whatever else is resident, and the scratch space that `dirty`
  // bytes of dirty data may need: all of it beyond that, and never less than what spills use.
  uint64_t DirtyBytesInRam() const;
  uint64_t SpillSpaceFor(uint64_t dirty) const;
  // Allocates the spill file up to at least `bytes`, in chunks. Releases mu_ (lk) for the I/O.
  // `loader`: called on a loader thread, which counts as busy while it waits for another's.
  Status ReserveSpill(std::unique_lock<std::mutex>& lk, uint64_t bytes, bool loader);
  // Gives the spill file's space back once nothing is dirty, spilled or announced.
  void ReleaseSpillIfClean();
  bool AnyTransientSlot() const;  // a page in I/O holds a slot (it will free room or settle)

  // Immutable after construction.
  const PagerOptions options_;
  sem_t work_;

  // Guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable settled_cv_;  // a transient page became stable, or a slot was freed
  std::map<size_t, std::unique_ptr<Pool>> pools_;
  std::unordered_map<uint64_t, std::unique_ptr<FileState>> files_;
  std::map<uintptr_t, MappingRef> mappings_by_address_;  // key: mapping base
  std::deque<Request> ready_;
  Page* lru_head_ = nullptr;  // least recently used
  Page* lru_tail_ = nullptr;
  uint64_t resident_bytes_ = 0;
  uint64_t dirty_blocks_ = 0;
  uint64_t dirty_bytes_ = 0;  // of the dirty blocks
  uint64_t map_entries_ = 0;  // charged to MapBudget by this pager
  bool reclaiming_ = false;   // ReclaimMapEntries is running
  bool thread_warned_ = false;  // a loader thread could not be started (warned once)
  std::vector<std::pair<uint64_t, uint64_t>> doomed_;  // (file id, block) of doomed pages
  uint64_t next_file_id_ = 1;
  uint64_t next_mapping_serial_ = 1;
  uint64_t max_block_size_ = 0;
  int spill_fd_ = -1;
  uint64_t spill_end_ = 0;
  std::map<size_t, std::vector<uint64_t>> spill_free_;  // by block size
  uint64_t spilled_pages_ = 0;
  uint64_t spill_reserved_ = 0;  // bytes of the spill file allocated ahead (>= spill_end_)
  uint64_t write_credit_ = 0;    // dirty bytes announced by live WriteReservations
  bool reserving_ = false;       // a thread extends the reservation (mu_ released for it)
  bool reserve_failed_ = false;  // a fault could not reserve: faults stop trying until a boundary
  bool stopping_ = false;
  size_t busy_loaders_ = 0;  // loader threads inside blocking I/O

  // Counters, read without the lock by Stats.
  std::atomic<uint64_t> faults_{0}, loads_{0}, readahead_loads_{0}, evictions_{0}, spills_{0},
      map_reclaims_{0};

  std::vector<std::thread> loaders_;  // guarded by mu_ (grows on demand, joined at destruction)
};

constexpr size_t kMaxLoaders = 256;

// ---- construction ----------------------------------------------------------------------------

PagerImpl::PagerImpl(const PagerOptions& o) : options_(o) { sem_init(&work_, 0, 0); }

Status PagerImpl::Start() {
  SignalFaultSource::Get();  // install the handler before any mapping exists
  const unsigned n = std::max(1u, options_.loader_threads);
  std::lock_guard lock(mu_);
  try {
    for (unsigned i = 0; i < n; ++i) loaders_.emplace_back([this] { LoaderMain(); });
  } catch (const std::system_error& e) {
    if (loaders_.empty()) {  // one is enough to work, more only make it faster
      return ResourceExhausted("could not create a thread for the pager's loader: " + ErrorText(e) +
                               "; the limit on processes or threads (ulimit -u) or on address space "
                               "(ulimit -v) may be reached");
    }
  }
  return Status::Ok();
}

void PagerImpl::BeginIo() {
  ++busy_loaders_;
  if (busy_loaders_ >= loaders_.size() && loaders_.size() < kMaxLoaders && !stopping_) {
    try {
      loaders_.emplace_back([this] { LoaderMain(); });
    } catch (const std::system_error& e) {
      // No thread to be had (ulimit -u, address space): fewer loaders means a fault may wait
      // behind another block's I/O, or behind a loader waiting for room (P9 no longer holds),
      // never that it fails.
      if (!thread_warned_ && options_.logger) {
        options_.logger->warn("could not create another loader thread ({}); going on with {}", ErrorText(e),
                              loaders_.size());
      }
      thread_warned_ = true;
    }
  }
}

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

uint64_t PagerImpl::Budget() const {
  return std::max<uint64_t>(options_.cache_bytes, kMinBudgetBlocks * max_block_size_);
}

// ---- files and mappings ----------------------------------------------------------------------

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
    void* base = mmap(nullptr, slots * block_size, PROT_READ | PROT_WRITE, MAP_SHARED, p->fd, 0);
    if (base == MAP_FAILED) return ErrnoStatus(errno, "map the page cache");
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

Result<std::shared_ptr<Mapping>> PagedFile::Map(uint64_t first_block, uint64_t block_count) {
  return pager_->Map(*this, first_block, block_count);
}

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
  void* base = mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED && errno == ENOMEM && ReclaimMapEntries(64, nullptr)) {
    base = mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  }
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
  std::lock_guard lock(mu_);
  FileState* f = m.file_->state_;
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
    ChargeMapEntries(p, -2);
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

Status Mapping::Load(size_t offset, size_t length) {
  return file_->pager_->Load(*this, offset, length);
}

Status PagerImpl::Load(Mapping& m, size_t offset, size_t length) {
  if (length == 0) return Status::Ok();
  if (offset > m.size_ || length > m.size_ - offset) {
    return OutOfRange("load of bytes [" + std::to_string(offset) + ", " +
                      std::to_string(offset + length) + ") outside a mapping of " +
                      std::to_string(m.size_) + " bytes");
  }
  const size_t bs = m.file_->block_size_;
  const uint64_t first = offset / bs, end = (offset + length + bs - 1) / bs;
  auto waiter = std::make_shared<LoadWaiter>();
  waiter->remaining = end - first;
  {
    std::lock_guard lock(mu_);
    FileState* f = m.file_->state_;
    for (uint64_t b = first; b < end; ++b) {
      Request r;
      r.file_id = f->id;
      r.block = m.first_block_ + b;
      r.mapping = MappingRef{f->id, m.index_, f->mappings[m.index_].serial};
      r.waiter = waiter;
      Enqueue(std::move(r));
    }
  }
  std::unique_lock wl(waiter->mu);
  waiter->cv.wait(wl, [&] { return waiter->remaining == 0; });
  return waiter->error;
}

// ---- the loader threads ----------------------------------------------------------------------

void PagerImpl::Enqueue(Request req) {
  ready_.push_back(std::move(req));
  sem_post(&work_);
}

void PagerImpl::LoaderMain() {
  SignalFaultSource& source = SignalFaultSource::Get();
  for (;;) {
    while (sem_wait(&work_) != 0 && errno == EINTR) {
    }
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    while (FaultRecord* r = source.Take(this)) HandleFault(r);
    for (;;) {
      Request req;
      {
        std::lock_guard lock(mu_);
        if (ready_.empty()) break;
        req = std::move(ready_.front());
        ready_.pop_front();
      }
      Process(std::move(req));
      // Faults come first: a thread is stopped on each of them.
      while (FaultRecord* r = source.Take(this)) HandleFault(r);
    }
  }
}

void PagerImpl::HandleFault(FaultRecord* r) {
  ++faults_;
  Request req;
  {
    std::lock_guard lock(mu_);
    auto it = mappings_by_address_.upper_bound(r->addr);
    if (it == mappings_by_address_.begin()) {
      SignalFaultSource::Get().Complete(r, FaultOutcome::kForeign);
      return;
    }
    --it;
    FileState* f = FindFile(it->second.file_id);
    if (!f) {
      SignalFaultSource::Get().Complete(r, FaultOutcome::kForeign);
      return;
    }
    const MappingSlot& m = f->mappings[it->second.index];
    const uintptr_t base = reinterpret_cast<uintptr_t>(m.base);
    if (r->addr >= base + m.count * f->block_size) {
      SignalFaultSource::Get().Complete(r, FaultOutcome::kForeign);
      return;
    }
    req.file_id = f->id;
    req.block = m.first + (r->addr - base) / f->block_size;
    req.write = r->access == FaultRecord::kWrite;
    req.access_unknown = r->access == FaultRecord::kUnknown;
    req.tid = r->tid;
    req.mapping = it->second;
    req.fault = r;
    // Read-ahead (P11): a fault a little ahead of the previous one continues a sequential run:
    // load the next blocks and map all but the last, whose fault (cheap: it is resident by
    // then) announces that the run goes on.
    const unsigned k = options_.readahead_blocks;
    if (k > 0 && f->last_fault != UINT64_MAX && req.block > f->last_fault &&
        req.block - f->last_fault <= k + 1) {
      const uint64_t end = std::min({m.first + m.count, f->extent, req.block + 1 + k});
      for (uint64_t b = req.block + 1; b < end; ++b) {
        if (f->pages.count(b)) continue;
        Request ra;
        ra.file_id = f->id;
        ra.block = b;
        ra.prefetch = true;
        ra.mapping = it->second;
        ra.map_after_prefetch = b + 1 < end;
        Enqueue(std::move(ra));
      }
    }
    f->last_fault = req.block;
  }
  Process(std::move(req));
}

FileState* PagerImpl::FindFile(uint64_t id) {
  auto it = files_.find(id);
  return it == files_.end() ? nullptr : it->second.get();
}

void PagerImpl::Complete(Request& req, FaultOutcome outcome, const Status& error) {
  if (req.fault) {
    std::string msg;
    if (outcome == FaultOutcome::kFatal) msg = "bigarray: fatal page fault: " + error.ToString();
    SignalFaultSource::Get().Complete(req.fault, outcome, msg.empty() ? nullptr : msg.c_str());
    req.fault = nullptr;
  }
  if (req.waiter) {
    std::lock_guard lock(req.waiter->mu);
    if (!error.ok() && req.waiter->error.ok()) req.waiter->error = error;
    if (outcome == FaultOutcome::kForeign && req.waiter->error.ok()) {
      req.waiter->error = FailedPrecondition("the mapping was released during the load");
    }
    if (--req.waiter->remaining == 0) req.waiter->cv.notify_all();
    req.waiter.reset();
  }
}

void PagerImpl::WakeWaiters(Page& p) {
  for (Request& r : p.waiters) Enqueue(std::move(r));
  p.waiters.clear();
  settled_cv_.notify_all();
}

// The state machine of one request. See docs/pager.md for the diagram.
void PagerImpl::Process(Request req) {
  std::unique_lock lk(mu_);
  FileState* f = FindFile(req.file_id);
  if (!f) {
    Complete(req, FaultOutcome::kForeign, Status());
    return;
  }
  for (;;) {
    auto it = f->pages.find(req.block);
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
      case Page::kDirty: {
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
        Complete(req, FaultOutcome::kRetry, Status());
        return;
      }
    }
  }
}

// ---- RAM slots, eviction, spill ---------------------------------------------------------------

std::optional<uint32_t> PagerImpl::AllocateSlot(std::unique_lock<std::mutex>& lk, Pool& pool,
                                                bool prefetch, Status* error) {
  const uint64_t bs = pool.block_size;
  for (;;) {
    const uint64_t budget = Budget();
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
        if (p->state == Page::kClean && !p->writeout) {
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
    auto pool_full = [&] { return pool.free.empty() && pool.next_fresh >= pool.capacity; };
    const uint64_t target = budget - std::min<uint64_t>(budget / 16, 16 * bs);
    bool evicted = false;
    for (Page* p = lru_head_; p && (resident_bytes_ + bs > target || pool_full());) {
      Page* next = p->lru_next;
      if (p->state == Page::kClean && !p->writeout && p->file->pool == &pool && Evict(*p)) {
        ++evictions_;
        evicted = true;
      }
      p = next;
    }
    if (!evicted && !pool_full()) {  // over budget: pages of other block sizes count too
      for (Page* p = lru_head_; p;) {
        Page* next = p->lru_next;  // Erase frees p, or takes it off the list when it fails
        if (p->state == Page::kClean && !p->writeout && Evict(*p)) {
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
  if (p.slot < 0) return true;
  if (!UnmapAll(p)) return false;  // a view still shows the slot: it must not be reused
  Pool& pool = *p.file->pool;
  pool.free.push_back(static_cast<uint32_t>(p.slot));
  p.slot = -1;
  resident_bytes_ -= pool.block_size;
  settled_cv_.notify_all();
  return true;
}

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
      if (p.slot >= 0 && (p.state == Page::kLoading || p.state == Page::kSpilling)) return true;
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

// ---- page table helpers ----------------------------------------------------------------------

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4  // Linux 5.7; for shared mappings 5.13
#endif

// Runs `op` (a system call: true on success, errno set on failure). When it failed for want of
// map entries, frees some (ReclaimMapEntries, never touching `keep`) and runs it once more.
bool PagerImpl::MapInto(Page& p, const MappingRef& ref) {
  FileState* f = p.file;
  const MappingSlot& m = f->mappings[ref.index];
  if (m.serial != ref.serial) return true;  // the mapping went away: nothing to map
  if (p.block < m.first || p.block >= m.first + m.count) return true;
  const uint64_t bit = uint64_t{1} << ref.index;
  const size_t bs = f->block_size;
  std::byte* addr = m.base + (p.block - m.first) * bs;
  const bool want_write = p.state == Page::kDirty && !p.writeout;  // a writeout write-protects
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
    ChargeMapEntries(p, -2);
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
    p = next;
  }
  reclaiming_ = false;
  return map_entries_ < before;
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

// ---- invalidation, writeout, abort -------------------------------------------------------------

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
  f->last_fault = UINT64_MAX;
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

PagerStats Pager::stats() const { return impl_->Stats(); }

PagerStats PagerImpl::Stats() {
  PagerStats s;
  s.faults = faults_;
  s.loads = loads_;
  s.readahead_loads = readahead_loads_;
  s.evictions = evictions_;
  s.spills = spills_;
  s.map_reclaims = map_reclaims_;
  std::lock_guard lock(mu_);
  s.resident_bytes = resident_bytes_;
  s.dirty_blocks = dirty_blocks_;
  s.dirty_bytes = dirty_bytes_;
  s.map_entries = map_entries_;
  s.loader_threads = loaders_.size();
  s.scratch_reserved_bytes = spill_reserved_;
  return s;
}

}  // namespace bigarray::pager

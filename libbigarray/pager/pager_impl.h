// The pager's private header (docs/pager.md): the types its files share and class PagerImpl,
// which pager.h's classes forward to. The pager is split by idea, one file each:
//
//   pool.h, pool.cc   the RAM pool: memfd slots, prefault; room in it: budget, eviction, spills
//   spill.cc          scratch space: the spill file, its reservation ahead, WriteReservation
//   page_tables.cc    address ranges and page-table moves: views' reservations (Map, Unmap),
//                     MapInto, MapFileInto, UnmapAll, write protection, map entries
//   loaders.cc        loader threads and requests: faults, read-ahead, Load, completion
//   writeout.cc       transaction boundaries: Invalidate, writeout, Abort
//   pager.cc          the page state machine that joins them (Process, MapFromFile, Erase,
//                     Evict), construction, files, stats
//   file_ranges.h/.cc a mapped block's file range made ready to show: read, checked, mapped
//   io.h, io.cc       whole reads and writes, error texts, 2 MiB-aligned mappings
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
#pragma once

#include <semaphore.h>
#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "pager/check_window.h"
#include "pager/fault_source.h"
#include "pager/pager.h"
#include "pager/pool.h"

namespace bigarray::pager {

constexpr unsigned kMaxMappingsPerFile = 64;  // bits of Page::mapped
constexpr uint32_t kMaxSlots = 16384;  // bounds a pool's memfd and bookkeeping; map entries
                                       // are budgeted separately (MapBudget)
constexpr unsigned kMinBudgetBlocks = 8;

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

struct Page {
  enum State : uint8_t { kLoading, kClean, kDirty, kSpilling, kSpilled, kMapped };
  State state = kLoading;
  bool from_spill = false;   // kLoading: the data comes from the spill file; becomes kDirty
  bool from_file = false;    // kLoading: being mapped from the file; becomes kMapped
  bool room = false;         // counts in resident_bytes_ without a slot (kMapped, from_file)
  bool invalidated = false;  // kLoading/kSpilling: drop the result when done
  bool writeout = false;     // held by a Writeout: write-protected, not evictable
  bool doomed = false;       // to be dropped, but still visible in a mapping (map entries ran
                             // out): retried at every boundary, which fails meanwhile
  uint8_t map_cost = 0;      // map entries charged for this page's mappings (MapBudget)
  int8_t home = -1;          // the mapping holding the slot's page-table entries; -1: the pool
  int32_t slot = -1;
  uint64_t spill_offset = 0;
  // kMapped: the block's bytes are `range` of its file (BlockSource::MapBlock), shown read-only;
  // `file_map` is a populated mapping of that range not yet moved into a view (or null).
  FileRange range;
  std::byte* file_map = nullptr;
  uint64_t mapped = 0;    // bit i: mapped in the file's mapping i
  uint64_t writable = 0;  // subset of mapped with PROT_WRITE
  FileState* file = nullptr;
  uint64_t block = 0;
  Page* lru_prev = nullptr;  // in the LRU list iff state is kClean, kDirty or kMapped
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
  unsigned populating = 0;  // PopulateShown calls at work in this range, mu_ released: Unmap waits
  bool closing = false;     // Unmap is waiting for them: no new ones
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
  // Read-ahead (docs/pager.md, P11): the sequential runs of the threads that faulted on this
  // file lately, the least recently used replaced.
  struct ReadRun {
    pid_t tid = 0;                 // the thread it follows now; 0: none
    uint64_t last = UINT64_MAX;    // the block of its last fault; UINT64_MAX: none
    uint64_t marker = UINT64_MAX;  // the block whose fault continues it, whatever came between
    uint64_t used = 0;             // runs_used when a fault last belonged to it
  };
  ReadRun runs[16];
  uint64_t runs_used = 0;
  uint64_t extent = UINT64_MAX;      // blocks the file has now: read-ahead stops there
  unsigned in_flight = 0;               // pages in a transient state
};
// Map entries one view of a page costs (MapBudget): the page splits the view's reservation in
// three (+2); a block mapped from its file that ends in zeros maps them as a part of its own (+1).
inline int ViewCost(const Page& p) {
  return p.state == Page::kMapped && p.range.length > 0 && p.range.length < p.file->block_size ? 3 : 2;
}

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
  Result<bool> ReadAbsent(FileState* f, uint64_t block, std::span<std::byte> out);
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
  // The read-ahead this loader works on reads the disk: it stops counting in prefetching_, and
  // another loader may take the next read-ahead. Under mu_.
  void YieldReadaheadTurn();
  void HandleFault(FaultRecord* r);
  void Process(Request req);
  void Complete(Request& req, FaultOutcome outcome, const Status& error);
  void WakeWaiters(Page& p);
  void Enqueue(Request req);  // REQUIRES: mu_ held

  // REQUIRES: mu_ held (lk). May release and re-acquire it (to spill). nullopt: no slot
  // (prefetch only, or an error stored in *error). With `need_slot` false it only makes room in
  // the budget for a block of the pool's size (a block mapped from its file) and returns 0.
  std::optional<uint32_t> AllocateSlot(std::unique_lock<std::mutex>& lk, Pool& pool, bool prefetch,
                                       Status* error, bool need_slot = true);
  // An absent block that a read wants, shown from its file (docs/pager.md, "Mapped blocks").
  // kDone: req was completed (or a prefetch given up); kRetry: look at the page again; kCopy:
  // the file cannot show it, load a copy. REQUIRES: mu_ held (lk); releases it for the I/O.
  enum class MapOutcome { kDone, kRetry, kCopy };
  MapOutcome MapFromFile(std::unique_lock<std::mutex>& lk, FileState* f, Request& req);
  // The rest REQUIRE mu_ held. Those returning bool report failure with errno set.
  bool FreeSlot(Page& p);                        // false: still mapped somewhere, slot kept
  bool MapInto(Page& p, const MappingRef& ref);
  bool MapFileInto(Page& p, std::byte* addr, uint64_t bit);  // a kMapped page at addr, read-only
  // Fills the page-table entries of p, a kMapped page just mapped into view `ref` without them,
  // so that the reader's first access of each 2 MiB takes no fault (docs/pager.md, section 3b,
  // step 3). Counts as I/O (BeginIo: the pages may have to be read again). Releases mu_ (lk)
  // while the kernel works: p must not be used after.
  void PopulateShown(std::unique_lock<std::mutex>& lk, Page& p, const MappingRef& ref);
  void DropFileMap(Page& p);                   // unmaps p.file_map, if any
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
  CheckWindows check_windows_;  // where loaders check slots (locks of its own; taken without mu_)

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
  unsigned readahead_limit_ = 1;  // loaders that may work on read-ahead at once (set by Start)
  unsigned prefetching_ = 0;      // loaders working on read-ahead now
  size_t queued_prefetches_ = 0;  // read-ahead requests in ready_

  // Counters, read without the lock by Stats.
  std::atomic<uint64_t> faults_{0}, loads_{0}, readahead_loads_{0}, evictions_{0}, spills_{0},
      map_reclaims_{0}, file_maps_{0};
  uint64_t file_bytes_ = 0;  // guarded by mu_: of resident_bytes_, blocks mapped from files

  std::vector<std::thread> loaders_;  // guarded by mu_ (grows on demand, joined at destruction)
};

}  // namespace bigarray::pager

// Making a block's file range ready to be shown (declared in file_ranges.h).
#include "pager/file_ranges.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "pager/bus_guard.h"
#include "pager/check_choice.h"
#include "pager/check_window.h"
#include "pager/io.h"

namespace bigarray::pager {
namespace {
constexpr size_t kCheckPiece = 256 << 10;  // read and checked in pieces that stay in the CPU cache
}  // namespace

bool ShownLazily(const FileRange& r) { return r.offset % static_cast<off_t>(kHuge) == 0; }

bool CheckByPread(const FileRange& r, Status* error) {
  thread_local const std::unique_ptr<std::byte[]> piece(new std::byte[kCheckPiece]);
  static const std::string kUnused;  // a failed read is reported by the copy's own read
  for (size_t at = 0; at < r.length; at += kCheckPiece) {
    const size_t n = std::min(kCheckPiece, r.length - at);
    if (!PreadFull(r.fd, piece.get(), n, r.offset + static_cast<off_t>(at), kUnused).ok()) return false;
    r.check->Update(std::span<const std::byte>(piece.get(), n));
  }
  *error = r.check->Finish();
  return error->ok();
}

namespace {
struct Feed {
  RangeCheck* check;
  std::span<const std::byte> bytes;
};
}  // namespace

GuardedRead CheckMapped(const FileRange& r, const std::byte* map) {
  Feed feed{r.check.get(), std::span<const std::byte>(map, r.length)};
  return ReadGuarded(
      map, r.length,
      [](void* arg) noexcept { static_cast<Feed*>(arg)->check->Update(static_cast<Feed*>(arg)->bytes); }, &feed);
}

namespace {

// The calling thread's CPU time (check_choice.h: what a check costs, not how long it waited).
int64_t ThreadCpuNs() {
  timespec t;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t) != 0) return 0;
  return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}


// Checks `r` through a mapping: a slot through its file's window (check_window.h), any other
// range through a mapping of its own, unmapped when done. kUnguarded: not checked (no mapping to
// be had, or the guard is not installed). `how`: as CheckRange.
GuardedRead CheckThroughMapping(const FileRange& r, CheckWindows& windows, SlotRead how, Status* error) {
  // A slot is populated in whole before the hash (CheckWindows::Check), and so is any other range
  // not in the page cache (PopulateRead): the hash's faults alone would read a read-around
  // window at a time.
  if (ShownLazily(r)) return windows.Check(r, how, error);
  void* m = mmap(nullptr, r.length, PROT_READ, MAP_SHARED, r.fd, r.offset);
  if (m == MAP_FAILED) return GuardedRead::kUnguarded;
  if (!how.cached) PopulateRead(static_cast<std::byte*>(m), r.length);
  const GuardedRead read = CheckMapped(r, static_cast<const std::byte*>(m));
  // Unmapping a whole mapping fails only for wrong arguments; should it ever, the range stays
  // mapped read-only here and the block is loaded by copy.
  if (munmap(m, r.length) != 0) return GuardedRead::kBus;
  if (read == GuardedRead::kDone) *error = r.check->Finish();
  return read;
}
}  // namespace

namespace {
std::atomic<CheckWay> g_way{CheckWay::kCheaper};
std::atomic<uint64_t> g_checked[2];  // [0] by pread, [1] through a mapping
}  // namespace

void SetCheckWayForTesting(CheckWay way) { g_way.store(way); }

std::pair<uint64_t, uint64_t> CheckRangeCountsForTesting() { return {g_checked[1].load(), g_checked[0].load()}; }

bool CheckRange(const FileRange& r, SlotRead how, CheckWindows& windows, Status* error) {
  static CheckChoice choice;  // per process: the machine's costs
  const CheckWay way = g_way.load(std::memory_order_relaxed);
  // The choice is for a run's checks of ranges in the page cache. Others go through a mapping: a
  // range not in the page cache is read into 2 MiB folios for a slot (AdviseSlotReads), where
  // pread's read-ahead reads small folios and reads on (4 times the bytes of a random read of a
  // slot, here); and a fault's slot is read exactly (BeginExactRead), where a pread would start
  // the kernel's read-ahead from the mark an exact read leaves on the slot (4 MiB more). A run's
  // pread of a slot the kernel has just read on into can leave slots in small folios (known
  // limit: docs/pager.md, "Slots in 2 MiB folios").
  const bool mapped = BusGuardInstalled() && (way == CheckWay::kCheaper ? !how.cached || how.fault || choice.Mapped()
                                                                         : way == CheckWay::kMapping);
  // Only checks of cached ranges are timed: a read from the disk says nothing of either way.
  const int64_t start = ThreadCpuNs();
  bool unmappable = false;
  if (mapped) {
    switch (CheckThroughMapping(r, windows, how, error)) {
      case GuardedRead::kUnguarded:
        unmappable = true;  // no mapping to be had (address space): by pread, below
        break;
      case GuardedRead::kBus:
        return false;  // the copy's read reports the error
      case GuardedRead::kDone:
        if (how.cached && !how.fault) choice.Record(true, r.length, ThreadCpuNs() - start);  // a run's
        g_checked[1].fetch_add(1, std::memory_order_relaxed);
        return error->ok();
    }
  }
  const int64_t pread_start = ThreadCpuNs();
  const bool read = CheckByPread(r, error);
  if (how.cached && !how.fault && (read || !error->ok())) {
    choice.Record(false, r.length, ThreadCpuNs() - pread_start);
    // A mapping that could not be had costs its attempt and the pread: tried again one check
    // in 16 (it may work again once address space is freed), not at every check.
    if (unmappable) choice.Record(true, r.length, ThreadCpuNs() - start);
  }
  if (read || !error->ok()) g_checked[0].fetch_add(1, std::memory_order_relaxed);
  return read;
}

void PopulateRead(std::byte* map, size_t length) { (void)madvise(map, length, kPopulateRead); }

namespace {
// cachestat(2), Linux 6.5; glibc 2.36 has neither a wrapper nor the number.
#ifdef SYS_cachestat
constexpr long kSysCachestat = SYS_cachestat;
#elif defined(__alpha__)
constexpr long kSysCachestat = 561;
#else
constexpr long kSysCachestat = 451;  // the number of every other architecture
#endif
struct CachestatRange {
  uint64_t off, len;
};
struct Cachestat {
  uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};
// The kernel has no such call (ENOSYS): not asked again. A refusal (EPERM, where the kernel asks
// for write access to the file, which it decides file by file) costs that call each time.
std::atomic<bool> g_no_cachestat{false};

// The pages of [offset, offset + length) in the page cache; nullopt where cachestat cannot tell.
std::optional<uint64_t> CachedPages(int fd, off_t offset, size_t length) {
  if (g_no_cachestat.load(std::memory_order_relaxed)) return std::nullopt;
  CachestatRange range{static_cast<uint64_t>(offset), length};
  Cachestat st{};
  if (syscall(kSysCachestat, fd, &range, &st, 0) == 0) return st.nr_cache;
  if (errno == ENOSYS) g_no_cachestat.store(true, std::memory_order_relaxed);
  return std::nullopt;  // or a file system that cannot tell (EOPNOTSUPP)
}
}  // namespace

bool CachedLooksOnly(int fd) { return CachedPages(fd, 0, 0).has_value(); }

bool Cached(const FileRange& r) {
  if (const std::optional<uint64_t> pages = CachedPages(r.fd, r.offset, r.length)) {
    const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    return *pages >= (r.length + page - 1) / page;
  }
  std::byte b;
  iovec v{&b, 1};
  return preadv2(r.fd, &v, 1, r.offset + static_cast<off_t>(r.length) - 1, RWF_NOWAIT) == 1;
}


std::byte* MapChecked(const FileRange& r, Status* error) {
  const bool slot = ShownLazily(r);
  void* m = slot ? MapAligned(r.length, PROT_READ, MAP_SHARED, r.fd, r.offset)
                 : mmap(nullptr, r.length, PROT_READ, MAP_SHARED, r.fd, r.offset);
  if (m == MAP_FAILED) return nullptr;
  auto* bytes = static_cast<std::byte*>(m);
  // A slot is read into a 2 MiB folio, exactly (io.h); the view it moves into keeps only the
  // first advice.
  if (slot) AdviseSlotReads(bytes, r.length, /*exact=*/true);
  // Populating reports what a read would raise SIGBUS for (EFAULT, EIO) as an error; the check
  // then reads the populated pages under the guard (they may be dropped and read again).
  bool shown = madvise(bytes, r.length, kPopulateRead) == 0;
  if (slot) EndExactRead(bytes, r.length);
  if (shown && r.check) {
    switch (CheckMapped(r, bytes)) {
      case GuardedRead::kUnguarded:
        shown = CheckByPread(r, error);
        break;
      case GuardedRead::kBus:
        shown = false;
        break;
      case GuardedRead::kDone:
        *error = r.check->Finish();
        shown = error->ok();
        break;
    }
  }
  // A failed munmap (only for wrong arguments) leaves a read-only mapping nobody shows.
  if (!shown) {
    (void)munmap(bytes, r.length);
    return nullptr;
  }
  return bytes;
}

}  // namespace bigarray::pager

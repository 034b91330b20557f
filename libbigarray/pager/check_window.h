// check_window.h: one long-lived mapping of a slots file through which loaders check slots in
// place (docs/pager.md, section 3b).
//
// A check through a mapping made for it pays an mmap and an munmap per 2 MiB slot, and each
// munmap flushes the TLBs of every CPU that runs a thread of the process: the reader's scan on
// the other core is interrupted once per block. A CheckWindow maps the whole file once, read-only
// and 2 MiB-aligned (one PMD entry per slot the page cache holds in a 2 MiB folio), loaders hash
// slots where they lie in it, and the page-table entries of checked slots are dropped in batches
// (`madvise(MADV_DONTNEED)` of runs of adjacent slots once kDropBatch bytes are checked: one flush
// per batch). The page cache keeps the pages; the window adds at most kDropBatch bytes (plus the
// slots being checked) to the process's RSS.
//
// A window shows one chunk of its file (kChunk bytes at a multiple of kChunk; a slot never
// straddles two), as much of it as the file holds now and a quarter more, so that a growing file
// is not mapped again at every new slot; it grows (is replaced by a larger one) when a slot lies
// past its end. At most kMaxWindows are kept, least recently used dropped first: the address
// space they take is bounded (a few GiB), and a mapping that cannot be had (ulimit -v) only
// makes the check go by pread. Windows are found by descriptor and chunk, and checked against
// the file's identity (device, inode) at every use: a descriptor closed and reused for another
// file gets windows of its own. Holders of a replaced or dropped window keep it mapped until
// their checks are done.
//
// A window reads what it shows in 2 MiB folios (AdviseSlotReads, io.h): for a run's read-ahead
// with the kernel reading on, for a fault exactly (Check); read-ahead without a check reads
// through it too (Read).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "bigarray/status.h"
#include "pager/bus_guard.h"
#include "pager/io.h"
#include "pager/pager.h"

namespace bigarray::pager {

class CheckWindows {
 public:
  static constexpr size_t kDropBatch = 16u << 20;  // checked bytes whose entries are dropped at once
  static constexpr size_t kChunk = size_t{1} << 30;  // what one window shows at most
  static constexpr size_t kMaxWindows = 4;

  CheckWindows() = default;
  CheckWindows(const CheckWindows&) = delete;
  CheckWindows& operator=(const CheckWindows&) = delete;

  // Feeds r's check the bytes of r (a slot: a 2 MiB-aligned offset) where they lie in the window
  // of r's file, under the SIGBUS guard, and sets *error to its verdict when it ran to the end
  // (kDone). kUnguarded: nothing read (no window could be mapped, e.g. no address space, or the
  // guard is not installed); kBus: the range could not be read. The slot is populated in whole
  // first (PopulateRead: read then if it is not in the page cache); for a fault, exactly, its
  // part of the window split off with BeginExactRead for the time of the check (two map entries
  // more, charged to the MapBudget; without them, or in a window the kernel would not advise,
  // the read goes on as a run's).
  GuardedRead Check(const FileRange& r, SlotRead how, Status* error);

  // Reads r (a slot without a check, not in the page cache, for a run's read-ahead) into the page
  // cache through the window of its file, as Check does before it hashes: in 2 MiB folios
  // (io.h, AdviseSlotReads), and the kernel may read on; where readahead(2) reads small folios.
  // Waits for the read (a read error is left to the reader's access); false: no window to be
  // had (the caller falls back to readahead(2)).
  bool Read(const FileRange& r);

  // The window mapped for the chunk of `fd` that holds `offset`, if any (for tests): where it
  // shows offset `start` of the file, how many bytes, and how many bytes of checked slots it
  // still maps; and how many windows there are.
  struct WindowInfo {
    const std::byte* base = nullptr;
    off_t start = 0;
    size_t size = 0;
    size_t undropped = 0;
  };
  bool MappedForTesting(int fd, off_t offset, WindowInfo* info) const;
  size_t CountForTesting() const;

 private:
  struct Window;
  std::shared_ptr<Window> For(const FileRange& r);
  void Checked(const std::shared_ptr<Window>& w, off_t offset, size_t length);

  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Window>> windows_;  // most recently used last; one per (fd, chunk)
};

}  // namespace bigarray::pager

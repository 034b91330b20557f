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
// Windows are found by file descriptor and checked against the file's identity (device, inode)
// at every use: a descriptor closed and reused for another file gets a window of its own. A
// window grows (is replaced by a larger one) when a slot lies past its end; holders of the old
// one keep it mapped until their checks are done.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "bigarray/status.h"
#include "pager/bus_guard.h"
#include "pager/pager.h"

namespace bigarray::pager {

class CheckWindows {
 public:
  static constexpr size_t kDropBatch = 16u << 20;  // checked bytes whose entries are dropped at once

  CheckWindows() = default;
  CheckWindows(const CheckWindows&) = delete;
  CheckWindows& operator=(const CheckWindows&) = delete;

  // Feeds r's check the bytes of r (a slot: a 2 MiB-aligned offset) where they lie in the window
  // of r's file, under the SIGBUS guard, and sets *error to its verdict when it ran to the end
  // (kDone). kUnguarded: nothing read (no window could be mapped, e.g. no address space, or the
  // guard is not installed); kBus: the range could not be read.
  GuardedRead Check(const FileRange& r, Status* error);

  // The window mapped for `fd` now, if any (for tests): where, how large, and how many bytes of
  // checked slots it still maps.
  struct WindowInfo {
    const std::byte* base = nullptr;
    size_t size = 0;
    size_t undropped = 0;
  };
  bool MappedForTesting(int fd, WindowInfo* info) const;

 private:
  struct Window;
  std::shared_ptr<Window> For(const FileRange& r);
  void Checked(const std::shared_ptr<Window>& w, off_t offset, size_t length);

  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Window>> windows_;  // at most one per descriptor
};

}  // namespace bigarray::pager

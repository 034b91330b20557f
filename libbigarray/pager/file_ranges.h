// file_ranges.h: making a block's range of its file ready to be shown in views (docs/pager.md,
// section 3b, "Mapped blocks"): read into the page cache and checked before any view shows it.
//
// A check hashes the range through a mapping of it, under the SIGBUS guard (bus_guard.h), or
// reads it with pread: a lazily shown slot (below) whichever way has been cheaper in this process
// (CheckRange, check_choice.h: a 2 MiB slot held by the page cache in a 2 MiB folio is one PMD
// entry and its hash 26-37 GB/s, where pread, which copies every byte out of the page cache
// first, gave 17-24, on 2026-12-03; on days when each new page-table entry of this VM cost ~6 us
// the mapping was five times slower); a range mapped to be shown (MapChecked) through that
// mapping, whose entries are paid for anyway. A read the kernel cannot serve (I/O error, a file
// cut below the range) is a SIGBUS the guard turns into "could not be read". Where our SIGBUS
// handler is not installed (somebody replaced it) the check reads by pread. Then, by where the
// range lies and who waits for it:
//
// - A slot of blocks.dat (2 MiB-aligned, ShownLazily) with a check, or asked for by read-ahead,
//   is shown lazily: views map it unpopulated and the reader's first access to each 2 MiB
//   installs one PMD entry, as under a plain mmap (a random demand fault took up to 3 times as
//   long, and never less, through a mapping of its own moved into the view, here). The check
//   reads it through its file's check window (check_window.h), never moved into a view.
// - Any other range (a payload in data.mdb's overflow pages), and a slot without a check that a
//   reader waits for, is mapped populated at an address of its own (MapChecked), checked there,
//   and moved by the pager into the first view that shows it: populating reports a read error
//   as an error, not a SIGBUS in the reader.
//
// Either way the bytes checked are the page-cache pages the views show (I21), unless the kernel
// drops them and reads them again in between (docs/pager.md, "What the kernel may do").
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include "bigarray/status.h"
#include "pager/bus_guard.h"
#include "pager/io.h"
#include "pager/pager.h"

namespace bigarray::pager {

class CheckWindows;

// Whether `r` is a slot, shown lazily (at a 2 MiB-aligned offset of its file).
bool ShownLazily(const FileRange& r);

// Checks `r` (which has a check) whichever way has been cheaper in this process (check_choice.h):
// through a mapping, under the SIGBUS guard (a slot through its file's window in `windows`, any
// other range through a mapping of its own, unmapped when done); or by pread (CheckByPread), also
// where a mapping cannot be made or the guard is not installed. False when it could not be read
// (the caller loads a copy, whose own read reports the error) or, with *error set, when the check
// failed. `how.cached`: Cached(r), which the caller needed too (one system call per block). The
// cheaper way is for a run's checks of ranges in the page cache: a range that is not is read
// through a mapping, in 2 MiB folios for a slot (AdviseSlotReads), where pread's read-ahead
// reads small folios and reads on; and a fault's check goes through a mapping too, exactly
// (BeginExactRead), where pread would start the read-ahead that an exact read's mark asks for.
bool CheckRange(const FileRange& r, SlotRead how, CheckWindows& windows, Status* error);

// Feeds `r`'s check the bytes of `map` (where `r` is mapped), in one piece, under the SIGBUS
// guard; does not finish the check.
GuardedRead CheckMapped(const FileRange& r, const std::byte* map);

// How CheckRange checks: the cheaper way (the default), or always one way (tests).
enum class CheckWay { kCheaper, kMapping, kPread };
void SetCheckWayForTesting(CheckWay way);
// How many checks CheckRange made through a mapping and by pread, in this process.
std::pair<uint64_t, uint64_t> CheckRangeCountsForTesting();

// Checks `r` (which has a check) by reading it with pread, piece by piece into a buffer of this
// thread. As CheckRange.
bool CheckByPread(const FileRange& r, Status* error);

// Whether every page of `r` (length > 0) is in the page cache: one system call, cachestat(2),
// which looks and reads nothing, where readahead(2) of a cached range looks up each of its pages
// (512 for 2 MiB on this VM: a third of a loader's time in a first scan); so a range is read
// ahead (PopulateRead, or readahead(2)) only when this says it is not cached. Where cachestat is
// not to be had (Linux before 6.5, or refused), whether its last byte is, by a one-byte read
// with RWF_NOWAIT, which waits for no I/O but starts the kernel's read-ahead around that byte,
// in small folios (docs/pager.md, "Slots in 2 MiB folios"). A hint: a page missing in between is
// read by the reader's fault, as under mmap. False also where the file system cannot tell.
bool Cached(const FileRange& r);

// Whether Cached asks cachestat(2) for ranges of fd's file (else it reads a byte: above).
bool CachedLooksOnly(int fd);

// Reads the `length` bytes of a file mapped read-only at `map` into the page cache and maps them
// there, all at once, before a check hashes them: MADV_POPULATE_READ, which reads through the
// page-fault path as the mapping's advice says (2 MiB folios, exactly or reading on: io.h),
// where readahead(2) reads in 4 KiB pages, one forced request at a time (with the read-ahead's
// turn kept for the slot, a cold scan of 1 GiB here read 5.8-6.8 GB/s against 4.3-6.0:
// docs/benchmarks.md, "Blocks in file order"). A hint: a failure (a read error, a kernel
// without it) is left to the guarded read that follows, which reports it.
void PopulateRead(std::byte* map, size_t length);

// Maps `r` read-only at an address of its own (2 MiB-aligned for a slot), faults every page of it
// in, and checks it there (when it has a check; by pread where the SIGBUS guard is not
// installed). nullptr with *error ok: the file
// cannot show it here (a read or populate error, no map entry to be had, a kernel without
// MADV_POPULATE_READ): the caller loads a copy, whose read reports an I/O error as an error
// instead of a SIGBUS. nullptr with *error set: the check failed.
std::byte* MapChecked(const FileRange& r, Status* error);

}  // namespace bigarray::pager

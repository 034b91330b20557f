// file_ranges.h: making a block's range of its file ready to be shown in views (docs/pager.md,
// section 3b, "Mapped blocks"): read into the page cache and checked before any view shows it.
//
// Every check reads the range with pread, piece by piece (CheckByPread): through the kernel's
// own mapping of the page cache, 2-3 times faster here than hashing through new 4 KiB page-table
// entries, and a mapping made for the check costs new page tables and, when moved or unmapped, a
// flush of the TLBs of every thread of the process, the reading one included. Then, by where
// the range lies and who waits for it:
//
// - A slot of blocks.dat (2 MiB-aligned, ShownLazily) with a check, or asked for by read-ahead,
//   is shown lazily: views map it unpopulated and the reader's first access to each 2 MiB
//   installs one PMD entry, as under a plain mmap (a random demand fault took up to 3 times as
//   long, and never less, through a mapping of its own moved into the view, here).
// - Any other range (a payload in data.mdb's overflow pages), and a slot without a check that a
//   reader waits for, is mapped populated at an address of its own (MapChecked), which the pager
//   moves into the first view that shows it: populating reports a read error as an error, not a
//   SIGBUS in the reader.
//
// Either way the bytes checked are the page-cache pages the views show (I21), unless the kernel
// drops them and reads them again in between (docs/pager.md, "What the kernel may do").
#pragma once

#include <cstddef>

#include "bigarray/status.h"
#include "pager/pager.h"

namespace bigarray::pager {

// Whether `r` is a slot, shown lazily (at a 2 MiB-aligned offset of its file).
bool ShownLazily(const FileRange& r);

// Checks `r` (which has a check) by reading it with pread, piece by piece into a buffer of this
// thread, through the kernel's own mapping of the page cache. False when it could not be read
// (the caller loads a copy, whose own read reports the error) or, with *error set, when the
// check failed.
bool CheckByPread(const FileRange& r, Status* error);

// Asks the kernel to read `r` into the page cache (readahead(2)) unless its last page is there
// already (the kernel reads a file ahead in order): a one-byte read that starts no I/O
// (RWF_NOWAIT) is one system call, where readahead(2) of a cached range looks up each of its
// pages (512 for 2 MiB on this VM: a third of a loader's time in a first scan). A hint: whether
// it worked changes nothing; a page missing in between is read by the reader's fault, as under
// mmap.
void ReadAheadUnlessCached(const FileRange& r);

// Checks `r` (when it has a check, CheckByPread), then maps it read-only at an address of its own
// (2 MiB-aligned for a slot) and faults every page of it in. nullptr with *error ok: the file
// cannot show it here (a read or populate error, no map entry to be had, a kernel without
// MADV_POPULATE_READ): the caller loads a copy, whose read reports an I/O error as an error
// instead of a SIGBUS. nullptr with *error set: the check failed.
std::byte* MapChecked(const FileRange& r, Status* error);

}  // namespace bigarray::pager

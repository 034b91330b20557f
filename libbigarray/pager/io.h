// Small system-call helpers that several of the pager's files use (docs/pager.md, section 7,
// "Errors"): whole reads and writes of the spill file, the text of a system error, and mappings
// at 2 MiB-aligned addresses.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <system_error>

#include "bigarray/status.h"

namespace bigarray::pager {

// "Resource temporarily unavailable (EAGAIN)": the text and the name of a system error.
std::string ErrorText(const std::system_error& e);

Status PreadFull(int fd, std::byte* dst, size_t n, off_t off, const std::string& what);
Status PwriteFull(int fd, const std::byte* src, size_t n, off_t off, const std::string& what);

constexpr size_t kHuge = 2u << 20;  // what one PMD entry maps

// mmap(nullptr, size, prot, flags, fd, offset) at a 2 MiB-aligned address, so that the kernel can
// map each 2 MiB with one PMD entry (anonymous memory, or a file the page cache holds in 2 MiB
// folios at a 2 MiB-aligned offset). MAP_FAILED with errno set on failure, as mmap.
void* MapAligned(size_t size, int prot, int flags, int fd, off_t offset);

constexpr int kPopulateRead = 22;  // MADV_POPULATE_READ, Linux 5.14 (not in glibc 2.36's headers)

// Advice for a 2 MiB-aligned mapping of slots of a file (2 MiB at 2 MiB-aligned offsets), given
// before anything reads through it (docs/pager.md, "Slots in 2 MiB folios"): MADV_HUGEPAGE, so
// that a fault or a populate that has to read from the disk reads the 2 MiB around it into one
// 2 MiB folio, which every later mapping of the file shows with one PMD entry. Without it the
// kernel reads a mapping's misses in small folios, ramping up over the first tens of MiB of a
// sequential read and around each miss of a random one; a slot in small folios then costs each
// later scan, ours or a plain mmap's, 512 entries instead of one. With `exact`, BeginExactRead
// too. A kernel that refuses the advice (no transparent huge pages) only reads as before: false
// then, and no read through that mapping may be made exact (MADV_RANDOM alone reads page by page).
bool AdviseSlotReads(void* map, size_t length, bool exact);

// Makes what is read through [map, map + length) of such a mapping exact, until EndExactRead:
// MADV_RANDOM, so that a miss reads its 2 MiB and no more, and that an access to a folio the
// kernel marked for read-ahead starts none (through a mapping without it, the first access to a
// slot so read started another 4 MiB of read-ahead: a random read of a slot read 4 times its
// bytes, here). Only on a mapping that AdviseSlotReads advised (it returned true). False where it
// is not done: before Linux 5.18 a miss of a MADV_HUGEPAGE mapping does not read 2 MiB, and
// MADV_RANDOM alone reads page by page; or the kernel could not split the mapping for it (no map
// entry to be had). Left on a mapping, it makes the kernel count no access through it as a use
// of the pages when it reclaims: views and check windows end it (EndExactRead, which can fail
// only where it must split the mapping again, two exact reads of adjacent slots having merged,
// and no map entry is to be had: that part then stays exact).
bool BeginExactRead(void* map, size_t length);
void EndExactRead(void* map, size_t length);

// How a slot is to be read and checked.
struct SlotRead {
  bool cached = false;  // all of it in the page cache already (Cached): nothing to read
  bool fault = false;   // for a fault or Load (loaders read such requests side by side):
                        // exactly (BeginExactRead); else for a run's read-ahead,
                        // which the kernel reads on from, so that the disk works while a loader
                        // hashes (with MADV_RANDOM, a cold first scan fell from 0.82 of mmap to 0.6)
};

}  // namespace bigarray::pager

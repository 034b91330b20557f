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

// Advice for a 2 MiB-aligned mapping of slots of a file (2 MiB at 2 MiB-aligned offsets), given
// before anything reads through it (docs/pager.md, "Slots in 2 MiB folios"): MADV_HUGEPAGE, so
// that a fault or a populate that has to read from the disk reads the 2 MiB around it into one
// 2 MiB folio, which every later mapping of the file shows with one PMD entry. Without it the
// kernel reads a mapping's misses in small folios, ramping up over the first tens of MiB of a
// sequential read and around each miss of a random one; a slot in small folios then costs each
// later scan, ours or a plain mmap's, 512 entries instead of one. With `exact`, MADV_RANDOM too:
// a miss reads its 2 MiB and no more, and the first access to a folio so read starts no
// read-ahead of the next 4 MiB (as it does through a mapping without it: 4 times the bytes of a
// random read of a slot, here). A view's mapping has it until its entries are filled
// (MADV_NORMAL then): the kernel does not count accesses through such a mapping as uses of the
// pages when it reclaims. The check windows have it not: a run's read-ahead reads through them,
// and the kernel's own read-ahead then brings the next slots in while a loader hashes (ReadSlot
// asks for an exact read where a fault waits). Advice: a kernel that refuses it (no transparent
// huge pages) only reads as before.
void AdviseSlotReads(void* map, size_t length, bool exact);

// What a slot not in the page cache is read for: nothing to read (kNone), a run's read-ahead,
// which the kernel may read on from (kAhead), or a fault, which reads its 2 MiB and no more
// (kExact).
enum class Miss { kNone, kAhead, kExact };

}  // namespace bigarray::pager

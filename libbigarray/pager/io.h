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

}  // namespace bigarray::pager

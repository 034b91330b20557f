// Small system-call helpers shared by the pager's files (declared in io.h).
#include "pager/io.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace bigarray::pager {

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

void* MapAligned(size_t size, int prot, int flags, int fd, off_t offset) {
  constexpr int kReserve = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
  void* wide = mmap(nullptr, size + kHuge, PROT_NONE, kReserve, -1, 0);
  if (wide == MAP_FAILED) return wide;
  auto* start = static_cast<std::byte*>(wide);
  auto* base = reinterpret_cast<std::byte*>((reinterpret_cast<uintptr_t>(start) + kHuge - 1) & ~uintptr_t{kHuge - 1});
  // Trimming the ends of one mapping cannot fail for want of map entries (it makes none), and
  // replacing the whole of what is left splits nothing.
  if (base > start) (void)munmap(start, static_cast<size_t>(base - start));
  if (base + size < start + size + kHuge) (void)munmap(base + size, static_cast<size_t>(start + size + kHuge - (base + size)));
  if (prot == PROT_NONE && flags == kReserve && fd == -1) return base;  // the reservation is the mapping
  if (mmap(base, size, prot, flags | MAP_FIXED, fd, offset) == MAP_FAILED) {
    const int err = errno;
    (void)munmap(base, size);
    errno = err;
    return MAP_FAILED;
  }
  return base;
}

void AdviseSlotReads(void* map, size_t length, bool exact) {
  // Either call fails only for a kernel without the advice or a range that is not mapped (never
  // here); MADV_RANDOM alone would make each miss read one page at a time, so it needs the other.
  if (madvise(map, length, MADV_HUGEPAGE) != 0) return;
  if (exact) (void)madvise(map, length, MADV_RANDOM);
}

}  // namespace bigarray::pager

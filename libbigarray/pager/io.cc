// Small system-call helpers shared by the pager's files (declared in io.h).
#include "pager/io.h"

#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
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

namespace {
// Whether a miss of a MADV_HUGEPAGE file mapping reads the 2 MiB around it whatever the other
// advice (Linux 5.18 on).
bool HugeMissesReadWhole() {
  static const bool whole = [] {
    utsname u;
    int major = 0, minor = 0;
    if (uname(&u) != 0 || std::sscanf(u.release, "%d.%d", &major, &minor) != 2) return false;
    return major > 5 || (major == 5 && minor >= 18);
  }();
  return whole;
}
}  // namespace

bool AdviseSlotReads(void* map, size_t length, bool exact) {
  // Fails only for a kernel without transparent huge pages (or a range that is not mapped, never
  // here): then no exact read either, which needs it.
  if (madvise(map, length, MADV_HUGEPAGE) != 0) return false;
  if (exact) (void)BeginExactRead(map, length);
  return true;
}

bool BeginExactRead(void* map, size_t length) {
  return HugeMissesReadWhole() && madvise(map, length, MADV_RANDOM) == 0;
}

void EndExactRead(void* map, size_t length) {
  // Fails only where it must split the mapping and no map entry is to be had (io.h), or for a
  // range that is not mapped: the part stays exact, which only makes its misses read exactly.
  (void)madvise(map, length, MADV_NORMAL);
}

}  // namespace bigarray::pager

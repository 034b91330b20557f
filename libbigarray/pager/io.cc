// Small system-call helpers shared by the pager's files (declared in io.h).
#include "pager/io.h"

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

}  // namespace bigarray::pager

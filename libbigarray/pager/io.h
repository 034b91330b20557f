// Small system-call helpers that several of the pager's files use (docs/pager.md, section 7,
// "Errors"): whole reads and writes of the spill file, and the text of a system error.
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

}  // namespace bigarray::pager

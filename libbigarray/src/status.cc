// Status: names, formatting and errno translation.
#include "bigarray/status.h"

#include <cerrno>
#include <cstring>

namespace bigarray {

std::string_view CodeName(Code code) noexcept {
  switch (code) {
    case Code::kOk: return "OK";
    case Code::kInvalidArgument: return "InvalidArgument";
    case Code::kNotFound: return "NotFound";
    case Code::kAlreadyExists: return "AlreadyExists";
    case Code::kOutOfRange: return "OutOfRange";
    case Code::kConflict: return "Conflict";
    case Code::kCorruption: return "Corruption";
    case Code::kIOError: return "IOError";
    case Code::kNoSpace: return "NoSpace";
    case Code::kResourceExhausted: return "ResourceExhausted";
    case Code::kUnsupported: return "Unsupported";
    case Code::kFailedPrecondition: return "FailedPrecondition";
    case Code::kInternal: return "Internal";
  }
  return "Unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s(CodeName(code_));
  s += ": ";
  s += message_;
  return s;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  std::string m(context);
  m += ": ";
  m += message_;
  return Status(code_, std::move(m));
}

void Status::ThrowIfError() const {
  if (!ok()) throw Error(*this);
}

Status ErrnoStatus(int err, std::string_view what) {
  std::string m(what);
  m += ": ";
  m += std::strerror(err);
  switch (err) {
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return NoSpace(std::move(m));
    case ENOMEM:
      return ResourceExhausted(std::move(m));
    case ENOENT:
      return NotFound(std::move(m));
    default:
      return IOError(std::move(m));
  }
}

}  // namespace bigarray

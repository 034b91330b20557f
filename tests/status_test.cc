// Tests of Status and Result: codes, messages, context, exceptions, macros.
#include <doctest/doctest.h>

#include <cerrno>

#include "bigarray/status.h"

using namespace bigarray;

namespace {
Status FailsWith(Code c) { return Status(c, "boom"); }
Result<int> Half(int x) {
  if (x % 2) return InvalidArgument(std::to_string(x) + " is odd");
  return x / 2;
}
Result<int> Quarter(int x) {
  BA_ASSIGN_OR_RETURN(int h, Half(x));
  BA_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}
Status Chain(Code c) {
  BA_RETURN_IF_ERROR(FailsWith(c));
  return Status::Ok();
}
}  // namespace

TEST_CASE("Status carries code and message") {
  Status ok;
  CHECK(ok.ok());
  CHECK(ok.ToString() == "OK");
  Status s = ConflictError("array 'a' block 3 changed");
  CHECK_FALSE(s.ok());
  CHECK(s.code() == Code::kConflict);
  CHECK(s.ToString() == "Conflict: array 'a' block 3 changed");
  CHECK(s.WithContext("commit").ToString() == "Conflict: commit: array 'a' block 3 changed");
  CHECK(Chain(Code::kIOError).code() == Code::kIOError);
}

TEST_CASE("Result propagates values and errors") {
  CHECK(*Quarter(8) == 2);
  auto r = Quarter(6);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kInvalidArgument);
  CHECK(r.status().message() == "3 is odd");
  CHECK_THROWS_AS(r.value(), Error);
  try {
    (void)r.value();
  } catch (const Error& e) {
    CHECK(e.code() == Code::kInvalidArgument);
    CHECK(std::string(e.what()) == "InvalidArgument: 3 is odd");
  }
}

TEST_CASE("ErrnoStatus maps errno values") {
  CHECK(ErrnoStatus(ENOSPC, "write").code() == Code::kNoSpace);
  CHECK(ErrnoStatus(EDQUOT, "write").code() == Code::kNoSpace);
  CHECK(ErrnoStatus(ENOMEM, "mmap").code() == Code::kResourceExhausted);
  CHECK(ErrnoStatus(EIO, "read").code() == Code::kIOError);
  CHECK(ErrnoStatus(ENOENT, "open").code() == Code::kNotFound);
  CHECK(ErrnoStatus(EIO, "read x").message().find("read x: ") == 0);
}

TEST_CASE("every code has a name") {
  for (int c = 0; c <= static_cast<int>(Code::kInternal); ++c) {
    CHECK(CodeName(static_cast<Code>(c)) != "Unknown");
  }
}

// bigarray/status.h: the one error model of the library (docs/errors.md).
//
// Every fallible call returns a Status or a Result<T>; both are [[nodiscard]]. A Status is an
// error code plus a message that names what failed, on which array or block, and why.
// Result<T>::value() throws bigarray::Error for callers who prefer exceptions; nothing inside
// the library's fault path ever throws.
//
// Thread contract: Status and Result are values; copies may be used from any thread.
#pragma once

#include <cassert>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace bigarray {

enum class Code {
  kOk = 0,
  kInvalidArgument,    // bad shape, dtype, index, option; nothing was changed
  kNotFound,           // no such array or database
  kAlreadyExists,      // create of a name that exists
  kOutOfRange,         // integer index outside an axis
  kConflict,           // another transaction committed a change to the same block/array first
  kCorruption,         // checksum mismatch or malformed on-disk structure
  kIOError,            // the OS reported an I/O error
  kNoSpace,            // disk (or map) full; the last commit is intact
  kResourceExhausted,  // address space, memory, reader slots
  kUnsupported,        // newer format version, unsupported dtype or platform feature
  kFailedPrecondition, // the transaction failed earlier and must be aborted first
  kInternal,           // a bug in bigarray
};

// The name of a code, e.g. "Conflict".
std::string_view CodeName(Code code) noexcept;

class [[nodiscard]] Status {
 public:
  Status() noexcept = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() noexcept { return Status(); }

  bool ok() const noexcept { return code_ == Code::kOk; }
  Code code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  // "Conflict: array 'x' block 3 was changed by commit 17 after this transaction began".
  std::string ToString() const;

  // Prefixes the message with context ("commit: " + message), keeping the code.
  Status WithContext(std::string_view context) const;

  // Throws bigarray::Error when not ok.
  void ThrowIfError() const;

  friend bool operator==(const Status& a, const Status& b) { return a.code_ == b.code_; }

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
inline Status NotFound(std::string m) { return {Code::kNotFound, std::move(m)}; }
inline Status AlreadyExists(std::string m) { return {Code::kAlreadyExists, std::move(m)}; }
inline Status OutOfRange(std::string m) { return {Code::kOutOfRange, std::move(m)}; }
inline Status ConflictError(std::string m) { return {Code::kConflict, std::move(m)}; }
inline Status Corruption(std::string m) { return {Code::kCorruption, std::move(m)}; }
inline Status IOError(std::string m) { return {Code::kIOError, std::move(m)}; }
inline Status NoSpace(std::string m) { return {Code::kNoSpace, std::move(m)}; }
inline Status ResourceExhausted(std::string m) { return {Code::kResourceExhausted, std::move(m)}; }
inline Status Unsupported(std::string m) { return {Code::kUnsupported, std::move(m)}; }
inline Status FailedPrecondition(std::string m) { return {Code::kFailedPrecondition, std::move(m)}; }
inline Status Internal(std::string m) { return {Code::kInternal, std::move(m)}; }

// Status from errno: ENOSPC/EDQUOT -> NoSpace, ENOMEM -> ResourceExhausted, else IOError.
Status ErrnoStatus(int err, std::string_view what);

// The exception thrown by Result::value() and Status::ThrowIfError().
class Error : public std::runtime_error {
 public:
  explicit Error(Status status) : std::runtime_error(status.ToString()), status_(std::move(status)) {}
  const Status& status() const noexcept { return status_; }
  Code code() const noexcept { return status_.code(); }

 private:
  Status status_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    assert(!std::get<Status>(v_).ok() && "Result built from an ok Status");
  }

  bool ok() const noexcept { return v_.index() == 0; }
  Status status() const { return ok() ? Status() : std::get<1>(v_); }

  T& value() & { Check(); return std::get<0>(v_); }
  const T& value() const& { Check(); return std::get<0>(v_); }
  T&& value() && { Check(); return std::get<0>(std::move(v_)); }

  T& operator*() & { assert(ok()); return std::get<0>(v_); }
  const T& operator*() const& { assert(ok()); return std::get<0>(v_); }
  T&& operator*() && { assert(ok()); return std::get<0>(std::move(v_)); }
  T* operator->() { assert(ok()); return &std::get<0>(v_); }
  const T* operator->() const { assert(ok()); return &std::get<0>(v_); }

 private:
  void Check() const {
    if (!ok()) throw Error(std::get<1>(v_));
  }
  std::variant<T, Status> v_;
};

}  // namespace bigarray

#define BA_CONCAT_INNER_(a, b) a##b
#define BA_CONCAT_(a, b) BA_CONCAT_INNER_(a, b)

// Returns the Status from the enclosing function when `expr` (a Status) is not ok.
#define BA_RETURN_IF_ERROR(expr)                 \
  do {                                           \
    ::bigarray::Status ba_status_ = (expr);      \
    if (!ba_status_.ok()) return ba_status_;     \
  } while (0)

// `lhs = value of expr` (a Result), or returns its Status from the enclosing function.
#define BA_ASSIGN_OR_RETURN(lhs, expr) \
  BA_ASSIGN_OR_RETURN_IMPL_(BA_CONCAT_(ba_result_, __LINE__), lhs, expr)
#define BA_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(*tmp)

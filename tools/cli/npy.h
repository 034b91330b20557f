// npy.h: NumPy .npy files (format versions 1.0, 2.0 and 3.0).
//
// ParseNpyHeader works on an in-memory buffer and is meant for hostile input (a libFuzzer target
// may call it): it checks every length against the buffer, never recurses, caps the header at
// kMaxNpyHeaderBytes, and checks the shape's byte size for overflow. NpyReader and NpyWriter
// stream the data after the header in pieces of the caller's choosing, so that memory stays
// bounded whatever the file size; both work on pipes too (no seeking).
//
// Supported dtypes are bigarray's (dtype.h): b1, i1-i8, u1-u8, f2, f4, f8, c8, c16, either byte
// order. Structured, string, object and datetime dtypes are refused with kUnsupported.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "bigarray/dtype.h"
#include "bigarray/status.h"

namespace bigarray::npy {

// Bytes of magic ("\x93NUMPY"), version and header length of a version 2.0/3.0 file (a 1.0
// file needs 10).
inline constexpr size_t kNpyPreambleBytes = 12;
// The longest header dictionary accepted. NumPy writes under 200 bytes for the dtypes bigarray
// stores (and itself refuses more than 10000 by default).
inline constexpr size_t kMaxNpyHeaderBytes = 1 << 20;

struct NpyHeader {
  int major_version = 1;
  int minor_version = 0;
  DType dtype = DType::Of<double>();
  bool fortran_order = false;
  std::vector<int64_t> shape;
  uint64_t data_offset = 0;  // bytes before the data: magic, version, length and header
  int64_t data_bytes = 0;    // product(shape) * itemsize
};

// The total size of the preamble and header (= the data's offset), from the first bytes of a
// file (at least 10 for version 1.0, 12 otherwise). kInvalidArgument when they are not the
// start of a .npy file, kUnsupported for an unknown version.
Result<uint64_t> NpyDataOffset(std::span<const std::byte> prefix);

// Parses the preamble and header at the start of `bytes` (data may follow; it is not read).
// kInvalidArgument for a malformed or truncated header, kUnsupported for a valid header this
// library cannot store (a structured or string dtype, a newer version).
Result<NpyHeader> ParseNpyHeader(std::span<const std::byte> bytes);

// A complete preamble and header for an array: version 1.0 (2.0 when the header needs it),
// padded with spaces and a newline so that the data starts at a multiple of 64 bytes.
std::string FormatNpyHeader(const DType& dtype, bool fortran_order, const std::vector<int64_t>& shape);

// Reads a .npy file sequentially: the header on Open, then the data in pieces.
class NpyReader {
 public:
  // Opens `path` and parses its header. For a regular file, also checks that its size matches
  // the header, so that a truncated file fails here, before anything else happens.
  static Result<NpyReader> Open(const std::string& path);

  NpyReader(NpyReader&& other) noexcept;
  NpyReader& operator=(NpyReader&& other) noexcept;
  NpyReader(const NpyReader&) = delete;
  NpyReader& operator=(const NpyReader&) = delete;
  ~NpyReader();

  const NpyHeader& header() const { return header_; }
  const std::string& path() const { return path_; }

  // Reads the next out.size() bytes of data; kInvalidArgument ("truncated") at a premature end,
  // or when asked for more than the header announces. Bool data comes out as 0 and 1: any
  // other byte reads as True in NumPy (numpy.load keeps it, and counts it as True), so it
  // becomes 1.
  Status Read(std::span<std::byte> out);
  // Checks that all data was read and that nothing follows it.
  Status Finish();

  // A regular file, whose data can also be read in any order with ReadAt.
  bool seekable() const { return seekable_; }
  // Reads out.size() bytes at `offset` bytes into the data, independently of Read.
  // REQUIRES: seekable().
  Status ReadAt(int64_t offset, std::span<std::byte> out);

 private:
  NpyReader() = default;
  Status ReadFully(std::span<std::byte> out, size_t& got);
  void NormalizeBools(std::span<std::byte> data) const;  // bool data: every byte but 0 -> 1

  int fd_ = -1;
  std::string path_;
  NpyHeader header_;
  int64_t data_read_ = 0;
  bool seekable_ = false;
};

// Writes a .npy file: to a temporary file beside `path`, renamed over it by Commit(), so that a
// failed export leaves no partial file. A path that exists and is not a regular file (a pipe,
// /dev/stdout) is written in place.
class NpyWriter {
 public:
  // `before_temp` (if set) is called with the temporary file's path just before it is created,
  // e.g. to have a signal remove it (it is not called when writing in place); an error it
  // returns fails Create.
  static Result<NpyWriter> Create(const std::string& path, const DType& dtype, bool fortran_order,
                                  const std::vector<int64_t>& shape,
                                  const std::function<Status(const std::string&)>& before_temp = nullptr);

  NpyWriter(NpyWriter&& other) noexcept;
  NpyWriter& operator=(NpyWriter&& other) noexcept;
  NpyWriter(const NpyWriter&) = delete;
  NpyWriter& operator=(const NpyWriter&) = delete;
  ~NpyWriter();  // removes the temporary file unless committed

  Status Write(std::span<const std::byte> data);
  // Checks that exactly the announced data was written, then closes and renames the file.
  Status Commit();

 private:
  NpyWriter() = default;
  void Discard();

  int fd_ = -1;
  std::string path_, temp_path_;  // temp_path_ empty: writing in place
  int64_t data_bytes_ = 0, data_written_ = 0;
};

}  // namespace bigarray::npy

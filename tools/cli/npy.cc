// npy.cc: the .npy header parser and writer, and streaming file access (npy.h).
#include "npy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <string_view>
#include <utility>

#include "bigarray/view.h"

namespace bigarray::npy {

namespace {

constexpr std::string_view kMagic = "\x93NUMPY";
constexpr size_t kAlign = 64;  // NumPy aligns the data to 64 bytes (ARRAY_ALIGN)

Status Malformed(const std::string& why) { return InvalidArgument("malformed .npy file: " + why); }

// A printable excerpt of hostile text for error messages.
std::string Excerpt(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 40)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (s.size() > 40) out += "...";
  return out;
}

// The header dictionary, a Python literal such as
//   {'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }
// Only what NumPy writes is accepted: string keys, and string, True/False or integer-tuple
// values. One left-to-right scan; every access is bounds-checked.
class DictScanner {
 public:
  explicit DictScanner(std::string_view text) : s_(text) {}

  Result<NpyHeader> Parse() {
    NpyHeader h;
    bool have_descr = false, have_order = false, have_shape = false;
    SkipSpace();
    if (!Eat('{')) return Malformed("the header is not a dictionary ('" + Excerpt(s_) + "')");
    for (;;) {
      SkipSpace();
      if (Eat('}')) break;
      std::optional<std::string_view> key = String();
      if (!key) return Malformed("expected a quoted key at header offset " + std::to_string(i_));
      SkipSpace();
      if (!Eat(':')) return Malformed("expected ':' after key '" + Excerpt(*key) + "'");
      SkipSpace();
      if (*key == "descr") {
        if (have_descr) return Malformed("duplicate key 'descr'");
        have_descr = true;
        if (Peek() == '[' || Peek() == '(') {
          return Unsupported("structured dtypes cannot be stored (the .npy descr is a list of fields)");
        }
        std::optional<std::string_view> descr = String();
        if (!descr) return Malformed("'descr' is not a string");
        auto dtype = DType::Parse(*descr);
        if (!dtype.ok()) return Unsupported("the .npy file's " + dtype.status().message());
        h.dtype = *dtype;
      } else if (*key == "fortran_order") {
        if (have_order) return Malformed("duplicate key 'fortran_order'");
        have_order = true;
        if (Word("True")) {
          h.fortran_order = true;
        } else if (Word("False")) {
          h.fortran_order = false;
        } else {
          return Malformed("'fortran_order' is not True or False");
        }
      } else if (*key == "shape") {
        if (have_shape) return Malformed("duplicate key 'shape'");
        have_shape = true;
        BA_RETURN_IF_ERROR(Shape(h.shape));
      } else {
        return Malformed("unexpected key '" + Excerpt(*key) + "' in the header");
      }
      SkipSpace();
      if (Eat(',')) continue;
      if (Eat('}')) break;
      return Malformed("expected ',' or '}' at header offset " + std::to_string(i_));
    }
    SkipSpace();
    if (i_ != s_.size()) return Malformed("unexpected text after the header dictionary");
    if (!have_descr || !have_order || !have_shape) {
      return Malformed("the header lacks one of 'descr', 'fortran_order' and 'shape'");
    }
    auto nbytes = CheckedNbytes(h.shape, h.dtype.itemsize());
    if (!nbytes.ok()) return Malformed(nbytes.status().message());
    h.data_bytes = *nbytes;
    return h;
  }

 private:
  char Peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  bool Eat(char c) {
    if (Peek() != c || i_ >= s_.size()) return false;
    ++i_;
    return true;
  }
  void SkipSpace() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool Word(std::string_view w) {
    if (s_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }
  // A quoted string without escapes ('...' or "...").
  std::optional<std::string_view> String() {
    const char q = Peek();
    if (q != '\'' && q != '"') return std::nullopt;
    const size_t end = s_.find(q, i_ + 1);
    if (end == std::string_view::npos) return std::nullopt;
    std::string_view v = s_.substr(i_ + 1, end - i_ - 1);
    if (v.find('\\') != std::string_view::npos) return std::nullopt;
    i_ = end + 1;
    return v;
  }
  // A tuple of non-negative integers: (), (3,), (3, 4), (3, 4,); Python 2's 3L is accepted.
  Status Shape(std::vector<int64_t>& shape) {
    if (!Eat('(')) return Malformed("'shape' is not a tuple");
    for (;;) {
      SkipSpace();
      if (Eat(')')) return Status::Ok();
      if (Peek() < '0' || Peek() > '9') return Malformed("'shape' holds something other than non-negative integers");
      int64_t v = 0;
      while (Peek() >= '0' && Peek() <= '9') {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, Peek() - '0', &v)) {
          return Malformed("a dimension of 'shape' exceeds 2^63");
        }
        ++i_;
      }
      if (Peek() == 'L' || Peek() == 'l') ++i_;
      if (shape.size() >= 32) return Malformed("'shape' has more than 32 dimensions");
      shape.push_back(v);
      SkipSpace();
      if (Eat(')')) {
        // (3) is the integer 3 in Python, not a tuple; NumPy writes (3,).
        if (shape.size() == 1) return Malformed("'shape' (" + std::to_string(v) + ") is not a tuple");
        return Status::Ok();
      }
      if (!Eat(',')) return Malformed("expected ',' or ')' in 'shape'");
    }
  }

  std::string_view s_;
  size_t i_ = 0;
};

uint32_t LoadLE(const std::byte* p, int n) {
  uint32_t v = 0;
  for (int k = 0; k < n; ++k) v |= static_cast<uint32_t>(p[k]) << (8 * k);
  return v;
}

Status Errno(int err, const std::string& what) { return ErrnoStatus(err, what); }

}  // namespace

Result<uint64_t> NpyDataOffset(std::span<const std::byte> prefix) {
  if (prefix.size() < kMagic.size() ||
      std::memcmp(prefix.data(), kMagic.data(), kMagic.size()) != 0) {
    return InvalidArgument("not a .npy file (it does not begin with \\x93NUMPY)");
  }
  if (prefix.size() < 10) return Malformed("truncated: the file ends inside its preamble");
  const int major = static_cast<int>(prefix[6]), minor = static_cast<int>(prefix[7]);
  if (major < 1 || major > 3 || minor != 0) {
    return Unsupported(".npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                       " (supported: 1.0, 2.0, 3.0)");
  }
  const size_t len_bytes = major == 1 ? 2 : 4;
  if (prefix.size() < 8 + len_bytes) return Malformed("truncated: the file ends inside its preamble");
  const uint64_t header_len = LoadLE(prefix.data() + 8, static_cast<int>(len_bytes));
  if (header_len > kMaxNpyHeaderBytes) {
    return Malformed("the header claims " + std::to_string(header_len) + " bytes (at most " +
                     std::to_string(kMaxNpyHeaderBytes) + " are accepted)");
  }
  return 8 + len_bytes + header_len;
}

Result<NpyHeader> ParseNpyHeader(std::span<const std::byte> bytes) {
  BA_ASSIGN_OR_RETURN(uint64_t offset, NpyDataOffset(bytes));
  if (bytes.size() < offset) {
    return Malformed("truncated: the header needs " + std::to_string(offset) + " bytes, the file has " +
                     std::to_string(bytes.size()));
  }
  const int major = static_cast<int>(bytes[6]);
  const size_t start = major == 1 ? 10 : 12;
  std::string_view text(reinterpret_cast<const char*>(bytes.data()) + start, offset - start);
  // Versions 1.0 and 2.0 are latin-1, 3.0 is UTF-8: either way the keys and values we accept
  // are ASCII, and any other byte is refused by the scanner.
  if (text.find('\0') != std::string_view::npos) return Malformed("NUL byte in the header");
  BA_ASSIGN_OR_RETURN(NpyHeader h, DictScanner(text).Parse());
  h.major_version = major;
  h.minor_version = 0;
  h.data_offset = offset;
  return h;
}

std::string FormatNpyHeader(const DType& dtype, bool fortran_order, const std::vector<int64_t>& shape) {
  const std::string dict = "{'descr': '" + dtype.str() + "', 'fortran_order': " +
                           (fortran_order ? "True" : "False") + ", 'shape': " + ShapeString(shape) + ", }";
  auto padded = [&](size_t preamble) {
    const size_t unpadded = preamble + dict.size() + 1;  // + '\n'
    return dict + std::string((kAlign - unpadded % kAlign) % kAlign, ' ') + "\n";
  };
  std::string header = padded(10);
  int major = 1;
  if (header.size() > 0xffff) {
    major = 2;
    header = padded(12);
  }
  std::string out(kMagic);
  out += static_cast<char>(major);
  out += '\0';
  const size_t len_bytes = major == 1 ? 2 : 4;
  for (size_t k = 0; k < len_bytes; ++k) out += static_cast<char>((header.size() >> (8 * k)) & 0xff);
  return out + header;
}

// ---- NpyReader -------------------------------------------------------------------------------

NpyReader::NpyReader(NpyReader&& other) noexcept { *this = std::move(other); }

NpyReader& NpyReader::operator=(NpyReader&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
    header_ = std::move(other.header_);
    data_read_ = other.data_read_;
    seekable_ = other.seekable_;
  }
  return *this;
}

NpyReader::~NpyReader() {
  if (fd_ >= 0) ::close(fd_);
}

Status NpyReader::ReadFully(std::span<std::byte> out, size_t& got) {
  got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd_, out.data() + got, out.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno(errno, "read " + path_);
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<NpyReader> NpyReader::Open(const std::string& path) {
  NpyReader r;
  r.path_ = path;
  r.fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (r.fd_ < 0) {
    const int err = errno;
    if (err == ENOENT) return NotFound("no file " + path);
    return Errno(err, "open " + path);
  }
  struct stat st;
  if (::fstat(r.fd_, &st) != 0) return Errno(errno, "stat " + path);
  if (S_ISDIR(st.st_mode)) return InvalidArgument(path + " is a directory, not a .npy file");
  auto in_file = [&](const Status& s) { return Status(s.code(), path + ": " + s.message()); };

  std::vector<std::byte> head(kNpyPreambleBytes);
  size_t got = 0;
  BA_RETURN_IF_ERROR(r.ReadFully(head, got));
  head.resize(got);
  auto offset = NpyDataOffset(head);
  if (!offset.ok()) return in_file(offset.status());
  if (*offset > head.size()) {
    // Read the rest of the header (bounded by kMaxNpyHeaderBytes).
    const size_t have = head.size();
    head.resize(static_cast<size_t>(*offset));
    BA_RETURN_IF_ERROR(r.ReadFully(std::span(head).subspan(have), got));
    head.resize(have + got);
  }
  auto header = ParseNpyHeader(head);
  if (!header.ok()) return in_file(header.status());
  r.header_ = std::move(*header);
  // The data must start at the file position: a header inside the 12 bytes read (possible only
  // for a version 1.0 file with a dictionary under 3 bytes) cannot be valid anyway.
  if (head.size() > r.header_.data_offset) return in_file(Malformed("the header is too short"));

  if (S_ISREG(st.st_mode)) {
    r.seekable_ = true;
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    const uint64_t want = r.header_.data_offset + static_cast<uint64_t>(r.header_.data_bytes);
    if (size < want) {
      return in_file(Malformed("truncated: shape " + ShapeString(r.header_.shape) + " of " + r.header_.dtype.str() +
                               " needs " + std::to_string(r.header_.data_bytes) + " data bytes, the file has " +
                               std::to_string(size - r.header_.data_offset)));
    }
    if (size > want) {
      return in_file(Malformed(std::to_string(size - want) + " unexpected bytes after the data of shape " +
                               ShapeString(r.header_.shape)));
    }
  }
  return r;
}

Status NpyReader::Read(std::span<std::byte> out) {
  if (static_cast<int64_t>(out.size()) > header_.data_bytes - data_read_) {
    return Internal("read past the data of " + path_);
  }
  size_t got = 0;
  BA_RETURN_IF_ERROR(ReadFully(out, got));
  data_read_ += static_cast<int64_t>(got);
  if (got < out.size()) {
    return Malformed(path_ + " is truncated: the header announces " + std::to_string(header_.data_bytes) +
                     " data bytes, the file ends after " + std::to_string(data_read_));
  }
  NormalizeBools(out);
  return Status::Ok();
}

void NpyReader::NormalizeBools(std::span<std::byte> data) const {
  if (header_.dtype.kind() != DTypeKind::kBool) return;
  for (std::byte& b : data) b = std::byte{b != std::byte{0}};
}

Status NpyReader::ReadAt(int64_t offset, std::span<std::byte> out) {
  if (!seekable_ || offset < 0 || static_cast<int64_t>(out.size()) > header_.data_bytes - offset) {
    return Internal("read outside the data of " + path_);
  }
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::pread(fd_, out.data() + got, out.size() - got,
                              static_cast<off_t>(header_.data_offset) + offset + static_cast<off_t>(got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno(errno, "read " + path_);
    }
    if (n == 0) return Malformed(path_ + " is truncated (it shrank while being read)");
    got += static_cast<size_t>(n);
  }
  NormalizeBools(out);
  return Status::Ok();
}

Status NpyReader::Finish() {
  if (data_read_ != header_.data_bytes) return Internal("not all data of " + path_ + " was read");
  std::byte extra[1];
  size_t got = 0;
  BA_RETURN_IF_ERROR(ReadFully(extra, got));
  if (got != 0) return Malformed(path_ + " has unexpected bytes after its data");
  return Status::Ok();
}

// ---- NpyWriter -------------------------------------------------------------------------------

NpyWriter::NpyWriter(NpyWriter&& other) noexcept { *this = std::move(other); }

NpyWriter& NpyWriter::operator=(NpyWriter&& other) noexcept {
  if (this != &other) {
    Discard();
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
    temp_path_ = std::move(other.temp_path_);
    other.temp_path_.clear();
    data_bytes_ = other.data_bytes_;
    data_written_ = other.data_written_;
  }
  return *this;
}

NpyWriter::~NpyWriter() { Discard(); }

void NpyWriter::Discard() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!temp_path_.empty()) ::unlink(temp_path_.c_str());
  temp_path_.clear();
}

Result<NpyWriter> NpyWriter::Create(const std::string& path, const DType& dtype, bool fortran_order,
                                    const std::vector<int64_t>& shape,
                                    const std::function<Status(const std::string&)>& before_temp) {
  BA_ASSIGN_OR_RETURN(int64_t nbytes, CheckedNbytes(shape, dtype.itemsize()));
  NpyWriter w;
  w.path_ = path;
  w.data_bytes_ = nbytes;
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    if (S_ISDIR(st.st_mode)) return InvalidArgument(path + " is a directory");
    w.fd_ = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  } else {
    const std::string temp_path = path + ".tmp." + std::to_string(::getpid());
    if (before_temp) BA_RETURN_IF_ERROR(before_temp(temp_path));
    w.temp_path_ = temp_path;
    w.fd_ = ::open(w.temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  }
  if (w.fd_ < 0) {
    const int err = errno;
    w.temp_path_.clear();  // nothing was created
    return Errno(err, "create " + path);
  }
  const std::string header = FormatNpyHeader(dtype, fortran_order, shape);
  BA_RETURN_IF_ERROR(w.Write(std::as_bytes(std::span(header))));
  w.data_written_ = 0;
  return w;
}

Status NpyWriter::Write(std::span<const std::byte> data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd_, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno(errno, "write " + path_);
    }
    done += static_cast<size_t>(n);
  }
  data_written_ += static_cast<int64_t>(data.size());
  return Status::Ok();
}

Status NpyWriter::Commit() {
  if (data_written_ != data_bytes_) {
    return Internal("wrote " + std::to_string(data_written_) + " of " + std::to_string(data_bytes_) +
                    " data bytes to " + path_);
  }
  const int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) return Errno(errno, "close " + path_);
  if (!temp_path_.empty()) {
    if (::rename(temp_path_.c_str(), path_.c_str()) != 0) return Errno(errno, "rename to " + path_);
    temp_path_.clear();
  }
  return Status::Ok();
}

}  // namespace bigarray::npy

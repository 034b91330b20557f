// bigarray/view.h: strided views into arrays, with NumPy's basic indexing (docs/api.md).
//
// A View is a pointer, a dtype, a shape and strides in bytes — exactly NumPy's ndarray header —
// plus shared ownership of the memory behind it. A view of an array points straight into the
// array's mapped region: creating it copies nothing and touches nothing; its bytes are loaded on
// first access (semantics.md A3, A4). It stays valid after the Array and the Database handle are
// gone, across commit and abort (then showing committed content), and across append and resize
// (keeping its own shape) (A5).
//
// Thread contract: a View is an immutable value; several threads may read and write through
// views of one array at once (the pager serializes nothing but page faults on the same block).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "bigarray/dtype.h"
#include "bigarray/status.h"

namespace bigarray {

// Python's slice(start, stop, step); an absent bound is None.
struct Slice {
  std::optional<int64_t> start;
  std::optional<int64_t> stop;
  int64_t step = 1;
};
inline Slice All() { return Slice{}; }
struct NewAxis {};  // numpy.newaxis / None
struct Ellipsis {}; // ...
inline constexpr NewAxis newaxis{};
inline constexpr Ellipsis ellipsis{};

// One item of an index expression: A[3, 1:-1, ::-2, ..., None].
using IndexItem = std::variant<int64_t, Slice, NewAxis, Ellipsis>;

// Scratch space set aside for writing through a view (View::ReserveWrite); release it (destroy
// it) when the writes are done. Default-constructed: nothing was needed.
class WriteReservation {
 public:
  WriteReservation() = default;
  explicit WriteReservation(std::shared_ptr<void> held) : held_(std::move(held)) {}

 private:
  std::shared_ptr<void> held_;
};

namespace internal {
// What keeps a view's memory alive, and can load it (defined by the array layer).
class Backing {
 public:
  virtual ~Backing() = default;
  // Loads (and maps) the bytes [begin, end); errors are returned, not fatal.
  virtual Status Load(const std::byte* begin, const std::byte* end) const = 0;
  // Announces writes of `elements` elements within [begin, end): View::ReserveWrite.
  virtual Result<WriteReservation> ReserveWrite(const std::byte* begin, const std::byte* end,
                                                int64_t elements) const = 0;
  // Copies the bytes [begin, end) to `dst`, blocks not loaded straight from where they are
  // stored: View::ReadInto.
  virtual Status CopyOut(const std::byte* begin, const std::byte* end, std::byte* dst) const = 0;
};
}  // namespace internal

class View {
 public:
  View() = default;

  // A view of memory the caller owns (it must outlive the view). Empty strides: C-contiguous.
  static Result<View> Wrap(void* data, DType dtype, std::vector<int64_t> shape,
                           std::vector<int64_t> strides = {});

  std::byte* data() const { return data_; }
  const DType& dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t itemsize() const { return dtype_.itemsize(); }
  int64_t size() const;
  int64_t nbytes() const { return size() * itemsize(); }
  // The extent of the first axis; kInvalidArgument for a 0-d view (like len() in Python).
  Result<int64_t> len() const;
  bool c_contiguous() const;
  bool f_contiguous() const;

  // Basic indexing with NumPy's rules: integers (negative count from the end; out of range is
  // kOutOfRange), slices with any start, stop and step (out of range is empty), newaxis and one
  // ellipsis. Copies nothing.
  Result<View> Index(std::span<const IndexItem> index) const;
  Result<View> Index(std::initializer_list<IndexItem> index) const {
    return Index(std::span<const IndexItem>(index.begin(), index.size()));
  }

  // The element at `idx` as T; throws bigarray::Error when the index is out of range or T is not
  // this view's dtype in native byte order.
  template <typename T, typename... I>
  T& at(I... idx) const {
    const int64_t ix[sizeof...(I) + 1] = {static_cast<int64_t>(idx)..., 0};  // +1: 0-d views
    return *reinterpret_cast<T*>(ElementPointer(ix, sizeof...(I), DType::Of<T>()));
  }

  // The elements of a C-contiguous view as a span of T (kInvalidArgument otherwise).
  template <typename T>
  Result<std::span<T>> Span() const {
    Status st = CheckSpan(DType::Of<std::remove_const_t<T>>());
    if (!st.ok()) return st;
    return std::span<T>(reinterpret_cast<T*>(data_), static_cast<size_t>(size()));
  }

  // Assignment with NumPy's broadcasting: `src` (same dtype) is broadcast to this view's shape.
  // A shape that does not broadcast is kInvalidArgument, and nothing is written (A8).
  Status Assign(const View& src) const;
  // out.Assign(*this), but when `out` takes this view's bytes whole and in order (same dtype and
  // shape, both C- or both F-contiguous, no overlap) and this is a view of an array, each block
  // the handle has not loaded is read straight from the store into `out` (checked, no fault,
  // nothing cached): Array::Read.
  Status ReadInto(const View& out) const;
  // Sets every element to `value`, converted to this view's dtype.
  Status Fill(double value) const;
  // Sets every element to the `itemsize()` bytes at `element`.
  Status FillBytes(const void* element) const;

  // Loads every block under the view now (errors are returned; a fault would end the process
  // instead). Needed before the kernel reads the view, e.g. write(fd, view.data(), n).
  Status Load() const;

  // Sets aside the scratch space that writing the view's elements may need when the
  // transaction's changes outgrow the cache (docs/pager.md, "Scratch space"): a disk too full
  // for them is then kNoSpace here, not a fatal page fault while writing. Hold the result while
  // writing through data(); Assign, Fill and FillBytes reserve by themselves.
  Result<WriteReservation> ReserveWrite() const;

  // The first and one-past-last byte the view covers (equal for an empty view).
  std::pair<const std::byte*, const std::byte*> Extent() const;

 private:
  friend class Array;
  friend class ViewBuilder;
  std::byte* ElementPointer(const int64_t* idx, size_t n, const DType& as) const;
  Status CheckSpan(const DType& as) const;

  std::shared_ptr<const internal::Backing> backing_;
  std::byte* data_ = nullptr;
  DType dtype_ = DType::Of<double>();
  std::vector<int64_t> shape_;
  std::vector<int64_t> strides_;
};

// A shape as Python prints a tuple: "(3, 4)", "(3,)", "()".
std::string ShapeString(const std::vector<int64_t>& shape);

// The strides NumPy gives a contiguous array of this shape in C or F order.
std::vector<int64_t> ContiguousStrides(const std::vector<int64_t>& shape, int64_t itemsize, bool fortran);

// Checks a shape (rank at most 32, no negative extent) and returns its size in bytes;
// kInvalidArgument when the byte size overflows 63 bits.
Result<int64_t> CheckedNbytes(const std::vector<int64_t>& shape, int64_t itemsize);

}  // namespace bigarray

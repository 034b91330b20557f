// transfer.cc: chunked transfers between .npy files and arrays (transfer.h).
#include "transfer.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace bigarray::cli {

namespace {

// Splits a flat range into boxes; axes_ lists the axes from the slowest-varying to the fastest.
class BoxSplitter {
 public:
  BoxSplitter(const std::vector<int64_t>& shape, bool fortran) : shape_(shape) {
    const int n = static_cast<int>(shape.size());
    for (int j = 0; j < n; ++j) axes_.push_back(fortran ? n - 1 - j : j);
    inner_.assign(n, 1);
    for (int j = n - 2; j >= 0; --j) inner_[j] = inner_[j + 1] * shape[axes_[j + 1]];
  }

  // Elements [a, b) of the sub-array under the fixed indices of the first `fixed_.size()` axes.
  // REQUIRES: 0 <= a < b <= its size (which is > 0).
  void Split(int64_t a, int64_t b, std::vector<Box>& out) {
    const size_t j = fixed_.size();
    if (j == axes_.size()) {  // a 0-d array: its one element
      Emit(0, 0, out);
      return;
    }
    const int64_t inner = inner_[j];
    if (a % inner != 0) {  // a partial first row of axis j
      const int64_t row = a / inner, row_end = (row + 1) * inner;
      fixed_.push_back(row);
      Split(a - row * inner, std::min(b, row_end) - row * inner, out);
      fixed_.pop_back();
      if (b <= row_end) return;
      a = row_end;
    }
    const int64_t first = a / inner, last = b / inner;  // whole rows [first, last)
    if (last > first) Emit(first, last, out);
    if (b % inner != 0) {  // a partial last row
      fixed_.push_back(last);
      Split(0, b - last * inner, out);
      fixed_.pop_back();
    }
  }

 private:
  // The box: the fixed indices, rows [first, last) of the next axis, the rest whole.
  void Emit(int64_t first, int64_t last, std::vector<Box>& out) {
    Box box;
    const size_t j = fixed_.size();
    box.index.assign(shape_.size(), All());
    box.count = 1;
    for (size_t k = 0; k < j; ++k) box.index[axes_[k]] = fixed_[k];
    if (j < axes_.size()) {
      box.index[axes_[j]] = Slice{first, last, 1};
      box.count = (last - first) * inner_[j];
    }
    for (size_t axis = 0; axis < shape_.size(); ++axis) {
      if (std::holds_alternative<int64_t>(box.index[axis])) continue;
      box.shape.push_back(j < axes_.size() && static_cast<int>(axis) == axes_[j] ? last - first : shape_[axis]);
    }
    out.push_back(std::move(box));
  }

  const std::vector<int64_t>& shape_;
  std::vector<int> axes_;
  std::vector<int64_t> inner_;  // elements under one index of axes_[j]
  std::vector<int64_t> fixed_;  // indices of axes_[0 .. fixed_.size())
};

int64_t ChunkElements(const TransferOptions& o, int64_t itemsize) {
  return std::max<int64_t>(1, static_cast<int64_t>(o.chunk_bytes) / itemsize);
}

void Report(const TransferOptions& o, uint64_t bytes) {
  if (o.progress) o.progress->Update(bytes);
}

Result<View> BoxView(const Array& a, const Region& region, const Box& box) {
  const auto index = RegionIndex(region, box);
  BA_ASSIGN_OR_RETURN(View v, a.Index(index));
  BA_RETURN_IF_ERROR(v.Load());
  return v;
}

// A view of `box.count` contiguous elements of `buffer` in the chunk's order.
Result<View> BufferView(const std::byte* buffer, const DType& dtype, const Box& box, bool fortran) {
  return View::Wrap(const_cast<std::byte*>(buffer), dtype, box.shape,
                    ContiguousStrides(box.shape, dtype.itemsize(), fortran));
}

void ReverseBytes(std::byte* p, int n) { std::reverse(p, p + n); }

// The float dtype of each half of a complex dtype.
DType ComplexPart(const DType& c) {
  const std::string s = std::string(c.little_endian() ? "<" : ">") + "f" + std::to_string(c.itemsize() / 2);
  return DType::Parse(s).value();
}

// The bits of an integer type's significand a float type holds exactly.
int SignificandBits(int float_itemsize) { return float_itemsize == 2 ? 11 : float_itemsize == 4 ? 24 : 53; }

}  // namespace

std::vector<Box> FlatRangeBoxes(const std::vector<int64_t>& shape, bool fortran, int64_t begin, int64_t end) {
  std::vector<Box> out;
  if (begin >= end) return out;
  BoxSplitter(shape, fortran).Split(begin, end, out);
  return out;
}

int64_t Region::size() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<IndexItem> RegionIndex(const Region& region, const Box& box) {
  std::vector<IndexItem> index = box.index;
  if (index.empty()) return index;  // a 0-d array
  IndexItem& item = index[region.axis];
  if (int64_t* i = std::get_if<int64_t>(&item)) {
    *i = region.offset + *i * region.step;
  } else {
    // Elements [first, last) of the region: array indices offset + k * step for k in that range.
    Slice& s = std::get<Slice>(item);
    const int64_t first = s.start.value_or(0), last = s.stop.value_or(region.shape[region.axis]);
    s.start = region.offset + first * region.step;
    const int64_t end = region.offset + (last - 1) * region.step + (region.step > 0 ? 1 : -1);
    // Going down to index 0 inclusive, the end is "before 0", which a slice writes as no bound
    // (-1 would count from the end).
    s.stop = end < 0 ? std::nullopt : std::optional<int64_t>(end);
    s.step = region.step;
  }
  return index;
}

bool CanCastSafely(const DType& from, const DType& to) {
  const DTypeKind f = from.kind(), t = to.kind();
  if (f == t) return from.itemsize() <= to.itemsize();
  if (f == DTypeKind::kUInt && t == DTypeKind::kInt) return to.itemsize() > from.itemsize();
  if ((f == DTypeKind::kInt || f == DTypeKind::kUInt) && t == DTypeKind::kFloat) {
    return from.itemsize() * 8 <= SignificandBits(to.itemsize());
  }
  return false;
}

void ConvertElements(const DType& from, const std::byte* src, const DType& to, std::byte* dst, int64_t count) {
  const int fi = from.itemsize(), ti = to.itemsize();
  if (from == to) {
    std::memcpy(dst, src, static_cast<size_t>(count * fi));
    return;
  }
  if (from.kind() == to.kind() && fi == ti) {  // the byte order alone differs
    std::memcpy(dst, src, static_cast<size_t>(count * fi));
    const int part = from.kind() == DTypeKind::kComplex ? fi / 2 : fi;
    for (int64_t k = 0; k < count * fi; k += part) ReverseBytes(dst + k, part);
    return;
  }
  if (from.kind() == DTypeKind::kComplex) {  // c8 -> c16: each part on its own
    const DType fp = ComplexPart(from), tp = ComplexPart(to);
    for (int64_t k = 0; k < 2 * count; ++k) tp.FromDouble(fp.ToDouble(src + k * (fi / 2)), dst + k * (ti / 2));
    return;
  }
  // Every accepted source value (at most 32-bit integers, floats) is exact as a double.
  for (int64_t k = 0; k < count; ++k) to.FromDouble(from.ToDouble(src + k * fi), dst + k * ti);
}

namespace {

// WriteRegionFromNpy when the file's order is the opposite of the array's. The file's fastest
// axis is then the array's slowest one ("slow"): read in order, every chunk of the file would
// land scattered over the whole array, and an array larger than the cache would be loaded and
// spilled over and over. Instead the region is filled in slabs along `slow`, each small enough
// for its blocks to stay in the cache, and each slab takes one pass over the file (ReadAt) that
// picks the slab's part out of every file row (a row: the S elements along `slow`).
class TransposedImport {
 public:
  TransposedImport(npy::NpyReader& in, const Array& a, const Region& region, const TransferOptions& o)
      : in_(in), a_(a), region_(region), options_(o), from_(in.header().dtype), to_(a.dtype()),
        fortran_(in.header().fortran_order), slow_(a.order() == Order::kF ? static_cast<int>(region.shape.size()) - 1 : 0),
        rest_(region.shape), chunk_(ChunkElements(o, std::max(from_.itemsize(), to_.itemsize()))) {
    rest_.erase(rest_.begin() + slow_);
    for (int64_t d : rest_) rows_ *= d;
    columns_ = region.shape[slow_];
  }

  Status Run() {
    const int64_t fsz = from_.itemsize();
    // The array bytes one column of a slab keeps in use while the file is read in order: in 2-d,
    // a column fills its blocks one after another; else its rows lie in the other order too,
    // scattered over the whole column.
    const int64_t column_bytes = rows_ * to_.itemsize();
    const int64_t footprint = region_.shape.size() == 2 ? std::min<int64_t>(column_bytes, a_.block_size()) : column_bytes;
    const int64_t width = options_.working_set_bytes == 0
                              ? columns_
                              : std::clamp<int64_t>(static_cast<int64_t>(options_.working_set_bytes) / footprint, 1, columns_);
    for (int64_t c0 = 0; c0 < columns_; c0 += width) {
      const int64_t c1 = std::min(columns_, c0 + width), w = c1 - c0;
      if (columns_ <= chunk_) {  // bands of whole rows, of which the slab's columns are kept
        const int64_t band = std::max<int64_t>(1, chunk_ / columns_);
        for (int64_t rb = 0; rb < rows_; rb += band) {
          const int64_t re = std::min(rows_, rb + band);
          raw_.resize(static_cast<size_t>((re - rb) * columns_ * fsz));
          BA_RETURN_IF_ERROR(in_.ReadAt(rb * columns_ * fsz, raw_));
          slab_.resize(static_cast<size_t>((re - rb) * w * fsz));
          for (int64_t r = 0; r < re - rb; ++r) {
            std::memcpy(slab_.data() + r * w * fsz, raw_.data() + (r * columns_ + c0) * fsz, static_cast<size_t>(w * fsz));
          }
          BA_RETURN_IF_ERROR(WriteBand(rb, re, c0, c1));
          Report(options_, static_cast<uint64_t>((c0 * rows_ + re * w) * fsz));
        }
      } else {  // rows longer than a chunk: pieces of one row at a time
        for (int64_t r = 0; r < rows_; ++r) {
          for (int64_t s0 = c0; s0 < c1; s0 += chunk_) {
            const int64_t s1 = std::min(c1, s0 + chunk_);
            slab_.resize(static_cast<size_t>((s1 - s0) * fsz));
            BA_RETURN_IF_ERROR(in_.ReadAt((r * columns_ + s0) * fsz, slab_));
            BA_RETURN_IF_ERROR(WriteBand(r, r + 1, s0, s1));
          }
          Report(options_, static_cast<uint64_t>((c0 * rows_ + (r + 1) * w) * fsz));
        }
      }
    }
    return Status::Ok();
  }

 private:
  // Writes slab_, rows [rb, re) by columns [s0, s1) in the file's order, into the region.
  Status WriteBand(int64_t rb, int64_t re, int64_t s0, int64_t s1) {
    const int64_t w = s1 - s0, tsz = to_.itemsize();
    const std::byte* data = slab_.data();
    if (!(from_ == to_)) {
      converted_.resize(static_cast<size_t>((re - rb) * w * tsz));
      ConvertElements(from_, slab_.data(), to_, converted_.data(), (re - rb) * w);
      data = converted_.data();
    }
    for (const Box& rows : FlatRangeBoxes(rest_, fortran_, rb, re)) {
      // The box of rows, with the columns [s0, s1) along `slow`; in the band, a row's columns
      // are contiguous and the rows follow each other in the file's order.
      Box box = rows;
      std::vector<int64_t> strides = ContiguousStrides(rows.shape, w * tsz, fortran_);
      box.index.insert(box.index.begin() + slow_, Slice{s0, s1, 1});
      const auto at = slow_ == 0 ? 0 : box.shape.size();
      box.shape.insert(box.shape.begin() + static_cast<std::ptrdiff_t>(at), w);
      strides.insert(strides.begin() + static_cast<std::ptrdiff_t>(at), tsz);
      box.count *= w;
      BA_ASSIGN_OR_RETURN(View dst, BoxView(a_, region_, box));
      BA_ASSIGN_OR_RETURN(View src, View::Wrap(const_cast<std::byte*>(data), to_, box.shape, strides));
      BA_RETURN_IF_ERROR(dst.Assign(src));
      data += box.count * tsz;
    }
    return Status::Ok();
  }

  npy::NpyReader& in_;
  const Array& a_;
  const Region& region_;
  const TransferOptions& options_;
  const DType from_, to_;
  const bool fortran_;
  const int slow_;
  std::vector<int64_t> rest_;  // the region's shape without `slow`
  const int64_t chunk_;        // elements
  int64_t rows_ = 1, columns_ = 0;
  std::vector<std::byte> raw_, slab_, converted_;
};

}  // namespace

Status WriteRegionFromNpy(npy::NpyReader& in, const Array& a, const Region& region, const TransferOptions& options) {
  const DType& from = in.header().dtype;
  const DType to = a.dtype();
  const bool fortran = in.header().fortran_order;
  if (region.shape.size() >= 2 && region.size() > 0 && fortran != (a.order() == Order::kF) && in.seekable()) {
    return TransposedImport(in, a, region, options).Run();
  }
  const bool convert = !(from == to);
  const int64_t total = region.size();
  const int64_t chunk = std::min(total, ChunkElements(options, std::max(from.itemsize(), to.itemsize())));
  std::vector<std::byte> raw(static_cast<size_t>(chunk * from.itemsize()));
  std::vector<std::byte> converted(convert ? static_cast<size_t>(chunk * to.itemsize()) : 0);
  for (int64_t begin = 0; begin < total; begin += chunk) {
    const int64_t n = std::min(chunk, total - begin);
    BA_RETURN_IF_ERROR(in.Read(std::span(raw).first(static_cast<size_t>(n * from.itemsize()))));
    const std::byte* data = raw.data();
    if (convert) {
      ConvertElements(from, raw.data(), to, converted.data(), n);
      data = converted.data();
    }
    for (const Box& box : FlatRangeBoxes(region.shape, fortran, begin, begin + n)) {
      BA_ASSIGN_OR_RETURN(View dst, BoxView(a, region, box));
      BA_ASSIGN_OR_RETURN(View src, BufferView(data, to, box, fortran));
      BA_RETURN_IF_ERROR(dst.Assign(src));
      data += box.count * to.itemsize();
    }
    Report(options, static_cast<uint64_t>((begin + n) * from.itemsize()));
  }
  return in.Finish();
}

Status ReadRegion(const Array& a, const Region& region, bool fortran, const TransferOptions& options,
                  const ChunkSink& sink) {
  const DType dtype = a.dtype();
  const int64_t total = region.size();
  const int64_t chunk = std::min(total, ChunkElements(options, dtype.itemsize()));
  std::vector<std::byte> buffer(static_cast<size_t>(chunk * dtype.itemsize()));
  for (int64_t begin = 0; begin < total; begin += chunk) {
    const int64_t n = std::min(chunk, total - begin);
    std::byte* data = buffer.data();
    for (const Box& box : FlatRangeBoxes(region.shape, fortran, begin, begin + n)) {
      // Read once: blocks not loaded go straight from the store into the buffer (Array::Read).
      BA_ASSIGN_OR_RETURN(View dst, BufferView(data, dtype, box, fortran));
      BA_RETURN_IF_ERROR(a.Read(RegionIndex(region, box), dst));
      data += box.count * dtype.itemsize();
    }
    BA_RETURN_IF_ERROR(sink(std::span(buffer).first(static_cast<size_t>(n * dtype.itemsize())), n));
    Report(options, static_cast<uint64_t>((begin + n) * dtype.itemsize()));
  }
  return Status::Ok();
}

Status FillRegion(const Array& a, const Region& region, const std::byte* element, const TransferOptions& options) {
  const int64_t total = region.size(), itemsize = a.itemsize();
  const int64_t chunk = ChunkElements(options, itemsize);
  const bool fortran = a.order() == Order::kF;  // boxes contiguous in the array's memory
  for (int64_t begin = 0; begin < total; begin += chunk) {
    const int64_t n = std::min(chunk, total - begin);
    for (const Box& box : FlatRangeBoxes(region.shape, fortran, begin, begin + n)) {
      BA_ASSIGN_OR_RETURN(View v, BoxView(a, region, box));
      BA_RETURN_IF_ERROR(v.FillBytes(element));
    }
    Report(options, static_cast<uint64_t>((begin + n) * itemsize));
  }
  return Status::Ok();
}

}  // namespace bigarray::cli

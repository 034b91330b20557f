// View: NumPy basic indexing, contiguity, broadcasting assignment, fills.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "bigarray/view.h"
#include "layout.h"

namespace bigarray {

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

namespace internal {

Result<Layout> ApplyIndex(const Layout& in, std::span<const IndexItem> index) {
  const int ndim = static_cast<int>(in.shape.size());
  int consuming = 0, ellipses = 0;
  for (const IndexItem& it : index) {
    if (std::holds_alternative<int64_t>(it) || std::holds_alternative<Slice>(it)) ++consuming;
    if (std::holds_alternative<Ellipsis>(it)) ++ellipses;
  }
  if (ellipses > 1) return InvalidArgument("an index can only have a single ellipsis ('...')");
  if (consuming > ndim) {
    return OutOfRange("too many indices: the array is " + std::to_string(ndim) +
                      "-dimensional, but " + std::to_string(consuming) + " were indexed");
  }
  Layout out;
  out.offset = in.offset;
  int axis = 0;
  auto keep = [&](int a) {
    out.shape.push_back(in.shape[a]);
    out.strides.push_back(in.strides[a]);
  };
  for (const IndexItem& it : index) {
    if (const int64_t* i = std::get_if<int64_t>(&it)) {
      const int64_t n = in.shape[axis];
      int64_t k = *i < 0 ? *i + n : *i;
      if (k < 0 || k >= n) {
        return OutOfRange("index " + std::to_string(*i) + " is out of bounds for axis " +
                          std::to_string(axis) + " with size " + std::to_string(n));
      }
      out.offset += k * in.strides[axis];
      ++axis;
    } else if (const Slice* s = std::get_if<Slice>(&it)) {
      const int64_t n = in.shape[axis];
      const int64_t step = s->step;
      if (step == 0) return InvalidArgument("slice step cannot be zero");
      // Python's slice.indices(n).
      const int64_t lower = step > 0 ? 0 : -1, upper = step > 0 ? n : n - 1;
      auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
        if (!v) return dflt;
        int64_t x = *v;
        if (x < 0) {
          x += n;
          if (x < lower) x = lower;
        } else if (x > upper) {
          x = upper;
        }
        return x;
      };
      const int64_t start = clamp(s->start, step > 0 ? lower : upper);
      const int64_t stop = clamp(s->stop, step > 0 ? upper : lower);
      int64_t len = 0;
      if (step > 0 && stop > start) len = (stop - start - 1) / step + 1;
      if (step < 0 && start > stop) len = (start - stop - 1) / (-step) + 1;
      if (len > 0) out.offset += start * in.strides[axis];
      out.shape.push_back(len);
      // NumPy's stride * step; it cannot overflow when the axis has two or more elements (both
      // ends lie in the array). With fewer the stride is never used: if it overflows, keep one
      // that does not.
      int64_t stride;
      if (__builtin_mul_overflow(in.strides[axis], step, &stride)) {
        stride = step > 0 ? in.strides[axis] : -in.strides[axis];
      }
      out.strides.push_back(stride);
      ++axis;
    } else if (std::holds_alternative<NewAxis>(it)) {
      out.shape.push_back(1);
      out.strides.push_back(0);
    } else {  // Ellipsis: every axis not indexed by the rest
      const int skip = ndim - consuming;
      for (int k = 0; k < skip; ++k) keep(axis++);
    }
  }
  while (axis < ndim) keep(axis++);
  return out;
}

std::pair<int64_t, int64_t> LayoutExtent(const Layout& l, int64_t itemsize) {
  int64_t lo = l.offset, hi = l.offset;
  for (size_t k = 0; k < l.shape.size(); ++k) {
    if (l.shape[k] == 0) return {l.offset, l.offset};
    const int64_t span = (l.shape[k] - 1) * l.strides[k];
    if (span < 0) lo += span; else hi += span;
  }
  return {lo, hi + itemsize};
}

void StridedCopy(std::byte* dst, const std::vector<int64_t>& dst_strides, const std::byte* src,
                 const std::vector<int64_t>& src_strides, const std::vector<int64_t>& shape,
                 int64_t itemsize) {
  // Drop extent-1 axes; merge axes that are contiguous in both layouts; the innermost run is
  // one memcpy when both sides are contiguous there.
  std::vector<int64_t> n, ds, ss;
  for (size_t k = 0; k < shape.size(); ++k) {
    if (shape[k] == 0) return;
    if (shape[k] == 1) continue;
    if (!n.empty() && ds.back() == shape[k] * dst_strides[k] && ss.back() == shape[k] * src_strides[k]) {
      n.back() *= shape[k];
      ds.back() = dst_strides[k];
      ss.back() = src_strides[k];
      continue;
    }
    n.push_back(shape[k]);
    ds.push_back(dst_strides[k]);
    ss.push_back(src_strides[k]);
  }
  int64_t run = itemsize, run_count = 1;
  if (!n.empty() && ds.back() == itemsize && ss.back() == itemsize) {
    run = n.back() * itemsize;
    n.pop_back();
    ds.pop_back();
    ss.pop_back();
  } else if (!n.empty()) {
    run_count = n.back();  // innermost axis element by element
  }
  const int64_t inner_ds = run_count > 1 ? ds.back() : 0, inner_ss = run_count > 1 ? ss.back() : 0;
  if (run_count > 1) {
    n.pop_back();
    ds.pop_back();
    ss.pop_back();
  }
  std::vector<int64_t> idx(n.size(), 0);
  for (;;) {
    std::byte* d = dst;
    const std::byte* s = src;
    for (int64_t j = 0; j < run_count; ++j, d += inner_ds, s += inner_ss) std::memcpy(d, s, run);
    int k = static_cast<int>(n.size()) - 1;
    for (; k >= 0; --k) {
      dst += ds[k];
      src += ss[k];
      if (++idx[k] < n[k]) break;
      dst -= ds[k] * n[k];
      src -= ss[k] * n[k];
      idx[k] = 0;
    }
    if (k < 0) return;
  }
}

}  // namespace internal

using internal::Layout;

std::vector<int64_t> ContiguousStrides(const std::vector<int64_t>& shape, int64_t itemsize, bool fortran) {
  std::vector<int64_t> s(shape.size());
  int64_t acc = itemsize;
  if (fortran) {
    for (size_t k = 0; k < shape.size(); ++k) {
      s[k] = acc;
      acc *= std::max<int64_t>(shape[k], 1);
    }
  } else {
    for (size_t k = shape.size(); k-- > 0;) {
      s[k] = acc;
      acc *= std::max<int64_t>(shape[k], 1);
    }
  }
  return s;
}

Result<int64_t> CheckedNbytes(const std::vector<int64_t>& shape, int64_t itemsize) {
  if (shape.size() > 32) {
    return InvalidArgument("an array has at most 32 dimensions, not " + std::to_string(shape.size()));
  }
  int64_t n = itemsize;
  bool zero = false;
  for (int64_t d : shape) {
    if (d < 0) return InvalidArgument("negative dimension in shape " + ShapeString(shape));
    if (d == 0) zero = true;
  }
  for (int64_t d : shape) {
    if (d != 0 && __builtin_mul_overflow(n, d, &n)) {
      return InvalidArgument("shape " + ShapeString(shape) + " with " +
                             std::to_string(itemsize) + "-byte items is larger than 2^63 bytes");
    }
  }
  return zero ? 0 : n;
}

Result<View> View::Wrap(void* data, DType dtype, std::vector<int64_t> shape, std::vector<int64_t> strides) {
  BA_RETURN_IF_ERROR(CheckedNbytes(shape, dtype.itemsize()).status());
  if (strides.empty()) strides = ContiguousStrides(shape, dtype.itemsize(), false);
  if (strides.size() != shape.size()) {
    return InvalidArgument("strides " + ShapeString(strides) + " do not match shape " +
                           ShapeString(shape));
  }
  View v;
  v.data_ = static_cast<std::byte*>(data);
  v.dtype_ = dtype;
  v.shape_ = std::move(shape);
  v.strides_ = std::move(strides);
  return v;
}

int64_t View::size() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

Result<int64_t> View::len() const {
  if (shape_.empty()) return InvalidArgument("len() of a 0-d view");
  return shape_[0];
}

namespace {
bool Contiguous(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, int64_t itemsize,
                bool fortran) {
  int64_t expected = itemsize;
  for (int64_t d : shape) {
    if (d == 0) return true;
  }
  for (size_t j = 0; j < shape.size(); ++j) {
    const size_t k = fortran ? j : shape.size() - 1 - j;
    if (shape[k] != 1 && strides[k] != expected) return false;
    expected *= shape[k];
  }
  return true;
}
}  // namespace

bool View::c_contiguous() const { return Contiguous(shape_, strides_, itemsize(), false); }
bool View::f_contiguous() const { return Contiguous(shape_, strides_, itemsize(), true); }

Result<View> View::Index(std::span<const IndexItem> index) const {
  BA_ASSIGN_OR_RETURN(Layout l, internal::ApplyIndex(Layout{0, shape_, strides_}, index));
  View v = *this;
  v.data_ = data_ + l.offset;
  v.shape_ = std::move(l.shape);
  v.strides_ = std::move(l.strides);
  return v;
}

std::pair<const std::byte*, const std::byte*> View::Extent() const {
  auto [lo, hi] = internal::LayoutExtent(Layout{0, shape_, strides_}, itemsize());
  return {data_ + lo, data_ + hi};
}

std::byte* View::ElementPointer(const int64_t* idx, size_t n, const DType& as) const {
  if (!(as == dtype_) || !dtype_.native()) {
    throw Error(InvalidArgument("at<" + as.str() + ">: the view holds " + dtype_.str() +
                                (dtype_.native() ? "" : " in non-native byte order")));
  }
  if (n != shape_.size()) {
    throw Error(InvalidArgument("at(): " + std::to_string(n) + " indices for a " +
                                std::to_string(shape_.size()) + "-d view"));
  }
  std::byte* p = data_;
  for (size_t k = 0; k < n; ++k) {
    int64_t i = idx[k] < 0 ? idx[k] + shape_[k] : idx[k];
    if (i < 0 || i >= shape_[k]) {
      throw Error(OutOfRange("index " + std::to_string(idx[k]) + " is out of bounds for axis " +
                             std::to_string(k) + " with size " + std::to_string(shape_[k])));
    }
    p += i * strides_[k];
  }
  return p;
}

Status View::CheckSpan(const DType& as) const {
  if (!(as == dtype_) || !dtype_.native()) {
    return InvalidArgument("Span<" + as.str() + ">: the view holds " + dtype_.str());
  }
  if (!c_contiguous()) return InvalidArgument("Span(): the view is not C-contiguous");
  return Status::Ok();
}

Status View::ReadInto(const View& out) const {
  const auto [from, to] = Extent();
  const auto [out_from, out_to] = out.Extent();
  const bool direct = backing_ && dtype_ == out.dtype() && shape_ == out.shape() &&
                      ((c_contiguous() && out.c_contiguous()) || (f_contiguous() && out.f_contiguous())) &&
                      (out_to <= from || to <= out_from);
  if (!direct) return out.Assign(*this);
  return backing_->CopyOut(from, to, out.data());
}

Status View::Assign(const View& src) const {
  if (!(src.dtype_ == dtype_)) {
    return InvalidArgument("cannot assign " + src.dtype_.str() + " values to a " + dtype_.str() +
                           " view (convert them first)");
  }
  // Broadcast src to this shape (NumPy rules: align from the right; extents equal or 1).
  const size_t nd = shape_.size(), ns = src.shape_.size();
  auto cannot = [&] {
    return InvalidArgument("could not broadcast input array from shape " +
                           ShapeString(src.shape_) + " into shape " +
                           ShapeString(shape_));
  };
  if (ns > nd) {
    // Leading extents of 1 may be dropped (NumPy allows assigning (1, 3) into (3,)).
    for (size_t k = 0; k < ns - nd; ++k) {
      if (src.shape_[k] != 1) return cannot();
    }
  }
  std::vector<int64_t> sstrides(nd, 0);
  for (size_t j = 0; j < std::min(nd, ns); ++j) {
    const size_t kd = nd - 1 - j, ks = ns - 1 - j;
    if (src.shape_[ks] == shape_[kd]) {
      sstrides[kd] = src.strides_[ks];
    } else if (src.shape_[ks] != 1) {
      return cannot();
    }
  }
  if (size() == 0) return Status::Ok();
  BA_ASSIGN_OR_RETURN(WriteReservation reserved, ReserveWrite());
  // Overlapping source and destination: copy the source aside first, as NumPy does.
  auto [dlo, dhi] = Extent();
  auto [slo, shi] = src.Extent();
  std::vector<std::byte> temp;
  const std::byte* sdata = src.data_;
  if (slo < dhi && dlo < shi) {
    temp.resize(static_cast<size_t>(src.nbytes()));
    auto cstrides = ContiguousStrides(src.shape_, itemsize(), false);
    internal::StridedCopy(temp.data(), cstrides, src.data_, src.strides_, src.shape_, itemsize());
    sdata = temp.data();
    for (size_t j = 0; j < std::min(nd, ns); ++j) {
      const size_t kd = nd - 1 - j, ks = ns - 1 - j;
      if (sstrides[kd] != 0) sstrides[kd] = cstrides[ks];
    }
  }
  internal::StridedCopy(data_, strides_, sdata, sstrides, shape_, itemsize());
  return Status::Ok();
}

Status View::Fill(double value) const {
  std::byte element[16];
  dtype_.FromDouble(value, element);
  return FillBytes(element);
}

Status View::FillBytes(const void* element) const {
  const int64_t n = size();
  if (n == 0) return Status::Ok();
  BA_ASSIGN_OR_RETURN(WriteReservation reserved, ReserveWrite());
  const int64_t isz = itemsize();
  if (c_contiguous() || f_contiguous()) {
    // Contiguous: fill the bytes by doubling copies.
    std::byte* p = Extent().first == data_ ? data_ : const_cast<std::byte*>(Extent().first);
    const int64_t total = n * isz;
    std::memcpy(p, element, isz);
    int64_t done = isz;
    while (done < total) {
      const int64_t chunk = std::min(done, total - done);
      std::memcpy(p + done, p, std::min<int64_t>(chunk, 1 << 20));
      done += std::min<int64_t>(chunk, 1 << 20);
    }
    return Status::Ok();
  }
  std::vector<int64_t> zero(shape_.size(), 0);
  internal::StridedCopy(data_, strides_, static_cast<const std::byte*>(element), zero, shape_, isz);
  return Status::Ok();
}

Status View::Load() const {
  if (!backing_) return Status::Ok();
  auto [lo, hi] = Extent();
  return backing_->Load(lo, hi);
}

Result<WriteReservation> View::ReserveWrite() const {
  if (!backing_ || size() == 0) return WriteReservation();
  auto [lo, hi] = Extent();
  return backing_->ReserveWrite(lo, hi, size());
}

}  // namespace bigarray

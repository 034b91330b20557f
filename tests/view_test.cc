#include <doctest/doctest.h>
// Views and NumPy basic indexing (semantics.md A2-A4, A8), checked against a reference model.

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bigarray/database.h"
#include "bigarray/dtype.h"
#include "bigarray/status.h"
#include "bigarray/view.h"

using namespace bigarray;

namespace {

using Shape = std::vector<int64_t>;
using IndexList = std::vector<IndexItem>;
constexpr std::nullopt_t None = std::nullopt;

// ---- The reference: NumPy basic indexing, written from the Python rules, not from the library.

// Python's slice.indices(n) followed by len(range(start, stop, step)); step != 0.
struct SliceRange {
  int64_t start, step, len;
};
SliceRange SliceIndices(const Slice& s, int64_t n) {
  const int64_t step = s.step;
  const int64_t lower = step > 0 ? 0 : -1, upper = step > 0 ? n : n - 1;
  auto bound = [&](std::optional<int64_t> v, int64_t dflt) {
    if (!v) return dflt;
    return std::clamp(*v < 0 ? *v + n : *v, lower, upper);
  };
  const int64_t start = bound(s.start, step > 0 ? 0 : n - 1);
  const int64_t stop = bound(s.stop, step > 0 ? n : -1);
  int64_t len = 0;
  if (step > 0 && start < stop) len = (stop - start - 1) / step + 1;
  if (step < 0 && stop < start) len = (start - stop - 1) / -step + 1;
  return {start, step, len};
}

// NumPy's strides for a contiguous array (_array_fill_strides: a zero extent counts as 1).
Shape RefStrides(const Shape& shape, bool fortran, int64_t itemsize) {
  Shape s(shape.size());
  int64_t acc = itemsize;
  for (size_t j = 0; j < shape.size(); ++j) {
    const size_t k = fortran ? j : shape.size() - 1 - j;
    s[k] = acc;
    acc *= std::max<int64_t>(shape[k], 1);
  }
  return s;
}

// NumPy's C_CONTIGUOUS / F_CONTIGUOUS flags: extent-1 axes are ignored; empty is both.
bool RefContiguous(const Shape& shape, const Shape& strides, int64_t itemsize, bool fortran) {
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return true;
  int64_t expect = itemsize;
  for (size_t j = 0; j < shape.size(); ++j) {
    const size_t k = fortran ? j : shape.size() - 1 - j;
    if (shape[k] == 1) continue;
    if (strides[k] != expect) return false;
    expect *= shape[k];
  }
  return true;
}

// Calls fn(index) for every multi-index of `shape` in C order (once for a 0-d shape).
template <typename Fn>
void ForEachIndex(const Shape& shape, Fn&& fn) {
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return;
  Shape idx(shape.size(), 0);
  for (;;) {
    fn(idx);
    int k = static_cast<int>(shape.size()) - 1;
    while (k >= 0 && ++idx[k] == shape[k]) idx[k--] = 0;
    if (k < 0) return;
  }
}

// The position in memory (in elements) of element `idx` of a contiguous array.
int64_t MemoryPosition(const Shape& shape, bool fortran, const Shape& idx) {
  int64_t pos = 0;
  for (size_t j = 0; j < shape.size(); ++j) {
    const size_t k = fortran ? shape.size() - 1 - j : j;
    pos = pos * shape[k] + idx[k];
  }
  return pos;
}

struct Ref {
  std::optional<Code> error;    // NumPy raises
  bool any_error_code = false;  // NumPy's IndexError with no obvious code (too many indices)
  Shape shape, strides;
  std::vector<int64_t> positions;  // memory position of each result element, in C order
};

Ref RefIndex(const Shape& shape, bool fortran, int64_t itemsize, const IndexList& index) {
  Ref r;
  const int nd = static_cast<int>(shape.size());
  int consumed = 0, ellipses = 0;
  for (const IndexItem& it : index) {
    if (std::holds_alternative<int64_t>(it) || std::holds_alternative<Slice>(it)) ++consumed;
    if (std::holds_alternative<Ellipsis>(it)) ++ellipses;
    if (auto* s = std::get_if<Slice>(&it); s && s->step == 0) r.error = Code::kInvalidArgument;
  }
  if (ellipses > 1) r.error = Code::kInvalidArgument;
  if (consumed > nd) r.error = Code::kInvalidArgument, r.any_error_code = true;
  if (r.error) return r;
  IndexList full;  // the ellipsis (or the end) expanded into full slices
  for (const IndexItem& it : index) {
    if (std::holds_alternative<Ellipsis>(it))
      full.insert(full.end(), nd - consumed, All());
    else
      full.push_back(it);
  }
  if (ellipses == 0) full.insert(full.end(), nd - consumed, All());

  const Shape src_strides = RefStrides(shape, fortran, itemsize);
  struct Out {
    int src;
    int64_t start, step;
  };  // src < 0: a new axis
  std::vector<Out> outs;
  Shape fixed(nd, 0);
  int k = 0;
  for (const IndexItem& it : full) {
    if (auto* i = std::get_if<int64_t>(&it)) {
      const int64_t v = *i < 0 ? *i + shape[k] : *i;
      if (v < 0 || v >= shape[k]) {
        r.error = Code::kOutOfRange;
        return r;
      }
      fixed[k++] = v;
    } else if (auto* s = std::get_if<Slice>(&it)) {
      const SliceRange sr = SliceIndices(*s, shape[k]);
      r.shape.push_back(sr.len);
      r.strides.push_back(src_strides[k] * sr.step);
      outs.push_back({k++, sr.start, sr.step});
    } else {
      r.shape.push_back(1);
      r.strides.push_back(0);
      outs.push_back({-1, 0, 0});
    }
  }
  ForEachIndex(r.shape, [&](const Shape& idx) {
    Shape src = fixed;
    for (size_t j = 0; j < outs.size(); ++j) {
      if (outs[j].src >= 0) src[outs[j].src] = outs[j].start + idx[j] * outs[j].step;
    }
    r.positions.push_back(MemoryPosition(shape, fortran, src));
  });
  return r;
}

// ---- Comparing the library with the reference.

std::string Str(const Shape& v) {
  std::ostringstream o;
  o << "(";
  for (size_t i = 0; i < v.size(); ++i) o << (i ? ", " : "") << v[i];
  o << ")";
  return o.str();
}

std::string Describe(const IndexList& index) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < index.size(); ++i) {
    o << (i ? ", " : "");
    const IndexItem& it = index[i];
    if (auto* v = std::get_if<int64_t>(&it)) o << *v;
    if (auto* s = std::get_if<Slice>(&it)) {
      if (s->start) o << *s->start;
      o << ":";
      if (s->stop) o << *s->stop;
      if (s->step != 1) o << ":" << s->step;
    }
    if (std::holds_alternative<NewAxis>(it)) o << "None";
    if (std::holds_alternative<Ellipsis>(it)) o << "...";
  }
  return o.str() + "]";
}

// True when `got` is what NumPy gives for an int32 array whose elements hold their own memory
// position. Values are read through data() and the view's own strides, so a wrong offset shows.
bool Matches(const Result<View>& got, const Ref& ref, std::string* why) {
  if (ref.error) {
    if (got.ok()) return *why = "expected an error, got shape " + Str(got->shape()), false;
    if (!ref.any_error_code && got.status().code() != *ref.error) {
      return *why = "wrong error " + got.status().ToString(), false;
    }
    return true;
  }
  if (!got.ok()) return *why = "unexpected error " + got.status().ToString(), false;
  const View& v = *got;
  if (v.shape() != ref.shape)
    return *why = "shape " + Str(v.shape()) + " != " + Str(ref.shape), false;
  if (v.strides() != ref.strides) {
    return *why = "strides " + Str(v.strides()) + " != " + Str(ref.strides), false;
  }
  if (!(v.dtype() == DType::Of<int32_t>()) || v.ndim() != static_cast<int>(ref.shape.size()) ||
      v.size() != static_cast<int64_t>(ref.positions.size()) || v.nbytes() != 4 * v.size()) {
    return *why = "dtype, ndim, size or nbytes", false;
  }
  if (v.len().ok() != (v.ndim() > 0) || (v.ndim() > 0 && *v.len() != ref.shape[0])) {
    return *why = "len()", false;
  }
  if (v.c_contiguous() != RefContiguous(ref.shape, ref.strides, 4, false) ||
      v.f_contiguous() != RefContiguous(ref.shape, ref.strides, 4, true)) {
    return *why = "c_contiguous/f_contiguous", false;
  }
  int64_t lo = 0, hi = 4;  // the byte extent relative to data()
  for (size_t k = 0; k < ref.shape.size(); ++k) {
    const int64_t span = (ref.shape[k] - 1) * ref.strides[k];
    lo += std::min<int64_t>(span, 0);
    hi += std::max<int64_t>(span, 0);
  }
  auto [first, last] = v.Extent();
  if (ref.positions.empty() ? first != last : (first != v.data() + lo || last != v.data() + hi)) {
    return *why = "Extent()", false;
  }
  size_t n = 0;
  bool ok = true;
  ForEachIndex(ref.shape, [&](const Shape& idx) {
    if (!ok) return;
    const std::byte* p = v.data();
    for (size_t k = 0; k < idx.size(); ++k) p += idx[k] * v.strides()[k];
    int32_t x;
    std::memcpy(&x, p, sizeof x);
    if (x != ref.positions[n]) {
      *why = "element " + Str(idx) + " is " + std::to_string(x) + ", expected " +
             std::to_string(ref.positions[n]);
      ok = false;
    }
    ++n;
  });
  return ok;
}

void ExpectLikeNumPy(const View& base, bool fortran, const IndexList& index) {
  std::string why;
  const Ref ref = RefIndex(base.shape(), fortran, 4, index);
  CHECK_MESSAGE(Matches(base.Index(index), ref, &why), Describe(index), " on ", Str(base.shape()),
                fortran ? " F" : " C", ": ", why);
}

// The per-axis choices of the exhaustive test; both forms of the strided ones appear.
IndexList AxisChoices(int64_t n, size_t axis) {
  const bool odd = axis % 2;
  return {All(),
          int64_t{0},
          int64_t{-1},
          int64_t{n / 2},
          Slice{1, -1, 1},
          odd ? Slice{1, None, 2} : Slice{None, None, 2},
          odd ? Slice{-2, None, -2} : Slice{None, None, -1}};
}

// Indexes with every combination of AxisChoices and compares each result with the reference.
template <typename IndexFn>
void RunExhaustive(const Shape& shape, bool fortran, IndexFn&& index_fn) {
  std::vector<IndexList> choices;
  for (size_t k = 0; k < shape.size(); ++k) choices.push_back(AxisChoices(shape[k], k));
  int combos = 0, failures = 0;
  ForEachIndex(Shape(shape.size(), 7), [&](const Shape& pick) {
    IndexList index;
    for (size_t k = 0; k < pick.size(); ++k) index.push_back(choices[k][pick[k]]);
    ++combos;
    std::string why;
    const Ref ref = RefIndex(shape, fortran, 4, index);
    if (!Matches(index_fn(std::span<const IndexItem>(index)), ref, &why) && ++failures <= 10) {
      FAIL_CHECK(Describe(index) << " on " << Str(shape) << (fortran ? " F" : " C") << ": " << why);
    }
  });
  CHECK(combos == 2401);
  CHECK(failures == 0);
}

// A wrapped int32 buffer whose elements hold their own memory position.
struct Wrapped {
  Wrapped(Shape s, bool fortran) : buf(Count(s)), shape(std::move(s)) {
    for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<int32_t>(i);
    view =
        View::Wrap(buf.data(), DType::Of<int32_t>(), shape, RefStrides(shape, fortran, 4)).value();
  }
  static size_t Count(const Shape& s) {
    int64_t n = 1;
    for (int64_t e : s) n *= e;
    return static_cast<size_t>(std::max<int64_t>(n, 1));
  }
  std::vector<int32_t> buf;
  Shape shape;
  View view;
};

ArrayOptions Opts(bool fortran) { return ArrayOptions{fortran ? Order::kF : Order::kC, 4096}; }

}  // namespace

// ---- The reference itself, against values worked out by hand in Python.

TEST_CASE("reference model: slice.indices and strides agree with Python and NumPy") {
  auto range = [](Slice s, int64_t n) {
    std::vector<int64_t> out;
    const SliceRange r = SliceIndices(s, n);
    for (int64_t i = 0; i < r.len; ++i) out.push_back(r.start + i * r.step);
    return out;
  };
  using V = std::vector<int64_t>;
  CHECK(range(Slice{10, -10, -1}, 7) == V{6, 5, 4, 3, 2, 1, 0});
  CHECK(range(Slice{-100, 2, 1}, 7) == V{0, 1});
  CHECK(range(Slice{10, 20, 1}, 7).empty());
  CHECK(range(Slice{5, 1, 1}, 7).empty());
  CHECK(range(Slice{-2, None, -2}, 7) == V{5, 3, 1});
  CHECK(range(Slice{1, None, 2}, 4) == V{1, 3});
  CHECK(range(Slice{None, None, -1}, 0).empty());
  CHECK(RefStrides({7, 5, 3, 4}, false, 4) == Shape{240, 48, 16, 4});
  CHECK(RefStrides({7, 5, 3, 4}, true, 4) == Shape{4, 28, 140, 420});
  CHECK(RefStrides({3, 0}, false, 4) == Shape{4, 4});  // np.empty((3, 0), 'i4').strides
}

// ---- Exhaustive basic indexing (A3).

TEST_CASE("A3: every per-axis combination on a wrapped buffer, C and F order") {
  for (bool fortran : {false, true}) {
    CAPTURE(fortran);
    Wrapped w({7, 5, 3, 4}, fortran);
    CHECK(w.view.strides() == RefStrides(w.shape, fortran, 4));
    RunExhaustive(w.shape, fortran,
                  [&](std::span<const IndexItem> ix) { return w.view.Index(ix); });
  }
}

TEST_CASE("A3/A4: every per-axis combination on a memory-database array, C and F order") {
  // The second shape is 33600 bytes, so with 4096-byte blocks its views cross blocks.
  for (bool fortran : {false, true}) {
    for (const Shape& shape : {Shape{7, 5, 3, 4}, Shape{7, 5, 6, 40}}) {
      CAPTURE(fortran);
      CAPTURE(Str(shape));
      Database db = Database::Open("memory:").value();
      Array arr = db.Create("a", shape, "<i4", Opts(fortran)).value();
      CHECK(arr.shape() == shape);
      CHECK(arr.strides() == RefStrides(shape, fortran, 4));
      View whole = arr.view().value();
      REQUIRE(whole.strides() == RefStrides(shape, fortran, 4));
      for (int32_t i = 0; i < whole.size(); ++i) std::memcpy(whole.data() + 4 * i, &i, 4);
      RunExhaustive(shape, fortran, [&](std::span<const IndexItem> ix) { return whole.Index(ix); });
      RunExhaustive(shape, fortran, [&](std::span<const IndexItem> ix) { return arr.Index(ix); });
    }
  }
}

// ---- Edge cases of indexing.

TEST_CASE("A3: an integer index out of range is kOutOfRange") {
  Wrapped w({7, 5}, false);
  for (IndexList ix :
       {IndexList{int64_t{7}}, IndexList{int64_t{-8}}, IndexList{int64_t{0}, int64_t{5}},
        IndexList{All(), int64_t{-6}}, IndexList{ellipsis, int64_t{100}}}) {
    CAPTURE(Describe(ix));
    CHECK(w.view.Index(ix).status().code() == Code::kOutOfRange);
  }
  CHECK(w.view.Index({int64_t{6}}).value().len().value() == 5);
  CHECK(w.view.Index({int64_t{-7}, int64_t{-5}}).value().at<int32_t>() == 0);
}

TEST_CASE("A3: a slice out of range is empty, not an error") {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  constexpr int64_t kHuge = int64_t{1} << 40;  // a step far past any extent; stride*step fits
  for (bool fortran : {false, true}) {
    Wrapped w1({7}, fortran), w2({7, 5}, fortran);
    for (Slice s :
         {Slice{10, 20, 1}, Slice{-100, 2, 1}, Slice{5, 1, 1}, Slice{10, -10, -1},
          Slice{-100, -50, -1}, Slice{100, 50, -1}, Slice{7, None, 1}, Slice{None, -7, 1},
          Slice{-1, -100, -2}, Slice{None, None, -3}, Slice{3, 3, 1}, Slice{kMin, kMax, 1},
          Slice{kMax, kMin, -1}, Slice{1, None, kHuge}, Slice{None, None, -kHuge}}) {
      ExpectLikeNumPy(w1.view, fortran, {s});
      ExpectLikeNumPy(w2.view, fortran, {All(), s});
      ExpectLikeNumPy(w2.view, fortran, {s, int64_t{-1}});
    }
  }
  Wrapped w({7}, false);
  CHECK(w.view.Index({Slice{10, 20, 1}}).value().shape() == Shape{0});
  CHECK(w.view.Index({Slice{10, -10, -1}}).value().shape() == Shape{7});
}

TEST_CASE("A3: a slice step of zero is kInvalidArgument") {
  Wrapped w({7, 5}, false);
  CHECK(w.view.Index({Slice{None, None, 0}}).status().code() == Code::kInvalidArgument);
  CHECK(w.view.Index({int64_t{1}, Slice{1, 3, 0}}).status().code() == Code::kInvalidArgument);
}

TEST_CASE("A3: too many indices and two ellipses are errors") {
  Wrapped w({7, 5}, false);
  CHECK_FALSE(w.view.Index({int64_t{0}, int64_t{0}, int64_t{0}}).ok());
  CHECK_FALSE(w.view.Index({All(), All(), All()}).ok());
  CHECK_FALSE(w.view.Index({ellipsis, int64_t{0}, int64_t{0}, int64_t{0}}).ok());
  CHECK(w.view.Index({ellipsis, ellipsis}).status().code() == Code::kInvalidArgument);
  CHECK(w.view.Index({ellipsis, int64_t{0}, ellipsis}).status().code() == Code::kInvalidArgument);
  // New axes do not count; an ellipsis may stand for no axis at all.
  CHECK(w.view.Index({int64_t{0}, newaxis, int64_t{0}, newaxis}).value().shape() == Shape{1, 1});
  CHECK(w.view.Index({int64_t{1}, ellipsis, int64_t{2}}).value().at<int32_t>() == 7);
}

TEST_CASE("A3: ellipsis and newaxis in any position") {
  const Slice rev{None, None, -2}, mid{1, -1, 1};
  const std::vector<IndexList> cases = {
      {},
      {ellipsis},
      {newaxis},
      {newaxis, newaxis},
      {ellipsis, newaxis},
      {newaxis, ellipsis, newaxis},
      {int64_t{0}, ellipsis, int64_t{-1}},
      {mid, ellipsis, rev, newaxis},
      {ellipsis, int64_t{0}, int64_t{0}, int64_t{0}, int64_t{0}},
      {int64_t{0}, int64_t{0}, int64_t{0}, int64_t{0}, ellipsis},
      {newaxis, int64_t{0}, newaxis, ellipsis, int64_t{1}, newaxis},
      {int64_t{2}, newaxis, ellipsis, mid, newaxis, rev},
      {ellipsis, rev, newaxis, int64_t{-2}},
      {All(), ellipsis, All(), All(), All()},
      {newaxis, rev, newaxis, rev, newaxis, rev, newaxis, rev, newaxis}};
  for (bool fortran : {false, true}) {
    Wrapped w({7, 5, 3, 4}, fortran);
    for (const IndexList& ix : cases) ExpectLikeNumPy(w.view, fortran, ix);
  }
  Wrapped w({7, 5, 3, 4}, false);
  auto v = w.view.Index({newaxis, int64_t{0}, ellipsis, newaxis});
  REQUIRE(v.ok());
  CHECK(v->shape() == Shape{1, 5, 3, 4, 1});
  CHECK(v->strides() == Shape{0, 48, 16, 4, 0});
}

TEST_CASE("A2: 0-d views") {
  int32_t data[3] = {10, 20, 30};
  View v = View::Wrap(data, DType::Of<int32_t>(), {3}).value();
  View e = v.Index({int64_t{1}}).value();
  CHECK(e.ndim() == 0);
  CHECK(e.shape().empty());
  CHECK(e.strides().empty());
  CHECK(e.size() == 1);
  CHECK(e.nbytes() == 4);
  CHECK(e.at<int32_t>() == 20);
  CHECK(v.Index({int64_t{-1}}).value().at<int32_t>() == 30);
  CHECK(e.len().status().code() == Code::kInvalidArgument);
  CHECK(e.c_contiguous());
  CHECK(e.f_contiguous());
  CHECK(e.Index({}).value().at<int32_t>() == 20);
  CHECK(e.Index({ellipsis}).value().at<int32_t>() == 20);
  CHECK(e.Index({newaxis}).value().shape() == Shape{1});
  CHECK(e.Index({newaxis}).value().strides() == Shape{0});
  CHECK_FALSE(e.Index({int64_t{0}}).ok());

  int32_t x = 5;
  View s = View::Wrap(&x, DType::Of<int32_t>(), {}).value();
  CHECK(s.size() == 1);
  CHECK(s.ndim() == 0);
  CHECK(s.len().status().code() == Code::kInvalidArgument);
  CHECK(s.at<int32_t>() == 5);
  CHECK(s.Fill(7).ok());
  CHECK(x == 7);
}

TEST_CASE("A2: zero-extent axes have NumPy strides and size 0") {
  int32_t dummy = 0;
  View v = View::Wrap(&dummy, DType::Of<int32_t>(), {0, 3}).value();
  CHECK(v.strides() == Shape{12, 4});
  CHECK(v.size() == 0);
  CHECK(v.nbytes() == 0);
  CHECK(v.len().value() == 0);
  CHECK(v.c_contiguous());
  CHECK(v.f_contiguous());
  CHECK(v.Index({int64_t{0}}).status().code() == Code::kOutOfRange);
  CHECK(v.Index({All(), int64_t{1}}).value().shape() == Shape{0});
  CHECK(v.Index({Slice{None, None, -1}, Slice{None, None, 2}}).value().shape() == Shape{0, 2});
  CHECK(ContiguousStrides({0, 3}, 4, false) == Shape{12, 4});
  CHECK(ContiguousStrides({3, 0}, 4, false) == Shape{4, 4});  // NumPy skips zero extents
  CHECK(ContiguousStrides({2, 0, 3}, 4, true) == Shape{4, 8, 8});

  Database db = Database::Open("memory:").value();
  Array arr = db.Create("empty", {0, 3}, "<i4").value();
  CHECK(arr.strides() == Shape{12, 4});
  CHECK(arr.size() == 0);
  CHECK(arr.len().value() == 0);
  CHECK(arr.view().value().size() == 0);
}

TEST_CASE("A2: c_contiguous and f_contiguous as NumPy reports them") {
  Wrapped c({7, 5, 3, 4}, false), f({7, 5, 3, 4}, true);
  auto flags = [](const Result<View>& v) {
    REQUIRE(v.ok());
    return std::pair{v->c_contiguous(), v->f_contiguous()};
  };
  using P = std::pair<bool, bool>;
  const Slice rev{None, None, -1};
  CHECK(flags(c.view) == P{true, false});
  CHECK(flags(f.view) == P{false, true});
  CHECK(flags(c.view.Index({int64_t{0}})) == P{true, false});
  CHECK(flags(c.view.Index({ellipsis, int64_t{0}})) == P{false, false});
  CHECK(flags(f.view.Index({ellipsis, int64_t{0}})) == P{false, true});
  CHECK(flags(c.view.Index({All(), Slice{None, None, 2}})) == P{false, false});
  CHECK(flags(c.view.Index({Slice{2, 3, 1}})) == P{true, false});  // extent 1 is ignored
  CHECK(flags(c.view.Index({newaxis, ellipsis, newaxis})) == P{true, false});
  CHECK(flags(c.view.Index({int64_t{0}, int64_t{0}, int64_t{0}})) == P{true, true});
  CHECK(flags(c.view.Index({int64_t{0}, int64_t{0}, int64_t{0}, rev})) == P{false, false});
  CHECK(flags(c.view.Index({int64_t{0}, int64_t{0}, int64_t{0}, Slice{2, 1, -1}})) ==
        P{true, true});
  CHECK(flags(c.view.Index({Slice{3, 3, 1}})) == P{true, true});  // empty is both
  CHECK(flags(c.view.Index({int64_t{1}, int64_t{2}, Slice{0, 1, 1}})) == P{true, true});
  CHECK(flags(c.view.Index({int64_t{1}, Slice{0, 2, 1}, int64_t{0}})) == P{false, false});
  CHECK(flags(c.view.Index({int64_t{1}, Slice{2, 3, 1}, int64_t{0}, Slice{None, None, 2}})) ==
        P{false, false});
  CHECK(flags(c.view.Index({int64_t{1}, Slice{2, 3, 1}, Slice{0, 1, 1}, All()})) == P{true, true});
}

// ---- Assignment and element access (A8).

namespace {

constexpr int64_t kRows = 4, kCols = 3;

// A (4, 3) float64 destination in plain memory.
struct WrappedDst {
  std::vector<double> buf = std::vector<double>(kRows * kCols);
  View Fresh() { return View::Wrap(buf.data(), DType::Of<double>(), {kRows, kCols}).value(); }
};

// A (4, 3) float64 array of a memory database.
struct DatabaseDst {
  Database db = Database::Open("memory:").value();
  Array arr = db.Create("dst", {kRows, kCols}, "<f8", ArrayOptions{Order::kC, 4096}).value();
  View Fresh() { return arr.view().value(); }
};

View WrapF8(std::vector<double>& v, Shape shape, Shape strides = {}) {
  for (int64_t& s : strides) s *= 8;  // given in elements
  return View::Wrap(v.data(), DType::Of<double>(), std::move(shape), std::move(strides)).value();
}

// Every element of a fresh view of the destination equals `expect` (row-major).
void CheckAll(const View& dst, const std::vector<double>& expect) {
  for (int64_t i = 0; i < kRows; ++i) {
    for (int64_t j = 0; j < kCols; ++j) {
      CAPTURE(i);
      CAPTURE(j);
      CHECK(dst.at<double>(i, j) == expect[i * kCols + j]);
    }
  }
}

}  // namespace

TEST_CASE_TEMPLATE("A8: assignment broadcasts like NumPy", D, WrappedDst, DatabaseDst) {
  D d;
  View dst = d.Fresh();
  std::vector<double> expect(kRows * kCols);
  for (size_t i = 0; i < expect.size(); ++i) expect[i] = 100 + static_cast<double>(i);
  std::vector<double> init = expect;
  REQUIRE(dst.Assign(WrapF8(init, {kRows, kCols})).ok());
  CheckAll(d.Fresh(), expect);

  SUBCASE("a (1,) and a 0-d source fill everything") {
    std::vector<double> one = {7};
    REQUIRE(dst.Assign(WrapF8(one, {1})).ok());
    CheckAll(d.Fresh(), std::vector<double>(12, 7));
    one[0] = -3;
    REQUIRE(dst.Assign(WrapF8(one, {})).ok());
    CheckAll(d.Fresh(), std::vector<double>(12, -3));
    std::vector<double> one_by_one = {9};
    REQUIRE(dst.Assign(WrapF8(one_by_one, {1, 1})).ok());
    CheckAll(d.Fresh(), std::vector<double>(12, 9));
  }
  SUBCASE("a row (3,) and a column (4, 1)") {
    std::vector<double> row = {1, 2, 3}, col = {10, 20, 30, 40};
    REQUIRE(dst.Assign(WrapF8(row, {kCols})).ok());
    for (int64_t i = 0; i < 12; ++i) expect[i] = row[i % kCols];
    CheckAll(d.Fresh(), expect);
    REQUIRE(dst.Assign(WrapF8(col, {kRows, 1})).ok());
    for (int64_t i = 0; i < 12; ++i) expect[i] = col[i / kCols];
    CheckAll(d.Fresh(), expect);
    // A leading extent-1 axis on the source is dropped, as in NumPy.
    REQUIRE(dst.Assign(WrapF8(row, {1, 1, kCols})).ok());
    CheckAll(d.Fresh(), std::vector<double>{1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3});
  }
  SUBCASE("a strided source and a negative-step destination") {
    std::vector<double> src(12);
    for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<double>(i);
    REQUIRE(dst.Assign(WrapF8(src, {kRows, kCols}, {1, kRows})).ok());  // F-ordered source
    for (int64_t i = 0; i < 12; ++i) expect[i] = src[(i / kCols) + (i % kCols) * kRows];
    CheckAll(d.Fresh(), expect);
    View sub = dst.Index({Slice{None, None, -2}, Slice{None, None, -1}}).value();  // rows 3, 1
    REQUIRE(sub.shape() == Shape{2, 3});
    std::vector<double> row = {-1, -2, -3};
    REQUIRE(sub.Assign(WrapF8(row, {kCols})).ok());
    for (int64_t r : {3, 1}) {
      for (int64_t j = 0; j < kCols; ++j) expect[r * kCols + (kCols - 1 - j)] = row[j];
    }
    CheckAll(d.Fresh(), expect);
  }
  SUBCASE("a shape that does not broadcast, or another dtype, writes nothing") {
    std::vector<double> big(24, -1);
    for (Shape bad :
         {Shape{2}, Shape{4}, Shape{3, 3}, Shape{4, 2}, Shape{2, 4, 3}, Shape{4, 3, 1}}) {
      CAPTURE(Str(bad));
      CHECK(dst.Assign(WrapF8(big, bad)).code() == Code::kInvalidArgument);
    }
    std::vector<int32_t> ints(12, -1);
    CHECK(
        dst.Assign(View::Wrap(ints.data(), DType::Of<int32_t>(), {kRows, kCols}).value()).code() ==
        Code::kInvalidArgument);
    std::vector<float> floats(12, -1);
    CHECK(dst.Assign(View::Wrap(floats.data(), DType::Of<float>(), {kCols}).value()).code() ==
          Code::kInvalidArgument);
    View empty = dst.Index({Slice{2, 2, 1}}).value();  // (0, 3)
    CHECK(empty.Assign(WrapF8(big, {kCols})).ok());
    CHECK(empty.Assign(WrapF8(big, {5, kCols})).code() == Code::kInvalidArgument);
    CheckAll(d.Fresh(), expect);
  }
  SUBCASE("Fill sets exactly the selected elements") {
    REQUIRE(
        dst.Index({Slice{1, None, 2}, Slice{None, None, -2}}).value().Fill(2.5).ok());  // rows 1, 3
    for (int64_t r : {1, 3}) expect[r * kCols] = expect[r * kCols + 2] = 2.5;
    CheckAll(d.Fresh(), expect);
    REQUIRE(dst.Index({int64_t{-1}, int64_t{1}}).value().Fill(-8).ok());
    expect[3 * kCols + 1] = -8;
    CheckAll(d.Fresh(), expect);
    REQUIRE(dst.Fill(2.5).ok());
    CheckAll(d.Fresh(), std::vector<double>(12, 2.5));
  }
  SUBCASE("at<T> is bounds- and type-checked") {
    CHECK(dst.at<double>(3, 2) == expect[11]);
    dst.at<double>(2, 1) = 0.5;
    expect[2 * kCols + 1] = 0.5;
    CheckAll(d.Fresh(), expect);
    CHECK_THROWS_AS((void)dst.at<double>(4, 0), Error);
    CHECK_THROWS_AS((void)dst.at<double>(0, 3), Error);
    CHECK_THROWS_AS((void)dst.at<float>(0, 0), Error);
    CHECK_THROWS_AS((void)dst.at<int64_t>(0, 0), Error);
  }
  SUBCASE("Span needs a C-contiguous view of the same dtype") {
    auto all = dst.Span<double>();
    REQUIRE(all.ok());
    REQUIRE(all->size() == 12);
    for (size_t i = 0; i < 12; ++i) CHECK((*all)[i] == expect[i]);
    auto rows = dst.Index({Slice{1, 3, 1}}).value().Span<const double>();
    REQUIRE(rows.ok());
    CHECK(rows->size() == 6);
    CHECK(rows->front() == expect[3]);
    CHECK(dst.Index({All(), Slice{None, None, 2}}).value().Span<double>().status().code() ==
          Code::kInvalidArgument);
    CHECK(dst.Index({Slice{None, None, -1}}).value().Span<double>().status().code() ==
          Code::kInvalidArgument);
    CHECK_FALSE(dst.Span<float>().ok());
  }
}

TEST_CASE("A8: Fill converts; at<T> and Span refuse what they cannot show natively") {
  std::vector<int32_t> ints(4, 0);
  View iv = View::Wrap(ints.data(), DType::Of<int32_t>(), {4}).value();
  REQUIRE(iv.Index({Slice{None, None, -3}}).value().Fill(-2.7).ok());  // elements 3, 0
  CHECK(ints == std::vector<int32_t>{-2, 0, 0, -2});

  std::vector<double> fbuf(12);
  View fv = WrapF8(fbuf, {kRows, kCols}, {1, kRows});  // F order: not C-contiguous
  CHECK(fv.f_contiguous());
  CHECK(fv.Span<double>().status().code() == Code::kInvalidArgument);

  double swapped = 0;
  View sv =
      View::Wrap(&swapped, DType::Parse(internal::kHostLittleEndian ? ">f8" : "<f8").value(), {1})
          .value();
  CHECK_THROWS_AS((void)sv.at<double>(0), Error);
  CHECK_FALSE(sv.Span<double>().ok());
}

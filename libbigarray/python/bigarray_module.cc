// The Python module `bigarray` (docs/python.md): Database, Array and View over the C++ API.
//
// Arrays hand out numpy.ndarray views that point straight into the mapped region; the base of
// each such ndarray is a bigarray.View, a Python object holding a copy of the bigarray::View,
// which shares ownership of the mapping, so the ndarray stays valid as long as it lives.
//
// The GIL is released around every call that may load, spill, write or wait for the handle's
// lock (Open, Create, Get, Commit, Abort, Append, Resize, Load, mapping a view). Page faults that
// happen inside NumPy code are served while the faulting thread is stopped in a signal handler
// and cannot release it; View.load() / Array.load() prefetch without holding it.
//
// Thread contract: the Python objects are used under the GIL; the C++ handle is reached through
// a shared_ptr copied under the GIL, so close() from one thread while another is inside a call
// without the GIL is safe (the handle is destroyed when the last call leaves).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bigarray/database.h"

namespace py = pybind11;
namespace ba = bigarray;

namespace {

// ---- Errors: every bigarray::Code maps to a Python exception here, and only here. -----------

// bigarray.Error and its subclasses; set once at import (module objects live until exit).
PyObject* g_error = nullptr;
PyObject* g_conflict_error = nullptr;
PyObject* g_corruption_error = nullptr;
PyObject* g_numpy_bool = nullptr;  // numpy.bool_

// What a kNotFound means at the call site: a missing array name (KeyError), or a missing
// database directory (FileNotFoundError).
enum class Missing { kArray, kDatabase };

py::str Text(const std::string& s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
  if (!o) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(o);
}

// Raises the Python exception for a failed status. `hint` is appended to the message.
[[noreturn]] void Raise(const ba::Status& st, Missing missing = Missing::kArray, const std::string& hint = "") {
  std::string msg = st.message();
  if (!hint.empty()) msg += "; " + hint;
  PyObject* type = g_error;
  py::object args = py::make_tuple(Text(msg));
  switch (st.code()) {
    case ba::Code::kInvalidArgument:
    case ba::Code::kAlreadyExists:
      type = PyExc_ValueError;
      break;
    case ba::Code::kNotFound:
      type = missing == Missing::kDatabase ? PyExc_FileNotFoundError : PyExc_KeyError;
      break;
    case ba::Code::kOutOfRange:
      type = PyExc_IndexError;
      break;
    case ba::Code::kConflict:
      type = g_conflict_error;
      break;
    case ba::Code::kCorruption:
      type = g_corruption_error;
      break;
    case ba::Code::kIOError:
      type = PyExc_OSError;
      break;
    case ba::Code::kNoSpace:
      type = PyExc_OSError;
      args = py::make_tuple(ENOSPC, Text(msg));
      break;
    case ba::Code::kResourceExhausted:
      type = PyExc_MemoryError;
      break;
    case ba::Code::kOk:  // not an error: a bug in this module
    case ba::Code::kUnsupported:
    case ba::Code::kFailedPrecondition:
    case ba::Code::kInternal:
      type = g_error;
      break;
  }
  PyObject* exc = PyObject_Call(type, args.ptr(), nullptr);
  if (!exc) throw py::error_already_set();
  if (PyObject_IsInstance(exc, g_error) == 1) {
    // bigarray.Error carries the code's name, e.g. "Conflict", for programs that dispatch on it.
    PyObject_SetAttrString(exc, "code", Text(std::string(ba::CodeName(st.code()))).ptr());
  }
  PyErr_SetObject(type, exc);
  Py_DECREF(exc);
  throw py::error_already_set();
}

void Check(const ba::Status& st, Missing missing = Missing::kArray) {
  if (!st.ok()) Raise(st, missing);
}

template <typename T>
T Value(ba::Result<T>&& r, Missing missing = Missing::kArray) {
  if (!r.ok()) Raise(r.status(), missing);
  return std::move(*r);
}

// Runs `fn` without the GIL; it must not touch Python objects.
template <typename Fn>
auto NoGil(Fn&& fn) {
  py::gil_scoped_release nogil;
  return fn();
}

// ---- Conversions ------------------------------------------------------------------------------

std::string Utf8(py::handle s, const char* what) {
  if (!PyUnicode_Check(s.ptr())) {
    throw py::type_error(std::string(what) + " must be a str, not " + std::string(py::str(s.get_type().attr("__name__"))));
  }
  PyObject* b = PyUnicode_AsEncodedString(s.ptr(), "utf-8", "surrogateescape");
  if (!b) throw py::error_already_set();
  std::string out(PyBytes_AS_STRING(b), static_cast<size_t>(PyBytes_GET_SIZE(b)));
  Py_DECREF(b);
  return out;
}

py::str Name(const std::string& s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape");
  if (!o) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(o);
}

// An integer argument (anything with __index__, not bool), e.g. an extent.
int64_t Int(py::handle o, const char* what) {
  if (PyBool_Check(o.ptr()) || !PyIndex_Check(o.ptr())) {
    throw py::type_error(std::string(what) + " must be an integer, not " + std::string(py::str(o.get_type().attr("__name__"))));
  }
  Py_ssize_t v = PyNumber_AsSsize_t(o.ptr(), PyExc_OverflowError);
  if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
  return static_cast<int64_t>(v);
}

// A shape: an integer or a sequence of integers.
std::vector<int64_t> Shape(py::handle o) {
  const bool array = py::isinstance<py::array>(o) && py::reinterpret_borrow<py::array>(o).ndim() > 0;
  if (!array && PyIndex_Check(o.ptr()) && !PyBool_Check(o.ptr())) return {Int(o, "shape")};
  if (!PySequence_Check(o.ptr()) || PyUnicode_Check(o.ptr())) {
    throw py::type_error("shape must be an integer or a sequence of integers, not " +
                         std::string(py::str(o.get_type().attr("__name__"))));
  }
  std::vector<int64_t> shape;
  for (py::handle d : py::reinterpret_borrow<py::sequence>(o)) shape.push_back(Int(d, "each extent of shape"));
  return shape;
}

py::tuple Tuple(const std::vector<int64_t>& v) {
  py::tuple t(v.size());
  for (size_t i = 0; i < v.size(); ++i) t[i] = py::int_(v[i]);
  return t;
}

// NumPy's dtype for a bigarray dtype ("<f8", ">i4", "|b1", ...).
py::dtype NumpyDType(const ba::DType& d) { return py::dtype(d.str()); }

// A bigarray dtype from anything numpy.dtype() accepts; object and other non-numeric dtypes are
// ValueError, as the C++ parser reports them.
ba::DType ToDType(py::handle spec) {
  if (spec.is_none()) throw py::type_error("dtype is required, e.g. 'f8' or numpy.float64");
  py::dtype dt = py::dtype::from_args(py::reinterpret_borrow<py::object>(spec));
  auto r = ba::DType::Parse(std::string(py::str(dt.attr("str"))));
  if (!r.ok()) throw py::value_error(r.status().message());
  return *r;
}

ba::Order ToOrder(py::handle o) {
  const std::string s = PyUnicode_Check(o.ptr()) ? Utf8(o, "order") : std::string();
  if (s == "C") return ba::Order::kC;
  if (s == "F") return ba::Order::kF;
  throw py::value_error("order must be 'C' or 'F', not " + std::string(py::repr(o)));
}

[[noreturn]] void NotBasic(py::handle item) {
  throw py::type_error(
      "bigarray arrays support basic indexing only (integers, slices, ... and None), not " +
      std::string(py::str(item.get_type().attr("__name__"))) +
      " indices; for fancy or boolean indexing, index a view: A[a:b][idx] or numpy.asarray(A)[idx]");
}

std::optional<int64_t> Bound(PyObject* o) {
  if (o == Py_None) return std::nullopt;
  if (PyBool_Check(o) || !PyIndex_Check(o)) {
    throw py::type_error("slice indices must be integers or None, not " +
                         std::string(py::str(py::handle(o).get_type().attr("__name__"))));
  }
  Py_ssize_t v = PyNumber_AsSsize_t(o, nullptr);  // clamps huge bounds, as Python's slices do
  if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
  return static_cast<int64_t>(v);
}

// A Python index expression (an item or a tuple of items) as bigarray index items.
// `ellipsis`: whether it has a `...` (then a 0-d result is an array, not a scalar, as in NumPy).
std::vector<ba::IndexItem> ToIndex(py::handle key, const std::vector<int64_t>& shape, bool* ellipsis) {
  std::vector<py::handle> items;
  if (PyTuple_Check(key.ptr())) {
    for (py::handle k : py::reinterpret_borrow<py::tuple>(key)) items.push_back(k);
  } else {
    items.push_back(key);
  }
  *ellipsis = false;
  int consuming = 0;
  for (py::handle k : items) {
    if (!k.is_none() && k.ptr() != Py_Ellipsis) ++consuming;
  }
  const int ndim = static_cast<int>(shape.size());
  std::vector<ba::IndexItem> out;
  out.reserve(items.size());
  int axis = 0;  // the array axis the next consuming item indexes
  for (py::handle k : items) {
    PyObject* p = k.ptr();
    if (p == Py_None) {
      out.emplace_back(ba::newaxis);
    } else if (p == Py_Ellipsis) {
      if (*ellipsis) throw py::index_error("an index can only have a single ellipsis ('...')");  // as NumPy
      *ellipsis = true;
      out.emplace_back(ba::ellipsis);
      axis += std::max(ndim - consuming, 0);
    } else if (PySlice_Check(p)) {
      py::object start = k.attr("start"), stop = k.attr("stop"), step = k.attr("step");
      ba::Slice s{Bound(start.ptr()), Bound(stop.ptr()), 1};
      if (auto st = Bound(step.ptr())) {
        s.step = *st;
        // A step beyond the axis selects at most one element whatever its size; bounding it
        // keeps the view's stride (extent * step) from overflowing.
        const int64_t limit = axis < ndim ? std::max<int64_t>(shape[axis], 1) : INT64_MAX;
        if (s.step > limit) s.step = limit;
        if (s.step < -limit) s.step = -limit;
      }
      out.emplace_back(s);
      ++axis;
    } else if (py::isinstance<py::array>(k)) {
      auto a = py::reinterpret_borrow<py::array>(k);
      const char kind = a.dtype().kind();
      if (a.ndim() != 0 || (kind != 'i' && kind != 'u')) NotBasic(k);
      out.emplace_back(Int(k, "index"));  // a 0-d integer array: an integer (NumPy would copy)
      ++axis;
    } else if (PyBool_Check(p) || PyObject_IsInstance(p, g_numpy_bool) == 1 || PyList_Check(p) ||
               PyTuple_Check(p) || !PyIndex_Check(p)) {
      NotBasic(k);
    } else {
      Py_ssize_t v = PyNumber_AsSsize_t(p, PyExc_IndexError);
      if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
      out.emplace_back(static_cast<int64_t>(v));
      ++axis;
    }
  }
  return out;
}

// ---- Objects ----------------------------------------------------------------------------------

// Fork: a child process has the parent's mappings but none of the pager's threads, so it must
// not use, nor even destroy, what the parent opened (destroying may wait for those threads or
// for locks they held). Objects remember the process that made them; in another process they
// refuse to work and are leaked at destruction.
[[noreturn]] void RaiseForked(const std::string& path) {
  Raise(ba::Status(ba::Code::kFailedPrecondition,
                   "the database " + path + " was opened by the parent of this forked process and cannot be used "
                   "here; open it in this process (with multiprocessing, use the 'spawn' or 'forkserver' start "
                   "method)"));
}

// The state shared by a Database object and its Arrays: the C++ handle (null once closed).
struct DbState {
  std::shared_ptr<ba::Database> db;
  std::string path;
  pid_t pid = getpid();

  DbState() = default;
  DbState(const DbState&) = delete;
  DbState& operator=(const DbState&) = delete;
  ~DbState() {
    if (getpid() != pid) new std::shared_ptr<ba::Database>(std::move(db));  // leaked: see above
  }

  bool forked() const { return getpid() != pid; }

  std::shared_ptr<ba::Database> Get() const {
    if (forked()) RaiseForked(path);
    if (!db) throw py::value_error("the bigarray database " + path + " is closed");
    return db;
  }
};

// bigarray.View: the base of every ndarray this module returns; keeps the mapping alive.
struct PyView {
  explicit PyView(ba::View v) : view(std::move(v)) {}
  PyView(const PyView&) = default;
  PyView& operator=(const PyView&) = delete;
  ~PyView() {
    if (getpid() != pid) new ba::View(std::move(view));  // leaked: see above
  }

  ba::View view;
  pid_t pid = getpid();

  void Load() const {
    if (getpid() != pid) RaiseForked("of this view");
    ba::View v = view;
    Check(NoGil([&] { return v.Load(); }));
  }
};

// A NumPy ndarray over `v`, zero-copy, whose base keeps the mapping alive.
py::array ToNumpy(const ba::View& v) {
  py::object base = py::cast(PyView(v));
  std::vector<py::ssize_t> shape(v.shape().begin(), v.shape().end());
  std::vector<py::ssize_t> strides(v.strides().begin(), v.strides().end());
  return py::array(NumpyDType(v.dtype()), std::move(shape), std::move(strides), v.data(), base);
}

class PyArray {
 public:
  PyArray(std::shared_ptr<DbState> state, ba::Array array) : state_(std::move(state)), array_(std::move(array)) {}
  PyArray(const PyArray&) = default;
  PyArray(PyArray&&) = default;
  PyArray& operator=(const PyArray&) = delete;
  ~PyArray() {
    if (state_ && state_->forked()) new ba::Array(array_);  // leaked: see DbState
  }

  const ba::Array& array() const { return array_; }

  py::object GetItem(py::handle key) const {
    bool ellipsis = false;
    ba::View v = Index(key, &ellipsis);
    py::array a = ToNumpy(v);
    if (v.ndim() == 0 && !ellipsis) return a[py::tuple()];  // a NumPy scalar, as NumPy does
    return a;
  }

  void SetItem(py::handle key, py::handle value) const {
    bool ellipsis = false;
    ba::View v = Index(key, &ellipsis);
    ToNumpy(v)[py::ellipsis()] = value;  // NumPy's broadcasting and casting, exactly
  }

  py::object AsNumpy(py::object dtype, py::object copy) const {
    state_->Get();
    ba::Array a = array_;
    auto r = NoGil([&] { return a.view(); });
    if (!r.ok()) {
      if (r.status().code() == ba::Code::kResourceExhausted) {
        Raise(r.status(), Missing::kArray, "numpy.asarray(A) maps all of it, A[i:j] only the blocks it covers");
      }
      Raise(r.status());
    }
    py::array out = ToNumpy(*r);
    if (!dtype.is_none()) {
      py::dtype want = py::dtype::from_args(dtype);
      if (!want.equal(out.dtype())) {
        if (!copy.is_none() && !py::bool_(copy)) {
          throw py::value_error("numpy.asarray(A, dtype, copy=False): converting " + std::string(py::str(out.dtype())) +
                                " to " + std::string(py::str(want)) + " needs a copy");
        }
        return out.attr("astype")(want);
      }
    }
    if (!copy.is_none() && py::bool_(copy)) return out.attr("copy")();
    return out;
  }

  void Load(py::handle key) const {
    bool ellipsis = false;
    ba::View v = Index(key.is_none() ? py::handle(Py_Ellipsis) : key, &ellipsis);
    Check(NoGil([&] { return v.Load(); }));
  }

  void Append(py::handle values) const {
    state_->Get();
    py::module_ np = py::module_::import("numpy");
    py::array a = np.attr("asarray")(values, NumpyDType(array_.dtype()));
    const int nd = array_.ndim();
    if (nd > 0 && a.ndim() == nd - 1) {  // one row (C order) or column (F order)
      a = np.attr("expand_dims")(a, array_.order() == ba::Order::kC ? 0 : nd - 1);
    }
    std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
    std::vector<int64_t> strides(a.strides(), a.strides() + a.ndim());
    ba::View src = Value(ba::View::Wrap(const_cast<void*>(a.data()), array_.dtype(), shape, strides));
    ba::Array arr = array_;
    Check(NoGil([&] { return arr.Append(src); }));  // `a` stays referenced until here
  }

  void Resize(py::handle shape) const {
    state_->Get();
    std::vector<int64_t> s = Shape(shape);
    ba::Array arr = array_;
    Check(NoGil([&] { return arr.Resize(std::move(s)); }));
  }

  int64_t Len() const {
    auto r = array_.len();
    if (!r.ok()) throw py::type_error("len() of unsized object (array '" + array_.name() + "' is 0-d)");
    return *r;
  }

  py::str Repr() const {
    return py::str("<bigarray.Array {!r} shape={} dtype={} order='{}'>")
        .format(Name(array_.name()), Tuple(array_.shape()), NumpyDType(array_.dtype()),
                std::string(1, static_cast<char>(array_.order())));
  }

 private:
  ba::View Index(py::handle key, bool* ellipsis) const {
    state_->Get();
    std::vector<ba::IndexItem> items = ToIndex(key, array_.shape(), ellipsis);
    ba::Array a = array_;
    return Value(NoGil([&] { return a.Index(std::span<const ba::IndexItem>(items)); }));
  }

  std::shared_ptr<DbState> state_;
  ba::Array array_;
};

class PyDatabase {
 public:
  static PyDatabase Open(py::handle path, py::handle cache, bool durable, bool create) {
    py::module_ os = py::module_::import("os");
    py::bytes fs = os.attr("fsencode")(path);
    std::string p = fs;
    ba::Options o;
    if (!cache.is_none()) {
      int64_t c = Int(cache, "cache");
      if (c <= 0) throw py::value_error("cache must be a positive number of bytes");
      o.cache_bytes = static_cast<uint64_t>(c);
    }
    o.durability = durable ? ba::Durability::kDurable : ba::Durability::kRelaxed;
    o.create_if_missing = create;
    auto db = Value(NoGil([&] { return ba::Database::Open(p, o); }), Missing::kDatabase);
    auto state = std::make_shared<DbState>();
    state->path = p;
    state->db = std::make_shared<ba::Database>(std::move(db));
    return PyDatabase(std::move(state));
  }

  PyArray Create(py::handle name, py::handle shape, py::handle dtype, py::handle order, py::handle block_size) {
    auto db = state_->Get();
    std::string n = Utf8(name, "array name");
    std::vector<int64_t> s = Shape(shape);
    ba::DType d = ToDType(dtype);
    ba::ArrayOptions ao;
    ao.order = ToOrder(order);
    if (!block_size.is_none()) {
      int64_t b = Int(block_size, "block_size");
      if (b <= 0) throw py::value_error("block_size must be a positive multiple of the page size");
      ao.block_size = static_cast<uint64_t>(b);
    }
    return PyArray(state_, Value(NoGil([&] { return db->Create(n, std::move(s), d, ao); })));
  }

  PyArray GetItem(py::handle name) {
    auto db = state_->Get();
    std::string n = Utf8(name, "array name");
    return PyArray(state_, Value(NoGil([&] { return db->Get(n); })));
  }

  bool Contains(py::handle name) {
    auto db = state_->Get();
    if (!PyUnicode_Check(name.ptr())) return false;
    std::string n = Utf8(name, "array name");
    return Value(NoGil([&] { return db->Contains(n); }));
  }

  py::list Names() {
    auto db = state_->Get();
    auto names = Value(NoGil([&] { return db->Names(); }));
    py::list out;
    for (const std::string& n : names) out.append(Name(n));
    return out;
  }

  void Drop(py::handle name) {
    auto db = state_->Get();
    std::string n = Utf8(name, "array name");
    Check(NoGil([&] { return db->Drop(n); }));
  }

  void Rename(py::handle from, py::handle to) {
    auto db = state_->Get();
    std::string f = Utf8(from, "array name"), t = Utf8(to, "array name");
    Check(NoGil([&] { return db->Rename(f, t); }));
  }

  void Commit() {
    auto db = state_->Get();
    Check(NoGil([&] { return db->Commit(); }));
  }

  void Abort() {
    auto db = state_->Get();
    NoGil([&] { db->Abort(); });
  }

  void Sync() {
    auto db = state_->Get();
    Check(NoGil([&] { return db->Sync(); }));
  }

  // Database::WaitForCommit without the GIL, in slices so that signals (KeyboardInterrupt) are
  // handled between them. None on timeout.
  py::object Wait(py::handle after, py::handle timeout) {
    auto db = state_->Get();
    uint64_t a = 0;
    if (after.is_none()) {
      a = db->snapshot_commit();
    } else {
      const int64_t v = Int(after, "after");
      if (v < 0) throw py::value_error("after must be a commit id (>= 0)");
      a = static_cast<uint64_t>(v);
    }
    std::optional<double> seconds;
    if (!timeout.is_none()) {
      seconds = py::cast<double>(py::float_(py::reinterpret_borrow<py::object>(timeout)));
      if (std::isnan(*seconds) || *seconds < 0) throw py::value_error("timeout must be None or >= 0 seconds");
    }
    using Clock = std::chrono::steady_clock;
    constexpr auto kSlice = std::chrono::milliseconds(100);
    const auto start = Clock::now();
    const bool forever = !seconds || *seconds > 1e9;
    const auto deadline = forever ? Clock::time_point::max()
                                  : start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(*seconds));
    for (;;) {
      const auto now = Clock::now();
      const auto left = deadline == Clock::time_point::max() ? Clock::duration(kSlice) : deadline - now;
      const auto slice = std::max(Clock::duration::zero(), std::min<Clock::duration>(left, kSlice));
      auto r = Value(NoGil([&] { return db->WaitForCommit(a, slice); }));
      if (r) return py::int_(*r);
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      if (Clock::now() >= deadline) return py::none();
    }
  }

  // Ends the transaction (uncommitted changes are discarded) and releases the handle. Views
  // handed out before stay valid. Idempotent.
  void Close() {
    std::shared_ptr<ba::Database> db = std::move(state_->db);
    state_->db.reset();
    if (state_->forked()) {
      new std::shared_ptr<ba::Database>(std::move(db));  // leaked: see DbState
    } else if (db) {
      NoGil([&] { db.reset(); });
    }
  }

  bool closed() const { return !state_->db; }
  void CheckOpen() const { state_->Get(); }
  py::str path() const { return Name(state_->path); }
  uint64_t snapshot() const { return state_->Get()->snapshot_commit(); }

  py::dict CacheStats() const {
    ba::CacheStats s = state_->Get()->cache_stats();
    py::dict d;
    d["faults"] = s.faults;
    d["loads"] = s.loads;
    d["readahead_loads"] = s.readahead_loads;
    d["evictions"] = s.evictions;
    d["spills"] = s.spills;
    d["resident_bytes"] = s.resident_bytes;
    d["dirty_blocks"] = s.dirty_blocks;
    return d;
  }

  std::string Repr() const {
    return "<bigarray.Database " + std::string(py::repr(path())) + (closed() ? " (closed)>" : ">");
  }

 private:
  explicit PyDatabase(std::shared_ptr<DbState> state) : state_(std::move(state)) {}
  std::shared_ptr<DbState> state_;
};

// `for commit in db.follow():` waits for each new commit, moves the handle to it (abort: its
// boundary) and yields its id; ends when `timeout` passes without a commit (never by default).
struct PyFollow {
  py::object db;  // the Python Database object
  py::object timeout;

  py::object Next() const {
    PyDatabase& d = db.cast<PyDatabase&>();
    py::object c = d.Wait(py::none(), timeout);
    if (c.is_none()) throw py::stop_iteration();
    d.Abort();
    return py::int_(d.snapshot());
  }
};

// `with db.transaction():` commits when the block succeeds and aborts when it raises (or when
// the commit itself fails, e.g. with ConflictError, so that the handle is ready for a retry).
struct PyTransaction {
  py::object db;  // the Python Database object

  py::object Enter() const { return db; }

  bool Exit(py::handle type, py::handle, py::handle) const {
    PyDatabase& d = db.cast<PyDatabase&>();
    if (!type.is_none()) {
      if (!d.closed()) d.Abort();
      return false;  // the exception propagates
    }
    try {
      d.Commit();
    } catch (...) {
      if (!d.closed()) d.Abort();
      throw;
    }
    return false;
  }
};

}  // namespace

PYBIND11_MODULE(bigarray, m) {
  m.doc() =
      "bigarray: a transactional out-of-core array store. Arrays live in a database (a directory),\n"
      "split into blocks, and are mapped into memory on demand: indexing an Array gives a\n"
      "numpy.ndarray view into the mapped region, without copying. See docs/python.md.";
#ifdef BIGARRAY_VERSION
  m.attr("__version__") = BIGARRAY_VERSION;
#endif

  // Fails early, with NumPy's message, when NumPy is missing.
  g_numpy_bool = py::object(py::module_::import("numpy").attr("bool_")).release().ptr();

  g_error = PyErr_NewExceptionWithDoc(
      "bigarray.Error",
      "Base of the errors specific to bigarray; `code` names the library's error code "
      "(e.g. 'Conflict', 'FailedPrecondition', 'Unsupported').",
      PyExc_Exception, nullptr);
  g_conflict_error = PyErr_NewExceptionWithDoc(
      "bigarray.ConflictError",
      "Commit failed: another transaction committed a change to the same block or array first. "
      "Nothing was written; abort() and redo the work.",
      g_error, nullptr);
  g_corruption_error = PyErr_NewExceptionWithDoc(
      "bigarray.CorruptionError",
      "A checksum mismatch or malformed on-disk structure; the message names the array and block.",
      g_error, nullptr);
  if (!g_error || !g_conflict_error || !g_corruption_error) throw py::error_already_set();
  m.attr("Error") = py::handle(g_error);
  m.attr("ConflictError") = py::handle(g_conflict_error);
  m.attr("CorruptionError") = py::handle(g_corruption_error);

  py::class_<PyView>(m, "View",
                     "A mapped region of an array: the .base of every numpy.ndarray bigarray returns.\n"
                     "It keeps the mapping alive for as long as the ndarray lives.")
      .def_property_readonly("shape", [](const PyView& v) { return Tuple(v.view.shape()); })
      .def_property_readonly("strides", [](const PyView& v) { return Tuple(v.view.strides()); })
      .def_property_readonly("dtype", [](const PyView& v) { return NumpyDType(v.view.dtype()); })
      .def_property_readonly("nbytes", [](const PyView& v) { return v.view.nbytes(); })
      .def("load", &PyView::Load,
           "Loads every block under this view now, without holding the GIL; errors are raised\n"
           "here (e.g. CorruptionError) instead of ending the process at a page fault.")
      .def("__array__",
           [](const PyView& v, py::object dtype, py::object) {
             py::array a = ToNumpy(v.view);
             if (dtype.is_none()) return py::object(a);
             return py::object(a.attr("astype")(dtype, py::arg("copy") = false));
           },
           py::arg("dtype") = py::none(), py::arg("copy") = py::none())
      .def("__repr__", [](const PyView& v) {
        return "<bigarray.View shape=" + std::string(py::str(Tuple(v.view.shape()))) + " dtype=" +
               std::string(py::str(NumpyDType(v.view.dtype()))) + ">";
      });

  py::class_<PyArray>(m, "Array",
                      "A named array of a Database. A[idx] (basic indexing) is a numpy.ndarray view\n"
                      "into the mapped array; A[idx] = value assigns with NumPy's broadcasting.")
      .def_property_readonly("name", [](const PyArray& a) { return Name(a.array().name()); })
      .def_property_readonly("shape", [](const PyArray& a) { return Tuple(a.array().shape()); })
      .def_property_readonly("dtype", [](const PyArray& a) { return NumpyDType(a.array().dtype()); })
      .def_property_readonly("ndim", [](const PyArray& a) { return a.array().ndim(); })
      .def_property_readonly("size", [](const PyArray& a) { return a.array().size(); })
      .def_property_readonly("itemsize", [](const PyArray& a) { return a.array().itemsize(); })
      .def_property_readonly("nbytes", [](const PyArray& a) { return a.array().nbytes(); })
      .def_property_readonly("strides", [](const PyArray& a) { return Tuple(a.array().strides()); })
      .def_property_readonly("order", [](const PyArray& a) { return std::string(1, static_cast<char>(a.array().order())); })
      .def_property_readonly("block_size", [](const PyArray& a) { return a.array().block_size(); })
      .def("__len__", &PyArray::Len)
      .def("__getitem__", &PyArray::GetItem)
      .def("__setitem__", &PyArray::SetItem)
      .def("__array__", &PyArray::AsNumpy, py::arg("dtype") = py::none(), py::arg("copy") = py::none())
      .def("load", &PyArray::Load, py::arg("index") = py::none(),
           "Loads the blocks under A[index] (default: the whole array) now, without holding the\n"
           "GIL. Errors are raised here instead of ending the process at a page fault.")
      .def("append", &PyArray::Append, py::arg("values"),
           "Extends the major axis (axis 0 in C order, the last axis in F order) by `values`,\n"
           "converted to the array's dtype; every other extent must match. A value with one\n"
           "dimension less is one row (C) or column (F).")
      .def("resize", &PyArray::Resize, py::arg("shape"),
           "New shape, same element order (as numpy.ndarray.resize): new elements read as zeros.")
      .def("__repr__", &PyArray::Repr);

  py::class_<PyFollow>(m, "Follow", "The iterator of Database.follow().")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__", &PyFollow::Next);

  py::class_<PyTransaction>(m, "Transaction", "Context manager: commit on success, abort on an exception.")
      .def("__enter__", &PyTransaction::Enter)
      .def("__exit__", &PyTransaction::Exit);

  py::class_<PyDatabase>(m, "Database",
                         "A handle on a database, working in one transaction at a time (see open()).")
      .def("create", &PyDatabase::Create, py::arg("name"), py::arg("shape"), py::arg("dtype"),
           py::arg("order") = "C", py::arg("block_size") = py::none(),
           "Creates an array of zeros. dtype: anything numpy.dtype() accepts that is b1, i1..i8,\n"
           "u1..u8, f2, f4, f8, c8 or c16 in either byte order. block_size: bytes per stored block\n"
           "(a multiple of the page size; default 2 MiB).")
      .def("__getitem__", &PyDatabase::GetItem)
      .def("__contains__", &PyDatabase::Contains)
      .def("__delitem__", &PyDatabase::Drop)
      .def("__iter__", [](PyDatabase& d) { return py::iter(d.Names()); })
      .def("__len__", [](PyDatabase& d) { return py::len(d.Names()); })
      .def("names", &PyDatabase::Names, "The names of the arrays, sorted.")
      .def("rename", &PyDatabase::Rename, py::arg("old"), py::arg("new"))
      .def("commit", &PyDatabase::Commit,
           "Makes every change since the last commit or abort durable and visible, all or nothing.\n"
           "ConflictError: another transaction changed the same block or array first; nothing\n"
           "was written: abort() and redo the work.")
      .def("abort", &PyDatabase::Abort, "Discards every change since the last commit or abort.")
      .def("sync", &PyDatabase::Sync, "Makes the commits of a durable=False handle durable.")
      .def("wait", &PyDatabase::Wait, py::arg("after") = py::none(), py::arg("timeout") = py::none(),
           "Waits until a commit newer than `after` (default: the one this transaction reads)\n"
           "exists and returns the newest commit id, or None after `timeout` seconds (default:\n"
           "no limit). It sleeps without polling, with the GIL released; Ctrl-C interrupts it.\n"
           "It does not move the transaction: abort() (or commit()) then reads the new data.")
      .def("follow",
           [](py::object self, py::object timeout) {
             self.cast<PyDatabase&>().CheckOpen();
             return PyFollow{std::move(self), std::move(timeout)};
           },
           py::arg("timeout") = py::none(),
           "for commit in db.follow(): ... yields after each new commit, with the handle moved to\n"
           "it (an abort: uncommitted changes are discarded). Commits that land together are\n"
           "yielded once, as the newest. Ends when `timeout` seconds pass without a commit\n"
           "(default: never).")
      .def("transaction",
           [](py::object self) {
             self.cast<PyDatabase&>().CheckOpen();
             return PyTransaction{std::move(self)};
           },
           "with db.transaction(): ... commits when the block succeeds, aborts when it raises.")
      .def("close", &PyDatabase::Close,
           "Aborts the open transaction and releases the handle; views stay valid.")
      .def_property_readonly("closed", &PyDatabase::closed)
      .def_property_readonly("path", &PyDatabase::path)
      .def_property_readonly("snapshot", &PyDatabase::snapshot, "The commit this transaction reads.")
      .def("cache_stats", &PyDatabase::CacheStats)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyDatabase& d, py::handle, py::handle, py::handle) {
        d.Close();
        return false;
      })
      .def("__repr__", &PyDatabase::Repr);

  m.def(
      "handles",
      [](py::handle path) {
        py::module_ os = py::module_::import("os");
        std::string p = py::bytes(os.attr("fsencode")(path));
        ba::HandlesReport report = Value(NoGil([&] { return ba::ListHandles(p); }), Missing::kDatabase);
        py::list out;
        for (const ba::HandleInfo& h : report.handles) {
          py::dict d;
          d["pid"] = h.pid;
          d["process"] = h.process;
          d["snapshot"] = h.snapshot_commit;
          d["since"] = static_cast<double>(h.since_ns) / 1e9;
          d["cache_bytes"] = h.cache_bytes;
          d["dirty_bytes"] = h.dirty_bytes;
          d["faults"] = h.faults;
          out.append(d);
        }
        return out;
      },
      py::arg("path"),
      "The handles that processes on this host hold open on the database at `path`: a list of\n"
      "dicts with pid, process (name), snapshot (the commit it reads), since (when it began\n"
      "reading it, Unix time), cache_bytes, dirty_bytes and faults (as of its last commit or\n"
      "abort). Handles of processes that died are not listed.");

  m.def("open", &PyDatabase::Open, py::arg("path"), py::arg("cache") = py::none(), py::arg("durable") = true,
        py::arg("create") = true,
        "Opens (or creates) the database at `path` (a directory; 'memory:' for a private\n"
        "in-memory database). cache: bytes of RAM for this handle's page cache (default 1 GiB);\n"
        "dirty data beyond it spills to disk. durable=False: a commit survives a crash of the\n"
        "process but an OS crash may lose the latest commits. create=False: FileNotFoundError\n"
        "when there is no database at `path`.");
}

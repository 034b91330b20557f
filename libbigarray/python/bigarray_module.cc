// The extension module `bigarray._bigarray` of the Python package `bigarray` (docs/python.md):
// Database, Array, View and Attrs over the C++ API. The package (python/bigarray/) re-exports
// them and adds what is best written in Python: attribute mappings (_attrs.py), group views
// (_groups.py), dask (_dask.py) and xarray (xarray.py); the methods below that return those
// objects import them lazily.
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

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bigarray/attrs.h"
#include "bigarray/database.h"
#include "bigarray/version.h"

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

// A path argument (str, bytes or os.PathLike) as the bytes the system sees: os.fsencode, and a
// NUL refused with os.stat's ValueError (a C string would end there and name another file).
std::string FsPath(py::handle path) {
  py::module_ os = py::module_::import("os");
  std::string p = py::bytes(os.attr("fsencode")(path));
  if (p.find('\0') != std::string::npos) throw py::value_error("embedded null byte");
  return p;
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

// "arrays 'a', 'b', the attributes of group 'g', the database's attributes": what
// Database::ChangedArrays lists, for a warning.
std::string DescribeChanged(const std::vector<std::string>& changed) {
  std::string arrays, others;
  size_t n = 0;
  for (const std::string& c : changed) {
    if (c == "/") {
      others += ", the database's attributes";
    } else if (c.ends_with('/')) {
      others += ", the attributes of group '" + c.substr(0, c.size() - 1) + "'";
    } else {
      arrays += (n++ ? ", '" : "'") + c + "'";
    }
  }
  std::string out = n == 0 ? "" : (n == 1 ? "array " : "arrays ") + arrays;
  return out.empty() ? others.substr(2) : out + others;
}

// Emits a ResourceWarning naming the arrays whose uncommitted changes `db` is about to discard
// (nothing when there are none, or when they cannot be listed). Throws error_already_set when
// the warning is an error (-W error).
void WarnUncommitted(const std::shared_ptr<ba::Database>& db, const std::string& path, const char* how) {
  auto changed = NoGil([&] { return db->ChangedArrays(); });
  if (!changed.ok() || changed->empty()) return;
  const std::string msg = "bigarray database " + path + " " + how + " with uncommitted changes to " +
                          DescribeChanged(*changed) +
                          ": they were discarded (call commit() first, or abort() to discard them explicitly)";
  if (PyErr_WarnEx(PyExc_ResourceWarning, msg.c_str(), 1) < 0) throw py::error_already_set();
}

// The state shared by a Database object and its Arrays: the C++ handle (null once closed).
struct DbState {
  std::shared_ptr<ba::Database> db;
  std::string path;
  pid_t pid = getpid();
  bool read_only = false;
  uint64_t cache_bytes = ba::Options{}.cache_bytes;

  DbState() = default;
  DbState(const DbState&) = delete;
  DbState& operator=(const DbState&) = delete;
  ~DbState() {
    if (getpid() != pid) {
      new std::shared_ptr<ba::Database>(std::move(db));  // leaked: see above
      return;
    }
    // Garbage-collected without close(): like an unclosed file, say so when it loses changes.
    // (Destroyed under the GIL: only Python objects hold a DbState.)
    if (db && Py_IsInitialized()) {
      try {
        WarnUncommitted(db, path, "was garbage-collected without close()");
      } catch (py::error_already_set& e) {
        e.discard_as_unraisable("bigarray.Database.__del__");
      } catch (...) {
      }
    }
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
  PyView(ba::View v, bool ro) : view(std::move(v)), read_only(ro) {}
  PyView(const PyView&) = default;
  PyView& operator=(const PyView&) = delete;
  ~PyView() {
    if (getpid() != pid) new ba::View(std::move(view));  // leaked: see above
  }

  ba::View view;
  bool read_only = false;  // of a read_only handle: its ndarrays are not writeable
  pid_t pid = getpid();

  void Load() const {
    if (getpid() != pid) RaiseForked("of this view");
    ba::View v = view;
    Check(NoGil([&] { return v.Load(); }));
  }
};

// A NumPy ndarray over `v`, zero-copy, whose base keeps the mapping alive; not writeable for
// a read-only handle.
py::array ToNumpy(const ba::View& v, bool read_only) {
  py::object base = py::cast(PyView(v, read_only));
  std::vector<py::ssize_t> shape(v.shape().begin(), v.shape().end());
  std::vector<py::ssize_t> strides(v.strides().begin(), v.strides().end());
  py::array a(NumpyDType(v.dtype()), std::move(shape), std::move(strides), v.data(), base);
  if (read_only) a.attr("setflags")(py::arg("write") = false);
  return a;
}

// The rows [start, stop) along `axis` as an index expression.
py::tuple AxisSlice(int ndim, int axis, int64_t start, int64_t stop) {
  py::tuple t(ndim);
  for (int k = 0; k < ndim; ++k) {
    t[k] = k == axis ? py::slice(py::int_(start), py::int_(stop), py::none()) : py::slice(py::none(), py::none(), py::none());
  }
  return t;
}

// The attributes of an array, a group or the database (bigarray.Attrs): the C++ Attrs behind
// the package's AttributeManager (_attrs.py), which converts values to and from Python.
class PyAttrs {
 public:
  PyAttrs(std::shared_ptr<DbState> state, ba::Attrs attrs) : state_(std::move(state)), attrs_(std::move(attrs)) {}

  // None, ("json", text) or ("array", dtype str, shape, bytes).
  py::object Get(py::handle key) const {
    state_->Get();
    const std::string k = Utf8(key, "attribute key");
    const ba::Attrs a = attrs_;
    auto v = Value(NoGil([&] { return a.Get(k); }));
    if (!v) return py::none();
    if (v->kind() == ba::AttrValue::Kind::kJson) return py::make_tuple("json", Text(v->json()));
    return py::make_tuple("array", v->dtype().str(), Tuple(v->shape()), py::bytes(v->data()));
  }

  void SetJson(py::handle key, py::handle text) {
    state_->Get();
    const std::string k = Utf8(key, "attribute key"), t = Utf8(text, "JSON text");
    ba::Attrs a = attrs_;
    Check(NoGil([&] { return a.SetJson(k, t); }));
  }

  void SetArray(py::handle key, py::handle value) {
    state_->Get();
    const std::string k = Utf8(key, "attribute key");
    py::array arr = py::module_::import("numpy").attr("asarray")(value, py::arg("order") = "C");  // 0-d stays 0-d
    const ba::DType d = ToDType(arr.dtype());
    std::vector<int64_t> shape(arr.shape(), arr.shape() + arr.ndim());
    std::string data(static_cast<const char*>(arr.data()), static_cast<size_t>(arr.nbytes()));
    auto v = Value(ba::AttrValue::Array(d, std::move(shape), std::move(data)));
    ba::Attrs a = attrs_;
    Check(NoGil([&] { return a.Set(k, v); }));
  }

  void Delete(py::handle key) {
    state_->Get();
    const std::string k = Utf8(key, "attribute key");
    ba::Attrs a = attrs_;
    Check(NoGil([&] { return a.Delete(k); }));
  }

  py::list Keys() const {
    state_->Get();
    const ba::Attrs a = attrs_;
    auto keys = Value(NoGil([&] { return a.Keys(); }));
    py::list out;
    for (const std::string& k : keys) out.append(Name(k));
    return out;
  }

  bool Contains(py::handle key) const {
    if (!PyUnicode_Check(key.ptr())) return false;
    state_->Get();
    const std::string k = Utf8(key, "attribute key");
    const ba::Attrs a = attrs_;
    auto r = NoGil([&] { return a.Contains(k); });
    if (!r.ok() && r.status().code() == ba::Code::kInvalidArgument) return false;  // "" or NUL: never a key
    return Value(std::move(r));
  }

  // {key: value} as JSON text, array values as nested lists (as `bigarray info --json`).
  std::string Json() const {
    state_->Get();
    const ba::Attrs a = attrs_;
    return Value(NoGil([&]() -> ba::Result<std::string> {
      BA_ASSIGN_OR_RETURN(std::vector<std::string> keys, a.Keys());
      std::string out = "{";
      for (const std::string& k : keys) {
        BA_ASSIGN_OR_RETURN(std::optional<ba::AttrValue> v, a.Get(k));
        if (!v) continue;
        if (out.size() > 1) out += ", ";
        std::string quoted = "\"";
        for (unsigned char c : k) {
          char esc[8];
          if (c == '"' || c == '\\') {
            quoted += '\\';
            quoted += static_cast<char>(c);
          } else if (c < 0x20) {
            std::snprintf(esc, sizeof esc, "\\u%04x", c);
            quoted += esc;
          } else {
            quoted += static_cast<char>(c);
          }
        }
        out += quoted + "\": " + v->ToJson();
      }
      return out + "}";
    }));
  }

  std::string Owner() const { return attrs_.owner(); }

 private:
  std::shared_ptr<DbState> state_;
  ba::Attrs attrs_;
};

// An object of the package's Python part, e.g. Python("_attrs", "AttributeManager").
py::object Python(const char* module, const char* name) {
  return py::module_::import((std::string("bigarray.") + module).c_str()).attr(name);
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

  // A[idx]: an element is loaded first (a load error is raised here); a view is returned as is
  // and loads its blocks when touched (docs/python.md, "What is safe").
  py::object GetItem(py::handle key) const {
    bool ellipsis = false;
    ba::View v = Index(key, &ellipsis);
    py::array a = ToNumpy(v, state_->read_only);
    if (v.ndim() == 0 && !ellipsis) {
      Check(NoGil([&] { return v.Load(); }));
      return a[py::tuple()];  // a NumPy scalar, as NumPy does
    }
    return a;
  }

  // A[idx] = value: the blocks under A[idx] are loaded before they are written, so a load error
  // is raised here. A large target is assigned in slabs along its first axis, each loaded and
  // written in turn, so that the loads stay within the cache.
  void SetItem(py::handle key, py::handle value) const {
    bool ellipsis = false;
    if (state_->read_only) {
      Raise(ba::Status(ba::Code::kFailedPrecondition, "assignment to array '" + array_.name() + "': " +
                                                          state_->path + " was opened with read_only=True"));
    }
    ba::View v = Index(key, &ellipsis);
    py::array target = ToNumpy(v, false);
    // NumPy writes through the view's memory, by page faults: set the scratch space aside first,
    // so that a disk too full for what the writes may spill raises OSError here instead.
    ba::WriteReservation reserved = Value(NoGil([&] { return v.ReserveWrite(); }));
    const uint64_t slab_bytes = std::max<uint64_t>(state_->cache_bytes / 4, 1);
    if (v.ndim() == 0 || static_cast<uint64_t>(v.nbytes()) <= slab_bytes || v.shape()[0] <= 1) {
      Check(NoGil([&] { return v.Load(); }));
      target[py::ellipsis()] = value;  // NumPy's broadcasting and casting, exactly
      return;
    }
    py::module_ np = py::module_::import("numpy");
    py::object src = np.attr("asarray")(value);
    // The value may be a view of the same array: slabs would overwrite what later slabs read.
    if (py::bool_(np.attr("may_share_memory")(src, target))) src = np.attr("array")(src);
    // Broadcasts (or raises ValueError) before anything is written, as NumPy does.
    src = np.attr("broadcast_to")(src, target.attr("shape"));
    const int64_t rows = v.shape()[0];
    const int64_t per = std::max<int64_t>(1, static_cast<int64_t>(slab_bytes / (static_cast<uint64_t>(v.nbytes()) / rows)));
    for (int64_t r0 = 0; r0 < rows; r0 += per) {
      const int64_t r1 = std::min(rows, r0 + per);
      ba::View slab = Value(v.Index({ba::Slice{r0, r1, 1}}));
      Check(NoGil([&] { return slab.Load(); }));
      const py::slice rows_slice{py::int_(r0), py::int_(r1), py::none()};
      target[rows_slice] = src[rows_slice];
    }
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
    py::array out = ToNumpy(*r, state_->read_only);
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

  // A.read(index, out=None): A[index] copied into a new array (or `out`), blocks not loaded read
  // straight from the store (Array::Read), without holding the GIL.
  py::array Read(py::handle key, py::handle out) const {
    state_->Get();
    bool ellipsis = false;
    const py::handle k = key.is_none() ? py::handle(Py_Ellipsis) : key;
    const ba::View src = Index(k, &ellipsis);
    py::module_ np = py::module_::import("numpy");
    py::array target;
    if (out.is_none()) {
      py::tuple shape(src.shape().size());
      for (size_t i = 0; i < src.shape().size(); ++i) shape[i] = src.shape()[i];
      target = np.attr("empty")(shape, NumpyDType(array_.dtype()),
                                src.f_contiguous() && !src.c_contiguous() ? "F" : "C");
    } else {
      if (!py::isinstance<py::array>(out)) throw py::type_error("read: out must be a numpy.ndarray");
      target = py::reinterpret_borrow<py::array>(out);
      if (!target.writeable()) throw py::value_error("read: out is read-only");
      if (!target.dtype().equal(NumpyDType(array_.dtype()))) {
        throw py::type_error("read: out has dtype " + std::string(py::str(target.dtype())) + ", not the array's " +
                             array_.dtype().str());
      }
    }
    std::vector<int64_t> shape(target.shape(), target.shape() + target.ndim());
    std::vector<int64_t> strides(target.strides(), target.strides() + target.ndim());
    const ba::View dst = Value(ba::View::Wrap(target.mutable_data(), array_.dtype(), shape, strides));
    Check(NoGil([&] { return src.ReadInto(dst); }));
    return target;
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
    Check(NoGil([&]() -> ba::Status {
      // The values go after the last element, into its block when that is not full: load it
      // first, so that a damaged block is an error here rather than a fatal fault in Append.
      if (arr.size() > 0) {
        std::vector<ba::IndexItem> last(static_cast<size_t>(arr.ndim()), ba::IndexItem{int64_t{-1}});
        BA_ASSIGN_OR_RETURN(ba::View v, arr.Index(std::span<const ba::IndexItem>(last)));
        BA_RETURN_IF_ERROR(v.Load());
      }
      return arr.Append(src);
    }));  // `a` stays referenced until here
  }

  void Resize(py::handle shape) const {
    state_->Get();
    std::vector<int64_t> s = Shape(shape);
    ba::Array arr = array_;
    Check(NoGil([&] { return arr.Resize(std::move(s)); }));
  }

  // The view A[key], mapped but not loaded.
  ba::View ViewOf(py::handle key) const {
    bool ellipsis = false;
    return Index(key, &ellipsis);
  }
  bool read_only() const { return state_->read_only; }

  // The fields of `bigarray info --json`, in its order.
  py::dict Info() const {
    state_->Get();
    ba::Array a = array_;
    const ba::ArraySpace stored = Value(NoGil([&] { return a.Stored(); }));
    py::dict d;
    d["name"] = Name(a.name());
    d["dtype"] = a.dtype().str();
    py::list shape;
    for (int64_t n : a.shape()) shape.append(n);
    d["shape"] = shape;
    d["order"] = std::string(1, static_cast<char>(a.order()));
    d["ndim"] = a.ndim();
    d["itemsize"] = a.itemsize();
    d["size"] = a.size();
    d["nbytes"] = a.nbytes();
    d["block_size"] = a.block_size();
    d["blocks"] = (static_cast<uint64_t>(a.nbytes()) + a.block_size() - 1) / a.block_size();
    d["blocks_stored"] = stored.blocks_stored;
    d["stored_bytes"] = stored.stored_bytes;
    d["attrs"] = py::module_::import("json").attr("loads")(Text(Attrs().Json()));
    return d;
  }

  PyAttrs Attrs() const {
    state_->Get();
    return PyAttrs(state_, array_.attrs());
  }

  // dask's chunks: whole along every axis but the major one (axis 0 in C order, the last in F
  // order), along which each chunk is a whole number of blocks (so no two chunks share one)
  // of about kDaskChunkBytes or more: large enough that dask's per-task overhead is small, small
  // enough that a few threads' chunks and temporaries fit beside the cache. When a whole number
  // of blocks would take more than kMaxAlignedChunkBytes (rows whose size shares few factors
  // with the block size), chunks of about kDaskChunkBytes that may share blocks.
  static constexpr uint64_t kDaskChunkBytes = 8 << 20;
  static constexpr uint64_t kMaxAlignedChunkBytes = 64 << 20;
  static int64_t DaskRows(const ba::Array& a, int64_t extent) {
    if (extent == 0) return 1;
    const uint64_t row = static_cast<uint64_t>(a.nbytes() / extent), block = a.block_size();
    if (row == 0) return extent;
    const uint64_t unit = block / std::gcd(block, row);  // rows in lcm(block, row) bytes
    uint64_t rows = 0;
    if (unit * row <= std::max<uint64_t>(kMaxAlignedChunkBytes, block)) {
      rows = unit * std::max<uint64_t>(1, kDaskChunkBytes / (unit * row));
    } else {
      rows = std::max<uint64_t>(1, kDaskChunkBytes / row);
    }
    return static_cast<int64_t>(std::min<uint64_t>(rows, static_cast<uint64_t>(extent)));
  }

  py::tuple Chunks() const {
    state_->Get();
    const std::vector<int64_t> shape = array_.shape();
    const int ndim = static_cast<int>(shape.size());
    py::tuple out(ndim);
    if (ndim == 0) return out;
    const int major = array_.order() == ba::Order::kC ? 0 : ndim - 1;
    for (int k = 0; k < ndim; ++k) {
      py::list sizes;
      const int64_t n = shape[static_cast<size_t>(k)];
      if (k != major || n == 0) {
        sizes.append(n);
      } else {
        const int64_t rows = DaskRows(array_, n);
        for (int64_t at = 0; at < n; at += rows) sizes.append(std::min(rows, n - at));
      }
      out[static_cast<size_t>(k)] = py::tuple(sizes);
    }
    return out;
  }

  // Rows (indices along `axis`) per chunk: along the major axis, the fewest rows that make a
  // whole number of blocks (so every chunk starts and ends on a block boundary) when that is at
  // most 16 blocks or 16 rows; otherwise (and along other axes) about one block's worth.
  static int64_t MajorRows(const ba::Array& a, int axis, int64_t extent) {
    if (extent == 0) return 1;
    const uint64_t row = static_cast<uint64_t>(a.nbytes() / extent), block = a.block_size();
    if (row == 0) return extent;
    const int major = a.order() == ba::Order::kC ? 0 : a.ndim() - 1;
    if (axis == major) {
      const uint64_t aligned = block / std::gcd(block, row);  // lcm(block, row) / row
      if (aligned <= 16 * std::max<uint64_t>(block / std::min(block, row), 1)) return static_cast<int64_t>(aligned);
    }
    return static_cast<int64_t>(std::max<uint64_t>(1, block / row));
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

// A.iter_blocks(): (slice, ndarray view) pairs along an axis, each view loaded before it is
// handed out (a load error is raised by the iteration, not at a page fault).
class PyBlockIter {
 public:
  PyBlockIter(const PyArray& array, py::handle axis, py::handle rows, bool progress) : array_(array) {
    const ba::Array& a = array.array();
    const std::vector<int64_t> shape = a.shape();
    const int ndim = static_cast<int>(shape.size());
    if (ndim == 0) throw py::value_error("iter_blocks: array '" + a.name() + "' is 0-d (it has no axis to iterate)");
    int64_t ax = Int(axis, "axis");
    if (ax < -ndim || ax >= ndim) {
      throw py::index_error("iter_blocks: axis " + std::to_string(ax) + " is out of range for an array of " +
                            std::to_string(ndim) + " dimensions");
    }
    axis_ = static_cast<int>(ax < 0 ? ax + ndim : ax);
    ndim_ = ndim;
    extent_ = shape[static_cast<size_t>(axis_)];
    if (!rows.is_none()) {
      rows_ = Int(rows, "rows");
      if (rows_ <= 0) throw py::value_error("iter_blocks: rows must be positive, not " + std::to_string(rows_));
    } else {
      rows_ = PyArray::MajorRows(a, axis_, extent_);
    }
    if (progress) {
      py::object err = py::module_::import("sys").attr("stderr");
      progress_ = !err.is_none() && py::bool_(err.attr("isatty")());
    }
    label_ = "iter_blocks '" + a.name() + "'";
  }
  PyBlockIter(const PyBlockIter&) = delete;
  PyBlockIter& operator=(const PyBlockIter&) = delete;
  ~PyBlockIter() {
    if (drawn_ && !finished_) {  // abandoned midway: end the bar's line
      try {
        Write("\n");
      } catch (...) {
      }
    }
  }

  py::tuple Next() {
    if (next_ >= extent_) {
      if (drawn_ && !finished_) Write("\n");
      finished_ = true;
      throw py::stop_iteration();
    }
    const int64_t start = next_, stop = std::min(extent_, next_ + rows_);
    ba::View v = array_.ViewOf(AxisSlice(ndim_, axis_, start, stop));
    Check(NoGil([&] { return v.Load(); }));
    next_ = stop;
    if (progress_) Draw();
    return py::make_tuple(py::slice(py::int_(start), py::int_(stop), py::none()), ToNumpy(v, array_.read_only()));
  }

 private:
  void Draw() {
    const auto now = std::chrono::steady_clock::now();
    const bool last = next_ >= extent_;
    if (!last && drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    drawn_ = true;
    const double frac = extent_ ? static_cast<double>(next_) / static_cast<double>(extent_) : 1.0;
    const int width = 30, filled = static_cast<int>(frac * width);
    char pct[16];
    std::snprintf(pct, sizeof pct, "%5.1f%%", 100 * frac);
    Write("\r" + label_ + " [" + std::string(static_cast<size_t>(filled), '#') +
          std::string(static_cast<size_t>(width - filled), '.') + "] " + pct + " " + std::to_string(next_) + "/" +
          std::to_string(extent_) + (last ? "\n" : ""));
    if (last) finished_ = true;
  }

  static void Write(const std::string& text) {
    py::object err = py::module_::import("sys").attr("stderr");
    err.attr("write")(text);
    err.attr("flush")();
  }

  PyArray array_;
  int axis_ = 0, ndim_ = 0;
  int64_t extent_ = 0, rows_ = 1, next_ = 0;
  bool progress_ = false, drawn_ = false, finished_ = false;
  std::string label_;
  std::chrono::steady_clock::time_point last_draw_{};
};

class PyDatabase {
 public:
  static PyDatabase Open(py::handle path, py::handle cache, bool durable, bool create, bool read_only,
                         bool prefault_cache, py::handle readahead_blocks, py::handle spill_dir, bool verify,
                         bool map_reads) {
    std::string p = FsPath(path);
    ba::Options o;
    o.read_only = read_only;
    o.prefault_cache = prefault_cache;
    o.verify_reads = verify;
    o.map_reads = map_reads;
    if (!readahead_blocks.is_none()) {
      const int64_t r = Int(readahead_blocks, "readahead_blocks");
      if (r < 0 || r > 4096) throw py::value_error("readahead_blocks must be 0 to 4096, not " + std::to_string(r));
      o.readahead_blocks = static_cast<unsigned>(r);
    }
    if (!spill_dir.is_none()) {
      o.spill_dir = FsPath(spill_dir);
      if (o.spill_dir.empty()) throw py::value_error("spill_dir must not be empty (None: the database directory)");
    }
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
    state->read_only = read_only;
    state->cache_bytes = o.cache_bytes;
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

  py::list Names(py::handle prefix = py::none()) {
    auto db = state_->Get();
    const std::string p = prefix.is_none() ? std::string() : Utf8(prefix, "prefix");
    auto names = Value(NoGil([&] { return db->Names(p); }));
    py::list out;
    for (const std::string& n : names) out.append(Name(n));
    return out;
  }

  // [(name, is_group)] one level below `group` (Database::List).
  py::list List(py::handle group) {
    auto db = state_->Get();
    const std::string g = Utf8(group, "group name");
    auto entries = Value(NoGil([&] { return db->List(g); }));
    py::list out;
    for (const auto& e : entries) out.append(py::make_tuple(Name(e.name), e.is_group));
    return out;
  }

  bool GroupExists(py::handle group) {
    auto db = state_->Get();
    const std::string g = Utf8(group, "group name");
    return Value(NoGil([&] { return db->GroupExists(g); }));
  }

  size_t DropGroup(py::handle group) {
    auto db = state_->Get();
    const std::string g = Utf8(group, "group name");
    return Value(NoGil([&] { return db->DropGroup(g); }));
  }

  PyAttrs Attrs(py::handle group) {
    auto db = state_->Get();
    const std::string g = group.is_none() ? std::string() : Utf8(group, "group name");
    return PyAttrs(state_, g.empty() ? db->attrs() : db->GroupAttrs(g));
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
  // handed out before stay valid. Idempotent. With `warn`, a ResourceWarning names the arrays
  // whose changes were discarded (after the handle is closed, so that -W error still closes).
  void Close(bool warn = true) {
    std::shared_ptr<ba::Database> db = std::move(state_->db);
    state_->db.reset();
    if (state_->forked()) {
      new std::shared_ptr<ba::Database>(std::move(db));  // leaked: see DbState
      return;
    }
    if (!db) return;
    std::vector<std::string> changed;
    if (warn) {
      auto r = NoGil([&] { return db->ChangedArrays(); });
      if (r.ok()) changed = std::move(*r);
    }
    NoGil([&] { db.reset(); });
    if (changed.empty()) return;
    const std::string msg = "bigarray database " + state_->path + " closed with uncommitted changes to " +
                            DescribeChanged(changed) +
                            ": they were discarded (call commit() first, or abort() to discard them explicitly)";
    if (PyErr_WarnEx(PyExc_ResourceWarning, msg.c_str(), 1) < 0) throw py::error_already_set();
  }

  // The object of `bigarray info DB --json` for this handle's snapshot, in its order.
  py::dict Info() {
    auto db = state_->Get();
    const ba::SpaceReport r = Value(NoGil([&] { return db->Space(); }));
    py::dict d;
    d["path"] = Name(state_->path);
    d["commit"] = r.commit;
    d["latest_commit"] = r.latest_commit;
    d["live_bytes"] = r.live_bytes;
    const std::optional<ba::FileSpace>& f = r.file;
    auto field = [&](uint64_t ba::FileSpace::*m) -> py::object { return f ? py::object(py::int_((*f).*m)) : py::object(py::none()); };
    d["page_size"] = field(&ba::FileSpace::page_size);
    d["file_bytes"] = field(&ba::FileSpace::file_bytes);
    d["allocated_bytes"] = field(&ba::FileSpace::allocated_bytes);
    d["used_bytes"] = field(&ba::FileSpace::used_bytes);
    d["free_bytes"] = field(&ba::FileSpace::free_bytes);
    d["pinned_bytes"] = field(&ba::FileSpace::pinned_bytes);
    d["compact_bytes"] = field(&ba::FileSpace::compact_bytes);
    d["reclaimable_bytes"] = field(&ba::FileSpace::reclaimable_bytes);
    d["leftover_bytes"] = field(&ba::FileSpace::leftover_bytes);
    d["slot_file_bytes"] = field(&ba::FileSpace::slot_file_bytes);
    d["slot_allocated_bytes"] = field(&ba::FileSpace::slot_allocated_bytes);
    d["slots"] = field(&ba::FileSpace::slots);
    d["free_slots"] = field(&ba::FileSpace::free_slots);
    d["pinned_slots"] = field(&ba::FileSpace::pinned_slots);
    if (const auto& o = r.oldest_snapshot) {
      py::dict s;
      s["pid"] = o->pid;
      s["process"] = o->process.empty() ? py::object(py::none()) : py::object(Text(o->process));
      s["commit"] = o->commit;
      s["commits_behind"] = o->commits_behind;
      s["age_s"] = o->age_s ? py::object(py::float_(*o->age_s)) : py::object(py::none());
      d["oldest_snapshot"] = s;
    } else {
      d["oldest_snapshot"] = py::none();
    }
    d["attrs"] = py::module_::import("json").attr("loads")(Text(Attrs(py::none()).Json()));
    py::dict arrays;
    for (const ba::ArraySpace& a : r.arrays) arrays[Name(a.name)] = GetItem(Name(a.name)).Info();
    d["arrays"] = arrays;
    return d;
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
    d["file_maps"] = s.file_maps;
    d["file_mapped_bytes"] = s.file_mapped_bytes;
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

PYBIND11_MODULE(_bigarray, m) {
  m.doc() =
      "bigarray: a transactional out-of-core array store. Arrays live in a database (a directory),\n"
      "split into blocks, and are mapped into memory on demand: indexing an Array gives a\n"
      "numpy.ndarray view into the mapped region, without copying. See docs/python.md.";
  m.attr("__version__") = bigarray::version().str();  // the library's, as bigarray --version

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
             py::array a = ToNumpy(v.view, v.read_only);
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
      .def("read", &PyArray::Read, py::arg("index") = py::none(), py::arg("out") = py::none(),
           "A[index] (default: the whole array) copied into a new ndarray, or into `out` (same\n"
           "dtype, a shape A[index] broadcasts to), without holding the GIL. Blocks this handle has\n"
           "not loaded are read straight from the store into it and checked, with no page fault\n"
           "and nothing cached (as h5py's read_direct): for data read once. Errors are raised.")
      .def("append", &PyArray::Append, py::arg("values"),
           "Extends the major axis (axis 0 in C order, the last axis in F order) by `values`,\n"
           "converted to the array's dtype; every other extent must match. A value with one\n"
           "dimension less is one row (C) or column (F).")
      .def("resize", &PyArray::Resize, py::arg("shape"),
           "New shape, same element order (as numpy.ndarray.resize): new elements read as zeros.")
      .def("info", &PyArray::Info,
           "The array's description as a dict, with the keys of `bigarray info --json`: name,\n"
           "dtype, shape, order, ndim, itemsize, size, nbytes, block_size, blocks, blocks_stored,\n"
           "stored_bytes, attrs.")
      .def("iter_blocks",
           [](const PyArray& a, py::handle axis, py::handle rows, bool progress) {
             return std::make_unique<PyBlockIter>(a, axis, rows, progress);
           },
           py::arg("axis") = 0, py::arg("rows") = py::none(), py::arg("progress") = false,
           "Iterates over the array in chunks along `axis`: yields (slice, view) with view =\n"
           "A[..., slice, ...], each loaded before it is yielded (errors are raised here). rows:\n"
           "indices per chunk; default: block-aligned chunks of about a block (see docs/python.md).\n"
           "progress=True draws a progress bar on stderr when it is a terminal.")
      .def_property_readonly("attrs", [](const PyArray& a) { return Python("_attrs", "AttributeManager")(a.Attrs()); },
                             "The array's attributes: a mutable mapping of str keys to JSON values or small\n"
                             "NumPy arrays, transactional like the data (see docs/python.md).")
      .def("_attrs_handle", &PyArray::Attrs)
      .def_property_readonly("chunks", &PyArray::Chunks,
                             "dask's chunks: block-aligned along the major axis, whole along the others\n"
                             "(dask.array.from_array(A, chunks=A.chunks)).")
      .def("to_dask", [](py::object self) { return Python("_dask", "to_dask")(self); },
           "A dask array over this array, chunked by A.chunks; nothing is read until computed.")
      .def("__repr__", &PyArray::Repr);

  py::class_<PyAttrs>(m, "Attrs", "The stored attributes behind an AttributeManager (bigarray._attrs).")
      .def("get", &PyAttrs::Get)
      .def("set_json", &PyAttrs::SetJson)
      .def("set_array", &PyAttrs::SetArray)
      .def("delete", &PyAttrs::Delete)
      .def("keys", &PyAttrs::Keys)
      .def("contains", &PyAttrs::Contains)
      .def("json", &PyAttrs::Json)
      .def_property_readonly("owner", &PyAttrs::Owner);

  py::class_<PyBlockIter>(m, "BlockIterator", "The iterator of Array.iter_blocks().")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__", &PyBlockIter::Next);
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
      .def("names", &PyDatabase::Names, py::arg("prefix") = py::none(),
           "The names of the arrays, sorted; with `prefix`, those that begin with it.")
      .def("_list", &PyDatabase::List, py::arg("group"))
      .def("_group_exists", &PyDatabase::GroupExists, py::arg("group"))
      .def("_drop_group", &PyDatabase::DropGroup, py::arg("group"))
      .def("_attrs_handle", &PyDatabase::Attrs, py::arg("group") = py::none())
      .def_property_readonly("attrs", [](PyDatabase& d) { return Python("_attrs", "AttributeManager")(d.Attrs(py::none())); },
                             "The database's attributes (a mutable mapping, as Array.attrs).")
      .def("group", [](py::object self, py::handle name) { return Python("_groups", "Group")(self, name); },
           py::arg("name"),
           "A view of the arrays whose names begin with name + '/': create, [], in, iteration,\n"
           "group(), attrs (see docs/python.md).")
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
      .def("close", [](PyDatabase& d) { d.Close(); },
           "Aborts the open transaction and releases the handle; views stay valid. Uncommitted\n"
           "changes are discarded, with a ResourceWarning naming the arrays they were in.")
      .def_property_readonly("closed", &PyDatabase::closed)
      .def_property_readonly("path", &PyDatabase::path)
      .def_property_readonly("snapshot", &PyDatabase::snapshot, "The commit this transaction reads.")
      .def("cache_stats", &PyDatabase::CacheStats)
      .def("info", &PyDatabase::Info,
           "The database's disk space as a dict, with the keys of `bigarray info DB --json`: path,\n"
           "commit, latest_commit, live_bytes, page_size, file_bytes, allocated_bytes, used_bytes,\n"
           "free_bytes, pinned_bytes, compact_bytes, reclaimable_bytes, leftover_bytes,\n"
           "slot_file_bytes, slot_allocated_bytes, slots, free_slots, pinned_slots (None\n"
           "without a local file), oldest_snapshot (None, or a dict: pid, process, commit,\n"
           "commits_behind, age_s) and arrays ({name: db[name].info()}).")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyDatabase& d, py::handle type, py::handle, py::handle) {
        d.Close(/*warn=*/type.is_none());  // leaving by an exception: the abort is expected
        return false;
      })
      .def("__repr__", &PyDatabase::Repr);

  m.def(
      "handles",
      [](py::handle path) {
        std::string p = FsPath(path);
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

  m.def(
      "compact",
      [](py::handle path) {
        py::module_ os = py::module_::import("os");
        std::string p = py::bytes(os.attr("fsencode")(path));
        ba::CompactReport r = Value(NoGil([&] { return ba::Compact(p); }), Missing::kDatabase);
        py::dict d;
        d["path"] = Name(p);
        d["commit"] = r.commit;
        d["before_file_bytes"] = r.before_file_bytes;
        d["before_allocated_bytes"] = r.before_allocated_bytes;
        d["after_file_bytes"] = r.after_file_bytes;
        d["after_allocated_bytes"] = r.after_allocated_bytes;
        d["before_slot_allocated_bytes"] = r.before_slot_allocated_bytes;
        d["after_slot_allocated_bytes"] = r.after_slot_allocated_bytes;
        d["seconds"] = r.seconds;
        return d;
      },
      py::arg("path"),
      "Rewrites the database at `path` into the least space (as `bigarray compact`): the data\n"
      "and commit id stay the same. Raises bigarray.Error (code FailedPrecondition), changing\n"
      "nothing, while any process (this one included) has it open. Returns a dict with the keys\n"
      "of `bigarray compact --json`.");

  m.def("open", &PyDatabase::Open, py::arg("path"), py::arg("cache") = py::none(), py::arg("durable") = true,
        py::arg("create") = true, py::kw_only(), py::arg("read_only") = false, py::arg("prefault_cache") = false,
        py::arg("readahead_blocks") = py::none(), py::arg("spill_dir") = py::none(), py::arg("verify") = true,
        py::arg("map_reads") = true,
        "Opens (or creates) the database at `path` (a directory; 'memory:' for a private\n"
        "in-memory database). cache: bytes of RAM for this handle's page cache (default 1 GiB);\n"
        "dirty data beyond it spills to disk. durable=False: a commit survives a crash of the\n"
        "process but an OS crash may lose the latest commits. create=False: FileNotFoundError\n"
        "when there is no database at `path`. read_only=True: never writes (works on a read-only\n"
        "mount); changes raise bigarray.Error and ndarray views are not writeable.\n"
        "verify=False: blocks mapped from the database file are not checked against their\n"
        "checksums first (as numpy.memmap; damage shows as wrong values). map_reads=False: every\n"
        "block is copied into the cache instead of being mapped from the file.\n"
        "prefault_cache, readahead_blocks, spill_dir: as the C++ Options (docs/api.md).");
}

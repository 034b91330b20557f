"""Attributes as a mapping (docs/python.md, "Attributes"): Array.attrs, Database.attrs and
Group.attrs behave like h5py's AttributeManager.

Values are stored as JSON (None, bool, int, float, str, and lists, tuples and dicts of them)
or as small NumPy arrays (numeric and bool dtypes, any shape, byte order kept). NumPy scalars
and arrays come back as NumPy scalars and arrays of the same dtype; a float that JSON cannot
hold (nan, inf) is stored as a 0-d float64 array and comes back as numpy.float64. NumPy string
arrays are stored as JSON lists of str. The C++ library checks keys and sizes (docs/api.md).
"""
import json
import math
from collections.abc import MutableMapping

import numpy as np

_ARRAY_KINDS = "biufc"


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"an attribute value cannot hold {type(o).__name__} (JSON values and NumPy arrays only)")


def encode(value):
    """("json", text) or ("array", ndarray) for a Python value."""
    if isinstance(value, (np.ndarray, np.generic)):
        arr = np.asarray(value)
        if arr.dtype.kind in _ARRAY_KINDS:
            return "array", arr
        if arr.dtype.kind in "US":
            return "json", json.dumps(arr.tolist() if arr.dtype.kind == "U" else arr.astype(str).tolist())
        raise TypeError(f"an attribute value cannot be a NumPy array of dtype {arr.dtype} "
                        "(bool, integer, float and complex dtypes only)")
    if isinstance(value, float) and not math.isfinite(value):
        return "array", np.float64(value)  # JSON has no nan or inf
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError("an attribute value cannot be bytes: decode it to str, or use a NumPy uint8 array")
    try:
        return "json", json.dumps(value, allow_nan=False, default=_json_default, ensure_ascii=False)
    except ValueError as e:
        raise ValueError(f"attribute value {value!r}: {e} (JSON cannot hold nan or inf inside a list or "
                         "dict; use a NumPy array)") from None


def decode(stored):
    if stored[0] == "json":
        return json.loads(stored[1])
    _, dtype, shape, data = stored
    arr = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape).copy()
    return arr[()] if arr.ndim == 0 else arr


class AttributeManager(MutableMapping):
    """The attributes of an array, a group or the database: a mutable mapping of str keys.

    a.attrs["units"] = "K"; a.attrs["units"]; del a.attrs["units"]; "units" in a.attrs;
    dict(a.attrs); len(a.attrs); iteration in key order. Changes belong to the handle's
    transaction: visible to it at once, to others at commit, discarded by abort.
    """

    __slots__ = ("_h",)

    def __init__(self, handle):
        self._h = handle

    def __getitem__(self, key):
        stored = self._h.get(key)
        if stored is None:
            raise KeyError(key)
        return decode(stored)

    def __setitem__(self, key, value):
        kind, payload = encode(value)
        if kind == "json":
            self._h.set_json(key, payload)
        else:
            self._h.set_array(key, payload)

    def __delitem__(self, key):
        self._h.delete(key)

    def __contains__(self, key):
        return self._h.contains(key)

    def __iter__(self):
        return iter(self._h.keys())

    def __len__(self):
        return len(self._h.keys())

    def __eq__(self, other):
        if not isinstance(other, (AttributeManager, dict)):
            return NotImplemented
        a, b = dict(self), dict(other)
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) or
                                            isinstance(b[k], np.ndarray) else a[k] == b[k] for k in a)

    __hash__ = None

    def __repr__(self):
        return f"<Attributes of {self._h.owner}: {dict(self)!r}>"

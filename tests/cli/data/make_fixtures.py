#!/usr/bin/python3
"""Writes the .npy fixtures of the CLI tests into this directory (numpy 1.24 made the committed
ones). Each is a few hundred bytes. Run: /usr/bin/python3 tests/cli/data/make_fixtures.py"""
import io
import pathlib
import struct

import numpy as np

here = pathlib.Path(__file__).resolve().parent


def save(name, array, version=None):
    with open(here / name, "wb") as f:
        np.lib.format.write_array(f, array, version=version)


def raw(name, data):
    (here / name).write_bytes(data)


def v1(header):
    """A version 1.0 file with the given header dictionary text and no data."""
    text = header.encode("latin1") + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


# Valid files: one per dtype, both orders, both byte orders, versions 1.0, 2.0 and 3.0.
m = np.arange(12, dtype="<f8").reshape(3, 4) / 4
save("f8_c.npy", m)
save("f8_f.npy", np.asfortranarray(m))
save("i4_be.npy", np.arange(-6, 6, dtype=">i4").reshape(4, 3))
save("f4_be_f.npy", np.asfortranarray((np.arange(12).reshape(3, 4) - 5.5).astype(">f4")))
for t in ["b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]:
    if t == "b1":
        a = np.array([[True, False, True], [False, False, True]])
    elif t[0] == "c":
        a = (np.arange(6) - 2.5 + 1j * np.arange(6)).astype(t).reshape(2, 3)
    elif t[0] == "u":
        a = (np.arange(6, dtype=np.uint64) * 37 + np.iinfo(t).max - 200).astype(t).reshape(2, 3)
    elif t[0] == "i":
        a = (np.arange(6) * 37 - 100).astype(t).reshape(2, 3)
        a[0, 0] = np.iinfo(t).min
        a[1, 2] = np.iinfo(t).max
    else:
        a = (np.arange(6) * 1.25 - 3).astype(t).reshape(2, 3)
    save(f"all_{t}.npy", a)
save("v2.npy", np.arange(10, dtype="<i2"), version=(2, 0))
save("v3.npy", np.arange(6, dtype="<u4").reshape(3, 2), version=(3, 0))
save("empty.npy", np.zeros((0, 3), dtype="<f8"))
save("scalar.npy", np.array(2.5))

# For append: rows matching f8_c (3, 4), a cast (i2 -> f8), a mismatch, an unsafe cast, and
# columns for an F-order array of shape (3, 4).
save("rows_f8.npy", np.full((2, 4), 7.5))
save("rows_i2.npy", np.array([[1, -2, 3, -4]], dtype="<i2"))
save("rows_bad_shape.npy", np.zeros((2, 5)))
save("rows_i8.npy", np.zeros((1, 4), dtype="<i8"))
save("cols_f8.npy", np.array([[100.0], [101.0], [102.0]]))

# Malformed files.
good = (here / "f8_c.npy").read_bytes()
raw("bad_truncated.npy", good[:-10])
raw("bad_trailing.npy", good + b"\0\0\0")
raw("bad_magic.npy", b"\x93NUMPZ" + good[6:])
raw("bad_version.npy", good[:6] + b"\x04\x00" + good[8:])
raw("bad_header_len.npy", good[:8] + struct.pack("<H", 60000) + good[10:])
raw("bad_dict.npy", v1("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), 'extra': 1}"))
raw("bad_shape_negative.npy", v1("{'descr': '<f8', 'fortran_order': False, 'shape': (-3,), }"))
raw("bad_shape_overflow.npy",
    v1("{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 4), }"))
raw("bad_dtype_unicode.npy", v1("{'descr': '<U5', 'fortran_order': False, 'shape': (2,), }"))
raw("bad_dtype_structured.npy",
    v1("{'descr': [('a', '<f8'), ('b', '<i4')], 'fortran_order': False, 'shape': (2,), }"))
raw("bad_empty.npy", b"")

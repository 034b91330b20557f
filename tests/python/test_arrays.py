# Dtypes, append and resize, with NumPy as the oracle.
import numpy as np
import pytest

import bigarray
from conftest import BLOCK

KINDS = ["b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_every_dtype_in_either_byte_order_round_trips(path, byteorder):
    n = 3 * BLOCK // 2 + 7  # crosses blocks for every item size
    with bigarray.open(path) as db:
        for kind in KINDS:
            dt = np.dtype(byteorder + kind)
            a = db.create(kind, n, dt, block_size=BLOCK)
            assert a.dtype == dt
            ref = (np.arange(n) % 100).astype(dt)
            if dt.kind == "c":
                ref = ref + 1j * ref[::-1]
            a[:] = ref
        db.commit()
    with bigarray.open(path) as db:
        for kind in KINDS:
            a = db[kind]
            dt = np.dtype(byteorder + kind)
            assert a.dtype == dt and a.dtype.str == dt.str
            want = (np.arange(n) % 100).astype(dt)
            if dt.kind == "c":
                want = want + 1j * want[::-1]
            np.testing.assert_array_equal(np.asarray(a), want)
            assert a[5] == want[5]


def test_dtype_spellings(mem):
    for spec, want in [(np.float32, "<f4"), (float, "<f8"), (bool, "|b1"), ("?", "|b1"), (np.dtype(">u2"), ">u2"),
                       ("int16", "<i2"), (complex, "<c16"), ("=i8", "<i8")]:
        a = mem.create(f"a{len(mem)}", 2, spec)
        assert a.dtype.str == want


@pytest.mark.parametrize("spec", [object, "O", "U4", "S3", "V8", "M8[ns]", "m8", [("x", "f8"), ("y", "i4")], ("f8", 3)])
def test_unsupported_dtypes_are_value_errors(mem, spec):
    with pytest.raises(ValueError, match="cannot be stored|not supported"):
        mem.create("x", 3, spec)
    assert "x" not in mem


@pytest.mark.parametrize("order", ["C", "F"])
def test_append_extends_the_major_axis(mem, order):
    a = mem.create("a", (0, 3) if order == "C" else (3, 0), "i8", order=order, block_size=BLOCK)
    axis = 0 if order == "C" else 1
    ref = np.zeros(a.shape, "i8")
    rng = np.random.default_rng(7)
    for k in range(40):
        rows = int(rng.integers(0, 300))
        block = rng.integers(-1000, 1000, (rows, 3) if order == "C" else (3, rows))
        a.append(block)
        ref = np.concatenate([ref, block], axis=axis)
        if k % 10 == 0:
            mem.commit()
    assert a.shape == ref.shape
    np.testing.assert_array_equal(np.asarray(a), ref)
    assert np.asarray(a).flags.f_contiguous == (order == "F")
    # One row (C) or one column (F) with one dimension less; any values NumPy converts.
    a.append([1.9, 2, 3])
    line = a[-1] if order == "C" else a[:, -1]
    np.testing.assert_array_equal(line, [1, 2, 3])


def test_append_one_dimensional_values_and_scalars(db):
    v = db.create("v", 0, "f4", block_size=BLOCK)
    v.append(np.arange(2000))
    v.append(5)
    v.append([])
    v.append(np.arange(3, dtype=">f8")[::-1])  # converted to the array's dtype, strided source
    db.commit()
    np.testing.assert_array_equal(np.asarray(v), np.concatenate([np.arange(2000), [5], [2, 1, 0]]).astype("f4"))
    v.append(v[:10])  # from a view of the same array
    np.testing.assert_array_equal(v[-10:], np.arange(10))


def test_append_mismatch_changes_nothing(mem):
    a = mem.create("a", (2, 3), "i4", block_size=BLOCK)
    a[...] = 1
    with pytest.raises(ValueError, match="do not match"):
        a.append(np.zeros((2, 2)))
    with pytest.raises(ValueError):
        a.append(np.zeros((1, 1, 3)))
    assert a.shape == (2, 3)
    with pytest.raises(ValueError, match="0-d"):
        mem.create("s", (), "f8").append([1.0])
    with pytest.raises(ValueError):  # NumPy cannot convert it
        a.append([["x", "y", "z"]])


def test_resize_keeps_flat_order_and_regrows_with_zeros(path):
    n = 10 * BLOCK // 8 + 100
    with bigarray.open(path) as db:
        a = db.create("a", n, "f8", block_size=BLOCK)
        a[:] = np.arange(n) + 1.0
        db.commit()
        ref = np.arange(n) + 1.0
        for shape in [2 * BLOCK // 8 + 10, 10 * BLOCK // 8, (40, 64), 1, (3, 7, 11), n]:
            a.resize(shape)
            ref.resize(shape, refcheck=False)  # NumPy's semantics: flat order, zeros
            assert a.shape == ref.shape
            np.testing.assert_array_equal(np.asarray(a), ref)
            db.commit()
    with bigarray.open(path) as db:
        np.testing.assert_array_equal(np.asarray(db["a"]), ref)
        assert db["a"][0] == 1 and db["a"][1] == 0


def test_resize_then_abort_restores_the_shape(mem):
    a = mem.create("a", (4, 5), "u1", block_size=BLOCK)
    mem.commit()
    a.resize((1 << 40,))  # metadata only
    assert a.shape == (1 << 40,)
    mem.abort()
    assert a.shape == (4, 5)
    with pytest.raises(ValueError):
        a.resize((3, -1))
    with pytest.raises(TypeError):
        a.resize("big")

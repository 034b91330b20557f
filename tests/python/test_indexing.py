# Indexing and assignment, with NumPy as the oracle: the same index on a numpy.ndarray of the
# same content and layout must give the same shape, strides and values.
import gc
import itertools

import numpy as np
import pytest

import bigarray
from conftest import BLOCK

SHAPE = (7, 5, 3, 4)


def filled(db, name, order, shape=SHAPE, dtype="f8"):
    a = db.create(name, shape, dtype, order=order, block_size=BLOCK)
    ref = np.arange(np.prod(shape), dtype=dtype).reshape(shape, order=order)
    a[...] = ref
    return a, ref


def per_axis(n):
    # full, first, last, middle, interior, strided, negative-strided
    return [slice(None), 0, -1, n // 2, slice(1, -1), slice(None, None, 2), slice(None, None, -2)]


def check(got, want):
    if np.ndim(want) == 0 and not isinstance(want, np.ndarray):
        assert not isinstance(got, np.ndarray), "an all-integer index gives a scalar"
        assert type(got) is type(want)
        assert got == want
        return
    assert isinstance(got, np.ndarray)
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    if got.size > 1:  # strides matter along the axes of more than one element
        assert [s for s, n in zip(got.strides, got.shape) if n > 1] == [
            s for s, n in zip(want.strides, want.shape) if n > 1]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("order", ["C", "F"])
def test_every_combination_per_axis_matches_numpy(mem, order):
    a, ref = filled(mem, "x", order)
    assert a.strides == ref.strides
    count = 0
    for key in itertools.product(*(per_axis(n) for n in SHAPE)):
        check(a[key], ref[key])
        count += 1
    assert count == 7 ** 4


@pytest.mark.parametrize("order", ["C", "F"])
def test_newaxis_ellipsis_and_partial_indices(mem, order):
    a, ref = filled(mem, "x", order)
    keys = [
        (), 3, -7, (2, 1), (Ellipsis,), (Ellipsis, 1), (1, Ellipsis), (1, Ellipsis, 2), (None,),
        (None, 1, None, slice(None, None, -1)), (Ellipsis, None), (0, 0, 0, 0, Ellipsis),
        (0, 0, 0, 0, None), (slice(2, None), None, Ellipsis, slice(None, 1)),
        (slice(-100, 100), slice(10, 20)), (slice(5, 1),), (slice(None, None, 3), 1, slice(None, None, -1), -1),
        (slice(6, 2, -3), slice(None, None, 100), slice(None, None, -(2 ** 70))),
        (slice(-(2 ** 70), 2 ** 70),), (np.int64(2), np.uint8(1)),
    ]
    for key in keys:
        check(a[key], ref[key])
    # A 0-d integer array indexes as an integer (NumPy makes a copy; here it is a view).
    np.testing.assert_array_equal(a[np.array(3), 1], ref[3, 1])


def test_scalars_from_integer_indices(mem):
    v = mem.create("v", 10, "i4", block_size=BLOCK)
    v[3] = 7
    assert v[3] == 7 and type(v[3]) is np.int32
    assert v[-7] == 7
    z = mem.create("z", (), "c16")
    z[()] = 1 + 2j
    assert z[()] == 1 + 2j and type(z[()]) is np.complex128
    assert isinstance(z[...], np.ndarray) and z[...].shape == ()


@pytest.mark.parametrize("order", ["C", "F"])
def test_assignment_broadcasts_like_numpy(mem, order):
    a, ref = filled(mem, "x", order)
    ref = ref.copy(order="K")
    rng = np.random.default_rng(1)
    for key, value in [
        ((0,), 5.0),
        ((slice(None), 1), np.arange(12).reshape(3, 4)),
        ((Ellipsis, -1), np.arange(3)),
        ((slice(None, None, -2), None, 2), rng.random((1, 3, 1))),
        ((1, 2, 0, 3), 99),
        ((slice(1, -1), slice(None, None, 2)), [1, 2, 3, 4]),
        ((slice(None), slice(None), slice(None), slice(None, None, -1)), np.int8(-3)),
    ]:
        a[key] = value
        ref[key] = value
        np.testing.assert_array_equal(np.asarray(a), ref)
    before = np.asarray(a).copy()
    with pytest.raises(ValueError):
        a[0] = np.ones((2, 2))  # does not broadcast: nothing written
    np.testing.assert_array_equal(np.asarray(a), before)


def test_one_dimensional_scalar_assignment_and_casting(mem):
    v = mem.create("v", 3 * BLOCK, "i2", block_size=BLOCK)
    v[0] = 3
    v[-1] = 2.9  # NumPy's casting: truncated
    v[BLOCK - 1 : BLOCK + 1] = 7
    assert v[0] == 3 and v[-1] == 2
    assert list(v[BLOCK - 2 : BLOCK + 2]) == [0, 7, 7, 0]


def test_views_are_zero_copy_and_keep_the_mapping_alive(path):
    db = bigarray.open(path)
    a, _ = filled(db, "x", "C")
    whole = np.asarray(a)
    part = a[2:4]
    assert isinstance(whole.base, bigarray.View) and isinstance(part.base, bigarray.View)
    assert part.base.shape == part.shape and part.base.dtype == part.dtype
    assert np.shares_memory(whole, part)
    assert part.__array_interface__["data"][0] == whole.__array_interface__["data"][0] + 2 * whole.strides[0]
    part[0, 0, 0, 0] = -1
    assert whole[2, 0, 0, 0] == -1 and a[2, 0, 0, 0] == -1
    assert np.asarray(a, dtype="f4").dtype == np.float32  # a converted copy on request
    db.commit()
    del a, whole
    db.close()
    del db
    gc.collect()
    assert part[0, 0, 0, 0] == -1  # the view outlives the Array and the Database
    assert part[1, 4, 2, 3] == np.arange(np.prod(SHAPE)).reshape(SHAPE)[3, 4, 2, 3]


def test_numpy_functions_accept_arrays(mem):
    a, ref = filled(mem, "x", "F")
    assert np.sum(a) == ref.sum()
    np.testing.assert_array_equal(np.asarray(a)[[0, 3]], ref[[0, 3]])  # fancy: on the view
    np.testing.assert_array_equal(a[1:5][[0, 3], 1], ref[1:5][[0, 3], 1])


@pytest.mark.parametrize("key", [[0, 1], np.array([0, 1]), (0, [1, 2]), np.array([True] * 7), True,
                                 np.bool_(False), 1.0, "a", (0, 1.5), {0}])
def test_fancy_and_non_integer_indices_are_type_errors(mem, key):
    a, _ = filled(mem, "x", "C")
    with pytest.raises(TypeError, match="basic indexing|integers"):
        a[key]
    with pytest.raises(TypeError):
        a[key] = 1


def test_index_errors(mem):
    a, _ = filled(mem, "x", "C")
    with pytest.raises(IndexError, match="out of bounds for axis 0 with size 7"):
        a[7]
    with pytest.raises(IndexError, match="axis 3"):
        a[0, 0, 0, -5]
    with pytest.raises(IndexError, match="too many indices"):
        a[0, 0, 0, 0, 0]
    with pytest.raises(IndexError):
        a[2 ** 70]
    with pytest.raises(ValueError, match="step cannot be zero"):
        a[::0]
    with pytest.raises(IndexError, match="single ellipsis"):  # as NumPy
        np.zeros(a.shape)[..., 0, ...]
    with pytest.raises(IndexError, match="single ellipsis"):
        a[..., 0, ...]


def test_len_and_attributes(mem):
    a = mem.create("a", (6, 2, 5), ">i2", order="F", block_size=BLOCK)
    ref = np.zeros((6, 2, 5), ">i2", order="F")
    assert (a.shape, a.strides, a.ndim, a.size, a.itemsize, a.nbytes) == (
        ref.shape, ref.strides, ref.ndim, ref.size, ref.itemsize, ref.nbytes)
    assert a.dtype == np.dtype(">i2") and isinstance(a.dtype, np.dtype)
    assert (a.order, a.name, a.block_size, len(a)) == ("F", "a", BLOCK, 6)
    assert "shape=(6, 2, 5)" in repr(a)
    with pytest.raises(TypeError, match="unsized"):
        len(mem.create("s", (), "f8"))


def test_a_small_view_deep_inside_a_huge_array(mem):
    tib = mem.create("tib", 1 << 37, "f8")  # 1 TiB: views are mapped, nothing is touched
    part = tib[1 << 36 :: 1 << 20]
    assert part.shape == (1 << 16,)
    assert mem.cache_stats()["loads"] == 0

    huge = mem.create("huge", 1 << 60, "u1")  # 1 EiB: no address space holds it
    with pytest.raises(MemoryError, match="index a part"):
        np.asarray(huge)
    with pytest.raises(MemoryError):
        huge[...]
    deep = huge[(1 << 59) + 5 : (1 << 59) + 10]
    deep[0] = 42
    mem.commit()
    assert huge[(1 << 59) + 5] == 42 and huge[(1 << 59) + 6] == 0
    np.testing.assert_array_equal(deep, [42, 0, 0, 0, 0])

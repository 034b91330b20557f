"""A.read(index, out=None): a copy of A[index] in which blocks the handle has not loaded are
read straight from the store, checked, with no page fault and nothing cached (docs/python.md,
"Reading into a buffer")."""
import numpy as np
import pytest

import bigarray
from damage import damaged_database


def test_read_copies_what_indexing_shows_without_faulting(path):
    expected = np.arange(64 * 512, dtype="f8").reshape(64, 512)  # 64 blocks of 4 KiB
    with bigarray.open(path) as db:
        db.create("a", expected.shape, "f8", block_size=4096)[...] = expected
        db.create("f", (512, 64), "i4", order="F", block_size=4096)[...] = expected.T.astype("i4")
        db.commit()
    with bigarray.open(path) as db:
        a = db["a"]
        whole = a.read()
        np.testing.assert_array_equal(whole, expected)
        assert whole.flags["C_CONTIGUOUS"] and whole.flags["OWNDATA"]
        stats = db.cache_stats()
        assert stats["faults"] == 0 and stats["loads"] == 0 and stats["resident_bytes"] == 0
        # Any index, as A[index] has it (strided ones are copied through the cache).
        for index in [np.s_[3:17], np.s_[5], np.s_[2:60:7, ::3], np.s_[..., 7], np.s_[-1, -5:]]:
            np.testing.assert_array_equal(a.read(index), expected[index])
        # Into a buffer: same dtype; A[index] broadcasts to its shape.
        out = np.zeros((8, 512))
        assert a.read(np.s_[8:16], out=out) is out
        np.testing.assert_array_equal(out, expected[8:16])
        col = np.zeros((4, 3))
        a.read(np.s_[0, :3], out=col)
        np.testing.assert_array_equal(col, np.broadcast_to(expected[0, :3], (4, 3)))
        with pytest.raises(TypeError, match="dtype"):
            a.read(out=np.zeros(expected.shape, "f4"))
        ro = np.zeros((8, 512))
        ro.flags.writeable = False
        with pytest.raises(ValueError, match="read-only"):
            a.read(np.s_[:8], out=ro)
        with pytest.raises(ValueError, match="broadcast"):
            a.read(np.s_[:8], out=np.zeros((7, 512)))
        # This transaction's writes are what it reads.
        a[10, 10] = -1
        assert a.read(np.s_[10])[10] == -1
        # F order: a block-aligned run of columns is one piece in F order too.
        f = db["f"]
        got = f.read()
        assert got.flags["F_CONTIGUOUS"]
        np.testing.assert_array_equal(got, expected.T.astype("i4"))


def test_read_of_a_damaged_block_raises(path):
    expected = damaged_database(path)
    with bigarray.open(path) as db:
        a = db["a"]
        with pytest.raises(bigarray.CorruptionError, match="array 'a' block 1"):
            a.read()
        np.testing.assert_array_equal(a.read(np.s_[0:8]), expected[0:8])
        np.testing.assert_array_equal(a.read(np.s_[16:]), expected[16:])

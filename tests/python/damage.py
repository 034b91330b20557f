"""Damaging a stored block on disk, for the tests of load errors (not a test module)."""
import numpy as np

import bigarray

MARK = 1234.5625  # a float64 no test writes by chance


def damaged_database(path, rows=64, block_size=4096):
    """A database at `path` with array "a" of (rows, 64) float64, C order, rows >= 9: rows 0-7
    (block 0) are intact ones, rows 8-15 (block 1) are MARK and damaged on disk, the rest are
    zeros (not stored). Returns the committed values as NumPy has them."""
    expected = np.zeros((rows, 64))
    expected[0:8] = 1
    expected[8:16] = MARK
    with bigarray.open(path) as db:
        a = db.create("a", (rows, 64), "f8", block_size=block_size)
        a[...] = expected
        db.commit()
    data = (path / "data.mdb").read_bytes()
    needle = expected[8:16].tobytes()  # block 1's payload (stored without trailing zeros)
    at = data.find(needle)
    assert at >= 0 and data.find(needle, at + 1) < 0, "the block's payload is not stored once, in the clear"
    with open(path / "data.mdb", "r+b") as f:
        f.seek(at + 100)
        f.write(bytes([data[at + 100] ^ 0xFF]))
    return expected

"""Damaging a stored block on disk, for the tests of load errors (not a test module)."""
import numpy as np

import bigarray

MARK = 1234.5625  # a float64 no test writes by chance


def damaged_database(path, block_size=4096):
    """A database at `path` with array "a" of (64, 64) float64, C order: rows 0-7 (block 0)
    are intact ones, rows 8-15 (block 1) are MARK and damaged on disk, the rest are zeros (not
    stored). Returns the committed values as NumPy has them."""
    with bigarray.open(path) as db:
        a = db.create("a", (64, 64), "f8", block_size=block_size)
        a[0:8] = 1
        a[8:16] = MARK
        db.commit()
    data = (path / "data.mdb").read_bytes()
    needle = np.full(block_size // 8, MARK).tobytes()
    at = data.find(needle)
    assert at >= 0 and data.find(needle, at + 1) < 0, "the block's payload is not stored once, in the clear"
    with open(path / "data.mdb", "r+b") as f:
        f.seek(at + 100)
        f.write(bytes([data[at + 100] ^ 0xFF]))
    expected = np.zeros((64, 64))
    expected[0:8] = 1
    expected[8:16] = MARK
    return expected

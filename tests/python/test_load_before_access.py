"""Element access and assignment through an Array load the blocks they touch first: a damaged
block raises CorruptionError instead of ending the process at a page fault; ndarray views keep
the fault semantics (docs/python.md, "What is safe"). Each access runs in a child process, so
that a regression is a failed test, not a crashed test run."""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import bigarray
from damage import damaged_database


def child(code, env, path):
    """Runs `code` in a fresh interpreter with `db` open on `path`; returns the CompletedProcess."""
    prologue = f"import bigarray, numpy as np\ndb = bigarray.open({str(path)!r})\na = db['a']\n"
    return subprocess.run([sys.executable, "-c", prologue + textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=60)


ACCESSES = {
    "element read": "a[9, 3]",
    "element write": "a[9, 3] = 5",
    "slice assignment": "a[6:10, :] = 7",
    "broadcast assignment": "a[8] = np.arange(64)",
    "negative index": "a[-56, -1]",
}


@pytest.mark.parametrize("access", list(ACCESSES), ids=list(ACCESSES))
def test_damaged_block_raises_corruption_error(tmp_path, child_env, access):
    path = tmp_path / "db"
    damaged_database(path)
    r = child(f"""
        try:
            {ACCESSES[access]}
        except bigarray.CorruptionError as e:
            print("CorruptionError:", e)
        """, child_env, path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("CorruptionError:") and "block 1" in r.stdout and "'a'" in r.stdout


@pytest.mark.parametrize("change", ["append", "shrink"])
def test_append_and_shrink_into_a_damaged_last_block_raise(tmp_path, child_env, change):
    # Rows 8-11 fill half of block 1, the last block: an append writes the rest of it, a
    # shrink to 10 rows zeroes its tail; both must load it first.
    path = tmp_path / "db"
    damaged_database(path, rows=12)
    call = "a.append(np.ones(64))" if change == "append" else "a.resize((10, 64))"
    r = child(f"""
        try:
            {call}
        except bigarray.CorruptionError as e:
            print("CorruptionError:", e, a.shape)
        """, child_env, path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("CorruptionError:") and "block 1" in r.stdout
    assert r.stdout.rstrip().endswith("(12, 64)")  # nothing changed


def test_intact_blocks_read_and_write_as_before(tmp_path, child_env):
    path = tmp_path / "db"
    damaged_database(path)
    r = child("""
        assert a[3, 4] == 1 and a[40, 0] == 0
        a[0, 0] = 2; a[20:30] = 3
        db.commit()
        assert a[0, 0] == 2 and (a[20:30] == 3).all()
        print("ok")
        """, child_env, path)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr


def test_an_ndarray_view_keeps_the_fault_semantics(tmp_path, child_env):
    # Documented: touching a damaged block through an ndarray ends the process with SIGBUS.
    path = tmp_path / "db"
    damaged_database(path)
    r = child("v = a[8:16]\nprint(float(v.sum()))", child_env, path)
    assert r.returncode == -signal.SIGBUS
    assert "bigarray: fatal page fault" in r.stderr and "block 1" in r.stderr


def test_a_disk_too_full_to_spill_to_raises_oserror(tmp_path, child_env):
    # Regression (issue 13): A[:] = x and A.append(x) larger than the cache, on a full disk,
    # ended the process with SIGBUS inside a page fault ("could not be spilled"). RLIMIT_FSIZE
    # stands for the full disk (writes past it fail with EFBIG; SIGXFSZ is ignored).
    code = f"""
        import resource, signal
        import numpy as np, bigarray
        db = bigarray.open({str(tmp_path / "db")!r}, cache=8 * 65536, spill_dir={str(tmp_path)!r})
        a = db.create("a", 64 * 8192, "f8", block_size=65536)
        db.commit()
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
        def assign():
            a[:] = 1.0
        for what, op in [("assign", assign), ("append", lambda: a.append(np.ones(64 * 8192)))]:
            try:
                op()
                print(what, "ok")
            except OSError as e:
                print(what, "OSError", e.errno, e)
        print("shape", a.shape)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        a[:] = 5.0
        db.commit()
        print("after", float(a[0]), float(a[-1]))
        """
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=child_env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "assign OSError 28 [Errno 28] prepare to write 64 block(s) of array 'a': reserve" in r.stdout, r.stdout
    assert "append OSError 28" in r.stdout and "scratch space" in r.stdout
    assert "shape (524288,)" in r.stdout
    assert "after 5.0 5.0" in r.stdout


@pytest.mark.parametrize("order", ["C", "F"])
def test_large_assignments_in_slabs_equal_numpy(tmp_path, order):
    # Larger than a quarter of the cache: assigned slab by slab; the result must be NumPy's,
    # also for a value that overlaps the target and for broadcasting.
    db = bigarray.open(tmp_path / "db", cache=1 << 20)
    a = db.create("a", (300, 200), "f8", order=order, block_size=4096)
    expected = np.zeros((300, 200), order=order)
    for key, value in [((slice(None),), np.arange(60000.0).reshape(300, 200)),
                       ((slice(1, None),), None),  # a[1:] = a[:-1]: overlapping
                       ((slice(None, None, -1), slice(3, 190)), np.arange(187.0)),
                       ((Ellipsis,), 2.5),
                       ((slice(10, 290), 5), np.arange(280))]:
        if value is None:
            a[key] = a[:-1]
            expected[key] = expected[:-1]
        else:
            a[key] = value
            expected[key] = value
        assert np.array_equal(np.asarray(a), expected), key
    with pytest.raises(ValueError):
        a[:] = np.zeros(7)  # does not broadcast: nothing written
    assert np.array_equal(np.asarray(a), expected)
    db.commit()
    db.close()

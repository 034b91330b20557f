"""A.iter_blocks(): block-aligned chunks along an axis, each loaded before it is yielded; the
progress bar; the resumable-job idiom of docs/python.md surviving kill -9."""
import os
import pty
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import bigarray
from damage import damaged_database


def chunks(a, **kw):
    return [(sl, v) for sl, v in a.iter_blocks(**kw)]


@pytest.mark.parametrize("shape,order", [((1000, 3), "C"), ((777, 5, 2), "C"), ((3, 1000), "F"),
                                         ((10, 4096), "C"), ((5000,), "C"), ((1, 1), "C")])
def test_chunks_are_block_aligned_and_cover_the_array(mem, shape, order):
    a = mem.create("a", shape, "f8", order=order, block_size=4096)
    a[...] = np.arange(np.prod(shape)).reshape(shape)
    expected = np.asarray(a).copy()
    major = 0 if order == "C" else len(shape) - 1
    row_bytes = a.nbytes // shape[major]
    got = chunks(a, axis=major)
    assert got[0][0].start == 0 and got[-1][0].stop == shape[major]
    for (s1, _), (s2, _) in zip(got, got[1:]):
        assert s1.stop == s2.start
    for sl, v in got[:-1]:
        assert (sl.stop * row_bytes) % 4096 == 0, "a chunk does not end on a block boundary"
        assert (sl.stop - sl.start) * row_bytes <= 16 * max(4096, row_bytes)
    for sl, v in got:
        index = (slice(None),) * major + (sl,)
        assert isinstance(v, np.ndarray) and np.array_equal(v, expected[index])
        assert np.shares_memory(v, np.asarray(a))  # a view, not a copy


def test_rows_and_other_axes(mem):
    a = mem.create("a", (20, 30, 4), "i4", block_size=4096)
    a[...] = np.arange(2400).reshape(20, 30, 4)
    got = chunks(a, axis=1, rows=7)
    assert [sl for sl, _ in got] == [slice(0, 7), slice(7, 14), slice(14, 21), slice(21, 28), slice(28, 30)]
    assert np.array_equal(np.concatenate([v for _, v in got], axis=1), np.asarray(a))
    assert [sl for sl, _ in chunks(a, axis=-1, rows=3)] == [slice(0, 3), slice(3, 4)]
    v = chunks(a, rows=100)
    assert len(v) == 1 and v[0][0] == slice(0, 20)
    # Writing through the yielded views writes the array.
    for sl, view in a.iter_blocks(rows=6):
        view[...] = sl.start
    assert np.array_equal(np.asarray(a)[:, 0, 0], np.repeat([0, 6, 12, 18], [6, 6, 6, 2]))


def test_bad_arguments(mem):
    a = mem.create("a", (4, 4), "f8")
    with pytest.raises(IndexError, match="axis 2 is out of range"):
        a.iter_blocks(axis=2)
    with pytest.raises(ValueError, match="rows must be positive"):
        a.iter_blocks(rows=0)
    with pytest.raises(TypeError):
        a.iter_blocks(axis=0.5)
    with pytest.raises(ValueError, match="0-d"):
        mem.create("s", (), "f8").iter_blocks()
    assert chunks(mem.create("e", (0, 4), "f8")) == []


def test_a_damaged_block_is_raised_by_the_iteration(tmp_path):
    path = tmp_path / "db"
    expected = damaged_database(path)
    db = bigarray.open(path)
    seen = []
    with pytest.raises(bigarray.CorruptionError, match="block 1"):
        for sl, v in db["a"].iter_blocks(rows=8):
            seen.append(v.copy())
    assert len(seen) == 1 and np.array_equal(seen[0], expected[:8])
    db.close()


def test_progress_bar_only_on_a_terminal(tmp_path, child_env):
    code = textwrap.dedent(f"""
        import bigarray
        db = bigarray.open("memory:")
        a = db.create("a", 100000, "f8", block_size=4096)
        n = sum(1 for _ in a.iter_blocks(progress=True))
        print("chunks", n, flush=True)
        """)
    # Not a terminal: nothing on stderr.
    r = subprocess.run([sys.executable, "-c", code], env=child_env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "chunks 196\n" and r.stderr == ""
    # A terminal: the bar, ending at 100% on its own line.
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-c", code], env=child_env, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    out, _ = p.communicate(timeout=60)
    err = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        err += chunk
    os.close(master)
    assert p.returncode == 0 and out == b"chunks 196\n"
    assert b"iter_blocks 'a' [" in err and b"100.0% 100000/100000" in err and err.endswith(b"\n")


JOB = textwrap.dedent("""
    import os, sys
    import bigarray, numpy as np
    db = bigarray.open(sys.argv[1])
    if "out" not in db:
        db.create("out", 100000, "f8", block_size=4096)
        db.create("cursor", 1, "i8")          # the first row not yet done
        db.commit()
    src, out, cursor = db["src"], db["out"], db["cursor"]
    kill_after = int(sys.argv[2])
    for sl, chunk in src.iter_blocks():
        if sl.stop <= cursor[0]:
            continue                           # done by an earlier run
        out[sl] = np.sqrt(chunk) * 2
        cursor[0] = sl.stop
        db.commit()                            # the chunk and the cursor, atomically
        kill_after -= 1
        if kill_after == 0:
            os.kill(os.getpid(), 9)
    print("done at", cursor[0])
    db.close()
    """)


def test_resumable_job_survives_kill_9(tmp_path, child_env):
    path = tmp_path / "db"
    with bigarray.open(path) as db:
        db.create("src", 100000, "f8", block_size=4096)[:] = np.arange(100000.0)
        db.commit()
    job = tmp_path / "job.py"
    job.write_text(JOB)
    r = subprocess.run([sys.executable, str(job), str(path), "30"], env=child_env, capture_output=True, text=True)
    assert r.returncode == -9
    with bigarray.open(path, read_only=True) as db:
        done = int(db["cursor"][0])
        assert 0 < done < 100000
        assert np.array_equal(db["out"][:done], np.sqrt(np.arange(done)) * 2)
        assert not db["out"][done:].any()  # nothing past the cursor was committed
    r = subprocess.run([sys.executable, str(job), str(path), "0"], env=child_env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "done at 100000\n", r.stderr
    with bigarray.open(path, read_only=True) as db:
        assert np.array_equal(np.asarray(db["out"]), np.sqrt(np.arange(100000.0)) * 2)

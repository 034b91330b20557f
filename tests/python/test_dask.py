# dask over bigarray: chunks, lazy reads, reductions within the cache budget, threaded stores.
import json
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import bigarray

da = pytest.importorskip("dask.array")
MIB = 1 << 20


def test_chunks_are_block_aligned_along_the_major_axis(mem):
    # 24-byte rows and 4 KiB blocks: 512 rows make 3 blocks; chunks of about 8 MiB: 349 units.
    a = mem.create("a", (200_000, 3), "f8", block_size=4096)
    rows = 512 * (8 * MIB // (512 * 24))
    assert a.chunks == ((rows,) * (200_000 // rows) + (200_000 % rows,), (3,))
    f = mem.create("f", (3, 200_000), "f8", order="F", block_size=4096)
    assert f.chunks == ((3,), a.chunks[0])
    assert mem.create("small", (1000, 3), "f8").chunks == ((1000,), (3,))
    assert mem.create("e", (0, 5), "i2").chunks == ((0,), (5,))
    assert mem.create("s", (), "f8").chunks == ()
    big = mem.create("big", (1 << 26,), "u1", block_size=65536)
    assert big.chunks == ((8 * MIB,) * 8,)
    odd = mem.create("odd", (100_000, 1001), "u1", block_size=1 << 20)  # aligned: 1001 MiB: too large
    assert set(odd.chunks[0][:-1]) == {8 * MIB // 1001}
    for arr in [a, f, big]:  # every chunk starts on a block boundary
        axis = 0 if arr.order == "C" else arr.ndim - 1
        row = arr.nbytes // arr.shape[axis]
        assert all(sum(arr.chunks[axis][:k]) * row % arr.block_size == 0 for k in range(len(arr.chunks[axis])))


def test_from_array_and_to_dask_compute_what_numpy_computes_lazily(path):
    rng = np.random.default_rng(5)
    ref = rng.standard_normal((3000, 7))
    with bigarray.open(path) as db:
        db.create("x", ref.shape, "f8", block_size=16384)[:] = ref
        db.commit()
    with bigarray.open(path, cache=1 << 20) as db:
        a = db["x"]
        x = da.from_array(a, chunks=a.chunks)
        y = a.to_dask()
        assert x.shape == ref.shape and x.dtype == ref.dtype and y.chunks == a.chunks
        expr = (y * 2 - 1).mean(axis=0) + x.std(axis=0)
        read = lambda: db.cache_stats()["loads"] + db.cache_stats()["file_maps"]  # copied or mapped
        assert read() == 0  # nothing read before compute
        np.testing.assert_allclose(expr.compute(scheduler="threads"), (ref * 2 - 1).mean(axis=0) + ref.std(axis=0))
        np.testing.assert_array_equal(y[1234:1240, 3].compute(), ref[1234:1240, 3])
        assert read() > 0


def test_store_from_several_threads_then_one_commit_is_durable(path):
    db = bigarray.open(path, cache=4 * MIB)
    a = db.create("a", (4096, 512), "f8", block_size=64 * 1024)  # 16 MiB, 4x the cache
    x = da.arange(a.size, dtype="f8", chunks=a.size // 64).reshape(a.shape).rechunk(a.chunks)

    class Recorder:  # sees which threads write
        def __init__(self, target):
            self.target, self.threads = target, set()
            self.shape, self.dtype, self.ndim = target.shape, target.dtype, target.ndim

        def __setitem__(self, key, value):
            self.threads.add(threading.get_ident())
            self.target[key] = value

    out = Recorder(a)
    da.store(x, out, lock=False, scheduler="threads", num_workers=4)
    assert len(out.threads) >= 2, out.threads
    db.commit()
    db.close()
    with bigarray.open(path, cache=4 * MIB) as other:
        b = other["a"]
        assert float(da.from_array(b, chunks=b.chunks).sum().compute()) == float(np.arange(a.size, dtype="f8").sum())
        np.testing.assert_array_equal(b[100], np.arange(100 * 512, 101 * 512))


PEAK = textwrap.dedent("""
    import json, sys, resource
    import numpy as np, dask, dask.array as da, bigarray
    path, cache = sys.argv[1], int(sys.argv[2])
    def vmhwm():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
    baseline = vmhwm()
    with bigarray.open(path, cache=cache) as db:
        a = db["x"]
        x = da.from_array(a, chunks=a.chunks)
        with dask.config.set(scheduler="threads", num_workers=4):
            total, top = da.compute(x.sum(), x.max(axis=0))
        evictions = db.cache_stats()["evictions"]
    print(json.dumps({"sum": float(total), "top": top.tolist(), "baseline": baseline, "peak": vmhwm(),
                      "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "evictions": evictions}))
""")

FILL = textwrap.dedent("""
    import sys, numpy as np, bigarray
    path, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with bigarray.open(path, cache=64 << 20, durable=False) as db:
        a = db.create("x", (rows, cols), "f8")
        step = 1024
        for r in range(0, rows, step):
            a[r:r + step] = (np.arange(r, min(rows, r + step))[:, None] % 1000) * 0.5 + np.arange(cols)
            db.commit()
""")


def test_reduction_over_4x_the_cache_stays_within_budget(tmp_path, child_env):
    # 512 MiB of float64 through a 128 MiB cache: an array larger than the bound (cache + 256
    # MiB), so that a cache that kept every block would fail the test.
    cache, rows, cols = 128 * MIB, 65536, 1024
    db = str(tmp_path / "db")
    subprocess.run([sys.executable, "-c", FILL, db, str(rows), str(cols)], env=child_env, check=True, timeout=120)
    r = subprocess.run([sys.executable, "-c", PEAK, db, str(cache)], env=child_env, check=True, timeout=120,
                       capture_output=True, text=True)
    got = json.loads(r.stdout)
    # NumPy's answer, computed chunk by chunk from the same formula.
    k = np.arange(rows) % 1000 * 0.5
    total = float(np.sum(k) * cols + rows * np.sum(np.arange(cols)))
    assert got["sum"] == pytest.approx(total, rel=1e-12)
    np.testing.assert_array_equal(got["top"], k.max() + np.arange(cols))
    print(f"\npeak RSS {got['peak'] / MIB:.0f} MiB (after imports {got['baseline'] / MIB:.0f} MiB) for a "
          f"{rows * cols * 8 / MIB:.0f} MiB array and a {cache / MIB:.0f} MiB cache")
    assert got["evictions"] > 0, got
    assert got["peak"] <= cache + 256 * MIB, got
    assert rows * cols * 8 > cache + 256 * MIB

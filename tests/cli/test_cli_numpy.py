"""Round trips between NumPy and the bigarray tool (docs/cli.md): what the tool writes, numpy.load
reads back exactly, and the results of export --rows, append, fill, resize and stats match
NumPy's. Registered with ctest as cli_numpy_test; BIGARRAY_CLI is the tool."""
import io
import json
import os
import shlex
import subprocess

import numpy as np
import pytest

CLI = os.environ.get("BIGARRAY_CLI", "build/bin/bigarray")
DTYPES = ["|b1", "|i1", "<i2", ">i4", "<i8", "|u1", ">u2", "<u4", "<u8", "<f2", ">f4", "<f8", "<c8", ">c16"]


def run(*args, code=0, stdin=None):
    r = subprocess.run([CLI, "--no-progress", *map(str, args)], capture_output=True, input=stdin)
    assert r.returncode == code, f"bigarray {' '.join(map(str, args))}: exit {r.returncode}\n{r.stderr.decode()}"
    return r.stdout.decode()


def sample(dtype, shape, rng):
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        a = rng.integers(0, 2, shape).astype(bool)
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, shape, dtype=dtype.newbyteorder("="), endpoint=True)
    elif dtype.kind == "f":
        a = rng.standard_normal(shape) * 100
    else:
        a = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return a.astype(dtype)


def same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")


@pytest.fixture
def db(tmp_path):
    return tmp_path / "db"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", ["C", "F"])
def test_import_export_round_trip(tmp_path, db, dtype, order):
    rng = np.random.default_rng(sum(map(ord, dtype + order)))
    for k, shape in enumerate([(), (0,), (7,), (5, 0, 3), (33, 17), (4, 3, 5)]):
        a = np.asarray(sample(dtype, shape, rng), order=order)
        np.save(tmp_path / "in.npy", a)
        run("import", db, f"a{k}", tmp_path / "in.npy", "--block-size", "4096")
        info = json.loads(run("info", db, f"a{k}", "--json"))
        assert info["dtype"] == a.dtype.str and info["shape"] == list(shape)
        assert info["order"] == ("F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C")
        run("export", db, f"a{k}", tmp_path / "out.npy")
        b = np.load(tmp_path / "out.npy")
        same(a, b)
        if a.ndim >= 2 and a.size:
            assert b.flags.f_contiguous == (order == "F")


def test_versions_and_pipes(tmp_path, db):
    a = np.arange(60, dtype=">f4").reshape(3, 4, 5)
    for version in [(1, 0), (2, 0), (3, 0)]:
        with open(tmp_path / "v.npy", "wb") as f:
            np.lib.format.write_array(f, np.asfortranarray(a), version=version)
        run("import", db, "v", tmp_path / "v.npy", "--replace")
        run("export", db, "v", tmp_path / "out.npy")
        same(np.load(tmp_path / "out.npy"), a)
    # From stdin, to stdout.
    buf = io.BytesIO()
    np.save(buf, a[1])
    run("import", db, "piped", "/dev/stdin", stdin=buf.getvalue())
    out = subprocess.run([CLI, "export", db, "piped", "/dev/stdout"], capture_output=True, check=True).stdout
    same(np.load(io.BytesIO(out)), a[1])
    # A truncated stream is an error and nothing is stored.
    r = subprocess.run([CLI, "import", db, "cut", "/dev/stdin"], input=buf.getvalue()[:-3], capture_output=True)
    assert r.returncode == 1 and b"truncated" in r.stderr
    assert "cut" not in run("ls", db)


def test_large_array_with_a_small_cache(tmp_path, db):
    a = np.random.default_rng(7).standard_normal((50_000, 40))  # 16 MB, 245 blocks of 64 KiB
    np.save(tmp_path / "big.npy", a)
    run("--cache", "1M", "import", db, "big", tmp_path / "big.npy", "--block-size", "64K")
    run("--cache", "1M", "export", db, "big", tmp_path / "out.npy")
    same(np.load(tmp_path / "out.npy"), a)
    s = json.loads(run("--cache", "1M", "stats", db, "big", "--json"))
    assert s["count"] == a.size and s["min"] == a.min() and s["max"] == a.max()
    assert s["mean"] == pytest.approx(a.mean(), rel=1e-12, abs=1e-15)
    assert s["std"] == pytest.approx(a.std(), rel=1e-12)
    run("--cache", "1M", "import", db, "big", tmp_path / "big.npy", "--order", "F", "--replace", "--block-size", "64K")
    run("--cache", "1M", "export", db, "big", tmp_path / "out.npy", "--rows", "100:-100")
    same(np.load(tmp_path / "out.npy"), np.asfortranarray(a[100:-100]))
    assert "ok, 1 arrays, 245 blocks" in run("verify", db)


SLICES = ["0:3", ":", ":5", "5:", "-3:", ":-3", "-7:-2", "2:2", "9:1", "-100:100", "100:", ":-100", "3:4",
          "::2", "1::3", "::-1", "8:2:-2", "-1::-3", "::100", "::-100", "2:9:-1", "9:1:-1", ":-100:-1",
          "100::-1", "-100::-1", "5:5:-1", "1:2:", "::"]


def rows_slice(rows):
    """The Python slice that --rows ROWS selects."""
    return slice(*(int(x) if x else None for x in rows.split(":")))


@pytest.mark.parametrize("order", ["C", "F"])
def test_export_rows(tmp_path, db, order):
    a = np.asarray(np.arange(10 * 3 * 2, dtype="<i8").reshape(10, 3, 2), order=order)
    np.save(tmp_path / "a.npy", a)
    run("import", db, "a", tmp_path / "a.npy")
    for rows in SLICES:
        run("export", db, "a", tmp_path / "r.npy", f"--rows={rows}")
        same(np.load(tmp_path / "r.npy"), a[rows_slice(rows)])


def test_append(tmp_path, db):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 3))
    np.save(tmp_path / "a.npy", a)
    run("import", db, "c", tmp_path / "a.npy")
    expected = a
    for piece in [rng.standard_normal((2, 3)), np.zeros((0, 3)), np.arange(6, dtype=">i4").reshape(2, 3),
                  np.array([[1, 2, 3]], dtype=np.uint16), rng.standard_normal((1, 3)).astype(">f4"),
                  np.asfortranarray(rng.standard_normal((5, 3)))]:
        np.save(tmp_path / "p.npy", piece)
        run("append", db, "c", tmp_path / "p.npy")
        expected = np.concatenate([expected, piece.astype("<f8")])
    run("export", db, "c", tmp_path / "out.npy")
    same(np.load(tmp_path / "out.npy"), expected)

    # F order: along the last axis.
    f = np.asfortranarray(np.arange(12, dtype="<i8").reshape(2, 3, 2))
    np.save(tmp_path / "f.npy", f)
    run("import", db, "f", tmp_path / "f.npy")
    piece = np.arange(100, 112, dtype="<i4").reshape(2, 3, 2)
    np.save(tmp_path / "p.npy", piece)
    run("append", db, "f", tmp_path / "p.npy")
    run("export", db, "f", tmp_path / "out.npy")
    same(np.load(tmp_path / "out.npy"), np.asfortranarray(np.concatenate([f, piece], axis=2)))

    # Refused: shape, rank and inexact casts; the array is unchanged.
    for bad in [np.zeros((2, 4)), np.zeros(3), np.zeros((1, 3), dtype="<i8"), np.zeros((1, 3), dtype="<c16"),
                np.zeros((1, 3), dtype=np.uint64)]:
        np.save(tmp_path / "p.npy", bad)
        run("append", db, "c", tmp_path / "p.npy", code=1)
    run("export", db, "c", tmp_path / "out.npy")
    same(np.load(tmp_path / "out.npy"), expected)


def test_bool_bytes_other_than_0_and_1_are_true_and_stored_as_1(tmp_path, db):
    # Regression: import kept a bool .npy's bytes 2 and 255 as they were, and stats then gave
    # max 255. numpy.load keeps such bytes too, but every NumPy operation reads them as True.
    raw = np.array([255, 0, 2, 1, 128] * 40, dtype=np.uint8)
    flags = raw.view(np.bool_)
    np.save(tmp_path / "b.npy", flags)
    assert np.load(tmp_path / "b.npy").view(np.uint8).max() == 255  # what NumPy writes and reads
    run("import", db, "b", tmp_path / "b.npy")
    run("append", db, "b", tmp_path / "b.npy")
    np.save(tmp_path / "bf.npy", np.asfortranarray(flags.reshape(20, 10)))
    run("import", db, "bf", tmp_path / "bf.npy", "--order", "C", "--cache", "64K")  # the other order: ReadAt
    run("export", db, "b", tmp_path / "out.npy")
    out = np.load(tmp_path / "out.npy")
    assert out.view(np.uint8).tolist() == (raw != 0).astype(np.uint8).tolist() * 2
    run("export", db, "bf", tmp_path / "out.npy")
    assert np.load(tmp_path / "out.npy").view(np.uint8).tolist() == (raw != 0).astype(np.uint8).reshape(20, 10).tolist()
    s = json.loads(run("stats", db, "b", "--json"))
    assert (s["count"], s["min"], s["max"]) == (400, 0, 1)
    assert s["mean"] == pytest.approx(flags.mean())


@pytest.mark.parametrize("order", ["C", "F"])
def test_fill_and_resize(tmp_path, db, order):
    a = np.asarray(np.arange(24, dtype="<f4").reshape(6, 4), order=order)
    np.save(tmp_path / "a.npy", a)
    run("import", db, "a", tmp_path / "a.npy")
    expected = a.copy(order="K")
    for value, rows in [("2.5", "1:3"), ("-1", "-1:"), ("inf", ":1"), ("7", "4:5"), ("3", "::2"), ("4", "5:0:-3")]:
        run("fill", db, "a", "--value", value, "--rows", rows)
        expected[rows_slice(rows)] = float(value)
    run("export", db, "a", tmp_path / "out.npy")
    same(np.load(tmp_path / "out.npy"), expected)
    # resize keeps the elements in the array's flat order and zero-fills.
    for shape in [(3, 10), (50,), (2, 2, 2), (4, 0), (9, 9)]:
        run("resize", db, "a", "--shape", ",".join(map(str, shape)))
        flat = expected.ravel(order=order)
        grown = np.zeros(int(np.prod(shape)), dtype=flat.dtype)
        n = min(flat.size, grown.size)
        grown[:n] = flat[:n]
        expected = grown.reshape(shape, order=order)
        run("export", db, "a", tmp_path / "out.npy")
        same(np.load(tmp_path / "out.npy"), expected)


@pytest.mark.parametrize("dtype", ["<f8", ">f4", "<f2", "<i8", ">u2", "|b1", "|i1"])
def test_stats_match_numpy(tmp_path, db, dtype):
    a = sample(dtype, (1000, 7), np.random.default_rng(11))
    np.save(tmp_path / "a.npy", a)
    run("import", db, "a", tmp_path / "a.npy", "--block-size", "4096")
    s = json.loads(run("stats", db, "a", "--json"))
    assert list(s) == ["count", "min", "max", "mean", "std"]
    wide = a.astype(np.float64)
    assert s["count"] == a.size
    if a.dtype.kind in "iub":
        assert s["min"] == int(a.min()) and s["max"] == int(a.max())
    else:
        assert s["min"] == float(a.min()) and s["max"] == float(a.max())
    assert s["mean"] == pytest.approx(wide.mean(), rel=1e-12, abs=1e-12)
    assert s["std"] == pytest.approx(wide.std(), rel=1e-12)
    text = run("stats", db, "a")
    assert text.splitlines()[0] == f"count: {a.size}"


@pytest.mark.parametrize("dtype,order", [("<f8", "C"), ("<i4", "F"), (">u2", "C"), ("|b1", "C"), ("<f4", "F")])
def test_stats_of_a_sparse_array_match_numpy(tmp_path, db, dtype, order):
    # Stored blocks in a few places, zeros (not stored) elsewhere: the zeros count as values.
    rng = np.random.default_rng(5)
    a = np.zeros((3000, 40), dtype=dtype, order=order)
    for part in [slice(3, 5), slice(20, 21), slice(-2, None)]:
        where = (part,) if order == "C" else (slice(None), part)  # along the major axis
        a[where] = sample(dtype, a[where].shape, rng) + (1 if dtype[1] in "iu" else 0)
    np.save(tmp_path / "a.npy", a)
    run("import", db, "a", tmp_path / "a.npy", "--block-size", "4096")
    info = json.loads(run("info", db, "a", "--json"))
    assert info["blocks_stored"] < info["blocks"] / 2
    s = json.loads(run("stats", db, "a", "--json"))
    wide = a.astype(np.float64)
    assert s["count"] == a.size
    assert (s["min"], s["max"]) == ((int(a.min()), int(a.max())) if a.dtype.kind in "iub" else (float(a.min()), float(a.max())))
    assert s["mean"] == pytest.approx(wide.mean(), rel=1e-12, abs=1e-12)
    assert s["std"] == pytest.approx(wide.std(), rel=1e-12)


def test_stats_of_a_huge_sparse_array_read_only_its_stored_blocks(tmp_path, db):
    # 8 TiB of float64 with 20 stored elements: a pass over every block would not finish.
    run("create", db, "huge", "--dtype", "f8", "--shape", str(1 << 40), "--block-size", "64K")
    run("fill", db, "huge", "--value", "-3", "--rows", "5:15")
    run("fill", db, "huge", "--value", "8", "--rows=-10:")
    s = json.loads(run("stats", db, "huge", "--json"))
    n = 1 << 40
    mean = (10 * -3 + 10 * 8) / n
    std = (((10 * 9 + 10 * 64) / n) - mean * mean) ** 0.5
    assert (s["count"], s["min"], s["max"]) == (n, -3, 8)
    assert s["mean"] == pytest.approx(mean, rel=1e-12)
    assert s["std"] == pytest.approx(std, rel=1e-9)


def test_stats_special_values(tmp_path, db):
    np.save(tmp_path / "a.npy", np.array([1.0, np.nan, 3.0]))
    run("import", db, "nan", tmp_path / "a.npy")
    s = json.loads(run("stats", db, "nan", "--json"))  # Python's json reads NaN
    assert s["count"] == 3 and all(np.isnan(s[k]) for k in ["min", "max", "mean", "std"])
    np.save(tmp_path / "a.npy", np.array([1.0, np.inf]))
    run("import", db, "inf", tmp_path / "a.npy")
    s = json.loads(run("stats", db, "inf", "--json"))
    assert s["max"] == np.inf and s["mean"] == np.inf
    np.save(tmp_path / "a.npy", np.zeros((3, 0), dtype="<i2"))
    run("import", db, "empty", tmp_path / "a.npy")
    assert json.loads(run("stats", db, "empty", "--json")) == {"count": 0, "min": None, "max": None,
                                                                 "mean": None, "std": None}
    np.save(tmp_path / "a.npy", np.ones(3, dtype="<c8"))
    run("import", db, "z", tmp_path / "a.npy")
    run("stats", db, "z", "--json", code=1)


def test_info_json_and_ls(tmp_path, db):
    run("create", db, "x", "--dtype", ">i2", "--shape", "5,0,7", "--order", "F", "--block-size", "8K")
    info = json.loads(run("info", db, "x", "--json"))
    assert info == {"name": "x", "dtype": ">i2", "shape": [5, 0, 7], "order": "F", "ndim": 3, "itemsize": 2,
                    "size": 0, "nbytes": 0, "block_size": 8192, "blocks": 0, "blocks_stored": 0, "stored_bytes": 0,
                    "attrs": {}}
    run("create", db, "with \"quotes\"", "--dtype", "f8", "--shape", "2")
    assert json.loads(run("info", db, "with \"quotes\"", "--json"))["name"] == "with \"quotes\""
    # ls quotes the name as the shell reads it back (coreutils ls' shell-escape style).
    rows = [line.split("\t") for line in run("ls", db).splitlines()]
    assert rows == [["'with \"quotes\"'", "<f8", "(2,)", "C", "16"], ["x", ">i2", "(5, 0, 7)", "F", "0"]]
    assert shlex.split(rows[0][0]) == ["with \"quotes\""]

"""cat, head and tail against NumPy (docs/cli.md): the text format is what print() shows for the
same array, CSV and JSON read back as the same values; rename and cp; help COMMAND. Registered
with ctest in cli_numpy_test; BIGARRAY_CLI is the tool."""
import json
import os
import subprocess

import numpy as np
import pytest

CLI = os.environ.get("BIGARRAY_CLI", "build/bin/bigarray")


def run(*args, code=0):
    r = subprocess.run([CLI, "--no-progress", *map(str, args)], capture_output=True)
    assert r.returncode == code, f"bigarray {' '.join(map(str, args))}: exit {r.returncode}\n{r.stderr.decode()}"
    return r.stdout.decode() if code == 0 else r.stderr.decode()


def store(tmp_path, name, a, block_size=4096):
    np.save(tmp_path / f"{name}.npy", a)
    run("import", tmp_path / "db", name, tmp_path / f"{name}.npy", "--block-size", block_size)


def arrays():
    """(id, array) pairs covering NumPy's formatting cases."""
    rng = np.random.default_rng(17)
    yield "f8-fixed", rng.standard_normal((6, 5)) * 10
    yield "f8-exp-small", np.array([1e-5, 1.5, 3.0])
    yield "f8-exp-large", np.array([1e9, -2.5, 0.0])
    yield "f8-ratio", np.array([0.001, 2.0])
    yield "f8-integral", np.array([1.0, -20.0, 300.0])
    yield "f8-nonfinite", np.array([np.nan, 1.25, -np.inf, np.inf])
    yield "f8-all-nan", np.array([np.nan, np.nan])
    yield "f8-negzero", np.array([-0.0, 1.0])
    yield "f8-tenth", np.arange(30) / 10
    yield "f8-third", np.arange(12).reshape(3, 4) / 3
    yield "f8-wide", rng.standard_normal(40) * 1e3
    yield "f4", (rng.standard_normal((4, 4)) * 100).astype(">f4")
    yield "f4-tenth", np.array([0.1, 0.2, 0.3], dtype="f4")
    yield "f2", np.array([0.1, 65504, -3.5], dtype="<f2")
    yield "i8", rng.integers(-(2**63), 2**63 - 1, (5, 7), dtype=np.int64, endpoint=True)
    yield "u8", np.array([0, 2**64 - 1], dtype=np.uint64)
    yield "i2-be", np.arange(-50, 50, dtype=">i2").reshape(4, 25)
    yield "u1-3d", np.arange(2 * 3 * 4, dtype="u1").reshape(2, 3, 4)
    yield "b1", rng.integers(0, 2, (3, 9)).astype(bool)
    yield "b1-all-true", np.ones(3, dtype=bool)
    yield "c16", rng.standard_normal((3, 3)) + 1j * rng.standard_normal((3, 3))
    yield "c8", np.array([1 + 2j, 3.5 - 1j, -1j], dtype="c8")
    yield "c16-nan", np.array([complex(np.nan, 1), 2 + 0j])
    yield "summarized-1d", np.arange(5000, dtype="i4")
    yield "summarized-2d", np.arange(10000.0).reshape(100, 100) / 7
    yield "summarized-3d", np.arange(2000, dtype="i8").reshape(10, 20, 10)
    yield "summarized-short-axis", np.arange(3000, dtype="u2").reshape(3, 1000)
    yield "long-rows", np.arange(200, dtype="i8").reshape(2, 100) * 1000003
    yield "F-order", np.asfortranarray(np.arange(12, dtype="i4").reshape(3, 4))
    yield "0-d", np.array(2.5)
    yield "0-d-c16", np.array(1 - 2j)
    yield "empty", np.zeros((0, 3))
    yield "empty-inner", np.zeros((2, 0), dtype="i4")


CASES = list(arrays())


@pytest.mark.parametrize("name,a", CASES, ids=[c[0] for c in CASES])
def test_cat_text_is_numpy_print(tmp_path, name, a):
    store(tmp_path, "a", a)
    assert run("cat", tmp_path / "db", "a") == str(a) + "\n"


@pytest.mark.parametrize("name,a", CASES, ids=[c[0] for c in CASES])
def test_cat_json_reads_back(tmp_path, name, a):
    store(tmp_path, "a", a)
    got = json.loads(run("cat", tmp_path / "db", "a", "--format", "json"))
    expected = a.tolist()
    if a.dtype.kind == "c":
        want = np.asarray(a)
        got = np.asarray(got, dtype=float).reshape(want.shape + (2,)) if want.size else np.zeros(want.shape + (2,))
        assert np.array_equal(got[..., 0], want.real, equal_nan=True)
        assert np.array_equal(got[..., 1], want.imag, equal_nan=True)
        return
    if a.dtype.kind == "f":
        assert np.array_equal(np.asarray(got, dtype=a.dtype).reshape(a.shape), a, equal_nan=True)
        assert np.array_equal(np.signbit(np.asarray(got, dtype=float)).reshape(a.shape), np.signbit(a))
    else:
        assert got == expected


@pytest.mark.parametrize("name,a", [c for c in CASES if c[1].ndim <= 2], ids=[c[0] for c in CASES if c[1].ndim <= 2])
def test_cat_csv_reads_back(tmp_path, name, a):
    store(tmp_path, "a", a)
    text = run("cat", tmp_path / "db", "a", "--format", "csv")
    lines = text.splitlines()
    if a.size == 0:
        assert text == ""
        return
    if a.ndim == 2:
        assert len(lines) == a.shape[0]
    elif a.ndim == 1:
        assert len(lines) == a.shape[0]
    conv = {"b": lambda s: {"True": True, "False": False}[s], "c": complex, "f": float}.get(a.dtype.kind, int)
    values = [conv(v) for line in lines for v in line.split(",")]
    got = np.array(values, dtype=a.dtype).reshape(a.shape)
    assert np.array_equal(got, a, equal_nan=a.dtype.kind in "fc")


def test_csv_refuses_three_dimensions(tmp_path):
    store(tmp_path, "a", np.zeros((2, 2, 2)))
    err = run("cat", tmp_path / "db", "a", "--format", "csv", code=1)
    assert "3 dimensions" in err


SLICES = ["2:5", "::2", "::-1", "-3:", "7:1:-2", "100:", ":0"]


@pytest.mark.parametrize("rows", SLICES)
def test_cat_rows(tmp_path, rows):
    a = np.arange(40, dtype="i4").reshape(10, 4) * 3
    store(tmp_path, "a", a)
    sl = slice(*(int(x) if x else None for x in rows.split(":")))
    assert run("cat", tmp_path / "db", "a", f"--rows={rows}") == str(a[sl]) + "\n"
    assert json.loads(run("cat", tmp_path / "db", "a", f"--rows={rows}", "--format", "json")) == a[sl].tolist()


def test_head_and_tail(tmp_path):
    a = np.arange(25 * 3, dtype="f8").reshape(25, 3) / 4
    store(tmp_path, "a", a)
    db = tmp_path / "db"
    assert run("head", db, "a") == str(a[:10]) + "\n"
    assert run("tail", db, "a") == str(a[-10:]) + "\n"
    assert run("head", db, "a", "-n", "3") == str(a[:3]) + "\n"
    assert run("tail", db, "a", "-n", "2", "--format", "csv") == "".join(
        ",".join(repr(float(v)) for v in row) + "\n" for row in a[-2:])
    assert run("head", db, "a", "--count=0") == "[]\n"
    assert run("tail", db, "a", "-n", "1000") == str(a) + "\n"
    assert "not a number of rows" in run("head", db, "a", "-n", "-1", code=2)
    store(tmp_path, "s", np.array(3))
    assert "0-d" in run("head", db, "s", code=1)


def test_summarized_cat_reads_only_what_it_shows(tmp_path):
    # 1 TiB of zeros with one stored value at each end: cat prints at once, reading 4 elements.
    db = tmp_path / "db"
    run("create", db, "huge", "--dtype", "u1", "--shape", str(1 << 40))
    run("fill", db, "huge", "--value", "7", "--rows", ":1")
    run("fill", db, "huge", "--value", "9", "--rows", "-1:")
    assert run("cat", db, "huge") == "[7 0 0 ... 0 0 9]\n"


def test_rename(tmp_path):
    a = np.arange(10.0)
    store(tmp_path, "a", a)
    db = tmp_path / "db"
    run("rename", db, "a", "b")
    assert run("ls", db).split("\t")[0] == "b"
    assert run("cat", db, "b") == str(a) + "\n"
    assert "'a'" in run("cat", db, "a", code=1)
    store(tmp_path, "c", a)
    assert "already exists" in run("rename", db, "b", "c", code=1)
    assert "'nope'" in run("rename", db, "nope", "x", code=1)
    assert sorted(line.split("\t")[0] for line in run("ls", db).splitlines()) == ["b", "c"]


@pytest.mark.parametrize("order", ["C", "F"])
def test_cp_copies_values_and_layout(tmp_path, order):
    a = np.asarray(np.arange(5000, dtype=">i4").reshape(100, 50), order=order)
    store(tmp_path, "a", a)
    db = tmp_path / "db"
    run("cp", db, "a", "b")
    info_a, info_b = (json.loads(run("info", db, n, "--json")) for n in "ab")
    assert {k: v for k, v in info_b.items() if k != "name"} == {k: v for k, v in info_a.items() if k != "name"}
    run("export", db, "b", tmp_path / "b.npy")
    b = np.load(tmp_path / "b.npy")
    assert b.dtype == a.dtype and np.array_equal(b, a) and b.flags.f_contiguous == (order == "F")
    # The copy is independent of the source.
    run("fill", db, "a", "--value", "1")
    run("export", db, "b", tmp_path / "b.npy")
    assert np.array_equal(np.load(tmp_path / "b.npy"), a)
    assert "already exists" in run("cp", db, "a", "b", code=1)
    assert "'nope'" in run("cp", db, "nope", "c", code=1)


def test_cp_of_a_sparse_array_is_proportional_to_its_stored_blocks(tmp_path):
    # 1 TiB with 2 stored blocks: a copy that visited every block would not finish.
    db = tmp_path / "db"
    run("create", db, "huge", "--dtype", "f8", "--shape", str(1 << 37), "--block-size", "64K")
    run("fill", db, "huge", "--value", "1.5", "--rows", "1000:1010")
    run("fill", db, "huge", "--value", "-2", "--rows=-3:")
    run("cp", db, "huge", "copy")
    assert json.loads(run("info", db, "copy", "--json"))["blocks_stored"] == 2
    assert run("cat", db, "copy", "--rows", "998:1012") == str(np.array([0, 0] + [1.5] * 10 + [0, 0])) + "\n"
    assert run("tail", db, "copy", "-n", "4") == "[ 0. -2. -2. -2.]\n"


def test_help_command():
    def tool(*args):
        r = subprocess.run([CLI, *args], capture_output=True, text=True)
        return r.returncode, r.stdout, r.stderr

    for cmd in ["cat", "head", "tail", "rename", "cp", "export", "create"]:
        code, out, _ = tool("help", cmd)
        assert (code, out) == (0, tool(cmd, "--help")[1])
        assert out.startswith("Usage: bigarray " + cmd)
    assert tool("help")[:2] == (0, tool("--help")[1])
    code, out, err = tool("help", "nope")
    assert (code, out) == (2, "") and "unknown command 'nope'" in err
    code, out, err = tool("help", "cat", "cp")
    assert (code, out) == (2, "") and "one COMMAND" in err

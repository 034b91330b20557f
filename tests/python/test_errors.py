# Errors: which Python exception each failure raises, with a message that says what failed.
import os

import numpy as np
import pytest

import bigarray
from conftest import BLOCK


def test_exception_classes():
    assert issubclass(bigarray.ConflictError, bigarray.Error)
    assert issubclass(bigarray.CorruptionError, bigarray.Error)
    assert issubclass(bigarray.Error, Exception)


def test_missing_database_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no bigarray database"):
        bigarray.open(tmp_path / "nothing", create=False)
    bigarray.open(tmp_path / "made").close()  # created by default
    bigarray.open(tmp_path / "made", create=False).close()
    with pytest.raises(TypeError):
        bigarray.open(42)


def test_a_path_with_a_nul_byte_is_a_value_error_as_for_os_stat(tmp_path):
    # Regression: bigarray.open("x\0y") opened (and created) "x": the C string ended at the NUL.
    bad = str(tmp_path / "x") + "\0y"
    with pytest.raises(ValueError, match="embedded null byte") as os_error:
        os.stat(bad)
    for call in [lambda: bigarray.open(bad), lambda: bigarray.open(bad.encode()),
                 lambda: bigarray.open(tmp_path / "db", spill_dir=bad), lambda: bigarray.handles(bad)]:
        with pytest.raises(ValueError, match="embedded null byte") as e:
            call()
        assert str(e.value) == str(os_error.value)
    assert os.listdir(tmp_path) == []  # neither "x" nor "db" was created


def test_missing_arrays_are_key_errors(mem):
    with pytest.raises(KeyError, match="no array named 'nope'"):
        mem["nope"]
    with pytest.raises(KeyError):
        del mem["nope"]
    with pytest.raises(KeyError):
        mem.rename("nope", "other")
    assert "nope" not in mem


def test_invalid_arguments_are_value_or_type_errors(mem):
    mem.create("a", 3, "f8")
    with pytest.raises(ValueError, match="already exists"):
        mem.create("a", 3, "f8")
    mem.create("b", 3, "f8")
    with pytest.raises(ValueError, match="already exists"):
        mem.rename("b", "a")
    with pytest.raises(ValueError, match="block size"):
        mem.create("c", 3, "f8", block_size=1000)
    with pytest.raises(ValueError, match="order"):
        mem.create("c", 3, "f8", order="K")
    with pytest.raises(ValueError):
        mem.create("c", (3, -1), "f8")
    with pytest.raises(ValueError, match="name"):
        mem.create("", 3, "f8")
    with pytest.raises(ValueError):
        mem.create("c", (1 << 40, 1 << 40), "f8")  # more than 63 bits of bytes
    with pytest.raises(TypeError):
        mem.create("c", 2.5, "f8")
    with pytest.raises(TypeError):
        mem.create("c", (2, "x"), "f8")
    with pytest.raises(TypeError):
        mem.create(3, 3, "f8")
    with pytest.raises(TypeError):
        mem.create("c", 3, "no such dtype")
    with pytest.raises(ValueError, match="cache"):
        bigarray.open("memory:", cache=0)
    # Names are text: a str that is not valid UTF-8 (a lone surrogate, as os.fsdecode makes of
    # such bytes) or holds a NUL is refused, as the library refuses such bytes.
    with pytest.raises(ValueError, match=r"'\\xff': is not valid UTF-8"):
        mem.create("\udcff", 3, "f8")
    with pytest.raises(ValueError, match="NUL"):
        mem.create("a\0b", 3, "f8")
    with pytest.raises(ValueError, match="not valid UTF-8"):
        mem.rename("a", "\udcff")
    assert mem.names() == ["a", "b"]


def test_a_closed_database_refuses_work_but_its_views_stay(path):
    db = bigarray.open(path)
    a = db.create("a", 10, "i4", block_size=BLOCK)
    a[:] = 3
    db.commit()
    v = a[2:5]
    db.close()
    db.close()  # idempotent
    assert "closed" in repr(db)
    for op in [lambda: a[0], lambda: a.__setitem__(0, 1), lambda: np.asarray(a), lambda: a.append([1]),
               lambda: a.resize(3), lambda: a.load(), db.commit, db.abort, lambda: db["a"],
               lambda: db.create("b", 1, "f8"), db.transaction]:
        with pytest.raises(ValueError, match="closed"):
            op()
    assert a.shape == (10,)  # metadata stays readable
    np.testing.assert_array_equal(v, [3, 3, 3])


def test_a_damaged_block_is_a_corruption_error_from_load(path):
    pattern = np.frombuffer(b"bigarray-pattern" * (BLOCK // 16), dtype="u1")
    with bigarray.open(path) as db:
        a = db.create("a", 3 * BLOCK, "u1", block_size=BLOCK)
        a[BLOCK : 2 * BLOCK] = pattern
        db.commit()
    data = bytearray((path / "data.mdb").read_bytes())
    at = data.find(pattern.tobytes())
    assert at >= 0
    data[at + 100] ^= 0xFF
    (path / "data.mdb").write_bytes(bytes(data))
    with bigarray.open(path) as db:
        a = db["a"]
        a.load(slice(0, BLOCK))  # an intact block
        with pytest.raises(bigarray.CorruptionError, match="block 1") as e:
            a.load()  # errors come back here; touching a[BLOCK + 100] would end the process
        assert e.value.code == "Corruption"
        with pytest.raises(bigarray.CorruptionError):
            a[BLOCK:].base.load()


def test_a_forked_child_refuses_the_parents_handles_but_may_open_its_own(mem):
    a = mem.create("a", 1000, "f8", block_size=BLOCK)
    a[:] = 1
    view = a[10:20]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 1
        try:
            out = []
            for op in [lambda: a[0], view.base.load, mem.commit]:
                try:
                    op()
                    out.append("worked")
                except bigarray.Error as e:
                    out.append(e.code if "forked" in str(e) else str(e))
            with bigarray.open("memory:") as own:
                own.create("b", 3 * BLOCK, "u1", block_size=BLOCK)[:] = 7
                out.append(str(int(np.asarray(own["b"]).sum())))
            mem.close()  # harmless in the child
            os.write(w, ",".join(out).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    report = os.read(r, 4096).decode()
    os.close(r)
    assert status == 0, report
    assert report == f"FailedPrecondition,FailedPrecondition,FailedPrecondition,{7 * 3 * BLOCK}"
    assert a[0] == 1 and not mem.closed  # the parent is unaffected

"""bigarray.open's options beyond cache/durable/create (read_only, prefault_cache,
readahead_blocks, spill_dir, verify, map_reads), and info() against the CLI's info --json."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import bigarray

CLI = os.path.join(os.path.dirname(bigarray.__file__), "..", "..", "bin", "bigarray")  # build/python/bigarray/


def make(path):
    with bigarray.open(path) as db:
        a = db.create("a", (100, 7), ">i4", order="F", block_size=8192)
        a[:50] = np.arange(350).reshape(50, 7)
        db.create("z", (0, 3), "f4")
        db.commit()


def test_info_has_the_fields_of_the_cli(path):
    make(path)
    with bigarray.open(path) as db:
        db["a"].attrs.update(units="K", scale=np.array([1.5, 2.0]), flags=np.array([True]))
        db.commit()
        info = db["a"].info()
        assert list(info) == ["name", "dtype", "shape", "order", "ndim", "itemsize", "size", "nbytes",
                              "block_size", "blocks", "blocks_stored", "stored_bytes", "attrs"]
        assert info["blocks_stored"] == 1 and info["blocks"] == 1
        assert info["stored_bytes"] == 4096  # up to the last non-zero element, (49, 6) in F order: 2600 bytes, a page
        assert info["attrs"] == {"flags": [True], "scale": [1.5, 2.0], "units": "K"}  # as JSON
        assert db.info()["arrays"] == {"a": db["a"].info(), "z": db["z"].info()}
    if not os.path.exists(CLI):
        pytest.skip("the bigarray tool is not built beside the module")
    for name in ["a", "z"]:
        r = subprocess.run([CLI, "info", str(path), name, "--json"], capture_output=True, text=True, check=True)
        with bigarray.open(path, read_only=True) as db:
            assert json.loads(r.stdout) == db[name].info()


def test_read_only_reads_and_refuses_every_change(path):
    make(path)
    db = bigarray.open(path, read_only=True)
    a = db["a"]
    assert a[3, 2] == 23 and np.array_equal(a[:50], np.arange(350).reshape(50, 7))
    for change, call in [("create array 'b'", lambda: db.create("b", 1, "f8")),
                         ("drop array 'a'", lambda: db.__delitem__("a")),
                         ("rename array 'a'", lambda: db.rename("a", "c")),
                         ("resize array 'a'", lambda: a.resize((5, 7))),
                         ("resize array 'a'", lambda: a.append(np.zeros(100)))]:
        with pytest.raises(bigarray.Error, match=f"{change}: .* was opened read-only") as e:
            call()
        assert e.value.code == "FailedPrecondition"
    with pytest.raises(bigarray.Error, match="assignment to array 'a': .* read_only=True"):
        a[0, 0] = 1
    v = a[:10]
    assert not v.flags.writeable and not np.asarray(a).flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        v[0, 0] = 1
    db.commit()  # nothing changed: a boundary
    db.close()
    with pytest.raises(FileNotFoundError):
        bigarray.open(path.parent / "missing", read_only=True)
    assert not (path.parent / "missing").exists()


def test_read_only_handle_sees_commits_at_its_boundaries(path):
    make(path)
    rw = bigarray.open(path)
    ro = bigarray.open(path, read_only=True)
    rw["a"][0, 0] = 99
    rw.commit()
    assert ro["a"][0, 0] == 0
    ro.abort()
    assert ro["a"][0, 0] == 99
    ro.close()
    rw.close()


def test_read_write_after_read_only_in_one_process_is_a_clear_error(path):
    # LMDB has one environment per database and process; opened read-only, it cannot write.
    make(path)
    ro = bigarray.open(path, read_only=True)
    with pytest.raises(bigarray.Error, match="is open read-only in this process .* close those handles"):
        bigarray.open(path)
    ro.close()
    rw = bigarray.open(path)  # once they are closed, it works
    rw["a"][0, 0] = 5
    rw.commit()
    rw.close()


def test_read_only_file_systems_and_mounts(path, child_env, tmp_path):
    # In a private mount namespace (needs root and unshare): a read-only file system (a tmpfs
    # remounted read-only) is read without LMDB's lock file; a read-only bind mount of a writable
    # file system is refused, since a writer through another mount would not see the reader.
    make(path)
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root for private mounts")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unshare -m is not permitted here: " + probe.stderr.decode().strip())
    fs = tmp_path / "fs"
    fs.mkdir()
    code = textwrap.dedent(f"""
        import bigarray
        try:
            bigarray.open({str(path)!r})
        except OSError as e:
            print("read-write:", e)
        try:
            bigarray.open({str(path)!r}, read_only=True)
        except OSError as e:
            print("bind mount:", e)
        db = bigarray.open({str(fs / "db")!r}, read_only=True)
        print("read-only fs:", int(db["a"][49, 6]), db.names())
        """)
    script = tmp_path / "ro.py"
    script.write_text(code)
    shell = (f"mount -t tmpfs -o size=64m none {fs} && mkdir {fs}/db && cp {path}/data.mdb {fs}/db/ && "
             f"mount -o remount,ro {fs} && "
             f"mount --bind {path} {path} && mount -o remount,bind,ro {path} && exec {sys.executable} {script}")
    r = subprocess.run(["unshare", "-m", "sh", "-c", shell], env=child_env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "read-write:" in r.stdout and "Read-only file system" in r.stdout
    assert "bind mount:" in r.stdout and "on a read-only mount of a file system that may be writable" in r.stdout
    assert "read-only fs: 349 ['a', 'z']" in r.stdout


def test_read_only_without_write_permission_on_the_lock_file_says_why(child_env):
    # LMDB must write lock.mdb to register a reader, unless the file system is read-only; a user who
    # may not write it gets an error saying so (bigarray does not fall back to MDB_NOLOCK). Run
    # as user 65534 on a database of root's, in a directory that user can reach.
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run as another user")
    top = tempfile.mkdtemp(prefix="bigarray-ro-")
    try:
        os.chmod(top, 0o755)
        path = pathlib.Path(top) / "db"
        make(path)
        code = f"import bigarray\ntry:\n    bigarray.open({str(path)!r}, read_only=True)\nexcept OSError as e:\n    print(e)\n"
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
                           env=child_env, capture_output=True, text=True)
        if r.returncode != 0 and "bigarray" not in r.stderr + r.stdout:
            pytest.skip("user 65534 cannot run the module here: " + r.stderr.strip())
        assert r.returncode == 0, r.stderr
        assert "this user may not write it" in r.stdout and "ask for write permission on" in r.stdout
        assert "or copy the database" in r.stdout
    finally:
        shutil.rmtree(top)


def test_other_options(path, tmp_path):
    spill = tmp_path / "spill"
    spill.mkdir()
    db = bigarray.open(path, cache=1 << 20, prefault_cache=True, readahead_blocks=0, spill_dir=spill)
    a = db.create("a", 1 << 20, "f8", block_size=65536)  # 8 MiB of changes, 1 MiB of cache
    a[:] = 3
    assert db.cache_stats()["spills"] > 0
    db.commit()
    assert float(np.asarray(a).sum()) == 3 * (1 << 20)
    db.close()
    with pytest.raises(ValueError, match="readahead_blocks"):
        bigarray.open(path, readahead_blocks=-1)
    with pytest.raises(TypeError):
        bigarray.open(path, True)  # the options are keyword-only beyond create
    with pytest.raises(TypeError):
        bigarray.open(path, readahead_blocks="8")


@pytest.mark.parametrize("verify,map_reads", [(False, False), (False, True), (True, False)])
def test_verify_and_map_reads_change_no_value(path, verify, map_reads):
    want = np.arange(1 << 19, dtype="f8") * 0.5  # 4 MiB in 64 KiB blocks
    with bigarray.open(path) as db:
        db.create("x", want.shape, "f8", block_size=65536)[:] = want
        db.create("m", (300, 7), ">i4", order="F", block_size=8192)[:] = np.arange(2100).reshape(300, 7)
        db.commit()
    # A cache of 1 MiB: a full scan evicts, and later reads load the blocks again.
    with bigarray.open(path, cache=1 << 20, verify=verify, map_reads=map_reads) as db:
        x = db["x"]
        assert np.array_equal(x[:], want)
        assert float(x[:].sum()) == float(want.sum())
        assert np.array_equal(x[::-4097], want[::-4097])
        assert np.array_equal(db["m"][10:20, 3], np.arange(2100).reshape(300, 7)[10:20, 3])
        x[5:9] = -1  # written blocks go through the cache whatever the options
        db.commit()
        assert list(x[3:10]) == [1.5, 2.0, -1, -1, -1, -1, 4.5]
    with bigarray.open(path, read_only=True, verify=verify, map_reads=map_reads) as db:
        want[5:9] = -1
        assert np.array_equal(db["x"][:], want)

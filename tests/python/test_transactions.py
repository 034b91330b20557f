# Transactions: commit, abort, reopen, `with db.transaction()`, conflicts between handles and
# between processes, and views across all of them.
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import bigarray
from conftest import BLOCK

N = 4 * BLOCK // 8  # four blocks of f8


def test_commit_abort_and_reopen(path):
    db = bigarray.open(path)
    a = db.create("a", (N,), "f8", block_size=BLOCK)
    b = db.create("b", (3, 4), ">i4", order="F", block_size=BLOCK)
    a[:] = np.arange(N)
    b[...] = -7
    db.commit()
    a[:] = 0
    b[1] = 5
    del db["a"]
    assert db.names() == ["b"]
    db.abort()
    assert db.names() == ["a", "b"] and list(db) == ["a", "b"] and len(db) == 2
    np.testing.assert_array_equal(np.asarray(a), np.arange(N))
    assert (np.asarray(b) == -7).all()
    db.create("c", 10, "u1")
    db.close()
    assert db.closed
    with bigarray.open(path) as db2:
        assert db2.names() == ["a", "b"]  # "c" was never committed
        np.testing.assert_array_equal(np.asarray(db2["a"]), np.arange(N))
        assert db2["b"].order == "F" and db2["b"].dtype.str == ">i4"


def test_a_new_array_reads_zeros_and_an_aborted_one_is_gone(mem):
    a = mem.create("a", 3 * N, "f8", block_size=BLOCK)
    assert not np.asarray(a).any()
    mem.abort()
    assert "a" not in mem
    with pytest.raises(KeyError, match="no longer exists"):
        a[0]


def test_catalog_changes_are_transactional(path):
    with bigarray.open(path) as db:
        db.create("a", 3, "f8")
        db.create("b", 3, "f8")
        db.commit()
        db.rename("a", "c")
        del db["b"]
        assert db.names() == ["c"] and "a" not in db and "c" in db and 5 not in db
        with bigarray.open(path) as other:
            assert other.names() == ["a", "b"]
        db.commit()
    with bigarray.open(path) as db:
        assert db.names() == ["c"]


def test_transaction_context_commits_or_aborts(path):
    db = bigarray.open(path)
    a = db.create("a", N, "f8", block_size=BLOCK)
    with db.transaction() as t:
        assert t is db
        a[:10] = 1
    with pytest.raises(ZeroDivisionError):
        with db.transaction():
            a[:10] = 2
            a.append(np.ones(N))
            1 / 0
    assert a.shape == (N,)
    assert (a[:10] == 1).all() and a[10] == 0
    with bigarray.open(path) as other:
        assert (other["a"][:10] == 1).all()
    db.close()


def test_database_context_manager_closes_and_discards_uncommitted_changes(path):
    with bigarray.open(path) as db:
        db.create("a", 10, "f8")
        db.commit()
        db["a"][0] = 1  # never committed
    assert db.closed
    with pytest.raises(ValueError, match="closed"):
        db.names()
    with bigarray.open(path) as db:
        assert db["a"][0] == 0


def test_views_survive_commit_abort_append_resize_and_close(path):
    db = bigarray.open(path)
    a = db.create("a", (4, BLOCK // 8), "f8", block_size=BLOCK)
    v = a[...]
    row = a[1]
    v[0, 0] = 1
    db.commit()
    v[0, 0] = 2  # uncommitted
    db.abort()
    assert v[0, 0] == 1  # committed content after abort
    a.append(np.full((1, BLOCK // 8), 9.0))
    assert v.shape == (4, BLOCK // 8)  # the old view keeps its shape
    assert a[4, 100] == 9
    a[0, 1] = 5
    assert v[0, 1] == 5  # coherent with the new mapping
    a.resize((2, BLOCK // 8))
    assert v.shape == (4, BLOCK // 8) and row.shape == (BLOCK // 8,)
    row[3] = 4
    assert a[1, 3] == 4
    db.commit()
    db.close()
    assert v[0, 0] == 1 and v[0, 1] == 5 and row[3] == 4


def test_two_handles_conflict_and_the_transaction_context_aborts_the_loser(path):
    with bigarray.open(path) as setup:
        setup.create("x", N, "f8", block_size=BLOCK)
        setup.commit()
    a, b = bigarray.open(path), bigarray.open(path)
    xa, xb = a["x"], b["x"]
    xa[10] = 1
    xb[3 * BLOCK // 8] = 3  # another block: no conflict with a
    with pytest.raises(bigarray.ConflictError) as e:
        with b.transaction():
            xb[11] = 2  # same block as a's change
            a.commit()  # a commits first
    assert e.value.code == "Conflict"
    assert isinstance(e.value, bigarray.Error)
    assert "block 0" in str(e.value)
    # The context aborted b: it now sees a's commit and none of its own changes.
    assert xb[10] == 1 and xb[11] == 0 and xb[3 * BLOCK // 8] == 0
    with b.transaction():
        xb[11] = 2
    a.abort()
    assert xa[11] == 2
    a.close()
    b.close()


def test_a_conflict_is_sticky_until_abort(path):
    with bigarray.open(path) as setup:
        setup.create("x", N, "f8", block_size=BLOCK)
        setup.commit()
    a, b = bigarray.open(path), bigarray.open(path)
    a["x"][0] = 1
    b["x"][1] = 2
    a.commit()
    with pytest.raises(bigarray.ConflictError):
        b.commit()
    with pytest.raises(bigarray.Error, match="abort it first") as e:
        b.commit()
    assert e.value.code == "FailedPrecondition" and not isinstance(e.value, bigarray.ConflictError)
    b.abort()
    b.commit()
    a.close()
    b.close()


CHILD = textwrap.dedent(
    """
    import sys
    import bigarray
    db = bigarray.open(sys.argv[1])
    x = db["x"]
    x[int(sys.argv[2])] = float(sys.argv[3])
    try:
        db.commit()
    except bigarray.ConflictError as e:
        print(e)
        sys.exit(3)
    """
)


def run_child(path, env, index, value):
    return subprocess.run([sys.executable, "-c", CHILD, str(path), str(index), str(value)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_isolation_from_and_conflict_with_another_process(path, child_env):
    db = bigarray.open(path)
    x = db.create("x", N, "f8", block_size=BLOCK)
    db.commit()
    v = x[...]
    v[1] = 11  # our uncommitted change of block 0
    r = run_child(path, child_env, 0, 42)
    assert r.returncode == 0, r.stderr
    assert v[0] == 0  # isolation: our snapshot
    with pytest.raises(bigarray.ConflictError, match="block 0"):
        db.commit()  # the later of two conflicting commits fails
    db.abort()
    assert v[0] == 42 and v[1] == 0
    # Disjoint blocks in two processes: both commit.
    v[0] = 1
    r = run_child(path, child_env, 3 * BLOCK // 8, 7)
    assert r.returncode == 0, r.stderr
    db.commit()
    assert v[3 * BLOCK // 8] == 7
    db.close()


WAITING_CHILD = textwrap.dedent(
    """
    import sys
    import bigarray
    db = bigarray.open(sys.argv[1])
    db["x"][2] = -1        # in the snapshot taken now
    print("ready", flush=True)
    sys.stdin.readline()   # the parent commits meanwhile
    try:
        db.commit()
    except bigarray.ConflictError as e:
        print("conflict:", e, flush=True)
        sys.exit(3)
    """
)


def test_the_later_process_gets_the_conflict(path, child_env):
    db = bigarray.open(path)
    x = db.create("x", N, "f8", block_size=BLOCK)
    db.commit()
    child = subprocess.Popen([sys.executable, "-c", WAITING_CHILD, str(path)], env=child_env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        x[3] = 5  # same block as the child's change
        db.commit()  # first: wins
        out, _ = child.communicate("go\n", timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 3 and "conflict: " in out and "block 0" in out
    db.abort()
    assert x[3] == 5 and x[2] == 0  # nothing of the loser was written
    db.close()

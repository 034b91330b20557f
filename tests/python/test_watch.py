"""Following a growing dataset (docs/python.md): db.wait, db.follow and bigarray.handles, with
producers and holders in other processes."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import bigarray

BLOCK = 4096


@pytest.fixture
def series(path):
    """A database with an empty int64 series "x"; its shared board is removed afterwards."""
    with bigarray.open(path, cache=16 << 20, durable=False) as db:
        db.create("x", (0,), "i8", block_size=BLOCK)
        db.commit()
    yield path
    st = os.stat(path / "data.mdb")
    try:  # boards live until reboot otherwise (docs/transactions.md)
        os.unlink(f"/dev/shm/bigarray-1-{st.st_dev:x}-{st.st_ino:x}")
    except FileNotFoundError:
        pass


def run_child(code, child_env, *args):
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], env=child_env,
                            stdout=subprocess.PIPE, text=True)


PRODUCER = """
    import sys, bigarray
    db = bigarray.open(sys.argv[1], cache=16 << 20, durable=False)
    for i in range(int(sys.argv[2])):
        db["x"].append([i])
        db.commit()
    db.close()
"""


def test_wait_returns_at_once_or_none_on_timeout(series):
    with bigarray.open(series, cache=16 << 20) as db:
        first = db.snapshot
        assert db.wait(after=0) == first  # a newer commit exists: no waiting
        t0 = time.monotonic()
        assert db.wait(timeout=0.2) is None  # after defaults to the snapshot
        assert 0.2 <= time.monotonic() - t0 < 2
        assert db.wait(timeout=0) is None
        with pytest.raises(ValueError):
            db.wait(timeout=-1)


def test_follow_sees_every_value_of_a_producer_process(series, child_env):
    n = 200
    with bigarray.open(series, cache=16 << 20) as db:
        producer = run_child(PRODUCER, child_env, series, n)
        last = db.snapshot
        seen = 0
        for commit in db.follow(timeout=20):
            assert commit == db.snapshot and commit > last
            last = commit
            x = np.asarray(db["x"])
            assert len(x) >= seen
            np.testing.assert_array_equal(x, np.arange(len(x)))  # every commit's value, in order
            seen = len(x)
            if seen == n:
                break
        assert producer.wait(timeout=30) == 0
        assert seen == n


def test_wait_releases_the_gil_and_wakes_on_a_commit_of_another_thread(series):
    with bigarray.open(series, cache=16 << 20) as follower:
        result = {}

        def wait():
            result["commit"] = follower.wait(timeout=20)

        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.1)
        # This thread runs while the other waits (a wait holding the GIL would block it for 20 s,
        # and the commit below would come after the timeout).
        with bigarray.open(series, cache=16 << 20, durable=False) as producer:
            producer["x"].append([1])
            producer.commit()
            expected = producer.snapshot
        t.join(timeout=10)
        assert not t.is_alive()
        assert result["commit"] == expected
        follower.abort()
        assert len(follower["x"]) == 1


def test_keyboard_interrupt_ends_a_wait(series):
    with bigarray.open(series, cache=16 << 20) as db:
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            db.wait(timeout=30)
        assert time.monotonic() - t0 < 5
        timer.join()


HOLDER = """
    import sys, bigarray
    db = bigarray.open(sys.argv[1], cache=16 << 20)
    print("open", flush=True)
    import time
    time.sleep(60)
"""


def test_handles_lists_this_and_other_processes_and_drops_killed_ones(series, child_env):
    with bigarray.open(series, cache=16 << 20) as db:
        mine = [h for h in bigarray.handles(series) if h["pid"] == os.getpid()]
        assert len(mine) == 1
        h = mine[0]
        assert h["snapshot"] == db.snapshot
        with open("/proc/self/comm") as comm:
            assert h["process"] == comm.read().strip()
        assert abs(h["since"] - time.time()) < 60
        assert set(h) == {"pid", "process", "snapshot", "since", "cache_bytes", "dirty_bytes", "faults"}
        holder = run_child(HOLDER, child_env, series)
        assert holder.stdout.readline() == "open\n"
        assert holder.pid in [h["pid"] for h in bigarray.handles(series)]
        holder.kill()
        holder.wait()
        assert holder.pid not in [h["pid"] for h in bigarray.handles(series)]
    assert os.getpid() not in [h["pid"] for h in bigarray.handles(series)]  # closed


def test_handles_of_no_database(tmp_path):
    with pytest.raises(FileNotFoundError):
        bigarray.handles(tmp_path / "nothing")

# The GIL: released while the library commits and loads, so other Python threads make progress;
# several threads may use views of one handle at once.
import sys
import threading
import time

import numpy as np

import bigarray

MIB = 1 << 20


class Ticker:
    """A thread that ticks once a millisecond: it sleeps (without the GIL), then needs the GIL
    to count. While another thread holds the GIL through a call, it cannot tick; afterwards it
    ticks at most a couple of times (one pending tick, one switch) before that thread goes on.
    While the other thread's call runs without the GIL, it ticks all along."""

    def __init__(self):
        self.count = 0
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop:
            time.sleep(0.001)
            self.count += 1

    def __enter__(self):
        self.thread.start()
        while self.count < 3:
            time.sleep(0.001)
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()

    def during(self, call):
        before = self.count
        call()
        return self.count - before


def test_other_threads_run_during_commit_and_load(path):
    # Large enough that a commit (write, checksum, fsync) and a cold load take tens of
    # milliseconds (a load of 32 MiB from the page cache took 5-7 ms once checks hashed blocks
    # in place: too short to count 5 ticks); a few attempts make it robust against a busy
    # machine.
    db = bigarray.open(path, cache=256 * MIB)
    a = db.create("a", 128 * MIB // 8, "f8", block_size=MIB)
    held = b"x" * (64 * MIB)
    results = []
    with Ticker() as ticker:
        for attempt in range(5):
            t0 = time.monotonic()
            control = ticker.during(lambda: held.count(b"y"))  # holds the GIL throughout
            t1 = time.monotonic()
            a[:] = attempt + 1.0  # dirty every block (with the GIL: page faults cannot drop it)
            t2 = time.monotonic()
            commit = ticker.during(db.commit)
            t3 = time.monotonic()
            with bigarray.open(path, cache=256 * MIB) as cold:  # a fresh handle: nothing cached
                b = cold["a"]
                t4 = time.monotonic()
                load = ticker.during(b.load)
                t5 = time.monotonic()
                assert b[-1] == attempt + 1.0
            results.append(dict(control=(control, round(t1 - t0, 3)), commit=(commit, round(t3 - t2, 3)),
                                load=(load, round(t5 - t4, 3))))
            if control <= 3 and commit >= 5 and load >= 5:
                break
    db.close()
    # One attempt shows all three: the GIL held stops the ticker (a thread descheduled on a
    # busy machine lets it tick a few times more once, so each attempt is judged as a whole),
    # a commit and a load let it run.
    assert any(r["control"][0] <= 3 and r["commit"][0] >= 5 and r["load"][0] >= 5 for r in results), results


def test_threads_write_parts_of_one_array_then_one_commit_stores_all(path):
    db = bigarray.open(path, cache=8 * MIB)
    a = db.create("a", (64, 8192), "f8", block_size=64 * 1024)
    view = a[...]

    def work(t):
        for r in range(t, 64, 4):
            view[r] = r + 1  # page faults from several threads at once
            a.load((r, slice(None)))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    db.commit()
    db.close()
    with bigarray.open(path) as other:
        w = np.asarray(other["a"])
        np.testing.assert_array_equal(w[:, 0], np.arange(1, 65))
        np.testing.assert_array_equal(w[:, -1], np.arange(1, 65))

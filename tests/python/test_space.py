"""Disk space from Python: db.info() (the object of `bigarray info DB --json`), A.info()'s
stored_bytes, and bigarray.compact() (docs/python.md, docs/cli.md "Disk space")."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import bigarray

CLI = os.path.join(os.path.dirname(bigarray.__file__), "..", "..", "bin", "bigarray")  # build/python/bigarray/

KEYS = ["path", "commit", "latest_commit", "live_bytes", "page_size", "file_bytes", "allocated_bytes",
        "used_bytes", "free_bytes", "pinned_bytes", "compact_bytes", "reclaimable_bytes", "leftover_bytes",
        "slot_file_bytes", "slot_allocated_bytes", "slots", "free_slots", "pinned_slots",
        "oldest_snapshot", "attrs", "arrays"]


def du(path):
    return sum(os.stat(os.path.join(path, f)).st_blocks * 512 for f in os.listdir(path))


def test_info_is_the_space_report_of_the_cli(path):
    with bigarray.open(path) as db:
        db.create("t", (1000, 24), "f8")[:500] = 1.5
        db.create("big", 1_000_000, "f8")[:] = 2
        db.attrs["title"] = "space"
        db.commit()
        info = db.info()
        assert list(info) == KEYS
        assert info["attrs"] == {"title": "space"}
        assert info["path"] == str(path) and info["commit"] == db.snapshot == info["latest_commit"]
        assert info["live_bytes"] == 98_304 + 8_003_584  # whole pages of payloads of 2 KiB or more
        assert info["arrays"]["t"]["stored_bytes"] == 98_304
        assert info["slots"] == 4 and info["slot_allocated_bytes"] >= 8_003_584  # big's blocks
        assert info["compact_bytes"] <= info["allocated_bytes"]
        assert info["reclaimable_bytes"] == info["allocated_bytes"] - info["compact_bytes"]
        assert info["oldest_snapshot"] is None
    if not os.path.exists(CLI):
        pytest.skip("the bigarray tool is not built beside the module")
    r = subprocess.run([CLI, "info", str(path), "--json"], capture_output=True, text=True, check=True)
    with bigarray.open(path, read_only=True) as db:
        assert json.loads(r.stdout) == db.info()


def test_an_old_snapshot_is_reported_and_pins_the_pages_it_reads(path):
    with bigarray.open(path) as db:
        db.create("big", 1_000_000, "f8")[:] = 2
        db.commit()
        reader = bigarray.open(path, read_only=True)  # after the read-write handle (LMDB's rule)
        del db["big"]
        db.commit()
        info = db.info()
        old = info["oldest_snapshot"]
        assert old["pid"] == os.getpid() and old["commit"] == reader.snapshot
        assert old["commits_behind"] == 1 and old["process"] and 0 <= old["age_s"] < 600
        assert info["pinned_slots"] == 4 and info["free_slots"] == 0  # big's blocks
        # The reader's own info() describes its snapshot, where big still exists.
        assert reader.info()["arrays"]["big"]["stored_bytes"] == 8_003_584
        assert reader.info()["latest_commit"] == db.snapshot
        reader.close()


def test_compact_gives_space_back_and_refuses_while_open(path):
    with bigarray.open(path) as db:
        keep = db.create("keep", (300, 1000), "f8")
        keep[:] = np.arange(300_000).reshape(300, 1000)
        db.create("big", 5_000_000, "f8")[:] = 3
        db.commit()
        del db["big"]
        db.commit()
        commit = db.snapshot
        with pytest.raises(bigarray.Error) as e:
            bigarray.compact(path)
        assert e.value.code == "FailedPrecondition" and "open in this process" in str(e.value)
    del keep  # an array (or a view) of a closed handle still uses the database
    live = 300 * 1000 * 8
    assert du(path) > 1.1 * live + (1 << 20)
    r = bigarray.compact(path)
    assert list(r) == ["path", "commit", "before_file_bytes", "before_allocated_bytes", "after_file_bytes",
                       "after_allocated_bytes", "before_slot_allocated_bytes", "after_slot_allocated_bytes", "seconds"]
    assert r["commit"] == commit
    assert r["before_slot_allocated_bytes"] >= 38 << 20 and r["after_slot_allocated_bytes"] <= 2 * live
    assert du(path) <= 1.1 * live + (1 << 20)
    with bigarray.open(path, read_only=True) as db:
        assert db.snapshot == commit
        assert np.array_equal(db["keep"][:], np.arange(300_000).reshape(300, 1000))
        assert db.info()["reclaimable_bytes"] <= 1 << 20


def test_compact_of_something_else(tmp_path):
    with pytest.raises(FileNotFoundError):
        bigarray.compact(tmp_path / "none")
    with pytest.raises(bigarray.Error) as e:
        bigarray.compact("memory:")
    assert e.value.code == "Unsupported"


def test_memory_databases_have_no_file_figures():
    with bigarray.open("memory:") as db:
        db.create("a", 10, "i8")[:] = -1
        db.commit()
        info = db.info()
        assert info["live_bytes"] == 80 and info["file_bytes"] is None and info["oldest_snapshot"] is None

"""Closing a handle with uncommitted changes aborts them, as always, and says so with a
ResourceWarning naming the arrays (docs/python.md, Databases)."""
import gc
import subprocess
import sys
import warnings

import numpy as np
import pytest

import bigarray


def no_warning(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        fn()


def test_close_with_changes_warns_naming_the_arrays(path):
    db = bigarray.open(path)
    db.create("b", 3, "f8")
    db.create("a", 3, "f8")
    db.commit()
    db["a"][1] = 5
    db.create("new", 2, "i4")
    with pytest.warns(ResourceWarning, match=r"closed with uncommitted changes to arrays 'a', 'new': they were discarded"):
        db.close()
    assert db.closed
    with bigarray.open(path) as again:
        assert again.names() == ["a", "b"] and again["a"][1] == 0


@pytest.mark.parametrize("change", ["resize", "rename", "drop", "append"])
def test_every_kind_of_change_counts(path, change):
    db = bigarray.open(path)
    db.create("x", (4, 2), "f8")
    db.commit()
    x = db["x"]
    {"resize": lambda: x.resize((8, 2)), "rename": lambda: db.rename("x", "y"),
     "drop": lambda: db.__delitem__("x"), "append": lambda: x.append([1, 2])}[change]()
    name = "y" if change == "rename" else "x"
    with pytest.warns(ResourceWarning, match=f"array '{name}'"):
        db.close()


def test_no_warning_without_changes(path):
    def work():
        db = bigarray.open(path)
        a = db.create("a", 10, "f8")
        a[:] = 1
        db.commit()
        assert a[3] == 1 and float(np.asarray(a).sum()) == 10  # reads change nothing
        db.close()
        db.close()  # idempotent
        ro = bigarray.open(path, read_only=True)
        assert ro["a"][0] == 1
        ro.close()
        db = bigarray.open(path)
        db["a"][0] = 7
        db.abort()  # discarded explicitly: nothing to warn about
        db.close()
    no_warning(work)


def test_with_block_warns_on_normal_exit_only(path):
    with pytest.warns(ResourceWarning, match="array 'a'"):
        with bigarray.open(path) as db:
            db.create("a", 3, "f8")

    def raising():
        with pytest.raises(KeyError):
            with bigarray.open(path) as db:
                db.create("b", 3, "f8")
                db["missing"]  # the exception aborts, as expected: no warning
    no_warning(raising)
    with bigarray.open(path) as db:
        assert db.names() == []


def test_attribute_changes_of_the_database_and_groups_are_named(path):
    db = bigarray.open(path)
    db.create("runs/x", 1, "f8")
    db.commit()
    db.attrs["title"] = "t"
    db.group("runs").attrs["site"] = "s"
    with pytest.warns(ResourceWarning, match=r"closed with uncommitted changes to the database's attributes, "
                                             r"the attributes of group 'runs': they were discarded"):
        db.close()
    with bigarray.open(path) as again:
        assert dict(again.attrs) == {} and dict(again.group("runs").attrs) == {}
    db = bigarray.open(path)
    db["runs/x"][0] = 1
    db.attrs["title"] = "t"
    with pytest.warns(ResourceWarning, match=r"changes to array 'runs/x', the database's attributes: they"):
        db.close()


def test_garbage_collected_handle_warns(path):
    db = bigarray.open(path)
    a = db.create("a", 3, "f8")
    with pytest.warns(ResourceWarning, match="garbage-collected without close\\(\\) with uncommitted changes to array 'a'"):
        del db, a
        gc.collect()


def test_warning_as_error_still_closes(path):
    db = bigarray.open(path)
    db.create("a", 3, "f8")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        with pytest.raises(ResourceWarning):
            db.close()
    assert db.closed
    with bigarray.open(path) as again:
        assert "a" not in again


def test_shown_by_python_dev_mode(path, child_env):
    code = "import bigarray\ndb = bigarray.open(%r)\ndb.create('t', 1, 'f8')\ndb.close()\n" % str(path)
    r = subprocess.run([sys.executable, "-X", "dev", "-c", code], env=child_env, capture_output=True, text=True)
    assert r.returncode == 0 and "ResourceWarning" in r.stderr and "'t'" in r.stderr
    r = subprocess.run([sys.executable, "-c", code], env=child_env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == ""  # ignored by default, as for unclosed files

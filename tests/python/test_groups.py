# Groups: names with '/' as a hierarchy; db.group(name) as a view.
import pytest

import bigarray


def test_group_view_create_get_contains_iterate_nested(mem):
    runs = mem.group("runs")
    assert len(runs) == 0 and list(runs) == [] and runs.name == "runs"
    t = runs.create("2026/t", (3,), "f4")
    runs.group("2026").create("p", 2, "i8")
    runs.create("notes", 1, "u1")
    mem.create("runs", 1, "f8")  # an array and a group may share a name
    mem.create("runsx", 1, "f8")  # not below runs/
    assert list(runs) == ["2026", "notes"] and len(runs) == 2
    assert "2026" in runs and "notes" in runs and "2025" not in runs and "x/" not in runs
    assert isinstance(runs["2026"], bigarray.Group) and runs["2026"] == mem.group("/runs/2026/")
    assert runs["notes"].name == "runs/notes" and runs["2026"]["t"].name == t.name == "runs/2026/t"
    assert [n for n, _ in runs.arrays()] == ["notes"] and [n for n, _ in runs.groups()] == ["2026"]
    assert runs.names() == ["2026/p", "2026/t", "notes"]
    assert mem.names("runs/2026/") == ["runs/2026/p", "runs/2026/t"]
    assert list(mem.group("")) == ["runs", "runsx"]
    with pytest.raises(KeyError):
        runs["nothing"]
    with pytest.raises(ValueError):
        runs.create("/", 1, "f8")
    with pytest.raises(ValueError, match="separates groups"):
        mem.create("a//b", 1, "f8")
    assert "runs" in repr(runs)


def test_del_drops_an_array_or_a_whole_group_and_group_attrs_are_transactional(mem):
    g = mem.group("exp")
    for n in ["a/x", "a/y", "b", "a"]:
        g.create(n, 1, "f8")
    g.attrs["title"] = "experiment"
    g.group("a").attrs["n"] = 2
    mem.commit()
    assert dict(g.attrs) == {"title": "experiment"} and g["a"].attrs.get("n") is None  # the array a's
    assert dict(g.group("a").attrs) == {"n": 2}
    del g["a"]  # the array a and the group a
    assert list(g) == ["b"] and dict(g.group("a").attrs) == {}
    mem.abort()
    assert list(g) == ["a", "b"] and g.group("a").attrs["n"] == 2
    with pytest.raises(KeyError):
        del g["zzz"]

# Attributes as h5py's AttributeManager: a mutable mapping, values JSON or NumPy, transactional.
import math

import numpy as np
import pytest

import bigarray


def test_mapping_interface_and_round_trips(mem):
    a = mem.create("t", (4, 3), "f8")
    assert dict(a.attrs) == {} and len(a.attrs) == 0 and "units" not in a.attrs
    values = {
        "units": "K",
        "none": None,
        "flag": True,
        "count": 3,
        "big": 2**70,
        "ratio": 0.1,
        "unicode": "Grüße, 気温",
        "list": [1, "two", [3.5, None]],
        "dict": {"a": {"b": [False]}},
        "_ARRAY_DIMENSIONS": ["time", "station"],
    }
    for k, v in values.items():
        a.attrs[k] = v
    assert dict(a.attrs) == values
    assert list(a.attrs) == sorted(values)
    assert type(a.attrs["count"]) is int and type(a.attrs["ratio"]) is float
    a.attrs["tuple"] = (1, 2)
    assert a.attrs["tuple"] == [1, 2]  # JSON has lists only
    a.attrs.update(units="degC")
    assert a.attrs["units"] == "degC" and a.attrs.get("missing", 7) == 7
    del a.attrs["none"]
    assert "none" not in a.attrs
    with pytest.raises(KeyError):
        a.attrs["none"]
    with pytest.raises(KeyError):
        del a.attrs["none"]
    assert a.attrs.pop("flag") is True and "flag" not in a.attrs
    assert 5 not in a.attrs and "" not in a.attrs


@pytest.mark.parametrize("value", [
    np.float32(1.5), np.int64(-3), np.uint8(200), np.bool_(True), np.complex128(1 - 2j), np.float16(0.25),
    np.arange(6, dtype=">i4").reshape(2, 3), np.array([[1.5, np.nan], [np.inf, -0.0]]),
    np.zeros((0, 3), dtype="u2"), np.array([True, False]), np.array(7.0), np.arange(4, dtype="c8"),
])
def test_numpy_values_round_trip_with_their_dtype(mem, value):
    a = mem.create("x", 1, "f8")
    a.attrs["v"] = value
    got = a.attrs["v"]
    if isinstance(value, np.ndarray) and value.ndim > 0:
        assert isinstance(got, np.ndarray) and got.dtype == value.dtype and got.shape == value.shape
        np.testing.assert_array_equal(got, value)
        got[...] = 0  # a writeable copy, not a view of the store
        np.testing.assert_array_equal(a.attrs["v"], value)
    else:
        expect = np.asarray(value)[()]
        assert isinstance(got, np.generic) and got.dtype == expect.dtype
        assert got == expect


def test_nan_and_inf_floats_string_arrays_and_refusals(mem):
    a = mem.create("x", 1, "f8")
    a.attrs["nan"] = float("nan")
    a.attrs["inf"] = -math.inf
    assert np.isnan(a.attrs["nan"]) and a.attrs["nan"].dtype == np.float64
    assert a.attrs["inf"] == -math.inf
    a.attrs["names"] = np.array(["a", "bc"])
    assert a.attrs["names"] == ["a", "bc"]
    a.attrs["nested"] = {"x": np.float32(0.5), "y": np.arange(2)}
    assert a.attrs["nested"] == {"x": 0.5, "y": [0, 1]}
    with pytest.raises(ValueError, match="nan or inf"):
        a.attrs["bad"] = [1.0, float("nan")]
    with pytest.raises(TypeError):
        a.attrs["bad"] = b"bytes"
    with pytest.raises(TypeError):
        a.attrs["bad"] = np.array([1, None], dtype=object)
    with pytest.raises(TypeError):
        a.attrs["bad"] = object()
    with pytest.raises(TypeError):
        a.attrs[3] = 1
    with pytest.raises(ValueError, match="array 'x'.*empty"):
        a.attrs[""] = 1
    with pytest.raises(ValueError, match="NUL"):
        a.attrs["a\0b"] = 1
    with pytest.raises(ValueError, match="limit"):
        a.attrs["big"] = np.zeros(10_000)
    assert "bad" not in a.attrs and "big" not in a.attrs


def test_transactions_commit_abort_conflict_rename_drop(path):
    db = bigarray.open(path, cache=16 << 20)
    other = bigarray.open(path, cache=16 << 20)
    a = db.create("a", 10, "f8")
    a.attrs["units"] = "K"
    db.attrs["title"] = "test"
    db.commit()
    assert "a" not in other
    other.abort()
    assert other["a"].attrs["units"] == "K" and other.attrs["title"] == "test"
    a.attrs["units"] = "degC"
    db.abort()
    assert a.attrs["units"] == "K"
    # the same key: the second commit conflicts and writes nothing
    a.attrs["units"] = "mK"
    other["a"].attrs["units"] = "kK"
    db.commit()
    with pytest.raises(bigarray.ConflictError):
        other.commit()
    other.abort()
    assert other["a"].attrs["units"] == "mK"
    # different keys: both commit
    a.attrs["x"] = 1
    other["a"].attrs["y"] = 2
    db.commit()
    other.commit()
    db.abort()
    assert dict(a.attrs) == {"units": "mK", "x": 1, "y": 2}
    db.rename("a", "runs/a")
    assert db["runs/a"].attrs["x"] == 1
    del db["runs/a"]
    db.commit()
    assert dict(db.create("runs/a", 1, "f8").attrs) == {}
    db.abort()
    other.close()
    db.close()


def test_a_handle_closed_with_only_attribute_changes_warns(path):
    db = bigarray.open(path)
    db.create("a", 1, "f8")
    db.commit()
    db["a"].attrs["k"] = 1
    with pytest.warns(ResourceWarning, match="array 'a'"):
        db.close()
    with pytest.raises(ValueError, match="closed"):
        db["a"]


def test_reading_attributes_loads_no_block(path):
    with bigarray.open(path) as db:
        a = db.create("a", (1000, 1000), "f8", block_size=64 << 10)
        a[:] = 1
        a.attrs["units"] = "K"
        a.attrs["scale"] = np.arange(3.0)
        db.commit()
    with bigarray.open(path) as db:
        a = db["a"]
        assert dict(a.attrs)["units"] == "K" and a.info()["attrs"]["scale"] == [0.0, 1.0, 2.0]
        stats = db.cache_stats()
        assert stats["loads"] == 0 and stats["faults"] == 0, stats


def test_read_only_handles_refuse_changes(path):
    with bigarray.open(path) as db:
        db.create("a", 1, "f8").attrs["k"] = 1
        db.commit()
    with bigarray.open(path, read_only=True) as db:
        assert db["a"].attrs["k"] == 1
        with pytest.raises(bigarray.Error, match="read-only") as e:
            db["a"].attrs["k"] = 2
        assert e.value.code == "FailedPrecondition"
        with pytest.raises(bigarray.Error):
            del db.attrs["k"]

# xarray over bigarray: lazily loaded DataArrays and Datasets (zarr's _ARRAY_DIMENSIONS, CF
# decoding), written back with to_bigarray; xarray's in-memory results are the oracle.
import numpy as np
import pandas as pd
import pytest

import bigarray

xr = pytest.importorskip("xarray")
pytest.importorskip("dask.array")
import bigarray.xarray as bx  # noqa: E402


def weather(days=60, stations=5):
    rng = np.random.default_rng(3)
    time = pd.date_range("2026-01-01", periods=days * 24, freq="H")
    temp = (280 + 10 * np.sin(np.arange(time.size) / 24 / 58 * 2 * np.pi)[:, None]
            + rng.standard_normal((time.size, stations))).astype("f4")
    return xr.Dataset(
        {"temperature": (("time", "station"), temp, {"units": "K", "long_name": "air temperature"}),
         "pressure": (("time",), rng.uniform(990, 1030, time.size), {"units": "hPa"}),
         "elevation": (("station",), np.arange(stations, dtype="i4") * 100, {"units": "m"})},
        coords={"time": time, "station": np.arange(stations) + 1000,
                "lat": ("station", np.linspace(40, 50, stations))},
        attrs={"title": "test weather", "version": 2})


def test_round_trip_is_lazy_and_equal(path):
    ds = weather()
    with bigarray.open(path, cache=8 << 20) as db:
        bx.to_bigarray(ds, db, "weather/2026")
        assert db.group("weather/2026").names() == ["elevation", "lat", "pressure", "station", "temperature", "time"]
        t = db["weather/2026/temperature"]
        assert t.attrs["_ARRAY_DIMENSIONS"] == ["time", "station"] and t.attrs["units"] == "K"
        assert db["weather/2026/time"].attrs["units"].startswith("hours since")
    with bigarray.open(path, cache=1 << 20) as db:
        back = bx.open_dataset(db, "weather/2026")
        loaded = db.cache_stats()["loads"]
        index_blocks = sum(db[f"weather/2026/{c}"].info()["blocks"] for c in ("time", "station"))
        assert loaded <= index_blocks  # only the index coordinates were read
        assert back["temperature"].chunks is not None  # dask: not loaded
        assert back.attrs == {"title": "test weather", "version": 2}
        assert back["temperature"].attrs == {"units": "K", "long_name": "air temperature"}
        assert back["time"].dtype == ds["time"].dtype
        xr.testing.assert_identical(back.compute(), ds)
        assert db.cache_stats()["loads"] > loaded


def test_open_dataarray_gets_its_coordinates_and_loads_nothing(path):
    ds = weather(days=10)
    with bigarray.open(path) as db:
        bx.to_bigarray(ds, db, "w")
        bx.to_bigarray(ds["pressure"].rename("p").drop_vars("time"), db, "plain")
    with bigarray.open(path, cache=1 << 20) as db:
        p = bx.open_dataarray(db, "plain/p")
        assert db.cache_stats()["loads"] == 0 and p.dims == ("time",) and p.name == "p"
        np.testing.assert_array_equal(p.values, ds["pressure"].values)
        t = bx.open_dataarray(db, "/w/temperature")
        assert set(t.coords) == {"time", "station", "lat"}
        xr.testing.assert_identical(t.compute(), ds["temperature"])


def test_groupby_out_of_core_matches_xarray_in_memory(path):
    ds = weather(days=730, stations=300)  # 21 MB of temperatures
    with bigarray.open(path, cache=2 << 20) as db:  # a tenth of it
        bx.to_bigarray(ds, db, "w", block_size=64 << 10)
    with bigarray.open(path, cache=2 << 20) as db:
        t = bx.open_dataset(db, "w")["temperature"]
        assert t.nbytes > 10 * (2 << 20) and len(t.chunks[0]) >= 2
        assert all(rows * 1200 % (64 << 10) == 0 for rows in t.chunks[0][:-1])  # whole blocks
        monthly = t.groupby("time.month").mean().compute(scheduler="threads")
        xr.testing.assert_allclose(monthly, ds["temperature"].groupby("time.month").mean())
        assert db.cache_stats()["evictions"] > 0


def test_to_bigarray_modes_errors_and_abort(path):
    ds = weather(days=2)
    with bigarray.open(path) as db:
        bx.to_bigarray(ds, db, "g")
        with pytest.raises(ValueError, match="not empty"):
            bx.to_bigarray(ds, db, "g")
        bx.to_bigarray(ds.isel(time=slice(0, 5)), db, "g", mode="w")
        assert db["g/temperature"].shape == (5, 5)
        db.create("k/sub/extra", 1, "f8")  # a group holding only a sub-group is not empty either
        db.commit()
        with pytest.raises(ValueError, match="not empty"):
            bx.to_bigarray(ds, db, "k")
        with pytest.raises(ValueError, match="mode='w' would drop every array"):
            bx.to_bigarray(ds, db, "", mode="w")
        with pytest.raises(ValueError, match="not empty"):
            bx.to_bigarray(ds, db, "/")
        assert db.names("g/") and "k/sub/extra" in db
        db.group("only_attrs").attrs["stale"] = 1  # attributes alone make a group not empty
        db.commit()
        with pytest.raises(ValueError, match="not empty"):
            bx.to_bigarray(ds, db, "only_attrs")
        bx.to_bigarray(ds, db, "only_attrs", mode="w")
        assert "stale" not in db.group("only_attrs").attrs
        bad = ds.assign(name=("station", np.array(["a", "b", "c", "d", "e"])))
        with pytest.raises(TypeError, match="dtype"):
            bx.to_bigarray(bad, db, "h")
        assert "h" not in db.group("") and db.names("h/") == []  # the transaction was aborted
        bx.to_bigarray(ds["temperature"].isel(time=0).mean(), db, "scalar")  # 0-d, no dims
        assert float(bx.open_dataarray(db, "scalar/temperature")) == pytest.approx(
            float(ds["temperature"].isel(time=0).mean()))

"""Weather: hourly temperatures at 1000 stations, appended one day per commit for a year, with
units and dimensions as attributes; then xarray's monthly means, computed out of core by dask
through a cache a tenth of the data's size."""
import resource
import shutil
import sys

import numpy as np

import bigarray
import bigarray.xarray as bx

path = sys.argv[1] if len(sys.argv) > 1 else "weather.db"
STATIONS, DAYS, CACHE = 1000, 365, 4 << 20
shutil.rmtree(path, ignore_errors=True)
rng = np.random.default_rng(2026)
month_of_day = np.array([(np.datetime64("2026-01-01") + d).astype(object).month for d in range(DAYS)])
sums, counts = np.zeros((12, STATIONS)), np.zeros(12)  # NumPy's answer, kept as we go

with bigarray.open(path, cache=CACHE, durable=False) as db:
    w = db.group("weather")
    t = w.create("temperature", (0, STATIONS), "f4", block_size=256 << 10)
    t.attrs.update(units="K", long_name="air temperature", _ARRAY_DIMENSIONS=["time", "station"])
    time = w.create("time", 0, "i8")
    time.attrs.update(units="hours since 2026-01-01", calendar="proleptic_gregorian", _ARRAY_DIMENSIONS=["time"])
    station = w.create("station", STATIONS, "i4")
    station[:] = np.arange(STATIONS) + 10000
    station.attrs["_ARRAY_DIMENSIONS"] = ["station"]
    w.attrs["title"] = "hourly air temperature"
    db.commit()

    base = 283 + 5 * rng.standard_normal(STATIONS)  # each station's climate
    for day in range(DAYS):  # a day arrives: append it, commit it
        season = -12 * np.cos(2 * np.pi * (day + 10) / 365)
        hourly = -4 * np.cos(2 * np.pi * (np.arange(24) - 3) / 24)
        rows = (base + season + hourly[:, None] + rng.standard_normal((24, STATIONS))).astype("f4")
        t.append(rows)
        time.append(np.arange(day * 24, day * 24 + 24))
        db.commit()
        sums[month_of_day[day] - 1] += rows.sum(axis=0, dtype="f8")
        counts[month_of_day[day] - 1] += 24

with bigarray.open(path, cache=CACHE, read_only=True) as db:
    ds = bx.open_dataset(db, "weather")  # lazy: dask arrays over the stored blocks
    temp = ds["temperature"]
    print(f"{temp.nbytes / 2**20:.1f} MiB of {temp.attrs['long_name']} in {temp.attrs['units']}, "
          f"{temp.sizes['time']} hours x {temp.sizes['station']} stations, cache {CACHE / 2**20:.0f} MiB")
    monthly = temp.groupby("time.month").mean().compute(scheduler="threads")
    stats = db.cache_stats()
    print(f"monthly means of station {int(ds.station[0])}:", np.round(monthly.values[:, 0] - 273.15, 1), "degC")
    print(f"loaded {stats['loads']} blocks, evicted {stats['evictions']}; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    np.testing.assert_allclose(monthly.values, sums / counts[:, None], rtol=1e-5)  # float32 means
    assert stats["evictions"] > 0  # the data did not fit the cache
shutil.rmtree(path)

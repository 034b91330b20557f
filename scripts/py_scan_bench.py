#!/usr/bin/env python3
"""A full scan from Python: bigarray's a[:].sum() on a fresh handle against
numpy.memmap(...).sum() on the same bytes (docs/benchmarks.md, "Scanning from Python").

    PYTHONPATH=build/python /usr/bin/python3 scripts/py_scan_bench.py [--size 1G] [--repeat 3]

Creates, in a temporary directory, a float64 array of --size bytes in a bigarray database and
the same bytes as a raw file (written with os.pwrite), both left in the page cache (nothing is
dropped). Each round opens a fresh handle on each and times one summing pass over the whole
array: np.memmap(raw).sum() and db["a"][:].sum() (the opening and db["a"] are not timed, as
creating the memmap is not). Prints both throughputs per round and the median of the ratios
bigarray / numpy.memmap (issue 14's target: >= 0.80 with the default options).
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

import bigarray

CHUNK = 1 << 20  # float64 elements: 8 MiB


def byte_size(text):
    """"1048576", "64K", "512M", "2G": a positive number of bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper()
    try:
        n = int(t[:-1]) * units[t[-1]] if t and t[-1] in units else int(t)
    except ValueError:
        n = 0
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{text}: not a positive number of bytes (e.g. 64M, 1G)")
    return n


def array_size(text):
    n = byte_size(text)
    if n % (CHUNK * 8):
        raise argparse.ArgumentTypeError(f"{text}: not a multiple of 8M (e.g. 512M, 1G)")
    return n


def pattern():
    return (np.arange(CHUNK) % 1000) * 0.5


def make_data(where, size):
    """The database where/db (array "a") and the raw file where/raw, with the same bytes."""
    chunk = pattern()
    n = size // 8
    with bigarray.open(os.path.join(where, "db"), durable=False) as db:
        a = db.create("a", n, "f8")
        for k, start in enumerate(range(0, n, CHUNK)):
            a[start:start + CHUNK] = chunk
            if k % 32 == 31:  # commit every 256 MiB: the transaction stays within the cache
                db.commit()
        db.commit()
    fd = os.open(os.path.join(where, "raw"), os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
    try:
        data = chunk.tobytes()
        for off in range(0, size, len(data)):
            os.pwrite(fd, data, off)
    finally:
        os.close(fd)


def warm(path):
    with open(path, "rb", buffering=0) as f:
        while f.read(8 << 20):
            pass


def time_memmap(raw):
    m = np.memmap(raw, dtype="f8", mode="r")
    t0 = time.perf_counter()
    s = m.sum()
    t = time.perf_counter() - t0
    del m
    return t, float(s)


def time_bigarray(path, options):
    with bigarray.open(path, **options) as db:
        a = db["a"]
        t0 = time.perf_counter()
        s = a[:].sum()
        t = time.perf_counter() - t0
        return t, float(s)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=array_size, default=1 << 30, help="bytes of the array (default 1G)")
    p.add_argument("--repeat", type=int, default=3, help="rounds, each on fresh handles (default 3)")
    p.add_argument("--dir", default=None, help="where to make the temporary directory (default: $TMPDIR)")
    p.add_argument("--cache", type=byte_size, default=None, help="bigarray's cache (default: the library's)")
    p.add_argument("--no-verify", action="store_true", help="open with verify=False")
    p.add_argument("--no-map-reads", action="store_true", help="open with map_reads=False")
    args = p.parse_args()
    options = {"verify": not args.no_verify, "map_reads": not args.no_map_reads}
    if args.cache:
        options["cache"] = args.cache
    where = tempfile.mkdtemp(prefix="py_scan_bench.", dir=args.dir)
    try:
        make_data(where, args.size)
        db_path, raw = os.path.join(where, "db"), os.path.join(where, "raw")
        for f in ("data.mdb", "blocks.dat"):  # the database's two files (docs/format.md)
            warm(os.path.join(db_path, f))
        warm(raw)
        gbs = lambda t: args.size / t / 1e9  # noqa: E731
        print(f"{args.size / 2**30:.2f} GiB of f8; bigarray.open(..., {', '.join(f'{k}={v}' for k, v in options.items())})")
        ratios = []
        for r in range(args.repeat):
            t_mm, s_mm = time_memmap(raw)
            t_ba, s_ba = time_bigarray(db_path, options)
            if s_ba != s_mm:
                print(f"the sums differ: bigarray {s_ba!r}, numpy.memmap {s_mm!r}", file=sys.stderr)
                return 1
            ratios.append(t_mm / t_ba)
            print(f"  round {r + 1}: numpy.memmap {gbs(t_mm):6.2f} GB/s   bigarray {gbs(t_ba):6.2f} GB/s   "
                  f"ratio {t_mm / t_ba:.2f}")
        print(f"bigarray / numpy.memmap: {statistics.median(ratios):.2f} (median of {len(ratios)}; target >= 0.80)")
        return 0
    finally:
        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

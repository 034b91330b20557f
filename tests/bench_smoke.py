#!/usr/bin/env python3
"""Runs bigarray-bench --quick over the scenarios of issue 14 and checks what it must give.

Not a timing test (the figures are not judged: the machines are noisy): the run must end well
(a sum that differs from mmap's, i.e. wrong data read, fails it), and --json must hold every key
docs/benchmarks.md names for those scenarios, each a finite number. Usage: bench_smoke.py BENCH
"""
import json, math, os, subprocess, sys, tempfile

bench = sys.argv[1]
keys = [
    "scan_first_vs_mmap", "scan_first_noverify_vs_mmap", "scan_first_cpu_vs_mmap",
    "scan_first_noverify_cpu_vs_mmap", "scan_first_cold_pool_vs_mmap", "scan_first_copy_vs_mmap",
    "scan_hot_vs_memory", "scan_ooc_vs_mmap", "scan_ooc_peak_rss_over_budget_mib",
    "fault_p50_us", "fault_p99_us", "fault_noverify_p50_us", "fault_copy_p50_us",
    "cold_cache_first_scan_vs_mmap", "scan_db_pmd_share", "scan_plain_pmd_share",
]
hdf5_keys = ["read_vs_hdf5", "read_pread_vs_hdf5", "read_view_vs_hdf5", "write_vs_hdf5"]

with tempfile.TemporaryDirectory(prefix="bench_smoke.") as tmp:
    out = os.path.join(tmp, "bench.json")
    run = subprocess.run([bench, "--quick", "--dir", os.path.join(tmp, "data"), "--json", out,
                          "--only", "scan,ooc,random,cold,hdf5"], capture_output=True, text=True)
    sys.stdout.write(run.stdout)
    sys.stderr.write(run.stderr)
    if run.returncode != 0:
        sys.exit(f"bigarray-bench exited with {run.returncode}")
    with open(out) as f:
        figures = json.load(f)
if "HDF5: not built" not in run.stdout:
    keys += hdf5_keys
bad = [k for k in keys if not isinstance(figures.get(k), (int, float)) or not math.isfinite(figures[k])]
if bad:
    sys.exit("missing or not a finite number in --json: " + ", ".join(bad))
shares = [k for k in ("scan_db_pmd_share", "scan_plain_pmd_share") if not (figures[k] == -1 or 0 <= figures[k] <= 1)]
if shares:
    sys.exit("a share of the page cache outside [0, 1] (or -1, not measured): " + ", ".join(shares))
print(f"{len(keys)} keys, every one a finite number")

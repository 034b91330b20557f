#!/usr/bin/env bash
# Installs everything bigarray needs from Debian packages. Idempotent: when every package is
# already installed it only checks (dpkg-query) and exits, in well under a second.
set -euo pipefail

packages=(
  cmake g++ make pkg-config
  liblmdb-dev lmdb-utils libboost-dev libspdlog-dev doctest-dev libxxhash-dev
  nlohmann-json3-dev                  # JSON attribute values (header-only)
  clang libclang-rt-14-dev            # sanitizers (TSan with clang) and libFuzzer
  python3-numpy python3-pytest python3-dev pybind11-dev   # the Python module and its tests
  python3-dask python3-xarray          # bigarray.Array.to_dask(), bigarray.xarray
  python3-pip python3-setuptools python3-wheel python3-venv   # pip install . (docs/python.md)
  linux-perf hyperfine libhdf5-dev     # profiling, whole-process timing, HDF5 (benchmarks)
  postgresql libpq-dev                 # the PostgreSQL backend (libpq) and its tests' server
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing Debian packages: ${missing[*]}" >&2
  echo "setup: run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

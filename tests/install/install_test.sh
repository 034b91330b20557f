#!/usr/bin/env bash
# Installs a built tree into a scratch prefix and uses it from outside the source tree, as a user
# would (README.md "Install", docs/api.md, docs/python.md):
#   1. cmake --install, with DESTDIR and with --prefix; the files that must be there are, the
#      private headers are not; the shared library has its SONAME
#   2. each installed header compiles on its own with pkg-config's flags (public headers need
#      nothing but each other and spdlog)
#   3. bin/bigarray --version
#   4. tests/install/consumer through find_package (bigarray::bigarray, bigarray::bigarray_static)
#   5. the same program through pkg-config
#   6. tests/install/consumer with add_subdirectory of the source tree, PostgreSQL off: a
#      subproject builds only what is asked for, and postgresql:// is refused clearly
#   7. the installed Python module, imported from outside the tree by /usr/bin/python3
# Usage: install_test.sh SOURCE_DIR BUILD_DIR SCRATCH_DIR CXX VERSION LIBDIR [PYTHON_DIR]
# (PYTHON_DIR, relative to the prefix, is empty when the build has no Python module.)
set -euo pipefail
src=$1 build=$2 scratch=$3 cxx=$4 version=$5 libdir=$6 pydir=${7:-}
prefix=$scratch/prefix
consumer=$src/tests/install/consumer
jobs=1  # one core, the share of one ctest test (other tests time themselves)

step() { echo "== $*"; }
fail() {
  echo "install_test: FAILED: $*" >&2
  exit 1
}
# Runs a command quietly; on failure shows its output.
quiet() {
  local log=$scratch/last.log
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    fail "$*"
  fi
}

rm -rf "$scratch"
mkdir -p "$scratch"

step "1. cmake --install (DESTDIR, then --prefix)"
DESTDIR=$scratch/dest quiet cmake --install "$build" --prefix /usr/local
[ -f "$scratch/dest/usr/local/include/bigarray/database.h" ] || fail "DESTDIR was not honoured"
quiet cmake --install "$build" --prefix "$prefix"
expected_headers=$(cd "$src/libbigarray/include/bigarray" && ls ./*.h | sort)
installed_headers=$(cd "$prefix/include/bigarray" && ls ./*.h | sort)
[ "$expected_headers" = "$installed_headers" ] ||
  fail "installed headers differ from libbigarray/include/bigarray: $installed_headers"
[ "$(find "$prefix/include" -type f | wc -l)" -eq "$(echo "$expected_headers" | wc -l)" ] ||
  fail "files other than the public headers under include/: $(find "$prefix/include" -type f)"
for f in bin/bigarray "$libdir/libbigarray.a" "$libdir/libbigarray.so" "$libdir/libbigarray.so.$version" \
  "$libdir/cmake/bigarray/bigarray-config.cmake" "$libdir/cmake/bigarray/bigarray-config-version.cmake" \
  "$libdir/pkgconfig/bigarray.pc"; do
  [ -e "$prefix/$f" ] || fail "not installed: $f"
done
soname=$(readelf -d "$prefix/$libdir/libbigarray.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libbigarray.so.${version%.*}" ] || fail "SONAME is '$soname', not libbigarray.so.${version%.*}"
[ -L "$prefix/$libdir/$soname" ] || fail "no symbolic link $soname"
echo "SONAME $soname"

step "2. each public header compiles alone, with pkg-config's flags"
export PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig
[ "$(pkg-config --modversion bigarray)" = "$version" ] || fail "pkg-config --modversion: $(pkg-config --modversion bigarray)"
read -r -a pc_cflags <<<"$(pkg-config --cflags bigarray)"
for h in $installed_headers; do
  echo "#include <bigarray/${h#./}>" |
    quiet "$cxx" -std=c++20 -Wall -Wextra -Wpedantic -Werror -fsyntax-only "${pc_cflags[@]}" -x c++ -
done

step "3. bin/bigarray --version"
cli_version=$("$prefix/bin/bigarray" --version)
echo "$cli_version"
[[ "$cli_version" =~ ^bigarray\ $version\ \(format\ [0-9]+\)$ ]] || fail "bigarray --version: '$cli_version'"

strict=(-DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CXX_FLAGS="-Wall -Wextra -Wpedantic -Werror"
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
# Runs the consumer app; its first line must be the tool's --version line.
run_app() {
  local out
  out=$("$@") || fail "$* failed: $out"
  [ "$(head -1 <<<"$out")" = "$cli_version" ] || fail "$* printed '$(head -1 <<<"$out")', not '$cli_version'"
  echo "$* -> ${out//$'\n'/; }"
}

step "4. find_package(bigarray) from the prefix"
quiet cmake -S "$consumer" -B "$scratch/find_package" -DCMAKE_PREFIX_PATH="$prefix" "${strict[@]}"
grep -qx "bigarray_DIR:PATH=$prefix/$libdir/cmake/bigarray" "$scratch/find_package/CMakeCache.txt" ||
  fail "find_package found another bigarray: $(grep bigarray_DIR "$scratch/find_package/CMakeCache.txt")"
quiet cmake --build "$scratch/find_package" -j"$jobs"
run_app "$scratch/find_package/app" "$scratch/db-find_package"
# (Outputs are captured before grep -q: in a pipeline, grep's early exit could fail the writer
# with SIGPIPE, and pipefail would count that.)
loaded=$(ldd "$scratch/find_package/app")
grep -q "$prefix/$libdir/libbigarray.so" <<<"$loaded" || fail "app does not load the installed libbigarray.so: $loaded"
run_app "$scratch/find_package/app_static" "$scratch/db-find_package-static"
if grep -q 'NEEDED.*libbigarray' <<<"$(readelf -d "$scratch/find_package/app_static")"; then
  fail "app_static needs libbigarray.so"
fi

step "5. pkg-config"
read -r -a pc_libs <<<"$(pkg-config --libs bigarray)"
quiet "$cxx" -std=c++20 -Wall -Wextra -Wpedantic -Werror "${pc_cflags[@]}" "$consumer/main.cc" -o "$scratch/app_pc" \
  "${pc_libs[@]}" -Wl,-rpath,"$prefix/$libdir"
run_app "$scratch/app_pc" "$scratch/db-pkg-config"
static_libs=$(pkg-config --static --libs bigarray)
for l in -llmdb -lxxhash -pthread; do
  [[ " $static_libs " == *" $l "* ]] || fail "pkg-config --static --libs lacks $l: $static_libs"
done

step "6. add_subdirectory of the source tree, -DBIGARRAY_POSTGRES=OFF"
quiet cmake -S "$consumer" -B "$scratch/add_subdirectory" -DBIGARRAY_SOURCE_DIR="$src" -DBIGARRAY_POSTGRES=OFF "${strict[@]}"
for dir in tests demo libbigarray/python tools/CMakeFiles/bigarray-bench.dir; do
  [ ! -e "$scratch/add_subdirectory/bigarray/$dir" ] || fail "the subproject configured $dir"
done
quiet cmake --build "$scratch/add_subdirectory" -j"$jobs" --target app
run_app "$scratch/add_subdirectory/app" "$scratch/db-add_subdirectory"
run_app "$scratch/add_subdirectory/app" --no-postgres

if [ -n "$pydir" ]; then
  step "7. the installed Python module, from outside the tree"
  # Under the default prefix, the module's directory must be one Debian's python3 searches.
  /usr/bin/python3 -c "import sys; sys.exit('/usr/local/$pydir' not in sys.path)" ||
    fail "/usr/local/$pydir is not on /usr/bin/python3's sys.path"
  (cd "$scratch" && env -u PYTHONHOME PYTHONPATH="$prefix/$pydir" PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 \
    /usr/bin/python3 - "$prefix" "$version" <<'EOF') || fail "the installed Python module"
import sys, numpy as np, bigarray
prefix, version = sys.argv[1], sys.argv[2]
assert bigarray.__file__.startswith(prefix + "/"), bigarray.__file__
assert bigarray.__version__ == version, bigarray.__version__
with bigarray.open("db-python") as db:
    a = db.create("x", (10,), "f8")
    a[:] = np.arange(10)
    db.commit()
with bigarray.open("db-python") as db:
    assert db["x"][9] == 9.0
print("import bigarray ->", bigarray.__file__, bigarray.__version__)
EOF
fi

rm -rf "$scratch"
echo "install_test: ok"

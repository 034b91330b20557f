#!/usr/bin/env bash
# Disk space scenarios (docs/benchmarks.md, "Disk space"): du before and after bigarray compact
# for (A) rm of most data, (B) resize of 365 days to 30, (C) a reader holding an old snapshot
# while a batch job rewrites an array 4 times. Run from the source tree after `make build`:
#   scripts/space_bench.sh [SCALE_MIB] [DIR]
# SCALE_MIB (default 512) sizes everything: A keeps SCALE/2 and drops 6 x SCALE, B is 365 days of
# 3 x SCALE KiB each, C rewrites SCALE. DIR (default a fresh directory under /tmp) is removed after.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cli=$root/build/bin/bigarray
export PYTHONPATH=$root/build/python
scale=${1:-512}
dir=${2:-$(mktemp -d /tmp/bigarray-space-XXXXXX)}
trap 'rm -rf "$dir"' EXIT
mib=$((1 << 20))
du_mib() { du -s --block-size=1 "$1" | awk -v m=$mib '{printf "%.1f", $1 / m}'; }
field() { "$cli" info "$1" --json | /usr/bin/python3 -c "import json, sys; print(json.load(sys.stdin)['$2'])"; }
live_mib() { awk -v b="$(field "$1" live_bytes)" -v m=$mib 'BEGIN {printf "%.1f", b / m}'; }
compact() {  # prints "du before -> du after MiB (seconds)"
  local before after t0 t1
  before=$(du_mib "$1")
  t0=$(date +%s.%N)
  "$cli" compact "$1" > /dev/null
  t1=$(date +%s.%N)
  after=$(du_mib "$1")
  awk -v b="$before" -v a="$after" -v s="$(echo "$t1 - $t0" | bc)" -v l="$(live_mib "$1")" \
    'BEGIN {printf "live %.1f MiB; du %.1f MiB -> %.1f MiB after compact (%.2f x live), compact took %.1f s\n", l, b, a, a / l, s}'
}
rows() { echo $(( $1 * mib / 8 )); }  # f8 elements in $1 MiB
used_mib() { echo $(( $(field "$1" used_bytes) / mib )); }

echo "A: keep $((scale / 2)) MiB, rm $((6 * scale)) MiB"
a=$dir/a.db
"$cli" --no-progress create "$a" keep --dtype f8 --shape "$(rows $((scale / 2)))"
"$cli" --no-progress fill "$a" keep --value 1
"$cli" --no-progress create "$a" big --dtype f8 --shape "$(rows $((6 * scale)))"
"$cli" --no-progress fill "$a" big --value 2
echo "  du with both: $(du_mib "$a") MiB"
"$cli" rm "$a" big
echo "  after rm: du $(du_mib "$a") MiB, reclaimable $(( $(field "$a" reclaimable_bytes) / mib )) MiB"
echo "  $(compact "$a")"

echo "B: 365 days of $((scale * 3)) KiB, resized to 30"
b=$dir/b.db
day=$((scale * 3072 / 8))  # f8 elements per day (1.5 MiB at 512: 30 days end inside a block)
"$cli" --no-progress create "$b" days --dtype f8 --shape "365,$day"
"$cli" --no-progress fill "$b" days --value 1.5
echo "  du with 365 days: $(du_mib "$b") MiB"
"$cli" resize "$b" days --shape "30,$day"
echo "  after resize: du $(du_mib "$b") MiB, reclaimable $(( $(field "$b" reclaimable_bytes) / mib )) MiB"
echo "  $(compact "$b")"

echo "C: $scale MiB rewritten 4 times while a reader holds the first version"
c=$dir/c.db
"$cli" --no-progress create "$c" x --dtype f8 --shape "$(rows "$scale")"
"$cli" --no-progress fill "$c" x --value 0.5
echo "  du after the first version: $(du_mib "$c") MiB"
/usr/bin/python3 -c "
import bigarray, sys
db = bigarray.open(sys.argv[1], read_only=True)
print(db.snapshot, flush=True)
sys.stdin.read()   # holds the snapshot until stdin closes
" "$c" < <(sleep 100000) > "$dir/reader.out" &
reader=$!
until [ -s "$dir/reader.out" ]; do sleep 0.1; done
for pass in 1 2 3 4; do "$cli" --no-progress fill "$c" x --value "$pass"; done
echo "  du after 4 passes with the reader: $(du_mib "$c") MiB (LMDB used $(used_mib "$c") MiB);" \
     "pinned $(( $(field "$c" pinned_bytes) / mib )) MiB;" \
     "oldest snapshot $("$cli" info "$c" | sed -n 's/^oldest_snapshot: //p')"
kill "$reader"; wait "$reader" 2> /dev/null || true
"$cli" --no-progress fill "$c" x --value 5
"$cli" --no-progress fill "$c" x --value 6
echo "  du after 2 more passes without it: $(du_mib "$c") MiB (LMDB used $(used_mib "$c") MiB: free pages reused;" \
     "du adds the disk space reserved for the next commit)"
echo "  $(compact "$c")"

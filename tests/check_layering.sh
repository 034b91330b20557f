#!/usr/bin/env bash
# The dependency rule of docs/architecture.md, checked on the sources: the storage includes
# nothing of the pager or the array layer, and the pager nothing of the storage or arrays.
set -u
root=${1:-.}
fail=0
if grep -rnE '#include +"(pager/|bigarray/(database|array|view|dtype)\.h)' "$root/storage"; then
  echo "layering: storage/ must not include pager or array headers" >&2; fail=1
fi
if grep -rnE '#include +"bigarray/(storage/|database|array|view)' "$root/libbigarray/pager"; then
  echo "layering: libbigarray/pager must not include storage or array headers" >&2; fail=1
fi
[ $fail -eq 0 ] && echo "layering: ok"
exit $fail

#!/bin/sh
# spec/run.sh — runs every busted spec on LuaJIT and ends with the one summary line CI reads:
#   "N passed, N failed, N skipped"
# Extra arguments go to busted (e.g. --tags=gpu). Exit status: 0 only when nothing failed.
cd "$(dirname "$0")/.." || exit 1
log=$(mktemp)
busted --lua=luajit "$@" 2>&1 | tee "$log"
line=$(grep -E '^[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' "$log" | tail -1)
rm -f "$log"
if [ -z "$line" ]; then
  echo "0 passed, 1 failed, 0 skipped"
  echo "spec/run.sh: busted printed no summary (crashed?)" >&2
  exit 1
fi
set -- $(echo "$line" | grep -oE '[0-9]+')
passed=$1; failed=$(($2 + $3)); skipped=$4
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]

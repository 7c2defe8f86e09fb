#!/usr/bin/env bash
# The long fuzz runs behind fuzz/README.md's table: each target for RUNS executions (default
# 10,000,000), JOBS targets at a time, each in its own scratch corpus seeded from its regressions.
# Prints one markdown row per target: execs, exec/s, corpus size (files), time, result.
# Usage: fuzz/run-long.sh [RUNS] [JOBS] [TARGET...]
set -uo pipefail
cd "$(dirname "$0")"
runs="${1:-10000000}"; jobs="${2:-2}"; shift 2 2>/dev/null || shift $#
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
cargo +nightly fuzz build -O >/dev/null 2>&1 || { echo "build failed"; exit 1; }
out=/tmp/fuzz-long; mkdir -p "$out"
one() {
  t=$1; c="$out/corpus-$t"; mkdir -p "$c"
  [ -d "regressions/$t" ] && cp regressions/"$t"/* "$c"/ 2>/dev/null
  s=$(date +%s)
  if cargo +nightly fuzz run -O "$t" "$c" -- -runs="$runs" -timeout=10 -rss_limit_mb=1024 \
      -malloc_limit_mb=512 -print_final_stats=1 >"$out/$t.log" 2>&1; then res=ok; else res=FAILED; fi
  e=$(( $(date +%s) - s ))
  execs=$(grep -E '^stat::number_of_executed_units' "$out/$t.log" | awk '{print $2}')
  rate=$(grep -E '^stat::average_exec_per_sec' "$out/$t.log" | awk '{print $2}')
  files=$(ls -1 "$c" | wc -l)
  echo "| $t | ${execs:-?} | ${rate:-?} | $files | ${e}s | $res |"
}
export -f one; export runs out
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'one {}'

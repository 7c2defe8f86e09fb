#!/usr/bin/env bash
# Builds and runs every example under examples/ (release), each with a timeout; fails if any
# example fails to build, exits non-zero or times out. Prints one line per example.
# Usage: .ci/examples.sh [NAME...]   (default: every examples/*.rs)
# Env: EXAMPLE_TIMEOUT (seconds per example, default 60).
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
limit="${EXAMPLE_TIMEOUT:-60}"

if [ $# -gt 0 ]; then
  names=("$@")
else
  names=()
  for f in examples/*.rs; do names+=("$(basename "$f" .rs)"); done
fi
if [ ${#names[@]} -eq 0 ]; then echo "examples: none found under examples/"; exit 1; fi

start=$(date +%s)
echo "examples: building ${#names[@]} examples (release)"
# The facade's optional features the examples need (distributed_master_worker: redis;
# tokio_service: tokio).
features=(--features redis,tokio)
if ! cargo build --release --examples "${features[@]}" -q; then
  echo "examples: build FAILED"
  exit 1
fi

failed=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for name in "${names[@]}"; do
  t0=$(date +%s%N)
  timeout --kill-after=5 "$limit" cargo run -q --release "${features[@]}" --example "$name" </dev/null >"$log" 2>&1
  rc=$?
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  if [ $rc -eq 0 ]; then
    printf '  %-28s ok      %6d ms\n' "$name" "$ms"
  else
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then why="TIMEOUT after ${limit}s"; else why="exit code $rc"; fi
    printf '  %-28s FAILED  %6d ms  (%s); last lines:\n' "$name" "$ms" "$why"
    tail -n 15 "$log" | sed 's/^/      /'
    failed+=("$name")
  fi
done

left=$(ls /dev/shm | grep -E '^multiproc\.' || true)
if [ -n "$left" ]; then
  echo "examples: segments left in /dev/shm:"; echo "$left"
  failed+=("(/dev/shm residue)")
fi

echo "examples: ${#names[@]} run, ${#failed[@]} failed, $(( $(date +%s) - start ))s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "examples FAILED: ${failed[*]}"
  exit 1
fi

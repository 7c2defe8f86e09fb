#!/usr/bin/env bash
# Fuzz targets in CI: build every cargo-fuzz target, replay each saved regression input (the crash
# and hang inputs found so far, fuzz/regressions/TARGET/*) as a test, then run each target briefly.
# Usage: .ci/fuzz.sh [SECONDS_PER_TARGET]   (default 10; 0 = replay only)
# Needs the nightly toolchain and cargo-fuzz; fails when any replay or run finds a crash, a hang
# (libFuzzer -timeout) or an allocation over the limit.
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
export CARGO_TERM_COLOR=never
secs="${1:-10}"
# A call that takes >10 s is a hang (every API call in the targets has a deadline of milliseconds);
# -rss_limit_mb / -malloc_limit_mb: the documented maximum allocation is 64 MiB per message.
opts=(-timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=512)

cargo +nightly fuzz build -O || { echo "fuzz: build FAILED"; exit 1; }
failed=()
for t in $(cargo +nightly fuzz list); do
  dir="regressions/$t"
  if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
    n=$(ls -1 "$dir" | wc -l)
    if cargo +nightly fuzz run -O "$t" "$dir" -- -runs=0 "${opts[@]}" >"/tmp/fuzz-replay-$t.log" 2>&1; then
      echo "fuzz: $t: $n regression inputs replayed, ok"
    else
      echo "fuzz: $t: regression replay FAILED"; tail -30 "/tmp/fuzz-replay-$t.log"; failed+=("$t")
    fi
  fi
  if [ "$secs" -gt 0 ]; then
    # A scratch corpus: CI never writes into the repository's corpus.
    corpus=$(mktemp -d)
    [ -d "$dir" ] && cp "$dir"/* "$corpus"/ 2>/dev/null
    if cargo +nightly fuzz run -O "$t" "$corpus" -- -max_total_time="$secs" "${opts[@]}" >"/tmp/fuzz-run-$t.log" 2>&1; then
      echo "fuzz: $t: $(grep -E '^Done|#[0-9]+.*(DONE|pulse)' "/tmp/fuzz-run-$t.log" | tail -1)"
    else
      echo "fuzz: $t: run FAILED"; tail -40 "/tmp/fuzz-run-$t.log"; failed+=("$t")
    fi
    rm -rf "$corpus"
  fi
done
if [ ${#failed[@]} -gt 0 ]; then echo "fuzz: FAILED: ${failed[*]}"; exit 1; fi
echo "fuzz: all targets ok"

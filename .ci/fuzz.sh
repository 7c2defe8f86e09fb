#!/usr/bin/env bash
# Fuzz targets in CI: build every cargo-fuzz target, replay each saved regression input (the crash
# and hang inputs found so far, fuzz/regressions/TARGET/*) as a test, then run each target briefly.
# Targets run two at a time (one per CPU of the CI machine; each libFuzzer run is one thread).
# Usage: .ci/fuzz.sh [SECONDS_PER_TARGET]   (default 10; 0 = replay only)
# Needs the nightly toolchain and cargo-fuzz; fails when any replay or run finds a crash, a hang
# (libFuzzer -timeout) or an allocation over the limit.
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
export CARGO_TERM_COLOR=never
export secs="${1:-10}"
# A call that takes >10 s is a hang (every API call in the targets has a deadline of milliseconds);
# -rss_limit_mb / -malloc_limit_mb: the documented maximum allocation is 64 MiB per message.
export opts="-timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=512"

cargo +nightly fuzz build -O || { echo "fuzz: build FAILED"; exit 1; }
bin_dir="target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"
export bin_dir
[ -d "$bin_dir" ] || { echo "fuzz: no binaries in $bin_dir"; exit 1; }

# One target: replay its regressions, then a short run in a scratch corpus (CI never writes into
# the repository's corpus). The built binary is run directly (no cargo lock between the two).
one() {
  t=$1; dir="regressions/$t"; ok=0
  if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
    n=$(ls -1 "$dir" | wc -l)
    # shellcheck disable=SC2086
    if "$bin_dir/$t" -runs=0 $opts "$dir" >"/tmp/fuzz-replay-$t.log" 2>&1; then
      echo "fuzz: $t: $n regression inputs replayed, ok"
    else
      echo "fuzz: $t: regression replay FAILED"; tail -30 "/tmp/fuzz-replay-$t.log"; ok=1
    fi
  fi
  if [ "$secs" -gt 0 ]; then
    corpus=$(mktemp -d)
    [ -d "$dir" ] && cp "$dir"/* "$corpus"/ 2>/dev/null
    # shellcheck disable=SC2086
    if "$bin_dir/$t" -max_total_time="$secs" $opts "$corpus" >"/tmp/fuzz-run-$t.log" 2>&1; then
      echo "fuzz: $t: $(grep -E '^Done|#[0-9]+.*(DONE|pulse)' "/tmp/fuzz-run-$t.log" | tail -1)"
    else
      echo "fuzz: $t: run FAILED"; tail -40 "/tmp/fuzz-run-$t.log"; ok=1
    fi
    rm -rf "$corpus"
  fi
  return $ok
}
export -f one
if ! cargo +nightly fuzz list | xargs -P 2 -I{} bash -c 'one {}'; then
  echo "fuzz: FAILED (see the lines above)"; exit 1
fi
echo "fuzz: all targets ok"

#!/usr/bin/env python3
"""Before/after comparison of two builds of multiproc-bench: the multiproc rows of both,
measured in one session, the two binaries alternating round by round (so drift and load hit
both alike), reported as the median and the best of the rounds.

This 2-vCPU VM is bimodal (a spinning round trip is ~210 ns or ~650 ns depending on where the
host places the two vCPUs, run to run), so one run of each says little: compare medians over
many rounds, and bests.

    # run: ROUNDS rounds of each binary (each from its own checkout, so docs paths resolve)
    python3 benches/ab.py run DIR BEFORE_BIN BEFORE_CWD AFTER_BIN AFTER_CWD ROUNDS [bench args...]
    # report: the Markdown table of a DIR made by `run`
    python3 benches/ab.py report DIR

Example (main against the commit before issue 18's work, quick sizes):

    git worktree add /tmp/before 97e66ae
    (cd /tmp/before && cargo build --release -p multiproc-bench)
    cargo build --release -p multiproc-bench
    python3 benches/ab.py run /tmp/ab /tmp/before/target/release/multiproc-bench /tmp/before \\
        target/release/multiproc-bench . 5 --quick
    python3 benches/ab.py report /tmp/ab
"""
import collections
import glob
import json
import os
import statistics
import subprocess
import sys

LOWER_IS_BETTER = {"ns", "us", "µs", "ms", "s", "B/obj", "max/min"}


def run(out, before_bin, before_cwd, after_bin, after_cwd, rounds, args):
    os.makedirs(out, exist_ok=True)
    for r in range(1, int(rounds) + 1):
        for tag, exe, cwd in (("before", before_bin, before_cwd), ("after", after_bin, after_cwd)):
            exe = os.path.abspath(exe)
            with open(os.path.join(out, f"{tag}-{r}.json"), "w") as f:
                subprocess.run([exe, "--json", *args], cwd=cwd, stdout=f,
                               stderr=subprocess.DEVNULL, check=False, timeout=3600)
            print(f"round {r} {tag} done", file=sys.stderr)


def load(out, tag):
    """{(workload, system, unit, n): [value per round]}; n tells apart rows of one system
    that share a workload and unit (e.g. spin and park rows)."""
    acc = collections.defaultdict(list)
    for path in sorted(glob.glob(os.path.join(out, f"{tag}-*.json"))):
        try:
            d = json.load(open(path))
        except (OSError, ValueError):
            continue
        seen = collections.Counter()
        for row in d["results"]:
            if not row["system"].startswith("multiproc"):
                continue
            k = (row["workload"], row["system"], row["unit"])
            seen[k] += 1
            acc[k + (seen[k],)].append(row["value"])
    return acc


def report(out):
    b, a = load(out, "before"), load(out, "after")
    print("| workload | system | unit | before: median | after: median | after/before (median) "
          "| before: best | after: best | after/before (best) | rounds |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for k in sorted(set(b) & set(a)):
        bv, av = b[k], a[k]
        low = k[2] in LOWER_IS_BETTER
        best = min if low else max
        bm, am = statistics.median(bv), statistics.median(av)
        bb, ab = best(bv), best(av)

        def better(x, y):
            # > 1: the after build is better (faster, or lower where lower is better).
            if x == 0 or y == 0:
                return float("nan")
            return x / y if low else y / x

        name = k[1] if k[3] == 1 else f"{k[1]} (row {k[3]})"
        print(f"| {k[0]} | {name} | {k[2]} | {bm:.4g} | {am:.4g} | {better(bm, am):.2f} "
              f"| {bb:.4g} | {ab:.4g} | {better(bb, ab):.2f} | {len(bv)}/{len(av)} |")


if __name__ == "__main__":
    if len(sys.argv) >= 8 and sys.argv[1] == "run":
        run(*sys.argv[2:8], sys.argv[8:])
    elif len(sys.argv) == 3 and sys.argv[1] == "report":
        report(sys.argv[2])
    else:
        sys.exit(__doc__)

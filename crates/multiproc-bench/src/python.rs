//! Runs Python's side of a workload: `python3 benches/python/mp_bench.py WORKLOAD ...`, which
//! prints one JSON object per line.

use crate::Record;
use std::path::PathBuf;
use std::process::Command;

/// Where the shipped script is (override with `MULTIPROC_PY_BENCH`).
pub fn script() -> PathBuf {
    if let Ok(p) = std::env::var("MULTIPROC_PY_BENCH") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../benches/python/mp_bench.py")
}

/// Whether python3 can be run; prints the reason once when not.
pub fn available() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let ok = Command::new("python3")
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("python-mp: skipped (python3 not found on PATH)");
        } else if !script().exists() {
            eprintln!(
                "python-mp: skipped (script {} not found)",
                script().display()
            );
            return false;
        }
        ok
    })
}

/// Runs one workload; failures are reported on stderr and give no records.
pub fn run(workload: &str, quick: bool, extra: &[&str]) -> Vec<Record> {
    if !available() {
        return Vec::new();
    }
    let mut cmd = Command::new("python3");
    cmd.arg(script()).arg(workload);
    if quick {
        cmd.arg("--quick");
    }
    cmd.args(extra);
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            crate::failed(
                workload,
                "python-mp",
                &format!("could not run python3: {e}"),
            );
            return Vec::new();
        }
    };
    if !out.status.success() {
        crate::failed(
            workload,
            "python-mp",
            &format!(
                "failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ),
        );
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| match serde_json::from_str::<Record>(l) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("python-mp {workload}: bad line {l:?}: {e}");
                None
            }
        })
        .collect()
}

//! `multiproc-bench`: the comparison benchmark. Runs each workload on each system (multiproc,
//! Python's multiprocessing, and the other peers of later layers) in one run and prints a table
//! of figures and ratios; `--json` prints machine-readable results, `--markdown` a table for docs.
//!
//! Two-process workloads pin their sides to CPUs 0 and 1. Ratios compare systems measured in the
//! same run, which is what a noisy VM allows.

mod harness;
mod python;
mod w_channel;
mod w_dict;
mod w_iceoryx2;
mod w_pool;
mod w_process;
mod w_redis;
mod w_ring;
mod w_sync;
mod w_sync2;

use clap::Parser;
use serde::{Deserialize, Serialize};
use std::io::Write;

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "multiproc-bench",
    about = "multiproc vs Python's multiprocessing (and other IPC), one run, one table"
)]
struct Args {
    /// Small sizes: the whole run stays around a minute.
    #[arg(long)]
    quick: bool,
    /// Print `{"machine": .., "results": [..]}` instead of the table.
    #[arg(long)]
    json: bool,
    /// Print the table as Markdown (for docs/benchmarks.md).
    #[arg(long)]
    markdown: bool,
    /// Only workloads whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// List the workloads and exit.
    #[arg(long)]
    list: bool,
}

/// What every workload module gets.
pub struct Config {
    /// Small sizes.
    pub quick: bool,
    /// Workload filter.
    pub only: Option<String>,
}

impl Config {
    /// Whether `workload` should run; prints a progress line on stderr when it does.
    pub fn wants(&self, workload: &str) -> bool {
        let yes = self.only.as_deref().is_none_or(|o| workload.contains(o));
        if yes {
            eprintln!("running {workload} ...");
        }
        yes
    }
}

/// One figure.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// Workload name.
    pub workload: String,
    /// System name.
    pub system: String,
    /// The figure.
    pub value: f64,
    /// Its unit.
    pub unit: String,
}

impl Record {
    /// A record.
    pub fn new(workload: &str, system: &str, value: f64, unit: &str) -> Record {
        Record {
            workload: workload.into(),
            system: system.into(),
            value,
            unit: unit.into(),
        }
    }

    fn lower_is_better(&self) -> bool {
        matches!(self.unit.as_str(), "ns" | "us" | "ms" | "s" | "max/min")
    }
}

/// Every workload this build knows.
const WORKLOADS: &[&str] = &[
    "value_lock_incr",
    "lock_uncontended",
    "event_pingpong",
    "dict_update",
    "pipe_rtt_small",
    "pipe_stream_8B",
    "pipe_stream_64B",
    "pipe_stream_4KiB",
    "pipe_stream_64KiB",
    "queue_spsc_small",
    "queue_mpmc_2p2c_small",
    "rtt_8B_spin",
    "rtt_8B_blocking",
    "stream_8B",
    "stream_64B",
    "stream_4KiB",
    "stream_64KiB",
    "mpmc_2p2c_8B",
    "process_start_join",
    "pool_map_1M_trivial",
    "pool_map_chunk1",
    "pool_apply_async",
    "pool_apply_rtt",
    "pool_map_heavy",
    "pool_map_heavy_chunk1",
    "pool_balance_map",
    "remote_apply_async",
    "remote_queue_stream",
];

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    serde_json::json!({ "cpu": cpu, "cpus": harness::cpus(), "kernel": kernel, "os": std::env::consts::OS })
}

fn fmt_value(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2} G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1} k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// How many times better multiproc is than `other` (same workload and unit; above 1 = multiproc ahead).
fn ratio(base: &Record, other: &Record) -> Option<f64> {
    if base.unit != other.unit || base.value <= 0.0 || other.value <= 0.0 {
        return None;
    }
    Some(if base.lower_is_better() {
        other.value / base.value
    } else {
        base.value / other.value
    })
}

fn table(results: &[Record], markdown: bool) -> String {
    let mut s = String::new();
    if markdown {
        s.push_str(
            "| workload | system | value | unit | multiproc advantage |\n|---|---|---:|---|---:|\n",
        );
    } else {
        s.push_str(&format!(
            "{:<24} {:<22} {:>12} {:<8} {:>14}\n",
            "workload", "system", "value", "unit", "mp advantage"
        ));
    }
    for r in results {
        let base = results.iter().find(|b| {
            b.workload == r.workload && b.unit == r.unit && b.system.starts_with("multiproc")
        });
        let rel = match base {
            Some(b) if !r.system.starts_with("multiproc") => {
                ratio(b, r).map(|x| format!("{x:.1}x")).unwrap_or_default()
            }
            _ => String::new(),
        };
        if markdown {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                r.workload,
                r.system,
                fmt_value(r.value),
                r.unit,
                rel
            ));
        } else {
            s.push_str(&format!(
                "{:<24} {:<22} {:>12} {:<8} {:>14}\n",
                r.workload,
                r.system,
                fmt_value(r.value),
                r.unit,
                rel
            ));
        }
    }
    s
}

fn main() {
    multiproc::init();
    let args = Args::parse();
    if args.list {
        for w in WORKLOADS {
            println!("{w}");
        }
        return;
    }
    let cfg = Config {
        quick: args.quick,
        only: args.only.clone(),
    };
    if let Some(o) = &cfg.only
        && !WORKLOADS.iter().any(|w| w.contains(o.as_str()))
    {
        eprintln!("no workload matches {o:?}; known: {}", WORKLOADS.join(", "));
        std::process::exit(2);
    }
    let mut results = Vec::new();
    w_sync::run(&cfg, &mut results);
    w_sync2::run(&cfg, &mut results);
    w_dict::run(&cfg, &mut results);
    w_channel::run(&cfg, &mut results);
    w_ring::run(&cfg, &mut results);
    w_process::run(&cfg, &mut results);
    w_pool::run(&cfg, &mut results);
    w_redis::run(&cfg, &mut results);
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let doc = serde_json::json!({ "machine": machine(), "results": results });
        let _ = writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(&doc).expect("json")
        );
    } else {
        let m = machine();
        let _ = writeln!(
            stdout,
            "machine: {} ({} CPUs), Linux {}",
            m["cpu"].as_str().unwrap_or("?"),
            m["cpus"],
            m["kernel"].as_str().unwrap_or("?")
        );
        let _ = write!(stdout, "{}", table(&results, args.markdown));
    }
}

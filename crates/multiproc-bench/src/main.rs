//! `multiproc-bench`: the comparison benchmark. Runs each workload on each system (multiproc,
//! Python's multiprocessing, and the other peers of later layers) in one run and prints a table
//! of figures and ratios, then the goals of issues 13 and 14 evaluated from the run's own
//! figures; `--json` prints machine-readable results, `--markdown` a table for docs,
//! `--write-docs` puts the Markdown between the `bench:begin`/`bench:end` markers of README.md
//! and docs/benchmarks.md, `--plot DIR` writes SVG charts, `--load N` runs N CPU spinners beside.
//!
//! Two-process workloads pin their sides to CPUs 0 and 1. Ratios compare systems measured in the
//! same run, which is what a noisy VM allows. Round-trip workloads have a `spin` row and a
//! `block` row, each system in the mode it offers, with p50/p99/p99.9/max of every round trip.

mod goals;
mod harness;
mod lat;
mod load;
mod plot;
mod python;
mod w_anchor;
mod w_async;
mod w_channel;
mod w_dict;
mod w_iceoryx2;
mod w_objects;
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
    /// Run N CPU-bound spinner processes (not pinned) for the whole run.
    #[arg(long, default_value_t = 0, value_name = "N")]
    load: usize,
    /// Write SVG charts (RTT percentiles, stream throughput) into DIR.
    #[arg(long, value_name = "DIR")]
    plot: Option<std::path::PathBuf>,
    /// Replace the text between `<!-- bench:begin -->` and `<!-- bench:end -->` in README.md
    /// and docs/benchmarks.md with this run's Markdown tables and goals.
    #[arg(long)]
    write_docs: bool,
}

static FAILURES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Reports a failed measurement on stderr and remembers it for the goals ("no workload fails").
pub fn failed(workload: &str, system: &str, e: &str) {
    eprintln!("{workload} {system}: {e}");
    if let Ok(mut f) = FAILURES.lock() {
        f.push(format!("{workload} {system}: {e}"));
    }
}

fn failures() -> Vec<String> {
    FAILURES.lock().map(|f| f.clone()).unwrap_or_default()
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
    /// Wait mode of a round-trip row: `spin`, `block`, `spin-park`; empty elsewhere.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// Median round trip (same unit as `value`, which is the mean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    /// 99th percentile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    /// 99.9th percentile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p999: Option<f64>,
    /// Slowest round trip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl Record {
    /// A record.
    pub fn new(workload: &str, system: &str, value: f64, unit: &str) -> Record {
        Record {
            workload: workload.into(),
            system: system.into(),
            value,
            unit: unit.into(),
            mode: String::new(),
            p50: None,
            p99: None,
            p999: None,
            max: None,
        }
    }

    /// A round-trip record: the mean as the value, and the percentiles.
    pub fn lat(workload: &str, system: &str, mode: &str, l: &lat::Lat, unit: &str) -> Record {
        Record {
            mode: mode.into(),
            p50: Some(l.p50),
            p99: Some(l.p99),
            p999: Some(l.p999),
            max: Some(l.max),
            ..Record::new(workload, system, l.mean, unit)
        }
    }

    /// The same record with `mode` set.
    pub fn with_mode(mut self, mode: &str) -> Record {
        self.mode = mode.into();
        self
    }

    fn lower_is_better(&self) -> bool {
        matches!(
            self.unit.as_str(),
            "ns" | "us" | "ms" | "s" | "max/min" | "B/obj"
        )
    }
}

/// Every workload this build knows.
const WORKLOADS: &[&str] = &[
    "value_lock_incr",
    "lock_uncontended",
    "objects_create",
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
    "async_rtt",
    "async_fanin",
];

/// Machine, load and clock facts of this run.
pub struct RunInfo {
    /// UTC date and time of the start.
    pub date: String,
    /// Spinner processes.
    pub load: usize,
    /// /proc/loadavg's 1-minute figure at the start and at the end.
    pub loadavg: (String, String),
    /// ns per `Instant::now()`.
    pub clock_ns: f64,
    /// The command line, as a user would type it.
    pub command: String,
    /// `--quick`.
    pub quick: bool,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// UTC "YYYY-MM-DD HH:MM" of now (civil-from-days, no date crate).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

fn header(info: &RunInfo, markdown: bool) -> String {
    let m = machine();
    let load = if info.load == 0 {
        "no added load".to_string()
    } else {
        format!(
            "--load {}: {} CPU-bound spinner processes",
            info.load, info.load
        )
    };
    let lines = [
        format!(
            "date: {}; machine: {} CPUs ({}), Linux {}",
            info.date,
            m["cpus"],
            m["cpu"].as_str().unwrap_or("?"),
            m["kernel"].as_str().unwrap_or("?")
        ),
        format!(
            "load: {load}; load average {} at the start, {} at the end",
            info.loadavg.0, info.loadavg.1
        ),
        format!(
            "command: `{}`; each timed round trip includes one clock read ({:.1} ns)",
            info.command, info.clock_ns
        ),
    ];
    let mut s = String::new();
    if info.quick {
        s.push_str(if markdown {
            "**Quick run (`--quick`, small sizes): a placeholder, not the reference figures.**\n\n"
        } else {
            "QUICK RUN (--quick, small sizes)\n"
        });
    }
    for l in lines {
        s.push_str(&l);
        s.push_str(if markdown { "  \n" } else { "\n" });
    }
    if markdown {
        s.push('\n');
    }
    s
}

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

/// The multiproc record a row is compared with: same workload, unit and mode; a `-loan`
/// (zero-copy) row is compared with multiproc's own zero-copy row when there is one.
fn base_of<'a>(results: &'a [Record], r: &Record) -> Option<&'a Record> {
    let same = |b: &&Record| b.workload == r.workload && b.unit == r.unit && b.mode == r.mode;
    let pref: &[&str] = if r.system.ends_with("-loan") {
        &["multiproc-loan", "multiproc"]
    } else {
        &["multiproc", "multiproc-loan", "multiproc-1by1"]
    };
    pref.iter()
        .find_map(|p| results.iter().filter(same).find(|b| b.system == *p))
        .or_else(|| {
            results
                .iter()
                .filter(same)
                .find(|b| b.system.starts_with("multiproc"))
        })
}

fn table(results: &[Record], markdown: bool) -> String {
    let mut s = String::new();
    let cols = [
        "workload", "mode", "system", "value", "unit", "p50", "p99", "p99.9", "max", "mp adv.",
    ];
    if markdown {
        s.push_str(&format!("| {} |\n", cols.join(" | ")));
        s.push_str("|---|---|---|---:|---|---:|---:|---:|---:|---:|\n");
    } else {
        s.push_str(&format!(
            "{:<25} {:<9} {:<22} {:>9} {:<7} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            cols[0],
            cols[1],
            cols[2],
            cols[3],
            cols[4],
            cols[5],
            cols[6],
            cols[7],
            cols[8],
            cols[9]
        ));
    }
    let p = |x: Option<f64>| x.map(fmt_value).unwrap_or_default();
    for r in results {
        let rel = match base_of(results, r) {
            Some(b) if !r.system.starts_with("multiproc") => {
                ratio(b, r).map(|x| format!("{x:.1}x")).unwrap_or_default()
            }
            _ => String::new(),
        };
        let f = [
            r.workload.clone(),
            r.mode.clone(),
            r.system.clone(),
            fmt_value(r.value),
            r.unit.clone(),
            p(r.p50),
            p(r.p99),
            p(r.p999),
            p(r.max),
            rel,
        ];
        if markdown {
            s.push_str(&format!("| {} |\n", f.join(" | ")));
        } else {
            s.push_str(&format!(
                "{:<25} {:<9} {:<22} {:>9} {:<7} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
                f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9]
            ));
        }
    }
    s
}

/// Replaces the text between the bench markers of `path` with `body`.
fn replace_between_markers(path: &std::path::Path, tag: &str, body: &str) -> Result<(), String> {
    let (begin, end) = (
        format!("<!-- {tag}:begin -->"),
        format!("<!-- {tag}:end -->"),
    );
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (Some(b), Some(e)) = (text.find(&begin), text.find(&end)) else {
        return Err(format!("{}: no {begin} ... {end} markers", path.display()));
    };
    if e < b {
        return Err(format!("{}: {end} before {begin}", path.display()));
    }
    let new = format!(
        "{}{begin}\n<!-- generated by multiproc-bench --write-docs: do not edit by hand -->\n{}\n{}",
        &text[..b],
        body.trim_end(),
        &text[e..]
    );
    std::fs::write(path, new).map_err(|e| format!("{}: {e}", path.display()))
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
    let command = format!(
        "cargo run --release -p multiproc-bench -- {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    )
    .trim_end()
    .to_string();
    let mut info = RunInfo {
        date: utc_now(),
        load: args.load,
        loadavg: (loadavg(), String::new()),
        clock_ns: lat::clock_ns(),
        command,
        quick: args.quick,
    };
    let spinners = load::start(args.load);
    let mut results = Vec::new();
    w_sync::run(&cfg, &mut results);
    w_sync2::run(&cfg, &mut results);
    w_objects::run(&cfg, &mut results);
    w_dict::run(&cfg, &mut results);
    w_channel::run(&cfg, &mut results);
    w_ring::run(&cfg, &mut results);
    w_process::run(&cfg, &mut results);
    w_pool::run(&cfg, &mut results);
    w_redis::run(&cfg, &mut results);
    w_async::run(&cfg, &mut results);
    info.loadavg.1 = loadavg();
    eprintln!("stopping {} load spinner(s)", spinners.count());
    drop(spinners);
    let fails = failures();
    let mut goals = goals::evaluate(&results, args.load, &fails);
    if args.only.is_some() {
        // A partial run: leave out the goals whose figures it did not measure.
        goals.retain(|g| g.holds.is_some());
    }
    if let Some(dir) = &args.plot {
        match plot::write(dir, &results, &info) {
            Ok(files) => eprintln!("plots: {}", files.join(", ")),
            Err(e) => eprintln!("plots: {e}"),
        }
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let m = machine();
        let doc = serde_json::json!({
            "machine": m,
            "date": info.date,
            "load": info.load,
            "loadavg": [info.loadavg.0, info.loadavg.1],
            "clock_ns": info.clock_ns,
            "command": info.command,
            "quick": info.quick,
            "results": results,
            "goals": goals::to_json(&goals),
            "failures": fails,
        });
        let _ = writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(&doc).expect("json")
        );
    } else {
        let md = args.markdown;
        let _ = write!(stdout, "{}", header(&info, md));
        let _ = write!(stdout, "{}", table(&results, md));
        let _ = write!(stdout, "\n{}", goals::render(&goals, md));
    }
    if args.write_docs {
        let table_md = table(&results, true);
        let goals_md = goals::render(&goals, true);
        let docs = format!("{}{table_md}\n{goals_md}", header(&info, true));
        let readme = format!(
            "{}{goals_md}\n<details><summary>The whole table of this run</summary>\n\n{table_md}\n</details>\n",
            header(&info, true)
        );
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        // A quiet run fills the `bench` markers of README and docs/benchmarks.md; a `--load N`
        // run fills the `bench-load` markers of docs/benchmarks.md, so both tables can stand.
        let (tag, files): (&str, &[(&str, &String)]) = if info.load == 0 {
            (
                "bench",
                &[("README.md", &readme), ("docs/benchmarks.md", &docs)],
            )
        } else {
            ("bench-load", &[("docs/benchmarks.md", &docs)])
        };
        for &(f, body) in files {
            match replace_between_markers(&root.join(f), tag, body) {
                Ok(()) => eprintln!("wrote {f}"),
                Err(e) => {
                    eprintln!("--write-docs: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_replace_only_between() {
        let dir = std::env::temp_dir().join(format!("mp-bench-md-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("x.md");
        std::fs::write(
            &f,
            "head\n<!-- bench:begin -->\nold\n<!-- bench:end -->\ntail\n",
        )
        .expect("w");
        replace_between_markers(&f, "bench", "new table\n").expect("replace");
        let s = std::fs::read_to_string(&f).expect("r");
        assert!(s.starts_with("head\n<!-- bench:begin -->\n"));
        assert!(s.contains("new table\n<!-- bench:end -->\ntail\n"));
        assert!(!s.contains("old"));
        std::fs::write(&f, "no markers").expect("w");
        assert!(replace_between_markers(&f, "bench", "x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fold_reads_every_byte() {
        for len in [0usize, 1, 7, 8, 9, 64, 4096] {
            let a = vec![0u8; len];
            for i in 0..len {
                let mut b = a.clone();
                b[i] = 1;
                assert_ne!(w_ring::fold(&a), w_ring::fold(&b), "len {len} byte {i}");
            }
        }
    }

    #[test]
    fn ratio_base_is_same_mode() {
        let r = vec![
            Record::new("w", "multiproc", 1.0, "us").with_mode("spin"),
            Record::new("w", "multiproc", 10.0, "us").with_mode("block"),
            Record::new("w", "peer", 20.0, "us").with_mode("block"),
        ];
        let b = base_of(&r, &r[2]).expect("base");
        assert_eq!(b.mode, "block");
        assert_eq!(ratio(b, &r[2]), Some(2.0));
    }
}

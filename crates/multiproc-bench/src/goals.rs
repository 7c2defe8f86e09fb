//! The goals of issue 14 (and issue 13's pool goals, when the pool rows ran, and issue 15's
//! async goal), evaluated from the run's own figures: each holds or does not, with the two
//! figures it compares.

use crate::Record;

/// One evaluated goal.
pub struct Goal {
    /// Issue number.
    pub issue: u32,
    /// The goal, as the issue states it.
    pub text: String,
    /// Holds / does not hold; `None` when a figure is missing from this run.
    pub holds: Option<bool>,
    /// The figures compared.
    pub figures: String,
}

struct Rs<'a>(&'a [Record]);

impl Rs<'_> {
    fn get(&self, w: &str, sys: &str, mode: &str, unit: &str) -> Option<f64> {
        self.0
            .iter()
            .find(|r| r.workload == w && r.system == sys && r.mode == mode && r.unit == unit)
            .map(|r| r.value)
    }

    /// A latency in ns (rows are in ns or us).
    fn ns(&self, w: &str, sys: &str, mode: &str) -> Option<f64> {
        self.get(w, sys, mode, "ns")
            .or_else(|| self.get(w, sys, mode, "us").map(|v| v * 1e3))
    }
}

fn fmt(v: f64) -> String {
    crate::fmt_value(v)
}

/// `a >= k * b` (rates: higher is better).
fn at_least(issue: u32, text: &str, a: Option<f64>, b: Option<f64>, k: f64, unit: &str) -> Goal {
    let (holds, figures) = match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => (
            Some(a >= k * b),
            format!("{} vs {} {unit} ({:.2}x)", fmt(a), fmt(b), a / b),
        ),
        _ => (None, "not measured in this run".into()),
    };
    Goal {
        issue,
        text: text.into(),
        holds,
        figures,
    }
}

/// `a <= k * b` (latencies: lower is better).
fn at_most(issue: u32, text: &str, a: Option<f64>, b: Option<f64>, k: f64, unit: &str) -> Goal {
    let (holds, figures) = match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => (
            Some(a <= k * b),
            format!("{} vs {} {unit} ({:.2}x)", fmt(a), fmt(b), a / b),
        ),
        _ => (None, "not measured in this run".into()),
    };
    Goal {
        issue,
        text: text.into(),
        holds,
        figures,
    }
}

/// Every goal that applies to a run with `load` spinners.
pub fn evaluate(results: &[Record], load: usize, failures: &[String]) -> Vec<Goal> {
    let r = Rs(results);
    let mut g = Vec::new();
    let mps = |w: &str, s: &str| r.get(w, s, "", "msgs/s");
    if load == 0 {
        g.push(at_least(
            14,
            "pipe_stream_8B ≥ 2x uds-postcard",
            mps("pipe_stream_8B", "multiproc"),
            mps("pipe_stream_8B", "uds-postcard"),
            2.0,
            "msgs/s",
        ));
        g.push(at_least(
            14,
            "pipe_stream_8B ≥ 0.5x the ring's one-by-one stream_8B",
            mps("pipe_stream_8B", "multiproc"),
            mps("stream_8B", "multiproc-1by1"),
            0.5,
            "msgs/s",
        ));
        // Like for like: uds-postcard writes through a 256 KiB `BufWriter`, so its peer is
        // the Pipe's batched writer (`send_bytes_batched`, one `flush` at the end).
        g.push(at_least(
            14,
            "pipe_stream_8B batched (like uds-postcard's BufWriter) ≥ 2x uds-postcard",
            mps("pipe_stream_8B", "multiproc-batched"),
            mps("pipe_stream_8B", "uds-postcard"),
            2.0,
            "msgs/s",
        ));
        g.push(at_least(
            14,
            "pipe_stream_8B batched ≥ 0.5x the ring's one-by-one stream_8B",
            mps("pipe_stream_8B", "multiproc-batched"),
            mps("stream_8B", "multiproc-1by1"),
            0.5,
            "msgs/s",
        ));
        g.push(at_most(
            14,
            "pipe_rtt_small (spin) ≤ 2x rtt_8B_spin",
            r.ns("pipe_rtt_small", "multiproc", "spin"),
            r.ns("rtt_8B_spin", "multiproc", "spin"),
            2.0,
            "ns",
        ));
        g.push(at_most(
            14,
            "pipe_rtt_small (block) ≤ uds-postcard (block)",
            r.ns("pipe_rtt_small", "multiproc", "block"),
            r.ns("pipe_rtt_small", "uds-postcard", "block"),
            1.0,
            "ns",
        ));
        g.push(at_most(
            14,
            "rtt_8B_spin ≤ 2.5x floor",
            r.ns("rtt_8B_spin", "multiproc", "spin"),
            r.ns("rtt_8B_spin", "floor", "spin"),
            2.5,
            "ns",
        ));
        for w in ["queue_spsc_small", "queue_mpmc_2p2c_small"] {
            g.push(at_least(
                14,
                &format!("{w} ≥ 100x python-mp"),
                mps(w, "multiproc"),
                mps(w, "python-mp"),
                100.0,
                "msgs/s",
            ));
        }
        for w in ["stream_8B", "stream_64B", "stream_4KiB", "stream_64KiB"] {
            let mp = r
                .get(w, "multiproc", "", "B/s")
                .or_else(|| r.get(w, "multiproc-loan", "", "B/s"));
            for peer in ["iceoryx2-loan", "uds-postcard"] {
                g.push(at_least(
                    14,
                    &format!("{w} ≥ {peer} (same work: every byte written and read)"),
                    mp,
                    r.get(w, peer, "", "B/s"),
                    1.0,
                    "B/s",
                ));
            }
        }
        for w in [
            "pipe_stream_8B",
            "pipe_stream_64B",
            "pipe_stream_4KiB",
            "pipe_stream_64KiB",
        ] {
            g.push(at_least(
                14,
                &format!("{w} ≥ uds-postcard (same work)"),
                mps(w, "multiproc"),
                mps(w, "uds-postcard"),
                1.0,
                "msgs/s",
            ));
        }
        for w in ["queue_spsc_small", "queue_mpmc_2p2c_small"] {
            g.push(at_least(
                14,
                &format!("{w} ≥ 1.0x crossbeam-channel between threads"),
                mps(w, "multiproc"),
                mps(w, "crossbeam-threads"),
                1.0,
                "msgs/s",
            ));
        }
        g.push(at_least(
            14,
            "value_lock_incr ≥ 0.9x raw_sync",
            r.get("value_lock_incr", "multiproc", "", "ops/s"),
            r.get("value_lock_incr", "raw_sync-shmem", "", "ops/s"),
            0.9,
            "ops/s",
        ));
        pool_goals(&r, &mut g);
    } else {
        g.push(at_least(
            14,
            "(load) pipe_stream_8B ≥ uds-postcard",
            mps("pipe_stream_8B", "multiproc"),
            mps("pipe_stream_8B", "uds-postcard"),
            1.0,
            "msgs/s",
        ));
        g.push(at_least(
            14,
            "(load) pipe_stream_8B batched ≥ uds-postcard",
            mps("pipe_stream_8B", "multiproc-batched"),
            mps("pipe_stream_8B", "uds-postcard"),
            1.0,
            "msgs/s",
        ));
        g.push(at_most(
            14,
            "(load) rtt_8B_blocking ≤ uds-postcard",
            r.ns("rtt_8B_blocking", "multiproc", "block"),
            r.ns("rtt_8B_blocking", "uds-postcard", "block"),
            1.0,
            "ns",
        ));
        for peer in ["uds-postcard", "python-mp"] {
            g.push(at_most(
                14,
                &format!("(load) pipe_rtt_small (block) ≤ {peer}"),
                r.ns("pipe_rtt_small", "multiproc", "block"),
                r.ns("pipe_rtt_small", peer, "block"),
                1.0,
                "ns",
            ));
        }
        g.push(at_least(
            14,
            "(load) queue_spsc_small ≥ 50x python-mp",
            mps("queue_spsc_small", "multiproc"),
            mps("queue_spsc_small", "python-mp"),
            50.0,
            "msgs/s",
        ));
    }
    if load == 0 {
        g.push(at_most(
            15,
            "async_rtt: multiproc (async) ≤ 0.5x tokio-uds-postcard",
            r.ns("async_rtt", "multiproc", "async"),
            r.ns("async_rtt", "tokio-uds-postcard", "async"),
            0.5,
            "ns",
        ));
        g.push(at_most(
            15,
            "async_rtt: multiproc (async-spin) ≤ 0.5x tokio-uds-postcard",
            r.ns("async_rtt", "multiproc", "async-spin"),
            r.ns("async_rtt", "tokio-uds-postcard", "async"),
            0.5,
            "ns",
        ));
    }
    g.push(Goal {
        issue: 14,
        text: "no workload fails or stalls".into(),
        holds: Some(failures.is_empty()),
        figures: if failures.is_empty() {
            "0 failures".into()
        } else {
            format!("{} failed: {}", failures.len(), failures.join("; "))
        },
    });
    g
}

fn pool_goals(r: &Rs<'_>, g: &mut Vec<Goal>) {
    let has = |w: &str| r.0.iter().any(|x| x.workload == w);
    for (w, k) in [("pool_map_1M_trivial", 20.0), ("pool_apply_async", 30.0)] {
        if has(w) {
            let unit = if w == "pool_apply_async" {
                "tasks/s"
            } else {
                "items/s"
            };
            g.push(at_least(
                13,
                &format!("{w} ≥ {k}x python-mp"),
                r.get(w, "multiproc", "", unit),
                r.get(w, "python-mp", "", unit),
                k,
                unit,
            ));
        }
    }
    for w in ["pool_map_heavy", "pool_map_heavy_chunk1"] {
        if has(w) {
            // time ≤ 1.10x rayon's  <=>  rate ≥ rayon's / 1.10
            g.push(at_least(
                13,
                &format!("{w}: multiproc time ≤ 1.10x rayon's"),
                r.get(w, "multiproc", "", "items/s"),
                r.get(w, "rayon", "", "items/s"),
                1.0 / 1.10,
                "items/s",
            ));
        }
    }
    let balance: Vec<&Record> =
        r.0.iter()
            .filter(|x| x.workload.starts_with("pool_balance") && x.unit == "max/min")
            .collect();
    if !balance.is_empty() {
        let worst = balance.iter().map(|x| x.value).fold(0.0, f64::max);
        g.push(Goal {
            issue: 13,
            text: "pool_balance: max/min ≤ 1.25 for equal items, every call".into(),
            holds: Some(worst <= 1.25),
            figures: format!("worst {worst:.2} over {} calls", balance.len()),
        });
    }
    if has("pool_apply_rtt") {
        g.push(at_most(
            13,
            "pool_apply_rtt ≤ 3x pipe_rtt_small in the same wait mode (the default, spin-park)",
            r.ns("pool_apply_rtt", "multiproc", ""),
            r.ns("pipe_rtt_small", "multiproc", "spin-park"),
            3.0,
            "ns",
        ));
        for mode in ["spin", "block"] {
            if r.ns("pool_apply_rtt", "multiproc", mode).is_some() {
                g.push(at_most(
                    13,
                    &format!("pool_apply_rtt ≤ 3x pipe_rtt_small in the same wait mode ({mode})"),
                    r.ns("pool_apply_rtt", "multiproc", mode),
                    r.ns("pipe_rtt_small", "multiproc", mode),
                    3.0,
                    "ns",
                ));
            }
        }
    }
}

/// The goals as text or Markdown.
pub fn render(goals: &[Goal], markdown: bool) -> String {
    let mut s = String::from(if markdown {
        "Goals (issues 13, 14 and 15), from this run's own figures:\n\n"
    } else {
        "goals (issues 13, 14 and 15), from this run's own figures:\n"
    });
    for g in goals {
        let v = match g.holds {
            Some(true) => "holds",
            Some(false) => "does not hold",
            None => "n/a",
        };
        if markdown {
            s.push_str(&format!(
                "- #{} {}: **{v}** ({})\n",
                g.issue, g.text, g.figures
            ));
        } else {
            s.push_str(&format!(
                "  [{v:>13}] #{} {}: {}\n",
                g.issue, g.text, g.figures
            ));
        }
    }
    s
}

/// The goals for `--json`.
pub fn to_json(goals: &[Goal]) -> serde_json::Value {
    goals
        .iter()
        .map(|g| {
            serde_json::json!({
                "issue": g.issue, "goal": g.text, "holds": g.holds, "figures": g.figures
            })
        })
        .collect()
}

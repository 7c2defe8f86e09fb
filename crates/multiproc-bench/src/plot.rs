//! `--plot DIR`: SVG charts of a run (plotters, SVG backend only).
//!
//! - `rtt_<workload>.svg`: p50, p99, p99.9 and max of each system and mode (log scale).
//! - `streams_<family>.svg`: bytes/s per message size of each system (log-log), for the ring
//!   streams (`stream_*`) and the Pipe streams (`pipe_stream_*`).
//!
//! The load of the run is in every title, so charts of a quiet run and of a `--load N` run can
//! be told apart side by side.

use crate::{Record, RunInfo};
use plotters::prelude::*;
use std::path::Path;

type Res<T> = Result<T, String>;

fn e<T: std::fmt::Display>(x: T) -> String {
    x.to_string()
}

/// Writes every chart; returns the files written.
pub fn write(dir: &Path, results: &[Record], info: &RunInfo) -> Res<Vec<String>> {
    std::fs::create_dir_all(dir).map_err(|x| format!("{}: {x}", dir.display()))?;
    let load = if info.load == 0 {
        "no load".to_string()
    } else {
        format!("--load {}", info.load)
    };
    let mut files = Vec::new();
    let mut rtt: Vec<&str> = Vec::new();
    for r in results.iter().filter(|r| r.p50.is_some()) {
        if !rtt.contains(&r.workload.as_str()) {
            rtt.push(&r.workload);
        }
    }
    for w in rtt {
        let rows: Vec<&Record> = results
            .iter()
            .filter(|r| r.workload == w && r.p50.is_some())
            .collect();
        let path = dir.join(format!("rtt_{w}.svg"));
        rtt_chart(&path, &format!("{w}: round trip ({load})"), &rows)?;
        files.push(path.display().to_string());
    }
    for (family, prefix) in [("ring", "stream_"), ("pipe", "pipe_stream_")] {
        let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for r in results {
            let Some(size) = r.workload.strip_prefix(prefix).and_then(size_of) else {
                continue;
            };
            let bps = match r.unit.as_str() {
                "B/s" => r.value,
                "MB/s" => r.value * 1e6,
                _ => continue,
            };
            match series.iter_mut().find(|(s, _)| *s == r.system) {
                Some((_, pts)) => pts.push((size, bps)),
                None => series.push((r.system.clone(), vec![(size, bps)])),
            }
        }
        if series.is_empty() {
            continue;
        }
        let path = dir.join(format!("streams_{family}.svg"));
        stream_chart(
            &path,
            &format!("{prefix}*: bytes/s per message size ({load})"),
            &series,
        )?;
        files.push(path.display().to_string());
    }
    Ok(files)
}

fn size_of(s: &str) -> Option<f64> {
    if let Some(k) = s.strip_suffix("KiB") {
        k.parse::<f64>().ok().map(|k| k * 1024.0)
    } else {
        s.strip_suffix('B').and_then(|b| b.parse::<f64>().ok())
    }
}

fn bounds(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = vals
        .filter(|v| *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(l, h), v| (l.min(v), h.max(v)));
    if lo.is_finite() {
        (lo / 1.5, hi * 1.5)
    } else {
        (1.0, 10.0)
    }
}

fn rtt_chart(path: &Path, title: &str, rows: &[&Record]) -> Res<()> {
    let unit = rows.first().map(|r| r.unit.clone()).unwrap_or_default();
    let pts = |r: &Record| -> Vec<(f64, f64)> {
        [r.p50, r.p99, r.p999, r.max]
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.filter(|v| *v > 0.0).map(|v| (i as f64, v)))
            .collect()
    };
    let (lo, hi) = bounds(rows.iter().flat_map(|r| pts(r)).map(|p| p.1));
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.2f64..3.2f64, (lo..hi).log_scale())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_labels(4)
        .x_label_formatter(&|x| {
            ["p50", "p99", "p99.9", "max"]
                .get(x.round() as usize)
                .filter(|_| (x - x.round()).abs() < 0.01)
                .map(|s| s.to_string())
                .unwrap_or_default()
        })
        .y_desc(unit)
        .draw()
        .map_err(e)?;
    for (i, r) in rows.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let name = format!("{} ({})", r.system, r.mode);
        chart
            .draw_series(LineSeries::new(pts(r), color.stroke_width(2)))
            .map_err(e)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(
                pts(r)
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

fn stream_chart(path: &Path, title: &str, series: &[(String, Vec<(f64, f64)>)]) -> Res<()> {
    let (lo, hi) = bounds(series.iter().flat_map(|(_, p)| p.iter().map(|p| p.1)));
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d((4f64..131_072f64).log_scale(), (lo..hi).log_scale())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("message size (bytes)")
        .y_desc("bytes/s")
        .draw()
        .map_err(e)?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mut pts = pts.clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(e)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

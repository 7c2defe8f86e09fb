//! `multiproc`: list, inspect and clean multiproc's named shared-memory segments.
//!
//! ```text
//! multiproc ls [--json]            every /dev/shm/multiproc.* segment: name, kind, type, size, creator, alive?,
//!                                  and live state (queue depth, ring bytes pending and sides, lock holder,
//!                                  a value's content, an array's length, a dict's or list's length)
//! multiproc inspect NAME [--json]  the header of one segment, checked field by field, and its live state
//! multiproc clean [--dry-run] [--prefix P] [--persistent]
//!                                  unlink segments whose creator is dead (pid + start time); persistent
//!                                  segments (made to outlive their creator) only with --persistent
//! ```
//!
//! Live state is a snapshot read without taking the object's lock (a value being written may
//! show torn bytes). A lock's holder is shown with its pid (a `Value`/`Array` lock records the
//! holding thread) and whether it is alive: a dead holder shows as `held by dead pid N`.
//! Exit codes: 0 ok, 1 error (message on stderr), 2 usage.

use clap::{Parser, Subcommand};
use multiproc_shm::header::{HEADER_SIZE, Header, LAYOUT_VERSION, MAGIC};
use multiproc_shm::{
    Expect, NAME_PREFIX, ObjectKind, Segment, ShmError, Staleness, TypeFingerprint,
    clean_stale_with, list_named, read_header_named,
};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "multiproc",
    version,
    about = "List, inspect and clean multiproc shared-memory segments"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List every named segment of ours.
    Ls {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show one segment's header (NAME without the `multiproc.` prefix; the prefix is accepted too).
    Inspect {
        /// The segment's name.
        name: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Unlink segments whose creator is dead (or that were abandoned half-made).
    Clean {
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Also unlink persistent segments whose creator is dead (they are made to outlive it
        /// and are left alone otherwise).
        #[arg(long)]
        persistent: bool,
        /// Only segments whose name (without `multiproc.`) starts with this.
        #[arg(long)]
        prefix: Option<String>,
    },
}

fn user_name(full: &str) -> &str {
    full.strip_prefix(NAME_PREFIX).unwrap_or(full)
}

fn status(st: &Staleness) -> String {
    match st {
        Staleness::Alive(_) => "alive".into(),
        Staleness::CreatorDead(_) => "dead (stale)".into(),
        Staleness::Abandoned => "abandoned".into(),
        Staleness::Creating => "creating".into(),
        Staleness::Foreign => "unreadable".into(),
    }
}

fn header_json(name: &str, h: &Header, st: Option<&Staleness>) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "kind": h.object_kind().map(|k| k.name().to_string()).unwrap_or_else(|| format!("unknown({})", h.kind)),
        "type": h.type_name(),
        "type_size": h.type_size,
        "type_align": h.type_align,
        "total_size": h.total_size,
        "payload_size": h.payload_size,
        "creator_pid": h.creator_pid,
        "creator_start_time": h.creator_start_time,
        "creator": st.map(status),
        "init_state": match h.init_state { 0 => "creating", 1 => "ready", 2 => "failed", _ => "invalid" },
        "persistent": h.is_persistent(),
        "magic_ok": h.magic == MAGIC,
        "version": h.version,
    })
}

/// Opens a named segment validated by kind only: the fingerprint is the one its header states
/// (the element type is unknown to the tool). A truncated type name fails the hash check: then
/// the live state is reported as unavailable.
fn open_by_header(name: &str, h: &Header, kind: ObjectKind) -> Result<Segment, String> {
    let n = (h.type_name_len as usize).min(h.type_name.len());
    let type_name: &'static str = Box::leak(
        String::from_utf8_lossy(&h.type_name[..n])
            .into_owned()
            .into_boxed_str(),
    );
    let fp = TypeFingerprint {
        name: type_name,
        size: h.type_size,
        align: h.type_align,
    };
    Segment::open_named(name, &Expect::new(kind, fp)).map_err(|e| e.to_string())
}

fn side_json(s: &multiproc_ring::spsc::SideStats) -> serde_json::Value {
    serde_json::json!({ "pid": s.pid, "attached": s.pid != 0, "alive": s.alive, "closed": s.closed })
}

/// The live state of one object, where the tool knows how to read it (`None`: no live state
/// for this kind).
fn live_state(name: &str, h: &Header) -> Option<serde_json::Value> {
    if h.init_state != 1 {
        return None;
    }
    let kind = h.object_kind()?;
    let r: Result<serde_json::Value, String> = match kind {
        ObjectKind::Queue => open_by_header(name, h, kind).and_then(|seg| {
            let s = multiproc_channel::queue::stats_of(&seg).map_err(|e| e.to_string())?;
            Ok(serde_json::json!({
                "depth": s.depth,
                "maxsize": s.maxsize,
                "unfinished": s.unfinished,
            }))
        }),
        ObjectKind::SpscRing => open_by_header(name, h, kind).and_then(|seg| {
            let s = multiproc_ring::spsc::stats_of(&seg).map_err(|e| e.to_string())?;
            Ok(serde_json::json!({
                "pending_bytes": s.pending_bytes,
                "capacity": s.capacity,
                "producer": side_json(&s.producer),
                "consumer": side_json(&s.consumer),
            }))
        }),
        ObjectKind::MpmcRing => multiproc_ring::MpmcRing::open_named(name)
            .map(|r| {
                serde_json::json!({
                    "pending_slots": r.pending(),
                    "slots": r.slots(),
                    "lost_records": r.lost_records(),
                    "closed": r.is_closed(),
                })
            })
            .map_err(|e| e.to_string()),
        ObjectKind::Value | ObjectKind::Array => open_by_header(name, h, kind).and_then(|seg| {
            let holder =
                multiproc_sync::inspect::lock_of(seg.clone()).map_err(|e| e.to_string())?;
            let mut v = match holder {
                None => serde_json::json!({ "locked": false }),
                Some(hd) => {
                    let mut v = serde_json::json!({
                        "locked": true,
                        "holder_tid": hd.tid,
                        "holder_alive": hd.alive,
                    });
                    if hd.alive
                        && let Some(pid) = tgid_of(hd.tid)
                    {
                        v["holder_pid"] = pid.into();
                    }
                    v
                }
            };
            let type_name = h.type_name();
            if kind == ObjectKind::Value {
                match multiproc_sync::inspect::value_bytes_of(seg) {
                    Ok(b) => {
                        v["value_hex"] = hex(&b).into();
                        if let Some(x) = decode_as(&type_name, &b) {
                            v["value"] = x;
                        }
                        if let Ok(a) = <[u8; 8]>::try_from(b.as_slice()) {
                            v["as_u64"] = u64::from_ne_bytes(a).into();
                            v["as_i64"] = i64::from_ne_bytes(a).into();
                            let f = f64::from_ne_bytes(a);
                            v["as_f64"] = if f.is_finite() {
                                f.into()
                            } else {
                                f.to_string().into()
                            };
                        }
                    }
                    Err(e) => v["value_unavailable"] = e.to_string().into(),
                }
            } else {
                match multiproc_sync::inspect::array_of(seg, ARRAY_SHOWN) {
                    Ok(a) => {
                        v["len"] = a.len.into();
                        let size = a.elem_size as usize;
                        let elems: Vec<serde_json::Value> = if size == 0 {
                            Vec::new()
                        } else {
                            a.first
                                .chunks(size)
                                .map(|c| decode_as(&type_name, c).unwrap_or_else(|| hex(c).into()))
                                .collect()
                        };
                        v["first"] = elems.into();
                    }
                    Err(e) => v["array_unavailable"] = e.to_string().into(),
                }
            }
            Ok(v)
        }),
        ObjectKind::Lock => multiproc_sync::Lock::open_named(name)
            .map(|l| {
                let mut v = serde_json::json!({ "locked": l.is_locked() });
                if let Some(hd) = l.holder() {
                    v["holder_pid"] = hd.tid.into();
                    v["holder_alive"] = hd.alive.into();
                }
                v
            })
            .map_err(|e| e.to_string()),
        ObjectKind::Dict | ObjectKind::List => open_by_header(name, h, kind).and_then(|seg| {
            let n = multiproc_collections::inspect::len_of(seg).map_err(|e| e.to_string())?;
            Ok(serde_json::json!({ "entries": n }))
        }),
        _ => return None,
    };
    Some(r.unwrap_or_else(|e| serde_json::json!({ "unavailable": e })))
}

/// How many array elements `ls`/`inspect` show.
const ARRAY_SHOWN: usize = 8;

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The value of `bytes` read as the primitive type `type_name` names (native endianness), if it
/// is one and the sizes match.
fn decode_as(type_name: &str, b: &[u8]) -> Option<serde_json::Value> {
    macro_rules! int {
        ($t:ty) => {
            <[u8; std::mem::size_of::<$t>()]>::try_from(b)
                .ok()
                .map(|a| serde_json::Value::from(<$t>::from_ne_bytes(a)))
        };
    }
    let float = |f: f64| {
        if f.is_finite() {
            serde_json::Value::from(f)
        } else {
            serde_json::Value::from(f.to_string())
        }
    };
    match type_name {
        "u8" => int!(u8),
        "u16" => int!(u16),
        "u32" => int!(u32),
        "u64" => int!(u64),
        "usize" => int!(usize),
        "i8" => int!(i8),
        "i16" => int!(i16),
        "i32" => int!(i32),
        "i64" => int!(i64),
        "isize" => int!(isize),
        "f32" => <[u8; 4]>::try_from(b)
            .ok()
            .map(|a| float(f32::from_ne_bytes(a) as f64)),
        "f64" => <[u8; 8]>::try_from(b)
            .ok()
            .map(|a| float(f64::from_ne_bytes(a))),
        "bool" => match b {
            [0] => Some(false.into()),
            [1] => Some(true.into()),
            _ => None,
        },
        _ => None,
    }
}

/// The process (thread group) a live thread id belongs to, from `/proc/TID/status`.
fn tgid_of(tid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn json_text(v: &serde_json::Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// One short line of live state for `ls`.
fn live_summary(v: &serde_json::Value) -> String {
    if let Some(e) = v.get("unavailable") {
        return format!("unavailable ({})", e.as_str().unwrap_or("?"));
    }
    if let Some(n) = v.get("entries") {
        return format!("{n} entries");
    }
    if let Some(d) = v.get("depth") {
        return format!("depth {}/{}", d, v["maxsize"]);
    }
    if let Some(p) = v.get("pending_slots") {
        let closed = if v["closed"].as_bool() == Some(true) {
            ", closed"
        } else {
            ""
        };
        return format!(
            "pending {}/{} slots, {} lost{closed}",
            p, v["slots"], v["lost_records"]
        );
    }
    if let Some(l) = v.get("locked") {
        let lock = match (
            l.as_bool(),
            v.get("holder_tid"),
            v.get("holder_pid"),
            v["holder_alive"].as_bool(),
        ) {
            // A Value/Array lock: it records the holding thread.
            (Some(true), Some(t), Some(p), Some(true)) if t == p => format!("lock held by pid {p}"),
            (Some(true), Some(t), Some(p), Some(true)) => {
                format!("lock held by pid {p} (thread {t})")
            }
            (Some(true), Some(t), None, Some(true)) => format!("lock held by thread {t}"),
            (Some(true), Some(t), _, _) => {
                format!("lock held by dead thread {t} (next locker takes over)")
            }
            // A Lock: it records the holding process.
            (Some(true), None, Some(p), Some(true)) => format!("lock held by pid {p}"),
            (Some(true), None, Some(p), _) => {
                format!("lock held by dead pid {p} (next locker takes over)")
            }
            (Some(true), ..) => "lock held (through acquire(): no owner recorded)".into(),
            _ => "lock free".into(),
        };
        let mut parts = vec![lock];
        if let Some(x) = v.get("value").or_else(|| v.get("as_i64")) {
            parts.push(format!("value {}", json_text(x)));
        } else if let Some(x) = v.get("value_hex") {
            parts.push(format!("bytes {}", json_text(x)));
        }
        if let Some(n) = v.get("len") {
            let first: Vec<String> = v["first"]
                .as_array()
                .map(|a| a.iter().map(json_text).collect())
                .unwrap_or_default();
            let more = if n.as_u64().unwrap_or(0) > first.len() as u64 {
                ", .."
            } else {
                ""
            };
            parts.push(format!("len {n} [{}{more}]", first.join(", ")));
        }
        return parts.join(", ");
    }
    if let Some(p) = v.get("pending_bytes") {
        let side = |s: &serde_json::Value| {
            if s["pid"].as_u64().unwrap_or(0) == 0 {
                "-".to_string()
            } else if s["alive"].as_bool() == Some(true) {
                format!("{} alive", s["pid"])
            } else if s["closed"].as_bool() == Some(true) {
                format!("{} closed", s["pid"])
            } else {
                format!("{} dead", s["pid"])
            }
        };
        return format!(
            "pending {}B, producer {}, consumer {}",
            p,
            side(&v["producer"]),
            side(&v["consumer"])
        );
    }
    String::new()
}

fn ls(json: bool) -> Result<(), String> {
    let entries = list_named().map_err(|e| format!("cannot read /dev/shm: {e}"))?;
    let mut rows = Vec::new();
    for (full, st) in &entries {
        let name = user_name(full);
        match read_header_named(name) {
            Ok(h) => {
                let mut row = header_json(name, &h, Some(st));
                if let Some(live) = live_state(name, &h) {
                    row["live"] = live;
                }
                rows.push(row);
            }
            Err(e) => rows.push(
                serde_json::json!({ "name": name, "error": e.to_string(), "creator": status(st) }),
            ),
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows).expect("json"));
        return Ok(());
    }
    if rows.is_empty() {
        println!("no multiproc segments in /dev/shm");
        return Ok(());
    }
    // Column widths from the widest cell (long type names must not push later columns).
    let cells: Vec<Result<[String; 7], [String; 2]>> = rows
        .iter()
        .map(|r| {
            let s = |k: &str| json_text(&r[k]);
            if r.get("error").is_some() {
                return Err([s("name"), s("error")]);
            }
            let creator = if r["persistent"].as_bool() == Some(true) {
                format!("{}, persistent", s("creator"))
            } else {
                s("creator")
            };
            Ok([
                s("name"),
                s("kind"),
                s("type"),
                s("total_size"),
                s("creator_pid"),
                creator,
                r.get("live").map(live_summary).unwrap_or_default(),
            ])
        })
        .collect();
    let titles = ["NAME", "KIND", "TYPE", "SIZE", "PID", "CREATOR", "STATE"];
    let mut w: [usize; 6] = std::array::from_fn(|i| titles[i].len());
    for c in cells.iter().flatten() {
        for (i, wi) in w.iter_mut().enumerate() {
            *wi = (*wi).max(c[i].chars().count());
        }
    }
    let line = |c: &[String; 7]| {
        let pad = |i: usize| w[i].saturating_sub(c[i].chars().count());
        let left = |i: usize| format!("{}{}", c[i], " ".repeat(pad(i)));
        let right = |i: usize| format!("{}{}", " ".repeat(pad(i)), c[i]);
        format!(
            "{} {} {} {} {} {} {}",
            left(0),
            left(1),
            left(2),
            right(3),
            right(4),
            left(5),
            c[6]
        )
        .trim_end()
        .to_string()
    };
    println!("{}", line(&titles.map(String::from)));
    for c in &cells {
        match c {
            Ok(c) => println!("{}", line(c)),
            Err([name, e]) => println!("{name:<w0$} error: {e}", w0 = w[0]),
        }
    }
    Ok(())
}

fn inspect(name: &str, json: bool) -> Result<(), String> {
    let name = user_name(name);
    let h = read_header_named(name).map_err(|e| match e {
        ShmError::NotFound { .. } => {
            format!("no segment named {name:?} (looked for /dev/shm/{NAME_PREFIX}{name})")
        }
        other => other.to_string(),
    })?;
    let st = multiproc_shm::staleness_of(&format!("{NAME_PREFIX}{name}")).ok();
    let file_size = std::fs::metadata(format!("/dev/shm/{NAME_PREFIX}{name}"))
        .map(|m| m.len())
        .unwrap_or(0);
    let mut doc = header_json(name, &h, st.as_ref());
    doc["file_size"] = file_size.into();
    let live = live_state(name, &h);
    if let Some(l) = &live {
        doc["live"] = l.clone();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
        return Ok(());
    }
    let check = |ok: bool| if ok { "ok" } else { "BAD" };
    println!("segment      {NAME_PREFIX}{name}");
    println!(
        "magic        {:#018x} [{}]",
        h.magic,
        check(h.magic == MAGIC)
    );
    println!(
        "version      {} [{}]",
        h.version,
        check(h.version == LAYOUT_VERSION)
    );
    println!("kind         {}", doc["kind"].as_str().unwrap_or("?"));
    println!(
        "type         {} (size {}, align {}, hash {:#x})",
        h.type_name(),
        h.type_size,
        h.type_align,
        h.type_hash
    );
    println!(
        "size         total {} / file {} [{}]",
        h.total_size,
        file_size,
        check(h.total_size == file_size)
    );
    println!(
        "payload      {} bytes at offset {} [{}]",
        h.payload_size,
        h.payload_offset,
        check(
            h.payload_offset == HEADER_SIZE as u64
                && h.payload_size + HEADER_SIZE as u64 == h.total_size
        )
    );
    println!("init state   {}", doc["init_state"].as_str().unwrap_or("?"));
    println!(
        "creator      pid {} (start time {}): {}",
        h.creator_pid,
        h.creator_start_time,
        st.as_ref().map(status).unwrap_or_else(|| "unknown".into())
    );
    println!(
        "persistent   {}",
        if h.is_persistent() { "yes" } else { "no" }
    );
    if let Some(l) = &live {
        println!("live         {}", live_summary(l));
        if let Some(x) = l.get("value_hex") {
            println!("value bytes  {}", json_text(x));
        }
        if let (Some(u), Some(i), Some(f)) = (l.get("as_u64"), l.get("as_i64"), l.get("as_f64")) {
            println!("as u64/i64   {u} / {i}");
            println!("as f64       {}", json_text(f));
        }
        if let Some(u) = l.get("unfinished") {
            println!("unfinished   {u}");
        }
    }
    Ok(())
}

fn clean(dry_run: bool, persistent: bool, prefix: Option<&str>) -> Result<(), String> {
    let removed = clean_stale_with(dry_run, persistent, |n| {
        prefix.is_none_or(|p| user_name(n).starts_with(p))
    })
    .map_err(|e| format!("cannot clean /dev/shm: {e}"))?;
    let verb = if dry_run { "would remove" } else { "removed" };
    for n in &removed {
        println!("{verb} {n}");
    }
    println!("{} {} stale segment(s)", verb, removed.len());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Ls { json } => ls(json),
        Cmd::Inspect { name, json } => inspect(&name, json),
        Cmd::Clean {
            dry_run,
            persistent,
            prefix,
        } => clean(dry_run, persistent, prefix.as_deref()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("multiproc: {e}");
            ExitCode::FAILURE
        }
    }
}

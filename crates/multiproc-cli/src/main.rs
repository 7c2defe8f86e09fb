//! `multiproc`: list, inspect and clean multiproc's named shared-memory segments.
//!
//! ```text
//! multiproc ls [--json]            every /dev/shm/multiproc.* segment: name, kind, type, size, creator, alive?
//! multiproc inspect NAME [--json]  the header of one segment, checked field by field
//! multiproc clean [--dry-run] [--prefix P]  unlink segments whose creator is dead (pid + start time)
//! ```
//! Exit codes: 0 ok, 1 error (message on stderr), 2 usage.

use clap::{Parser, Subcommand};
use multiproc_shm::header::{HEADER_SIZE, Header, LAYOUT_VERSION, MAGIC};
use multiproc_shm::{NAME_PREFIX, ShmError, Staleness, clean_stale, list_named, read_header_named};
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
        "magic_ok": h.magic == MAGIC,
        "version": h.version,
    })
}

fn ls(json: bool) -> Result<(), String> {
    let entries = list_named().map_err(|e| format!("cannot read /dev/shm: {e}"))?;
    let mut rows = Vec::new();
    for (full, st) in &entries {
        let name = user_name(full);
        match read_header_named(name) {
            Ok(h) => rows.push(header_json(name, &h, Some(st))),
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
    println!(
        "{:<32} {:<10} {:<24} {:>10} {:>8} {:<12}",
        "NAME", "KIND", "TYPE", "SIZE", "PID", "CREATOR"
    );
    for r in rows {
        let s = |k: &str| {
            r[k].as_str()
                .map(str::to_string)
                .unwrap_or_else(|| r[k].to_string())
        };
        if r.get("error").is_some() {
            println!("{:<32} error: {}", s("name"), s("error"));
            continue;
        }
        println!(
            "{:<32} {:<10} {:<24} {:>10} {:>8} {:<12}",
            s("name"),
            s("kind"),
            s("type"),
            s("total_size"),
            s("creator_pid"),
            s("creator")
        );
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
    Ok(())
}

fn clean(dry_run: bool, prefix: Option<&str>) -> Result<(), String> {
    let removed = clean_stale(dry_run, |n| {
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
        Cmd::Clean { dry_run, prefix } => clean(dry_run, prefix.as_deref()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("multiproc: {e}");
            ExitCode::FAILURE
        }
    }
}

//! Runs the `multiproc` binary for real against live and stale segments.

use multiproc::Value;
use multiproc_testutil::{Exit, fork};
use std::process::Command;
use std::time::Duration;

/// How long a forked helper child may take.
const WAIT: Duration = Duration::from_secs(30);

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_multiproc"))
        .args(args)
        .output()
        .expect("run multiproc");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn name(tag: &str) -> String {
    format!("clitest-{tag}-{}", std::process::id())
}

#[test]
fn ls_and_inspect_show_a_live_value() {
    let n = name("live");
    let _v = Value::create_named(&n, 7i64).unwrap();
    let (code, out, err) = run(&["ls"]);
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with(&n))
        .unwrap_or_else(|| panic!("{n} not listed:\n{out}"));
    assert!(
        line.contains("Value") && line.contains("i64") && line.contains("alive"),
        "{line}"
    );

    let (code, out, _) = run(&["inspect", &n, "--json"]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["kind"], "Value");
    assert_eq!(doc["type"], "i64");
    assert_eq!(doc["creator_pid"], std::process::id());
    assert_eq!(doc["init_state"], "ready");
    assert_eq!(doc["creator"], "alive");
}

#[test]
fn clean_removes_only_segments_of_dead_creators() {
    let live = name("keep");
    let dead = name("stale");
    let _v = Value::create_named(&live, 1u8).unwrap();
    // The child creates a segment and leaves without destructors (testutil's `_exit`).
    let mut child = fork(|| match Value::create_named(&dead, 2u8) {
        Ok(v) => {
            std::mem::forget(v);
            0
        }
        Err(_) => 1,
    });
    assert_eq!(child.wait_timeout(WAIT), Exit::Code(0));
    assert!(std::path::Path::new(&format!("/dev/shm/multiproc.{dead}")).exists());

    // Limited to this test's names: other tests may hold deliberately stale segments right now.
    let prefix = "clitest-".to_string();
    let (code, out, _) = run(&["clean", "--dry-run", "--prefix", &prefix]);
    assert_eq!(code, 0);
    assert!(out.contains(&dead) && !out.contains(&live), "{out}");
    assert!(
        std::path::Path::new(&format!("/dev/shm/multiproc.{dead}")).exists(),
        "dry run removed it"
    );

    let (code, out, _) = run(&["clean", "--prefix", &prefix]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("removed multiproc.{dead}")), "{out}");
    assert!(!std::path::Path::new(&format!("/dev/shm/multiproc.{dead}")).exists());
    assert!(std::path::Path::new(&format!("/dev/shm/multiproc.{live}")).exists());
}

#[test]
fn bad_names_and_missing_segments_are_clear_errors() {
    let (code, _, err) = run(&["inspect", "no-such-segment-xyz"]);
    assert_eq!(code, 1);
    assert!(err.contains("no segment named"), "{err}");
    let (code, _, err) = run(&["inspect", "bad/name"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid segment name"), "{err}");
    let (code, _, _) = run(&["frobnicate"]);
    assert_eq!(code, 2);
}

fn ls_line(n: &str) -> String {
    let (code, out, err) = run(&["ls"]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .find(|l| l.starts_with(n))
        .unwrap_or_else(|| panic!("{n} not listed:\n{out}"))
        .to_string()
}

fn inspect_json(n: &str) -> serde_json::Value {
    let (code, out, err) = run(&["inspect", n, "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn ls_and_inspect_show_a_queue_depth() {
    let n = name("queue");
    let q = multiproc::Queue::<u32>::create_named(&n, 8).unwrap();
    for i in 0..3 {
        q.put(i).unwrap();
    }
    let line = ls_line(&n);
    assert!(
        line.contains("Queue") && line.contains("depth 3/8"),
        "{line}"
    );
    let doc = inspect_json(&n);
    assert_eq!(doc["live"]["depth"], 3, "{doc}");
    assert_eq!(doc["live"]["maxsize"], 8, "{doc}");
    let (code, out, _) = run(&["inspect", &n]);
    assert_eq!(code, 0);
    assert!(out.contains("live         depth 3/8"), "{out}");
    eprintln!("{line}\n{out}");

    // The queue's ring segment: slots pending.
    let ring = inspect_json(&format!("{n}.ring"));
    assert_eq!(ring["kind"], "MpmcRing", "{ring}");
    assert_eq!(ring["live"]["pending_slots"], 3, "{ring}");
    assert_eq!(ring["live"]["slots"], 8, "{ring}");
    assert!(ls_line(&format!("{n}.ring")).contains("pending 3/8 slots, 0 lost"));

    q.get().unwrap();
    assert_eq!(inspect_json(&n)["live"]["depth"], 2);
}

#[test]
fn ls_and_inspect_show_a_held_value_lock() {
    let n = name("held");
    let v = Value::create_named(&n, 5i64).unwrap();
    {
        let _g = v.get_lock().unwrap();
        let line = ls_line(&n);
        assert!(line.contains("lock held"), "{line}");
        let live = &inspect_json(&n)["live"];
        assert_eq!(live["locked"], true);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u64;
        assert_eq!(live["holder_tid"], tid, "{live}");
        assert_eq!(live["holder_alive"], true, "{live}");
    }
    let line = ls_line(&n);
    assert!(line.contains("lock free"), "{line}");
    assert_eq!(inspect_json(&n)["live"]["locked"], false);
}

#[test]
fn ls_and_inspect_show_a_held_lock_and_an_array_lock() {
    let n = name("lock");
    let l = multiproc::Lock::create_named(&n).unwrap();
    assert!(l.acquire(true));
    assert!(ls_line(&n).contains("lock held"));
    l.release().unwrap();
    assert_eq!(inspect_json(&n)["live"]["locked"], false);

    let a = name("array");
    let arr = multiproc::Array::create_named_from_slice(&a, &[1u32, 2, 3]).unwrap();
    let g = arr.get_lock().unwrap();
    assert_eq!(inspect_json(&a)["live"]["locked"], true);
    drop(g);
    assert_eq!(inspect_json(&a)["live"]["locked"], false);
}

#[test]
fn ls_shows_a_value_lock_held_by_a_dead_thread() {
    let n = name("deadholder");
    let v = Value::create_named(&n, 5i64).unwrap();
    let v2 = v.clone();
    // A thread that exits holding a leaked guard: the lock word names a dead thread.
    std::thread::spawn(move || std::mem::forget(v2.get_lock().unwrap()))
        .join()
        .unwrap();
    let line = ls_line(&n);
    assert!(line.contains("dead thread"), "{line}");
    assert_eq!(inspect_json(&n)["live"]["holder_alive"], false);
    // The next locker takes it over.
    assert!(matches!(v.get_lock(), Err(multiproc::LockError::OwnerDied)));
}

#[test]
fn ls_and_inspect_show_an_spsc_ring_pending_bytes_and_sides() {
    let n = name("spsc");
    let ring = multiproc::ring::SpscRing::create_named(&n, 4096).unwrap();
    let line = ls_line(&n);
    assert!(
        line.contains("pending 0B, producer -, consumer -"),
        "{line}"
    );
    let mut p = ring.producer().unwrap();
    p.push(&[7u8; 100]).unwrap();
    let doc = inspect_json(&n);
    let live = &doc["live"];
    assert!(live["pending_bytes"].as_u64().unwrap() >= 100, "{doc}");
    assert_eq!(live["producer"]["pid"], std::process::id(), "{doc}");
    assert_eq!(live["producer"]["alive"], true, "{doc}");
    assert_eq!(live["consumer"]["attached"], false, "{doc}");
    let mut c = ring.consumer().unwrap();
    let mut buf = Vec::new();
    c.pop_into(&mut buf).unwrap();
    let doc = inspect_json(&n);
    assert_eq!(doc["live"]["pending_bytes"], 0, "{doc}");
    assert_eq!(doc["live"]["consumer"]["alive"], true, "{doc}");
}

#[test]
fn a_corrupted_queue_control_block_is_reported_not_trusted() {
    use std::os::unix::fs::FileExt;
    let n = name("corrupt");
    let q = multiproc::Queue::<u32>::create_named(&n, 4).unwrap();
    q.put(1).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/multiproc.{n}"))
        .unwrap();
    // The queue's magic is the first word of the payload (offset 256).
    f.write_all_at(&[0xff; 8], 256).unwrap();
    let line = ls_line(&n);
    assert!(
        line.contains("unavailable (") && line.contains("magic"),
        "{line}"
    );
    let doc = inspect_json(&n);
    assert!(doc["live"]["unavailable"].is_string(), "{doc}");
    // Restore it so the queue's own drop path sees a sane segment.
    f.write_all_at(b"MPQUEUE1", 256).unwrap();
}

// ---- issue 16, item 9: content, lengths, holders, column widths; item 7: clean --persistent ----

#[test]
fn inspect_shows_a_values_content() {
    let n = name("content-u64");
    let _v = Value::create_named(&n, 0x0102_0304_0506_0708u64).unwrap();
    let live = &inspect_json(&n)["live"];
    assert_eq!(live["value_hex"], "08 07 06 05 04 03 02 01", "{live}");
    assert_eq!(live["value"], 0x0102_0304_0506_0708u64, "{live}");
    assert_eq!(live["as_u64"], 0x0102_0304_0506_0708u64, "{live}");
    assert!(ls_line(&n).contains("value 72623859790382856"));

    let f = name("content-f64");
    let _fv = Value::create_named(&f, -2.5f64).unwrap();
    let live = &inspect_json(&f)["live"];
    assert_eq!(live["value"], -2.5, "{live}");
    assert_eq!(live["as_f64"], -2.5, "{live}");
    let (code, out, _) = run(&["inspect", &f]);
    assert_eq!(code, 0);
    assert!(
        out.contains("value bytes  00 00 00 00 00 00 04 c0"),
        "{out}"
    );
    assert!(out.contains("as f64       -2.5"), "{out}");

    let s = name("content-i16");
    let _sv = Value::create_named(&s, -3i16).unwrap();
    let live = &inspect_json(&s)["live"];
    assert_eq!(live["value"], -3, "{live}");
    assert_eq!(live["value_hex"], "fd ff", "{live}");
}

#[test]
fn ls_and_inspect_show_an_arrays_length_and_first_elements() {
    let n = name("arrlen");
    let _a =
        multiproc::Array::create_named_from_slice(&n, &(1..=10).collect::<Vec<u32>>()).unwrap();
    let live = &inspect_json(&n)["live"];
    assert_eq!(live["len"], 10, "{live}");
    assert_eq!(
        live["first"],
        serde_json::json!([1, 2, 3, 4, 5, 6, 7, 8]),
        "{live}"
    );
    let line = ls_line(&n);
    assert!(
        line.contains("len 10 [1, 2, 3, 4, 5, 6, 7, 8, ..]"),
        "{line}"
    );
}

#[test]
fn ls_and_inspect_show_a_dicts_and_a_lists_length() {
    let d = name("dict");
    let dict = multiproc::SharedDict::<String, u32>::create_named(&d, 16).unwrap();
    dict.insert(&"a".to_string(), &1).unwrap();
    dict.insert(&"b".to_string(), &2).unwrap();
    assert_eq!(inspect_json(&d)["live"]["entries"], 2);
    assert!(ls_line(&d).contains("2 entries"));

    let l = name("list");
    let list = multiproc::SharedList::<u64>::create_named(&l, 16).unwrap();
    for i in 0..5 {
        list.push(&i).unwrap();
    }
    assert_eq!(inspect_json(&l)["live"]["entries"], 5);
    assert!(ls_line(&l).contains("5 entries"));
}

#[test]
fn a_lock_shows_its_holders_pid_and_a_dead_holder_as_dead() {
    let n = name("lockholder");
    let l = multiproc::Lock::create_named(&n).unwrap();
    {
        let _g = l.lock().unwrap();
        let me = std::process::id();
        let line = ls_line(&n);
        assert!(line.contains(&format!("lock held by pid {me}")), "{line}");
        assert_eq!(inspect_json(&n)["live"]["holder_pid"], me);
    }
    // The child takes the lock, leaks the guard and leaves without destructors.
    let mut child = fork(|| match l.lock() {
        Ok(g) => {
            std::mem::forget(g);
            0
        }
        Err(_) => 1,
    });
    assert_eq!(child.wait_timeout(WAIT), Exit::Code(0));
    let pid = child.pid;
    let line = ls_line(&n);
    assert!(
        line.contains(&format!("lock held by dead pid {pid}")),
        "{line}"
    );
    let live = &inspect_json(&n)["live"];
    assert_eq!(live["holder_pid"], pid, "{live}");
    assert_eq!(live["holder_alive"], false, "{live}");
    // The next locker takes it over.
    assert!(matches!(l.lock(), Err(multiproc::LockError::OwnerDied)));
}

#[test]
fn ls_columns_align_with_long_type_names() {
    let long = name("longtype");
    let short = name("shorttype");
    let _a = Value::create_named(&long, [std::num::Wrapping(1u64); 2]).unwrap();
    let _b = Value::create_named(&short, 1u8).unwrap();
    let (code, out, err) = run(&["ls"]);
    assert_eq!(code, 0, "{err}");
    let header = out.lines().next().unwrap();
    let me = std::process::id().to_string();
    for n in [&long, &short] {
        let line = out.lines().find(|l| l.starts_with(n.as_str())).unwrap();
        assert_eq!(
            line.find(" Value ").map(|i| i + 1),
            header.find("KIND"),
            "{out}"
        );
        let pid_end = line.find(&format!("{me} alive")).unwrap() + me.len();
        assert_eq!(Some(pid_end), header.find("PID").map(|i| i + 3), "{out}");
        assert_eq!(
            line.find(" alive").map(|i| i + 1),
            header.find("CREATOR"),
            "{out}"
        );
    }
}

#[test]
fn clean_removes_persistent_segments_only_with_the_persistent_flag() {
    let n = name("persistent");
    // The child creates a persistent segment, drops its handle and leaves.
    let mut child = fork(|| match Value::create_named_persistent(&n, 9u32) {
        Ok(v) => {
            drop(v);
            0
        }
        Err(_) => 1,
    });
    assert_eq!(child.wait_timeout(WAIT), Exit::Code(0));
    let path = format!("/dev/shm/multiproc.{n}");
    assert!(std::path::Path::new(&path).exists());
    let line = ls_line(&n);
    assert!(line.contains("persistent"), "{line}");
    assert_eq!(inspect_json(&n)["persistent"], true);

    let (code, out, _) = run(&["clean", "--prefix", &n]);
    assert_eq!(code, 0);
    assert!(!out.contains(&n), "{out}");
    assert!(
        std::path::Path::new(&path).exists(),
        "plain clean removed it"
    );
    let (code, out, _) = run(&["clean", "--persistent", "--prefix", &n]);
    assert_eq!(code, 0);
    assert!(out.contains(&n), "{out}");
    assert!(
        !std::path::Path::new(&path).exists(),
        "--persistent left it"
    );
}

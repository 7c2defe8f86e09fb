//! Runs the `multiproc` binary for real against live and stale segments.

use multiproc::Value;
use std::process::Command;

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
    let dead2 = dead.clone();
    // SAFETY: the child only creates a segment and leaves without destructors.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = match Value::create_named(&dead2, 2u8) {
            Ok(v) => {
                std::mem::forget(v);
                0
            }
            Err(_) => 1,
        };
        // SAFETY: leave the child at once.
        unsafe { libc::_exit(code) };
    }
    let mut st = 0;
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
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
    let q = multiproc::Queue::<u32>::create(&n, 8).unwrap();
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
    let q = multiproc::Queue::<u32>::create(&n, 4).unwrap();
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

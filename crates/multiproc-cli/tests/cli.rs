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

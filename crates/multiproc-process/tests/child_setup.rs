//! What a child inherits from its parent's program: argv (as Python restores `sys.argv` in a
//! spawned child) and, through `init_with`, the application's `tracing` subscriber.
#![allow(missing_docs)]

use multiproc_process::{Process, StartMethod, task};
use std::io::Write;

/// Where `setup` sends this process's `tracing` events: the file named by `CHILD_SETUP_LOG`
/// when it is set (a test sets it per child with `ProcessBuilder::env`), else nowhere.
const LOG_ENV: &str = "CHILD_SETUP_LOG";

/// The application's setup, run by `init_with` in this process and in every spawned and
/// fork-server child before its task.
fn setup() {
    let writer = || -> Box<dyn Write> {
        match std::env::var_os(LOG_ENV) {
            Some(path) => match std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
            {
                Ok(f) => Box::new(f),
                Err(_) => Box::new(std::io::sink()),
            },
            None => Box::new(std::io::sink()),
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}

multiproc_process::init_before_main!(setup);

#[task(crate = multiproc_process)]
fn my_args() -> Vec<String> {
    std::env::args().collect()
}

#[task(crate = multiproc_process)]
fn log_a_line(tag: String) -> bool {
    tracing::info!("hello from the child {tag}");
    tracing::dispatcher::has_been_set()
}

/// Spawned children used to see `argv = [exe]`. The check runs in a copy of this test binary
/// started with extra arguments (a plain `cargo test` gives the binary none, where `[exe]` would
/// pass by accident).
#[test]
fn children_see_the_parents_argv() {
    if std::env::var_os("CHILD_SETUP_ARGV_INNER").is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "children_see_the_parents_argv",
                "--exact",
                "--test-threads=1",
                "--nocapture",
            ])
            .env("CHILD_SETUP_ARGV_INNER", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
        return;
    }
    let ours: Vec<String> = std::env::args().collect();
    assert_eq!(ours.len(), 5, "{ours:?}");
    for m in [
        StartMethod::Spawn,
        StartMethod::ForkServer,
        StartMethod::Fork,
    ] {
        let mut p = Process::builder()
            .start_method(m)
            .spawn(my_args, ())
            .unwrap();
        assert_eq!(p.join().unwrap(), ours, "{m:?}");
    }
}

/// A subscriber installed by the `init_with` setup is active in spawned and fork-server children
/// (before, a subscriber the application installed after `init()` never existed there).
#[test]
fn the_init_with_setup_installs_the_applications_subscriber_in_children() {
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let path = std::env::temp_dir().join(format!(
            "multiproc-child-setup-{}-{m:?}.log",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let tag = format!("{m:?}");
        let mut p = Process::builder()
            .start_method(m)
            .env(LOG_ENV, path.display().to_string())
            .spawn(log_a_line, tag.clone())
            .unwrap();
        assert!(p.join().unwrap(), "{m:?}: no subscriber in the child");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        assert!(
            text.contains(&format!("hello from the child {tag}")),
            "{m:?}: the child's event is not in the application's log: {text:?}"
        );
    }
}

/// `log_to_stderr` leaves an application's subscriber in place instead of replacing it (and
/// says so), and `stderr_layer` composes with a registry.
#[cfg(feature = "log-to-stderr")]
#[test]
fn log_to_stderr_leaves_an_existing_subscriber_alone() {
    // `setup` installed the global subscriber before main.
    assert!(tracing::dispatcher::has_been_set());
    assert!(multiproc_process::log_to_stderr(tracing::Level::INFO).is_err());
    use tracing_subscriber::layer::SubscriberExt;
    let sub =
        tracing_subscriber::registry().with(multiproc_process::stderr_layer(tracing::Level::WARN));
    tracing::subscriber::with_default(sub, || tracing::warn!("a line on stderr"));
}

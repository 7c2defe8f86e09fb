//! Forking a threaded parent (issue 20, item 2): the library's path in a forked child takes no
//! lock another thread of the parent may have held at the fork (std's env lock, the allocator's,
//! multiproc's own); a threaded fork logs a warning once per process and can be refused.
//! Its own test binary: it sets environment variables while other threads run.
#![allow(missing_docs)]

use multiproc_process::{Process, StartMethod};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

multiproc_process::init_before_main!();

const FORKS: u64 = 60;

/// The tests of this binary run one at a time: the warning test's child builds a tracing
/// subscriber, which reads the environment (`NO_COLOR`), and must not fork while the hammer
/// test's thread holds std's env lock.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static M: std::sync::Mutex<()> = std::sync::Mutex::new(());
    M.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn forks_while_threads_hammer_env_malloc_and_active_children_all_complete() {
    let _g = serial();
    let stop = Arc::new(AtomicBool::new(false));
    let spins = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    {
        let (stop, spins) = (stop.clone(), spins.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: this test races set_var with forks on purpose; every reader of the
                // environment in this process goes through std's lock.
                unsafe { std::env::set_var("MULTIPROC_HAMMER", i.to_string()) };
                std::hint::black_box(std::env::var("MULTIPROC_HAMMER").ok());
                i += 1;
                spins.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                std::hint::black_box(vec![i as u8; 1 + i % 8192]);
                i += 1;
            }
        }));
    }
    {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::hint::black_box(multiproc_process::active_children());
            }
        }));
    }
    while spins.load(Ordering::Relaxed) == 0 {
        std::thread::yield_now();
    }
    let mut failures = Vec::new();
    for i in 0..FORKS {
        // The child starts a process itself: multiproc's whole start path runs in the child.
        let mut p = Process::builder()
            .start_method(StartMethod::Fork)
            .closure(move || {
                let mut q = Process::builder()
                    .start_method(StartMethod::Fork)
                    .closure(move || i * 2);
                q.start().map_err(|e| e.to_string())?;
                q.join_timeout(Duration::from_secs(20))
                    .map_err(|e| e.to_string())
            });
        p.start().unwrap();
        match p.join_timeout(Duration::from_secs(20)) {
            Ok(Ok(v)) => assert_eq!(v, i * 2),
            Ok(Err(e)) => failures.push(format!("fork {i}: grandchild: {e}")),
            Err(e) => {
                let _ = p.kill();
                let _ = p.join_timeout(Duration::from_secs(5));
                failures.push(format!("fork {i}: {e}"));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of {FORKS} children hung or failed: {failures:?}",
        failures.len()
    );
}

#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);
impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_threaded_fork_warns_once_and_is_refused_on_request() {
    use multiproc_process::StartError;
    let _g = serial();
    // libtest runs this on a thread of its own: this process is threaded.
    let e = Process::builder()
        .refuse_if_threaded(true)
        .closure(|| 1u8)
        .start()
        .unwrap_err();
    assert!(
        matches!(e, StartError::ThreadedFork { threads } if threads >= 2),
        "{e:?}"
    );
    // A forked child has one thread: there, the same start goes through; with a second thread
    // it is refused; and forking twice with the default logs one warning.
    let mut child = Process::builder().closure(|| {
        let single = Process::builder()
            .refuse_if_threaded(true)
            .closure(|| 5u8)
            .start()
            .is_ok();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        let refused = matches!(
            Process::builder()
                .refuse_if_threaded(true)
                .closure(|| 5u8)
                .start(),
            Err(StartError::ThreadedFork { threads: 2 })
        );
        let out = Capture::default();
        let w = out.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::with_default(sub, || {
            for _ in 0..2 {
                let mut p = Process::builder().closure(|| 3u8);
                p.start().unwrap();
                assert_eq!(p.join_timeout(Duration::from_secs(20)).unwrap(), 3);
            }
        });
        tx.send(()).unwrap();
        t.join().unwrap().unwrap();
        let log = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        (single, refused, log.matches("runs 2 threads").count(), log)
    });
    child.start().unwrap();
    let (single, refused, warnings, log) = child.join_timeout(Duration::from_secs(60)).unwrap();
    assert!(single, "a single-threaded process was refused");
    assert!(refused, "a threaded process was not refused");
    assert_eq!(warnings, 1, "{log}");
}

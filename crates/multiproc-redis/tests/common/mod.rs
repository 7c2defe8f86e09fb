//! A real redis-server per test: 127.0.0.1 on a free port, no persistence, in a temp dir, killed
//! (and waited for) when the guard drops, even on panic. A missing redis-server fails loudly.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use multiproc_testutil::redis::{RedisServer, die_with_parent, free_port};

/// Child processes killed (SIGKILL) and reaped on drop.
#[derive(Default)]
pub struct Children(pub Vec<Child>);

impl Children {
    pub fn push(&mut self, c: Child) -> usize {
        self.0.push(c);
        self.0.len() - 1
    }
    pub fn kill(&mut self, i: usize) {
        let _ = self.0[i].kill();
        let _ = self.0[i].wait();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// This test binary again, running only the test `entry` with the given environment (the child's
/// role). stdout is piped.
pub fn spawn_self(entry: &str, env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([entry, "--exact", "--nocapture", "--test-threads=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    die_with_parent(&mut cmd);
    cmd.spawn().expect("spawning a child test process")
}

/// Reads lines of a child's stdout until one contains `prefix` (at most 60 s); returns the rest
/// of that line. The rest of the output is drained in the background.
pub fn wait_line(child: &mut Child, prefix: &str) -> String {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let prefix_owned = prefix.to_string();
    std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut line = String::new();
        let mut sent = false;
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            // libtest may have printed "test NAME ... " on the same line first.
            if !sent && let Some(at) = line.find(&prefix_owned) {
                let _ = tx.send(line[at + prefix_owned.len()..].trim_end().to_string());
                sent = true;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("child did not print {prefix:?}: {e}"))
}

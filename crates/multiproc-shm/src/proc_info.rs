//! Process identity: a pid plus its start time, so a reused pid is never mistaken for the creator.
//!
//! The start time is field 22 of `/proc/PID/stat` (clock ticks since boot). A process is "the same"
//! only when both the pid and that start time match.

use std::fs;

/// A process identity that survives pid reuse: `(pid, start time in clock ticks since boot)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcessId {
    /// The process id.
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat`.
    pub start_time: u64,
}

impl ProcessId {
    /// This process.
    pub fn current() -> ProcessId {
        let pid = std::process::id();
        ProcessId {
            pid,
            start_time: start_time_of(pid).unwrap_or(0),
        }
    }

    /// The process with this pid if it is running now.
    pub fn of(pid: u32) -> Option<ProcessId> {
        start_time_of(pid).map(|start_time| ProcessId { pid, start_time })
    }

    /// Whether this exact process (pid and start time) is still alive. A zombie counts as dead.
    pub fn is_alive(&self) -> bool {
        match read_stat(self.pid) {
            Some((state, start)) => start == self.start_time && state != 'Z' && state != 'X',
            None => false,
        }
    }
}

/// The start time (clock ticks since boot) of a running process, or `None` if there is none.
pub fn start_time_of(pid: u32) -> Option<u64> {
    read_stat(pid).map(|(_, t)| t)
}

/// Reads (state, starttime) from /proc/PID/stat. The comm field may hold spaces and parentheses,
/// so parsing starts after the *last* ')'.
fn read_stat(pid: u32) -> Option<(char, u64)> {
    if pid == 0 {
        return None;
    }
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After comm: field 3 is state; starttime is field 22, i.e. the 20th after comm.
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comm_with_spaces_and_parens() {
        let line =
            "123 (a b) c)) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_stat(line), Some(('S', 98765)));
    }

    #[test]
    fn current_process_is_alive_and_fake_start_time_is_not() {
        let me = ProcessId::current();
        assert!(me.start_time > 0);
        assert!(me.is_alive());
        let other = ProcessId {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(!other.is_alive());
        assert!(
            !ProcessId {
                pid: 0,
                start_time: 0
            }
            .is_alive()
        );
    }
}

//! What the OS shows about a round's leftovers: processes in `/proc`, segments in `/dev/shm`.

use std::collections::HashSet;

/// Whether `pid` runs (not gone, not a zombie).
pub fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !matches!(
            s.rsplit(')').next().and_then(|r| r.trim().chars().next()),
            Some('Z' | 'X') | None
        ),
        Err(_) => false,
    }
}

pub fn is_zombie_of_ours(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let rest: Vec<&str> = s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            rest.first() == Some(&"Z")
                && rest.get(1) == Some(&std::process::id().to_string().as_str())
        })
        .unwrap_or(false)
}

/// Our children (live, zombie) as `/proc/self/task/*/children` lists them.
pub fn our_children() -> (HashSet<u32>, HashSet<u32>) {
    let (mut live, mut zombies) = (HashSet::new(), HashSet::new());
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (live, zombies);
    };
    for t in tasks.flatten() {
        let Ok(s) = std::fs::read_to_string(t.path().join("children")) else {
            continue;
        };
        for pid in s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
            if is_zombie_of_ours(pid as i32) {
                zombies.insert(pid);
            } else {
                live.insert(pid);
            }
        }
    }
    (live, zombies)
}

pub fn shm_residue(prefix: &str, pids: &[i32]) -> Vec<String> {
    let mut left = Vec::new();
    for e in std::fs::read_dir("/dev/shm").expect("/dev/shm").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with(&format!("multiproc.{prefix}"))
            || (name.starts_with("multiproc.qside-")
                && pids.iter().any(|p| name.contains(&format!("-{p}-"))));
        if ours {
            left.push(name);
        }
    }
    left
}

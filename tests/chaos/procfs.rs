//! What the OS shows about a round's leftovers: processes in `/proc`, segments in `/dev/shm`.

use std::collections::HashSet;

/// Whether `pid` runs (not gone, not a zombie).
pub fn alive(pid: u64) -> bool {
    u32::try_from(pid).is_ok_and(multiproc_testutil::alive)
}

/// Our children (live, zombie) as `/proc/self/task/*/children` lists them.
pub fn our_children() -> (HashSet<u32>, HashSet<u32>) {
    let (live, zombies) = multiproc_testutil::children();
    (live.into_iter().collect(), zombies.into_iter().collect())
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

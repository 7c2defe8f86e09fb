//! What a parent tells a child (the bootstrap record) and what the child sends back (the outcome).
//!
//! The bootstrap is postcard-encoded into a memfd written completely before the child starts,
//! so its size never blocks anyone; the child finds it through `MULTIPROC_CHILD=<fd>`. The
//! outcome goes into a second memfd that the parent reads after reaping the child, so results of
//! any size travel without a reader having to be there while the child writes.

use serde::{Deserialize, Serialize};

/// Environment variable naming the bootstrap fd in a spawned child.
pub const CHILD_ENV: &str = "MULTIPROC_CHILD";
/// Environment variable naming the socket fd (and parent pid) of a fork server.
pub const FORKSERVER_ENV: &str = "MULTIPROC_FORKSERVER";

pub(crate) const BOOT_MAGIC: u64 = 0x6d70_626f_6f74_0001; // "mpboot" v1
pub(crate) const BOOT_VERSION: u32 = 1;

/// The bootstrap record.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Boot {
    pub magic: u64,
    pub version: u32,
    pub build_id: u64,
    pub task_hash: u64,
    pub task_id: String,
    pub args: Vec<u8>,
    pub name: String,
    pub identity: Vec<u32>,
    pub daemon: bool,
    pub parent_pid: u32,
    pub parent_start_time: u64,
    /// The pid `getppid()` must return in the child (the parent, or the fork server).
    pub real_parent: u32,
    pub result_fd: i32,
    pub ack_fd: i32,
    pub passed_fds: Vec<i32>,
    pub cwd: Option<String>,
    /// Applied by the child itself (forkserver children; spawn passes env through exec).
    pub env: Vec<(String, String)>,
    pub log_level: Option<u8>,
}

/// What the child reports.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// The encoded return value.
    Ok(Vec<u8>),
    /// The task panicked with this message.
    Panic(String),
    /// The task could not run (argument decoding...).
    Error(String),
}

/// Ack bytes on the handshake pipe.
pub(crate) const ACK_OK: u8 = b'K';
pub(crate) const ACK_ERR: u8 = b'E';

//! The board: a shared `RawArray<u64>` of counters, flags and the bitmap, its layout, the error
//! table, the round's shape (how many children of each role) and the deadlines.

use multiproc::RawArray;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

pub const STOP: usize = 0;
pub const ERR_CHECKSUM: usize = 1;
pub const ERR_DUP: usize = 2;
pub const ERR_PIPE_ORDER: usize = 3;
pub const ERR_VALUE: usize = 4;
pub const ERR_LOCK: usize = 5;
pub const ERR_SEM: usize = 6;
pub const ERR_DICT: usize = 7;
pub const ERR_OTHER: usize = 8;
pub const ERRORS: [(usize, &str); 8] = [
    (ERR_CHECKSUM, "corrupted message (checksum)"),
    (ERR_DUP, "queue message delivered twice"),
    (
        ERR_PIPE_ORDER,
        "pipe message out of sequence (lost or reordered)",
    ),
    (ERR_VALUE, "Value counters inconsistent"),
    (ERR_LOCK, "Lock: mutual exclusion or pair broken"),
    (
        ERR_SEM,
        "Semaphore: more than 2 live holders, or a unit never came back",
    ),
    (ERR_DICT, "SharedDict pair inconsistent"),
    (ERR_OTHER, "unexpected error from an operation"),
];
pub const REC_VALUE: usize = 10;
pub const REC_LOCK: usize = 11;
pub const REC_DICT: usize = 12;
pub const Q_RECV: usize = 13;
pub const Q_LOST: usize = 14;
pub const LOST_WAKE_VALUE: usize = 15;
pub const LOST_WAKE_DICT: usize = 9;
pub const SENT: usize = 16; // + producer
pub const PIPE_SENT: usize = 20;
pub const PIPE_RECV: usize = 21;
pub const VAL_CONF: usize = 24; // + value user
pub const LOCK_A: usize = 28;
pub const LOCK_B: usize = 29;
pub const LOCK_IN: usize = 30;
pub const LOCK_CONF: usize = 32; // + lock user
pub const SEM_HOLD: usize = 36; // + sem user
pub const SEM_PID: usize = 40; // + sem user
pub const SEM_MAX: usize = 44;
pub const DICT_CONF: usize = 48; // + dict user
/// What a failing child saw: a code, then two numbers (for the failure message).
pub const DETAIL: usize = 56;
pub const BITMAP: usize = 64;

pub const PRODUCERS: usize = 2;
pub const CONSUMERS: usize = 2;
pub const VALUE_USERS: usize = 3;
pub const LOCK_USERS: usize = 2;
pub const SEM_USERS: usize = 3;
pub const SEM_UNITS: u32 = 2;
pub const DICT_USERS: usize = 2;
/// Messages per producer per round at most (the bitmap's size).
pub const MAX_SEQ: u64 = 1 << 15;
pub const WORDS_PER_PRODUCER: usize = (MAX_SEQ / 64) as usize;
pub const BOARD_LEN: usize = BITMAP + PRODUCERS * WORDS_PER_PRODUCER;

/// Every blocking call in a child gives up after this (then reports an error: a hang).
pub const CHILD_WAIT: Duration = Duration::from_secs(5);
/// How long the parent waits for a surviving child to stop.
pub const PARENT_WAIT: Duration = Duration::from_secs(30);

pub struct Board(RawArray<u64>);

impl Board {
    pub fn new() -> Board {
        Board(RawArray::<u64>::zeroed(BOARD_LEN).expect("board"))
    }

    pub fn at(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.0.len());
        // SAFETY: i is in bounds; the element is a u64 in a live shared mapping, 8-aligned
        // (RawArray aligns elements for T); every access to the board goes through atomics.
        unsafe { AtomicU64::from_ptr(self.0.as_ptr().add(i)) }
    }

    pub fn get(&self, i: usize) -> u64 {
        self.at(i).load(SeqCst)
    }

    pub fn bump(&self, i: usize) {
        self.at(i).fetch_add(1, SeqCst);
    }

    pub fn stopped(&self) -> bool {
        self.get(STOP) != 0
    }

    /// Records an error and returns the child's exit code for it.
    pub fn fail(&self, err: usize) -> i32 {
        self.bump(err);
        10 + err as i32
    }

    /// Records an error with details.
    pub fn fail_with(&self, err: usize, code: u64, a: u64, b: u64) -> i32 {
        self.at(DETAIL).store(code, SeqCst);
        self.at(DETAIL + 1).store(a, SeqCst);
        self.at(DETAIL + 2).store(b, SeqCst);
        self.fail(err)
    }

    /// Sets the bitmap bit of message (p, seq); false if it was already set (a duplicate).
    pub fn mark(&self, p: usize, seq: u64) -> bool {
        let word = BITMAP + p * WORDS_PER_PRODUCER + (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        self.at(word).fetch_or(bit, SeqCst) & bit == 0
    }

    pub fn marked(&self, p: usize, seq: u64) -> bool {
        let word = BITMAP + p * WORDS_PER_PRODUCER + (seq / 64) as usize;
        self.get(word) & (1u64 << (seq % 64)) != 0
    }
}

//! Chaos soak: rounds of forked producers, consumers, lock users and dict updaters, SIGKILLed at
//! random moments, with every invariant checked after each round.
//!
//! Each round builds fresh objects (named ones under `/dev/shm/multiproc.chaos-PID-ROUND-*`, so the
//! residue check can find them) and forks 16 children:
//!
//! | role | object | what it does |
//! |---|---|---|
//! | 2 producers | named `Queue<Vec<u8>>` (maxsize 16, 256-byte slots) | checksummed messages, some large (side files); confirm each `put` on the board |
//! | 2 consumers | the same queue | verify the checksum, set the message's bit in a shared bitmap (a bit already set = duplicate) |
//! | pipe writer / reader | simplex `Pipe<Vec<u8>>`, 16 KiB ring | checksummed messages, some chunked (20 KB); the reader checks the sequence has no gap |
//! | 3 value users | named `Value<[u64; 8]>` | under `get_lock`: total += 1, spin, own slot += 1; on `OwnerDied` repair a half update |
//! | 2 lock users | named `Lock` (`lock()` guards) | a pair `a`, `b` and an "inside" word on the board: mutual exclusion and the pair checked |
//! | 3 semaphore users | named `Semaphore(2)` (guards) | at most 2 live holders at once (dead holders are excluded by a `/proc` check) |
//! | 2 dict updaters | named `SharedDict<u64, u64>` | keys 0 and 1 incremented under one guard; `OwnerDied` repair of a half update |
//!
//! The parent kills 2 to 5 random children at random moments of a 60-250 ms round, then sets the
//! stop word, waits for the survivors (each with a deadline: a hang fails the test), drains the
//! queue and checks: no corrupted message, no duplicate, no gap in the pipe, lost queue messages
//! at most the number of kills, every counter consistent and within [confirmed, confirmed + kills],
//! semaphore units all back, no `/dev/shm` residue, no zombie.
//!
//! A second test soaks a `Pool` of 2 workers (spawned: the test binary is a worker through
//! `init_before_main!`) running a registered checksum task: batches of `apply_async` calls while
//! workers are SIGKILLed at random moments; every result is the right checksum or `WorkerLost`
//! (at most one per kill), none waits past its deadline, the pool works after each batch, and
//! after `close` + `join` no worker seen is left alive or a zombie.
//!
//! Budget: `MULTIPROC_CHAOS_SECS` (default 8) seconds of rounds, and `MULTIPROC_CHAOS_POOL_SECS`
//! (default 3, run alongside) for the pool soak; `MULTIPROC_CHAOS_SEED` replays a run (the seed is
//! printed). Run: `cargo test --release --test chaos -- --nocapture`.

mod common;

use common::{Child, Exit, fork};
use multiproc::channel::{PipeOptions, QueueOptions};
use multiproc::{
    Connection, GetError, Lock, LockError, MutexError, PutError, Queue, RawArray, RecoverResult,
    RecvError, Semaphore, SemaphoreError, SendError, SharedDict, Value,
};
use multiproc::{Pool, TaskError};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

// ---- the board: a shared RawArray<u64> of counters, flags and the bitmap -------------------

const STOP: usize = 0;
const ERR_CHECKSUM: usize = 1;
const ERR_DUP: usize = 2;
const ERR_PIPE_ORDER: usize = 3;
const ERR_VALUE: usize = 4;
const ERR_LOCK: usize = 5;
const ERR_SEM: usize = 6;
const ERR_DICT: usize = 7;
const ERR_OTHER: usize = 8;
const ERRORS: [(usize, &str); 8] = [
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
const REC_VALUE: usize = 10;
const REC_LOCK: usize = 11;
const REC_DICT: usize = 12;
const Q_RECV: usize = 13;
const Q_LOST: usize = 14;
const LOST_WAKE_VALUE: usize = 15;
const LOST_WAKE_DICT: usize = 9;
const SENT: usize = 16; // + producer
const PIPE_SENT: usize = 20;
const PIPE_RECV: usize = 21;
const VAL_CONF: usize = 24; // + value user
const LOCK_A: usize = 28;
const LOCK_B: usize = 29;
const LOCK_IN: usize = 30;
const LOCK_CONF: usize = 32; // + lock user
const SEM_HOLD: usize = 36; // + sem user
const SEM_PID: usize = 40; // + sem user
const SEM_MAX: usize = 44;
const DICT_CONF: usize = 48; // + dict user
/// What a failing child saw: a code, then two numbers (for the failure message).
const DETAIL: usize = 56;
const BITMAP: usize = 64;

const PRODUCERS: usize = 2;
const CONSUMERS: usize = 2;
const VALUE_USERS: usize = 3;
const LOCK_USERS: usize = 2;
const SEM_USERS: usize = 3;
const SEM_UNITS: u32 = 2;
const DICT_USERS: usize = 2;
/// Messages per producer per round at most (the bitmap's size).
const MAX_SEQ: u64 = 1 << 15;
const WORDS_PER_PRODUCER: usize = (MAX_SEQ / 64) as usize;
const BOARD_LEN: usize = BITMAP + PRODUCERS * WORDS_PER_PRODUCER;

/// Every blocking call in a child gives up after this (then reports an error: a hang).
const CHILD_WAIT: Duration = Duration::from_secs(5);
/// How long the parent waits for a surviving child to stop.
const PARENT_WAIT: Duration = Duration::from_secs(30);

struct Board(RawArray<u64>);

impl Board {
    fn new() -> Board {
        Board(RawArray::<u64>::zeroed(BOARD_LEN).expect("board"))
    }

    fn at(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.0.len());
        // SAFETY: i is in bounds; the element is a u64 in a live shared mapping, 8-aligned
        // (RawArray aligns elements for T); every access to the board goes through atomics.
        unsafe { AtomicU64::from_ptr(self.0.as_ptr().add(i)) }
    }

    fn get(&self, i: usize) -> u64 {
        self.at(i).load(SeqCst)
    }

    fn bump(&self, i: usize) {
        self.at(i).fetch_add(1, SeqCst);
    }

    fn stopped(&self) -> bool {
        self.get(STOP) != 0
    }

    /// Records an error and returns the child's exit code for it.
    fn fail(&self, err: usize) -> i32 {
        self.bump(err);
        10 + err as i32
    }

    /// Records an error with details.
    fn fail_with(&self, err: usize, code: u64, a: u64, b: u64) -> i32 {
        self.at(DETAIL).store(code, SeqCst);
        self.at(DETAIL + 1).store(a, SeqCst);
        self.at(DETAIL + 2).store(b, SeqCst);
        self.fail(err)
    }

    /// Sets the bitmap bit of message (p, seq); false if it was already set (a duplicate).
    fn mark(&self, p: usize, seq: u64) -> bool {
        let word = BITMAP + p * WORDS_PER_PRODUCER + (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        self.at(word).fetch_or(bit, SeqCst) & bit == 0
    }

    fn marked(&self, p: usize, seq: u64) -> bool {
        let word = BITMAP + p * WORDS_PER_PRODUCER + (seq / 64) as usize;
        self.get(word) & (1u64 << (seq % 64)) != 0
    }
}

// ---- messages ------------------------------------------------------------------------------

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `[p u8][seq u64][payload][fnv1a of all before, u64]`.
fn message(p: u8, seq: u64, payload: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload + 17);
    v.push(p);
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((0..payload).map(|k| (k as u64 ^ seq ^ (u64::from(p) * 31)) as u8));
    let s = fnv1a(&v);
    v.extend_from_slice(&s.to_le_bytes());
    v
}

/// The (p, seq) of a message whose checksum holds.
fn check(v: &[u8]) -> Option<(usize, u64)> {
    if v.len() < 17 {
        return None;
    }
    let (body, sum) = v.split_at(v.len() - 8);
    if fnv1a(body).to_le_bytes() != sum {
        return None;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&body[1..9]);
    Some((usize::from(body[0]), u64::from_le_bytes(seq)))
}

fn queue_payload(seq: u64) -> usize {
    if seq % 50 == 7 {
        1500 // larger than a slot: goes through a side file
    } else {
        (seq % 97) as usize
    }
}

fn pipe_payload(seq: u64) -> usize {
    if seq % 20 == 3 {
        20_000 // larger than the ring's largest record: chunked
    } else {
        (seq % 200) as usize
    }
}

fn spin(n: u32) {
    for _ in 0..n {
        std::hint::spin_loop();
    }
}

// ---- the children --------------------------------------------------------------------------

struct Objects {
    board: Board,
    q: Queue<Vec<u8>>,
    value: Value<[u64; 8]>,
    lock: Lock,
    sem: Semaphore,
    dict: SharedDict<u64, u64>,
}

fn producer(o: &Objects, p: usize) -> i32 {
    let mut seq = 0u64;
    while !o.board.stopped() {
        if seq == MAX_SEQ {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let mut item = message(p as u8, seq, queue_payload(seq));
        loop {
            match o.q.put_timeout(item, Duration::from_millis(20)) {
                Ok(()) => {
                    seq += 1;
                    o.board.at(SENT + p).store(seq, SeqCst);
                    break;
                }
                Err(PutError::Timeout(back)) => {
                    if o.board.stopped() {
                        return 0;
                    }
                    item = back;
                }
                Err(_) => return o.board.fail(ERR_OTHER),
            }
        }
    }
    0
}

fn take(board: &Board, v: &[u8]) -> Result<(), usize> {
    let (p, seq) = check(v).ok_or(ERR_CHECKSUM)?;
    if p >= PRODUCERS || seq >= MAX_SEQ {
        return Err(ERR_CHECKSUM);
    }
    if !board.mark(p, seq) {
        return Err(ERR_DUP);
    }
    board.bump(Q_RECV);
    Ok(())
}

fn consumer(o: &Objects) -> i32 {
    loop {
        match o.q.get_timeout(Duration::from_millis(20)) {
            Ok(v) => {
                if let Err(e) = take(&o.board, &v) {
                    return o.board.fail(e);
                }
            }
            Err(GetError::Timeout) => {
                if o.board.stopped() {
                    return 0;
                }
            }
            // A large message whose producer or another consumer died mid-way.
            Err(GetError::Lost(_)) => o.board.bump(Q_LOST),
            Err(_) => return o.board.fail(ERR_OTHER),
        }
    }
}

fn pipe_writer(board: &Board, w: &mut Connection<Vec<u8>>) -> i32 {
    if w.bind().is_err() {
        return board.fail(ERR_OTHER);
    }
    let mut seq = 0u64;
    while !board.stopped() {
        match w.send_timeout(&message(0, seq, pipe_payload(seq)), CHILD_WAIT) {
            Ok(()) => {
                seq += 1;
                board.at(PIPE_SENT).store(seq, SeqCst);
            }
            // The reader died (or a timed-out large message closed our side): the pipe is over.
            Err(SendError::Disconnected | SendError::Closed | SendError::Timeout) => return 0,
            Err(_) => return board.fail(ERR_OTHER),
        }
    }
    w.close();
    0
}

fn pipe_reader(board: &Board, r: &mut Connection<Vec<u8>>) -> i32 {
    if r.bind().is_err() {
        return board.fail(ERR_OTHER);
    }
    let mut expect = 0u64;
    let mut idle = 0;
    loop {
        match r.recv_timeout(Duration::from_millis(20)) {
            Ok(v) => {
                idle = 0;
                match check(&v) {
                    None => return board.fail(ERR_CHECKSUM),
                    Some((_, seq)) if seq != expect => return board.fail(ERR_PIPE_ORDER),
                    Some(_) => {
                        expect += 1;
                        board.at(PIPE_RECV).store(expect, SeqCst);
                    }
                }
            }
            Err(RecvError::Eof) => return 0,
            Err(RecvError::Timeout) => {
                idle += 1;
                // A writer killed before it bound its end never gives Eof.
                if board.stopped() && idle > 50 {
                    return 0;
                }
            }
            Err(_) => return board.fail(ERR_OTHER),
        }
    }
}

/// Waits for a robust-mutex lock (Value, SharedDict) at most [`CHILD_WAIT`], in 1 s slices.
///
/// A slice that times out although the lock can then be taken at once is a lost wake-up: glibc's
/// robust mutex wakes one waiter on unlock, and if that waiter is SIGKILLed before it takes the
/// lock, and a newcomer takes it without contention, the other sleepers are never woken (the
/// kernel's exit-time robust-list walk wakes a waiter only when the lock word is 0). A plain
/// `get_lock()` would sleep forever there; the mutex now parks in 50 ms slices, so this should
/// no longer happen. Still counted in board cell `lost`;
/// `MULTIPROC_CHAOS_STRICT=1` makes it a failure.
fn lock_robust<G>(
    b: &Board,
    lost: usize,
    timed: impl Fn(Duration) -> RecoverResult<G>,
) -> RecoverResult<G> {
    let start = Instant::now();
    loop {
        match timed(Duration::from_secs(1)) {
            Err(LockError::Failed(MutexError::Timeout)) => match timed(Duration::ZERO) {
                Err(LockError::Failed(MutexError::Timeout | MutexError::WouldBlock)) => {
                    if start.elapsed() >= CHILD_WAIT {
                        return Err(LockError::Failed(MutexError::Timeout));
                    }
                }
                r => {
                    b.bump(lost);
                    return r;
                }
            },
            r => return r,
        }
    }
}

fn value_user(o: &Objects, i: usize) -> i32 {
    while !o.board.stopped() {
        let got = lock_robust(&o.board, LOST_WAKE_VALUE, |d| {
            o.value.get_lock_recover_timeout(d)
        });
        let mut g = match got {
            Ok((g, false)) => {
                let sum = g[1..].iter().sum::<u64>();
                if g[0] != sum {
                    return o.board.fail_with(ERR_VALUE, 1, g[0], sum);
                }
                g
            }
            Ok((mut g, true)) => {
                o.board.bump(REC_VALUE);
                let sum: u64 = g[1..].iter().sum();
                if g[0] != sum && g[0] != sum + 1 {
                    return o.board.fail_with(ERR_VALUE, 2, g[0], sum);
                }
                g[0] = sum; // roll the dead holder's half update back
                g
            }
            Err(e) => {
                let code = match e {
                    LockError::OwnerDied => 7,
                    LockError::Failed(MutexError::Timeout) => 3,
                    LockError::Failed(MutexError::Deadlock) => 4,
                    LockError::Failed(MutexError::NotRecoverable) => 5,
                    LockError::Failed(MutexError::Os(n)) => 100 + n as u64,
                    _ => 6,
                };
                return o.board.fail_with(ERR_VALUE, code, 0, 0);
            }
        };
        g[0] += 1;
        spin(200);
        g[1 + i] += 1;
        drop(g);
        o.board.bump(VAL_CONF + i);
    }
    0
}

fn lock_user(o: &Objects, i: usize) -> i32 {
    let b = &o.board;
    let me = u64::from(std::process::id());
    while !b.stopped() {
        let g = match o.lock.lock_recover_timeout(CHILD_WAIT) {
            Ok((g, false)) => {
                if b.get(LOCK_IN) != 0 || b.get(LOCK_A) != b.get(LOCK_B) {
                    return b.fail(ERR_LOCK);
                }
                g
            }
            Ok((g, true)) => {
                b.bump(REC_LOCK);
                let (a, bb) = (b.get(LOCK_A), b.get(LOCK_B));
                if a == bb + 1 {
                    b.at(LOCK_B).store(a, SeqCst); // roll forward
                } else if a != bb {
                    return b.fail(ERR_LOCK);
                }
                b.at(LOCK_IN).store(0, SeqCst);
                g
            }
            Err(_) => return b.fail(ERR_LOCK),
        };
        b.at(LOCK_IN).store(me, SeqCst);
        b.bump(LOCK_A);
        spin(200);
        b.bump(LOCK_B);
        b.at(LOCK_IN).store(0, SeqCst);
        drop(g);
        b.bump(LOCK_CONF + i);
    }
    0
}

/// Whether `pid` runs (not gone, not a zombie).
fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !matches!(
            s.rsplit(')').next().and_then(|r| r.trim().chars().next()),
            Some('Z' | 'X') | None
        ),
        Err(_) => false,
    }
}

fn sem_user(o: &Objects, i: usize) -> i32 {
    let b = &o.board;
    b.at(SEM_PID + i)
        .store(u64::from(std::process::id()), SeqCst);
    while !b.stopped() {
        let g = match o.sem.acquire_guard_timeout(CHILD_WAIT) {
            Ok(g) => g,
            Err(SemaphoreError::Timeout) => return b.fail(ERR_SEM),
            Err(_) => return b.fail(ERR_OTHER),
        };
        b.at(SEM_HOLD + i).store(1, SeqCst);
        let flagged = (0..SEM_USERS).filter(|&j| b.get(SEM_HOLD + j) == 1).count();
        let holders = if flagged as u32 > SEM_UNITS {
            // Some flags may belong to killed holders whose units were given back: count the
            // live ones only.
            (0..SEM_USERS)
                .filter(|&j| j == i || (b.get(SEM_HOLD + j) == 1 && alive(b.get(SEM_PID + j))))
                .count()
        } else {
            flagged
        };
        if holders as u32 > SEM_UNITS {
            return b.fail(ERR_SEM);
        }
        b.at(SEM_MAX).fetch_max(holders as u64, SeqCst);
        spin(500);
        b.at(SEM_HOLD + i).store(0, SeqCst);
        drop(g);
    }
    0
}

fn dict_user(o: &Objects, i: usize) -> i32 {
    let b = &o.board;
    while !b.stopped() {
        let got = lock_robust(b, LOST_WAKE_DICT, |d| o.dict.get_lock_recover_timeout(d));
        let (mut g, died) = match got {
            Ok(r) => r,
            Err(_) => return b.fail(ERR_DICT),
        };
        let (Ok(x), Ok(y)) = (g.get(&0), g.get(&1)) else {
            return b.fail(ERR_OTHER);
        };
        let (x, y) = (x.unwrap_or(0), y.unwrap_or(0));
        if died {
            b.bump(REC_DICT);
            if x == y + 1 {
                if g.insert(&1, &x).is_err() {
                    return b.fail(ERR_OTHER);
                }
            } else if x != y {
                return b.fail(ERR_DICT);
            }
        } else if x != y {
            return b.fail(ERR_DICT);
        }
        if g.update(&0, |v| v.unwrap_or(0) + 1).is_err() {
            return b.fail(ERR_OTHER);
        }
        spin(200);
        if g.update(&1, |v| v.unwrap_or(0) + 1).is_err() {
            return b.fail(ERR_OTHER);
        }
        drop(g);
        b.bump(DICT_CONF + i);
    }
    0
}

// ---- the parent ----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Producer(usize),
    Consumer,
    PipeWriter,
    PipeReader,
    ValueUser(usize),
    LockUser(usize),
    SemUser(usize),
    DictUser(usize),
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default, Debug)]
struct Totals {
    rounds: u64,
    kills: u64,
    queue_msgs: u64,
    queue_lost: u64,
    pipe_msgs: u64,
    value_incs: u64,
    lock_incs: u64,
    dict_incs: u64,
    owner_died: u64,
    dict_recoveries: u64,
    sem_reclaimed: u64,
    sem_max_holders: u64,
    lost_wakeups: u64,
}

fn shm_residue(prefix: &str, pids: &[i32]) -> Vec<String> {
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

fn round(r: u64, rng: &mut Rng, t: &mut Totals) {
    let prefix = format!("chaos-{}-{r}-", std::process::id());
    let name = |s: &str| format!("{prefix}{s}");
    let o = Objects {
        board: Board::new(),
        q: Queue::create_named_with(
            &name("q"),
            16,
            QueueOptions {
                slot_size: 256,
                max_message: 1 << 20,
            },
        )
        .expect("queue"),
        value: Value::create_named(&name("value"), [0u64; 8]).expect("value"),
        lock: Lock::create_named(&name("lock")).expect("lock"),
        sem: Semaphore::create_named(&name("sem"), SEM_UNITS).expect("semaphore"),
        dict: SharedDict::create_named(&name("dict"), 16).expect("dict"),
    };
    let (mut reader, mut writer) = multiproc::Pipe::simplex_with::<Vec<u8>, _>(PipeOptions {
        capacity: 16 * 1024,
        max_message: 1 << 20,
    })
    .expect("pipe");

    let mut roles = Vec::new();
    roles.extend((0..CONSUMERS).map(|_| Role::Consumer));
    roles.extend((0..PRODUCERS).map(Role::Producer));
    roles.extend([Role::PipeReader, Role::PipeWriter]);
    roles.extend((0..VALUE_USERS).map(Role::ValueUser));
    roles.extend((0..LOCK_USERS).map(Role::LockUser));
    roles.extend((0..SEM_USERS).map(Role::SemUser));
    roles.extend((0..DICT_USERS).map(Role::DictUser));

    let mut kids: Vec<(Role, Child, bool)> = Vec::new();
    for &role in &roles {
        let o = &o;
        let (rd, wr) = (&mut reader, &mut writer);
        let child = fork(move || match role {
            Role::Producer(p) => producer(o, p),
            Role::Consumer => consumer(o),
            Role::PipeWriter => pipe_writer(&o.board, wr),
            Role::PipeReader => pipe_reader(&o.board, rd),
            Role::ValueUser(i) => value_user(o, i),
            Role::LockUser(i) => lock_user(o, i),
            Role::SemUser(i) => sem_user(o, i),
            Role::DictUser(i) => dict_user(o, i),
        });
        kids.push((role, child, false));
    }
    let pids: Vec<i32> = kids.iter().map(|k| k.1.pid).collect();

    // Kill 2-5 distinct children at random moments of the round.
    let run = Duration::from_millis(60 + rng.below(190));
    let n_kills = 2 + rng.below(4) as usize;
    let mut plan: Vec<(Duration, usize)> = Vec::new();
    while plan.len() < n_kills {
        let victim = rng.below(kids.len() as u64) as usize;
        if plan.iter().all(|&(_, v)| v != victim) {
            let at = Duration::from_millis(5 + rng.below(run.as_millis() as u64));
            plan.push((at, victim));
        }
    }
    plan.sort();
    let start = Instant::now();
    for &(at, victim) in &plan {
        if let Some(d) = at.checked_sub(start.elapsed()) {
            std::thread::sleep(d);
        }
        kids[victim].1.kill();
        kids[victim].2 = true;
    }
    if let Some(d) = run.checked_sub(start.elapsed()) {
        std::thread::sleep(d);
    }
    t.kills += n_kills as u64;

    // Stop; every survivor must end cleanly within the deadline (no hang).
    o.board.at(STOP).store(1, SeqCst);
    let b = &o.board;
    for (role, child, dead) in kids.iter_mut() {
        if !*dead {
            let exit = child.wait_timeout(PARENT_WAIT);
            let errs: Vec<_> = ERRORS
                .iter()
                .filter(|(i, _)| b.get(*i) != 0)
                .map(|(_, s)| *s)
                .collect();
            let detail = [b.get(DETAIL), b.get(DETAIL + 1), b.get(DETAIL + 2)];
            assert_eq!(
                exit,
                Exit::Code(0),
                "round {r}: {role:?} failed: {errs:?} (detail {detail:?})"
            );
        }
    }
    for (i, what) in ERRORS {
        assert_eq!(
            b.get(i),
            0,
            "round {r}: {what} (reported by a child later killed)"
        );
    }

    let killed = |pred: &dyn Fn(Role) -> bool| kids.iter().filter(|k| k.2 && pred(k.0)).count();

    // Queue: drain what is left, then account for every confirmed message.
    loop {
        match o.q.get_timeout(Duration::from_millis(20)) {
            Ok(v) => {
                if let Err(e) = take(b, &v) {
                    panic!("round {r}: parent drain: {}", ERRORS[e - 1].1);
                }
            }
            Err(GetError::Timeout | GetError::Empty) => break,
            Err(GetError::Lost(_)) => b.bump(Q_LOST),
            Err(e) => panic!("round {r}: parent drain: {e}"),
        }
    }
    let queue_kills = killed(&|r| matches!(r, Role::Producer(_) | Role::Consumer));
    let mut missing = 0u64;
    for p in 0..PRODUCERS {
        let sent = b.get(SENT + p);
        let producer_killed = kids.iter().any(|k| k.2 && k.0 == Role::Producer(p));
        // The killed producer's in-flight put may have landed without being confirmed.
        let limit = if producer_killed { sent + 1 } else { sent };
        for seq in 0..MAX_SEQ {
            let got = b.marked(p, seq);
            if seq < sent && !got {
                missing += 1;
            }
            assert!(
                !got || seq < limit,
                "round {r}: message {p}/{seq} received but never sent (sent {sent})"
            );
        }
    }
    assert!(
        missing <= queue_kills as u64,
        "round {r}: {missing} queue messages lost, only {queue_kills} producers/consumers killed"
    );
    t.queue_msgs += b.get(Q_RECV);
    t.queue_lost += missing;

    // Pipe: a surviving reader got everything the writer confirmed (and, if the writer was
    // killed, perhaps its in-flight message); a killed reader got at most that.
    let (sent, recvd) = (b.get(PIPE_SENT), b.get(PIPE_RECV));
    let writer_killed = killed(&|r| r == Role::PipeWriter) > 0;
    let reader_killed = killed(&|r| r == Role::PipeReader) > 0;
    let upper = if writer_killed { sent + 1 } else { sent };
    assert!(
        recvd <= upper,
        "round {r}: pipe: {recvd} received, {sent} sent"
    );
    if !reader_killed {
        assert!(
            recvd >= sent,
            "round {r}: pipe: {recvd} received of {sent} sent"
        );
    }
    t.pipe_msgs += recvd;

    // Value: consistent after a possible repair; each user's slot within [confirmed, +1 if killed].
    {
        let g = match o.value.get_lock_recover_timeout(CHILD_WAIT) {
            Ok((g, false)) => g,
            Ok((mut g, true)) => {
                b.bump(REC_VALUE);
                let sum: u64 = g[1..].iter().sum();
                assert!(g[0] == sum || g[0] == sum + 1, "round {r}: value torn");
                g[0] = sum;
                g
            }
            Err(e) => panic!("round {r}: value lock: {e}"),
        };
        assert_eq!(g[0], g[1..].iter().sum::<u64>(), "round {r}: value total");
        for i in 0..VALUE_USERS {
            let conf = b.get(VAL_CONF + i);
            let k = u64::from(kids.iter().any(|k| k.2 && k.0 == Role::ValueUser(i)));
            assert!(
                g[1 + i] >= conf && g[1 + i] <= conf + k,
                "round {r}: value user {i}: slot {} confirmed {conf}",
                g[1 + i]
            );
        }
        t.value_incs += g[0];
    }

    // Lock: the pair is whole after a possible repair, and within [confirmed, + kills].
    {
        match o.lock.lock_recover_timeout(CHILD_WAIT) {
            Ok((_g, false)) => {}
            Ok((_g, true)) => {
                b.bump(REC_LOCK);
                let (a, bb) = (b.get(LOCK_A), b.get(LOCK_B));
                assert!(a == bb || a == bb + 1, "round {r}: lock pair torn");
                b.at(LOCK_B).store(a, SeqCst);
                b.at(LOCK_IN).store(0, SeqCst);
            }
            Err(e) => panic!("round {r}: lock: {e}"),
        }
        let (a, bb) = (b.get(LOCK_A), b.get(LOCK_B));
        assert_eq!(a, bb, "round {r}: lock pair");
        let conf: u64 = (0..LOCK_USERS).map(|i| b.get(LOCK_CONF + i)).sum();
        let k = killed(&|r| matches!(r, Role::LockUser(_))) as u64;
        assert!(
            a >= conf && a <= conf + k,
            "round {r}: lock count {a}, confirmed {conf}"
        );
        assert!(!o.lock.is_locked(), "round {r}: lock still held");
        t.lock_incs += a;
    }

    // Semaphore: every unit back (dead holders' units reclaimed).
    t.sem_reclaimed += o.sem.reclaim_dead() as u64;
    assert_eq!(
        o.sem.get_value(),
        SEM_UNITS,
        "round {r}: semaphore units not all back"
    );
    t.sem_max_holders = t.sem_max_holders.max(b.get(SEM_MAX));

    // Dict: structure valid, pair whole, count within [confirmed, + kills].
    {
        let (mut g, died) = match o.dict.get_lock_recover_timeout(CHILD_WAIT) {
            Ok(r) => r,
            Err(e) => panic!("round {r}: dict lock: {e}"),
        };
        let x = g.get(&0).expect("dict get").unwrap_or(0);
        let y = g.get(&1).expect("dict get").unwrap_or(0);
        if died {
            b.bump(REC_DICT);
            assert!(x == y || x == y + 1, "round {r}: dict pair torn");
            g.insert(&1, &x).expect("dict repair");
        } else {
            assert_eq!(x, y, "round {r}: dict pair");
        }
        g.verify().expect("dict verify");
        let conf: u64 = (0..DICT_USERS).map(|i| b.get(DICT_CONF + i)).sum();
        let k = killed(&|r| matches!(r, Role::DictUser(_))) as u64;
        assert!(
            x >= conf && x <= conf + k,
            "round {r}: dict count {x}, confirmed {conf}"
        );
        t.dict_incs += x;
    }
    t.dict_recoveries += o.dict.recoveries();
    t.owner_died += b.get(REC_VALUE) + b.get(REC_LOCK) + b.get(REC_DICT);
    t.queue_lost += b.get(Q_LOST);
    let lost = (b.get(LOST_WAKE_VALUE), b.get(LOST_WAKE_DICT));
    t.lost_wakeups += lost.0 + lost.1;
    if std::env::var_os("MULTIPROC_CHAOS_STRICT").is_some() {
        assert_eq!(
            lost,
            (0, 0),
            "round {r}: a robust-mutex waiter slept through a free lock for 1 s (lost wake-up; \
             Value, SharedDict)"
        );
    }

    // No zombie: every child was reaped (killed ones by kill(), the others by the wait).
    drop(kids);
    for &pid in &pids {
        let mut status = 0;
        // SAFETY: WNOHANG on a pid we forked; valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert_eq!(rc, -1, "round {r}: child {pid} was not reaped");
        assert!(
            !alive(pid as u64) || !is_zombie_of_ours(pid),
            "round {r}: zombie {pid}"
        );
    }

    // No residue: dropping the creating handles unlinks every named object; side segments of
    // large messages whose consumer (or producer) was killed mid-way outlive the queue by design
    // and are reclaimed by the stale-segment cleanup (`multiproc clean`), their producers being
    // dead now.
    drop(o);
    drop((reader, writer));
    let ours = |n: &str| {
        n.starts_with("multiproc.qside-") && pids.iter().any(|p| n.contains(&format!("-{p}-")))
    };
    let _ = multiproc::shm::clean_stale(false, ours);
    // A producer killed while making one leaves it half-made ("Creating"): `multiproc clean`
    // takes it once it is 5 s old; remove it now.
    for e in std::fs::read_dir("/dev/shm").expect("/dev/shm").flatten() {
        if ours(&e.file_name().to_string_lossy()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let left = shm_residue(&prefix, &pids);
    assert!(left.is_empty(), "round {r}: left in /dev/shm: {left:?}");
    t.rounds += 1;
}

fn is_zombie_of_ours(pid: i32) -> bool {
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

fn seed_from_env() -> u64 {
    std::env::var("MULTIPROC_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            t ^ (u64::from(std::process::id()) << 32)
        })
        | 1
}

fn secs_from_env(var: &str, default: f64) -> f64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn chaos_soak_random_sigkills_break_no_invariant() {
    let secs = secs_from_env("MULTIPROC_CHAOS_SECS", 8.0);
    let seed = seed_from_env();
    eprintln!("chaos: budget {secs} s, MULTIPROC_CHAOS_SEED={seed}");
    let mut rng = Rng(seed);
    let mut t = Totals::default();
    let start = Instant::now();
    let budget = Duration::from_secs_f64(secs);
    while t.rounds == 0 || start.elapsed() < budget {
        round(t.rounds, &mut rng, &mut t);
    }
    eprintln!(
        "chaos: {} rounds in {:.1?}, {} kills; messages: {} queue (+{} lost to kills), {} pipe; \
         increments: {} value, {} lock, {} dict; recovered: {} OwnerDied, {} dict journal \
         replays, {} semaphore units (max {} holders at once); robust-mutex lost wake-ups \
         rescued by a retry: {}",
        t.rounds,
        start.elapsed(),
        t.kills,
        t.queue_msgs,
        t.queue_lost,
        t.pipe_msgs,
        t.value_incs,
        t.lock_incs,
        t.dict_incs,
        t.owner_died,
        t.dict_recoveries,
        t.sem_reclaimed,
        t.sem_max_holders,
        t.lost_wakeups,
    );
    assert!(t.kills > 0);
}

// ---- the pool soak ---------------------------------------------------------------------------

multiproc::init_before_main!();

/// Deadline of one pool result: a result not ready by then is a hang.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// The checksum of `len` pseudo-random bytes from `seed` (computed by the workers and, to check
/// them, by the parent).
fn pool_checksum(seed: u64, len: u64) -> u64 {
    let mut rng = Rng(seed | 1);
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for _ in 0..len {
        h = (h ^ (rng.next() & 0xff)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[multiproc::task]
fn chaos_checksum(seed: u64, len: u64) -> u64 {
    pool_checksum(seed, len)
}

/// Our children (live, zombie) as `/proc/self/task/*/children` lists them.
fn our_children() -> (HashSet<u32>, HashSet<u32>) {
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

#[test]
fn chaos_pool_workers_sigkilled_every_task_returns_or_is_lost() {
    let secs = secs_from_env("MULTIPROC_CHAOS_POOL_SECS", 3.0);
    let seed = seed_from_env() ^ 0x9e37_79b9_7f4a_7c15;
    eprintln!("chaos pool: budget {secs} s, seed {seed}");
    let mut rng = Rng(seed | 1);
    let pool = Pool::builder().processes(2).build().expect("pool");
    let mut seen: HashSet<u32> = pool.worker_pids().into_iter().collect();
    let (mut batches, mut tasks, mut ok, mut lost, mut kills) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let start = Instant::now();
    let budget = Duration::from_secs_f64(secs);
    while batches == 0 || start.elapsed() < budget {
        // A batch of tasks of 0-40 k bytes (tens of microseconds to a few milliseconds each).
        let n = 8 + rng.below(17);
        let batch: Vec<_> = (0..n)
            .map(|_| {
                let (s, len) = (rng.next(), rng.below(40_000));
                let r = pool
                    .apply_async(chaos_checksum, (s, len))
                    .expect("apply_async");
                (s, len, r)
            })
            .collect();
        tasks += n;
        // Kill 1-2 workers at random moments while the batch runs.
        for _ in 0..1 + rng.below(2) {
            std::thread::sleep(Duration::from_micros(rng.below(15_000)));
            let pids = pool.worker_pids();
            seen.extend(&pids);
            if !pids.is_empty() {
                let victim = pids[rng.below(pids.len() as u64) as usize];
                // SAFETY: plain syscall on a live worker of our own pool.
                unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) };
                kills += 1;
            }
        }
        let mut batch_lost = 0;
        for (s, len, r) in batch {
            match r.get_timeout(POOL_WAIT) {
                Ok(v) => {
                    assert_eq!(v, pool_checksum(s, len), "batch {batches}: wrong checksum");
                    ok += 1;
                }
                Err(TaskError::WorkerLost { signal, .. }) => {
                    assert_eq!(
                        signal,
                        Some(libc::SIGKILL),
                        "batch {batches}: lost to another death"
                    );
                    batch_lost += 1;
                }
                Err(e) => panic!("batch {batches}: task {s}/{len}: {e} (a hang if Timeout)"),
            }
        }
        lost += batch_lost;
        assert!(
            lost <= kills,
            "batch {batches}: {lost} tasks lost, only {kills} kills"
        );
        // The pool still works after the kills (replacement workers).
        let r = pool
            .apply_async(chaos_checksum, (batches, 1000))
            .expect("apply_async after kills");
        assert_eq!(
            r.get_timeout(POOL_WAIT).expect("pool works after kills"),
            pool_checksum(batches, 1000)
        );
        seen.extend(pool.worker_pids());
        batches += 1;
    }
    let replaced = pool.replaced_workers();
    pool.close();
    pool.join_timeout(POOL_WAIT).expect("pool join");
    drop(pool);
    let (live, zombies) = our_children();
    for p in &seen {
        assert!(!live.contains(p), "pool worker {p} still alive after join");
        assert!(!zombies.contains(p), "pool worker {p} is a zombie");
    }
    eprintln!(
        "chaos pool: {batches} batches in {:.1?}, {kills} worker kills, {replaced} workers \
         replaced; tasks: {tasks} submitted, {ok} right, {lost} WorkerLost, 0 hung; {} workers \
         seen, none left",
        start.elapsed(),
        seen.len()
    );
    assert!(kills > 0 && ok > 0);
}

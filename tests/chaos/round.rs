//! One round: fresh objects, 16 forked children, 2-5 SIGKILLs at random moments, stop, wait for
//! the survivors, then every check of [`crate::checks`].

use crate::board::{
    Board, CONSUMERS, DETAIL, DICT_USERS, ERRORS, LOCK_USERS, PARENT_WAIT, PRODUCERS, SEM_UNITS,
    SEM_USERS, STOP, VALUE_USERS,
};
use crate::checks;
use crate::common::{Child, Exit, fork};
use crate::config::Rng;
use crate::locks::{dict_user, lock_user, sem_user, value_user};
use crate::messages::{consumer, pipe_reader, pipe_writer, producer};
use multiproc::channel::{PipeOptions, QueueOptions};
use multiproc::{Connection, Lock, Queue, Semaphore, SharedDict, Value};
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

pub struct Objects {
    pub board: Board,
    pub q: Queue<Vec<u8>>,
    pub value: Value<[u64; 8]>,
    pub lock: Lock,
    pub sem: Semaphore,
    pub dict: SharedDict<u64, u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Producer(usize),
    Consumer,
    PipeWriter,
    PipeReader,
    ValueUser(usize),
    LockUser(usize),
    SemUser(usize),
    DictUser(usize),
}

/// A forked child: its role, its handle, and whether the parent killed it.
pub type Kid = (Role, Child, bool);

/// The simplex pipe's two ends.
pub type PipeEnds = (Connection<Vec<u8>>, Connection<Vec<u8>>);

#[derive(Default, Debug)]
pub struct Totals {
    pub rounds: u64,
    pub kills: u64,
    pub queue_msgs: u64,
    pub queue_lost: u64,
    pub pipe_msgs: u64,
    pub value_incs: u64,
    pub lock_incs: u64,
    pub dict_incs: u64,
    pub owner_died: u64,
    pub dict_recoveries: u64,
    pub sem_reclaimed: u64,
    pub sem_max_holders: u64,
    pub lost_wakeups: u64,
}

/// Round `r`: the steps in order; each check panics with the round number on a broken invariant.
pub fn round(r: u64, rng: &mut Rng, t: &mut Totals) {
    let prefix = format!("chaos-{}-{r}-", std::process::id());
    let (o, (mut reader, mut writer)) = create_objects(&prefix);
    let mut kids = fork_children(&o, &mut reader, &mut writer);
    let pids: Vec<i32> = kids.iter().map(|k| k.1.pid).collect();
    kill_at_random_moments(rng, &mut kids, t);
    stop_and_wait_survivors(r, &o.board, &mut kids);
    checks::queue(r, &o, &kids, t);
    checks::pipe(r, &o.board, &kids, t);
    checks::value(r, &o, &kids, t);
    checks::lock(r, &o, &kids, t);
    checks::semaphore(r, &o, t);
    checks::dict(r, &o, &kids, t);
    checks::recoveries(r, &o, t);
    checks::all_reaped(r, kids, &pids);
    checks::no_residue(r, o, (reader, writer), &prefix, &pids);
    t.rounds += 1;
}

/// The round's objects, named under `prefix`, and an anonymous simplex pipe.
fn create_objects(prefix: &str) -> (Objects, PipeEnds) {
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
    let (reader, writer) = multiproc::Pipe::simplex_with::<Vec<u8>, _>(PipeOptions {
        capacity: 16 * 1024,
        max_message: 1 << 20,
    })
    .expect("pipe");
    (o, (reader, writer))
}

/// Forks one child per role (consumers first, then producers, pipe reader and writer, and the
/// lock users), none killed yet.
fn fork_children(
    o: &Objects,
    reader: &mut Connection<Vec<u8>>,
    writer: &mut Connection<Vec<u8>>,
) -> Vec<Kid> {
    let mut roles = Vec::new();
    roles.extend((0..CONSUMERS).map(|_| Role::Consumer));
    roles.extend((0..PRODUCERS).map(Role::Producer));
    roles.extend([Role::PipeReader, Role::PipeWriter]);
    roles.extend((0..VALUE_USERS).map(Role::ValueUser));
    roles.extend((0..LOCK_USERS).map(Role::LockUser));
    roles.extend((0..SEM_USERS).map(Role::SemUser));
    roles.extend((0..DICT_USERS).map(Role::DictUser));

    let mut kids: Vec<Kid> = Vec::new();
    for &role in &roles {
        let (rd, wr) = (&mut *reader, &mut *writer);
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
    kids
}

/// Kill 2-5 distinct children at random moments of the round.
///
/// The round runs 60-250 ms (drawn here); its kills are counted in the totals.
fn kill_at_random_moments(rng: &mut Rng, kids: &mut [Kid], t: &mut Totals) {
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
}

/// Sets the stop word and waits for every survivor; then no child (not even one killed later)
/// reported an error on the board.
fn stop_and_wait_survivors(r: u64, b: &Board, kids: &mut [Kid]) {
    // Stop; every survivor must end cleanly within the deadline (no hang).
    b.at(STOP).store(1, SeqCst);
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
}

//! The checks after a round, one per object, then the process and `/dev/shm` checks; each adds
//! its counts to the [`Totals`].

use crate::board::{
    Board, CHILD_WAIT, DICT_CONF, DICT_USERS, ERRORS, LOCK_A, LOCK_B, LOCK_CONF, LOCK_IN,
    LOCK_USERS, LOST_WAKE_DICT, LOST_WAKE_VALUE, MAX_SEQ, PIPE_RECV, PIPE_SENT, PRODUCERS, Q_LOST,
    Q_RECV, REC_DICT, REC_LOCK, REC_VALUE, SEM_MAX, SEM_UNITS, SENT, VAL_CONF, VALUE_USERS,
};
use crate::messages::take;
use crate::procfs::{our_children, shm_residue};
use crate::round::{Kid, Objects, PipeEnds, Role, Totals};
use multiproc::GetError;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

/// How many of the killed children have a role matching `pred`.
fn killed(kids: &[Kid], pred: &dyn Fn(Role) -> bool) -> usize {
    kids.iter().filter(|k| k.2 && pred(k.0)).count()
}

/// Queue: drain what is left, then account for every confirmed message.
pub fn queue(r: u64, o: &Objects, kids: &[Kid], t: &mut Totals) {
    let b = &o.board;
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
    let queue_kills = killed(kids, &|r| matches!(r, Role::Producer(_) | Role::Consumer));
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
}

/// Pipe: a surviving reader got everything the writer confirmed (and, if the writer was
/// killed, perhaps its in-flight message); a killed reader got at most that.
pub fn pipe(r: u64, b: &Board, kids: &[Kid], t: &mut Totals) {
    let (sent, recvd) = (b.get(PIPE_SENT), b.get(PIPE_RECV));
    let writer_killed = killed(kids, &|r| r == Role::PipeWriter) > 0;
    let reader_killed = killed(kids, &|r| r == Role::PipeReader) > 0;
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
}

/// Value: consistent after a possible repair; each user's slot within [confirmed, +1 if killed].
pub fn value(r: u64, o: &Objects, kids: &[Kid], t: &mut Totals) {
    let b = &o.board;
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

/// Lock: the pair is whole after a possible repair, and within [confirmed, + kills].
pub fn lock(r: u64, o: &Objects, kids: &[Kid], t: &mut Totals) {
    let b = &o.board;
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
    let k = killed(kids, &|r| matches!(r, Role::LockUser(_))) as u64;
    assert!(
        a >= conf && a <= conf + k,
        "round {r}: lock count {a}, confirmed {conf}"
    );
    assert!(!o.lock.is_locked(), "round {r}: lock still held");
    t.lock_incs += a;
}

/// Semaphore: every unit back (dead holders' units reclaimed).
pub fn semaphore(r: u64, o: &Objects, t: &mut Totals) {
    t.sem_reclaimed += o.sem.reclaim_dead() as u64;
    assert_eq!(
        o.sem.get_value(),
        SEM_UNITS,
        "round {r}: semaphore units not all back"
    );
    t.sem_max_holders = t.sem_max_holders.max(o.board.get(SEM_MAX));
}

/// Dict: structure valid, pair whole, count within [confirmed, + kills].
pub fn dict(r: u64, o: &Objects, kids: &[Kid], t: &mut Totals) {
    let b = &o.board;
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
    let k = killed(kids, &|r| matches!(r, Role::DictUser(_))) as u64;
    assert!(
        x >= conf && x <= conf + k,
        "round {r}: dict count {x}, confirmed {conf}"
    );
    t.dict_incs += x;
}

/// The round's recoveries and queue losses into the totals; with `MULTIPROC_CHAOS_STRICT`, no
/// lost robust-mutex wake-up.
pub fn recoveries(r: u64, o: &Objects, t: &mut Totals) {
    let b = &o.board;
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
}

/// Drops the children's handles, then: no child left unreaped or a zombie.
pub fn all_reaped(r: u64, kids: Vec<Kid>, pids: &[i32]) {
    // No zombie: every child was reaped (killed ones by kill(), the others by the wait).
    drop(kids);
    for &pid in pids {
        let mut status = 0;
        // SAFETY: WNOHANG on a pid we forked; valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert_eq!(rc, -1, "round {r}: child {pid} was not reaped");
        // (Not reaped by us, so not our zombie either, unless the pid was reused by another
        // child of ours that is one.)
        assert!(
            !our_children().1.contains(&(pid as u32)),
            "round {r}: zombie {pid}"
        );
    }
}

/// Drops the objects and the pipe, then: nothing of the round left in `/dev/shm`.
pub fn no_residue(r: u64, o: Objects, pipe: PipeEnds, prefix: &str, pids: &[i32]) {
    // No residue: dropping the creating handles unlinks every named object; side segments of
    // large messages whose consumer (or producer) was killed mid-way outlive the queue by design
    // and are reclaimed by the stale-segment cleanup (`multiproc clean`), their producers being
    // dead now.
    drop(o);
    drop(pipe);
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
    let left = shm_residue(prefix, pids);
    assert!(left.is_empty(), "round {r}: left in /dev/shm: {left:?}");
}

//! Queue waits under every wait strategy (issue 14: "a wait strategy per object, on Queue too";
//! the blocking waits run on `multiproc_sync::park::WaitWord`).
//!
//! A getter blocked in another process's queue is woken by a put, by the last producer's
//! `close`, and by the last producer being SIGKILLed; a putter blocked on a full queue is woken
//! by a get; a joiner by `task_done`. Each under `Spin`, `SpinThenPark` and `Park`. Sleeps only
//! make it likely that the waiter is parked when the wake comes; no assertion is about time.

mod common;

use common::fork;
use multiproc_channel::{GetError, JoinableQueue, Queue};
use multiproc_sync::park::WaitStrategy;
use std::time::Duration;

const T30: Duration = Duration::from_secs(30);
const ALL: [WaitStrategy; 3] = [
    WaitStrategy::Spin,
    WaitStrategy::SpinThenPark,
    WaitStrategy::Park,
];

/// One test at a time: a forked child holds every queue open at that moment.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn nap() {
    std::thread::sleep(Duration::from_millis(50));
}

#[test]
fn a_parked_getter_is_woken_by_a_put_under_every_strategy() {
    let _s = serial();
    for st in ALL {
        let (s, mut r) = Queue::<u32>::new(4).unwrap().split();
        r.set_wait_strategy(st);
        let child = fork(move || {
            nap();
            if s.put(7).is_err() {
                return 2;
            }
            0
        });
        assert_eq!(r.get_timeout(T30), Ok(7), "{st:?}");
        child.join_ok();
    }
}

#[test]
fn a_parked_getter_is_woken_by_the_last_producers_close_under_every_strategy() {
    let _s = serial();
    for st in ALL {
        let (mut s, mut r) = Queue::<u32>::new(4).unwrap().split();
        let (go_s, go_r) = Queue::<u8>::new(2).unwrap().split();
        r.set_wait_strategy(st);
        let child = fork(move || {
            nap();
            s.close();
            // Stay alive until the parent saw the close: the wake-up comes from `close`, not
            // from this process's death.
            if go_r.get_timeout(T30).is_err() {
                return 2;
            }
            0
        });
        assert_eq!(r.get_timeout(T30), Err(GetError::Disconnected), "{st:?}");
        go_s.put(1).unwrap();
        child.join_ok();
    }
}

#[test]
fn a_parked_getter_is_woken_by_a_killed_producer_under_every_strategy() {
    let _s = serial();
    for st in ALL {
        let (s, mut r) = Queue::<u32>::new(4).unwrap().split();
        r.set_wait_strategy(st);
        let mut child = fork(move || {
            let _keep = s;
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            child.kill(); // SIGKILL, then reap
        });
        assert_eq!(r.get_timeout(T30), Err(GetError::Disconnected), "{st:?}");
        killer.join().unwrap();
    }
}

#[test]
fn a_parked_putter_is_woken_by_a_get_under_every_strategy() {
    let _s = serial();
    for st in ALL {
        let (mut s, r) = Queue::<u32>::new(1).unwrap().split();
        s.set_wait_strategy(st);
        s.put(1).unwrap();
        let child = fork(move || {
            nap();
            match r.get_timeout(T30) {
                Ok(1) => {}
                _ => return 2,
            }
            match r.get_timeout(T30) {
                Ok(2) => 0,
                _ => 3,
            }
        });
        assert!(s.put_timeout(2, T30).is_ok(), "{st:?}");
        child.join_ok();
    }
}

#[test]
fn a_parked_joiner_is_woken_by_task_done_under_every_strategy() {
    let _s = serial();
    for st in ALL {
        let mut q = JoinableQueue::<u32>::new(4).unwrap();
        q.set_wait_strategy(st);
        q.put(1).unwrap();
        let q2 = q.clone();
        let child = fork(move || {
            nap();
            if q2.get_timeout(T30) != Ok(1) || q2.task_done().is_err() {
                return 2;
            }
            0
        });
        assert!(q.join_timeout(T30).is_ok(), "{st:?}");
        child.join_ok();
    }
}

#[test]
fn a_queue_wait_times_out_under_every_strategy() {
    let _s = serial();
    for st in ALL {
        let mut q = Queue::<u32>::new(1).unwrap();
        q.set_wait_strategy(st);
        assert_eq!(
            q.get_timeout(Duration::from_millis(30)),
            Err(GetError::Timeout)
        );
        q.put(1).unwrap();
        assert!(q.put_timeout(2, Duration::from_millis(30)).is_err());
    }
}

//! Opt-in batched sends (`send_bytes_batched`, `send_batched`, `flush`): ordering, no message
//! lost across the reader's park/unpark, flush on drop, and what a killed writer loses.

mod common;

use common::{Exit, fork};
use multiproc_channel::{Pipe, RecvError};
use std::time::Duration;

const T30: Duration = Duration::from_secs(30);

/// A small xorshift (no rand dependency): deterministic bursts and sleeps.
fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Same process: batched messages stay unpublished until a flush or a plain send behind
/// them, and every kind of send keeps one order.
#[test]
fn batched_messages_wait_for_flush_and_keep_order_with_plain_sends() {
    let (mut r, mut w) = Pipe::simplex::<u32>().unwrap();
    w.send_bytes_batched(b"0", 0, None).unwrap();
    w.send_batched(&1).unwrap();
    assert!(
        !r.poll(Duration::ZERO).unwrap(),
        "batched: not yet published"
    );
    w.send_bytes(b"2", 0, None).unwrap(); // publishes the batch, then itself
    assert_eq!(r.recv_bytes().unwrap(), b"0");
    assert_eq!(r.recv().unwrap(), 1);
    assert_eq!(r.recv_bytes().unwrap(), b"2");
    w.send_bytes_batched(b"xx3yy", 2, Some(1)).unwrap();
    assert!(!r.poll(Duration::ZERO).unwrap());
    w.flush().unwrap();
    assert_eq!(r.recv_bytes().unwrap(), b"3");
    assert!(w.send_bytes_batched(b"ab", 3, None).is_err(), "bad range");
    assert!(
        w.send_bytes_batched(b"ab", 1, Some(2)).is_err(),
        "bad range"
    );
    // A large (fragmented) message goes out at once, with the batch before it.
    w.send_bytes_batched(b"4", 0, None).unwrap();
    let big = vec![7u8; 1 << 20];
    let h = std::thread::spawn(move || {
        w.send_bytes_batched(&big, 0, None).unwrap();
        w
    });
    assert_eq!(r.recv_bytes_timeout(T30).unwrap(), b"4");
    assert_eq!(r.recv_bytes_timeout(T30).unwrap().len(), 1 << 20);
    drop(h.join().unwrap());
    assert_eq!(r.recv_bytes_timeout(T30), Err(RecvError::Eof));
}

/// A forked writer sends thousands of bursts of random length with `send_bytes_batched`,
/// flushing after each and sleeping a random while (0-2 ms) so the reader parks between bursts
/// (and sometimes not: some bursts start while it still spins). Every message arrives once, in
/// order; a lost wake-up would hang the reader until the 30 s timeout.
#[test]
fn bursts_with_random_sleeps_reach_a_parking_reader_in_order() {
    let (mut r, mut w) = Pipe::simplex::<()>().unwrap();
    let bursts = 2000u64;
    let mut child = fork(move || {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut seq = 0u64;
        for b in 0..bursts {
            let len = 1 + next(&mut s) % 150;
            for _ in 0..len {
                if w.send_bytes_batched(&seq.to_le_bytes(), 0, None).is_err() {
                    return 2;
                }
                seq += 1;
            }
            // Every eighth burst is not flushed: the next burst (or the drop) publishes it.
            if b % 8 != 0 && w.flush().is_err() {
                return 3;
            }
            let us = next(&mut s) % 2000;
            if us > 200 {
                std::thread::sleep(Duration::from_micros(us));
            }
        }
        let _ = w.send_bytes_batched(&u64::MAX.to_le_bytes(), 0, None);
        0 // the connection drops here: flush on drop
    });
    let mut want = 0u64;
    loop {
        let m = r
            .recv_bytes_timeout(T30)
            .expect("a message (no lost wake-up)");
        let v = u64::from_le_bytes(m.try_into().unwrap());
        if v == u64::MAX {
            break;
        }
        assert_eq!(v, want, "order");
        want += 1;
    }
    assert_eq!(r.recv_bytes_timeout(T30), Err(RecvError::Eof));
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
}

/// A reader asleep in `recv` is woken by a batched send without any flush: the send sees the
/// sleeper and publishes at once. (The check has no fence, so a reader that goes to sleep
/// *during* the send can be missed; then the writer's flush after its own timeout delivers it.
/// The test counts those misses and requires that most sends were not missed.)
#[test]
fn a_sleeping_reader_is_woken_by_a_batched_send_without_flush() {
    let (mut a, mut b) = Pipe::duplex::<()>().unwrap();
    let rounds = 100u32;
    let mut child = fork(move || {
        let mut misses = 0u32;
        for i in 0..rounds {
            std::thread::sleep(Duration::from_millis(20)); // the reader parks
            if b.send_bytes_batched(&i.to_le_bytes(), 0, None).is_err() {
                return 2;
            }
            match b.recv_bytes_timeout(Duration::from_secs(2)) {
                Ok(_) => {}
                Err(RecvError::Timeout) => {
                    misses += 1;
                    let _ = b.flush();
                    if b.recv_bytes_timeout(T30).is_err() {
                        return 3;
                    }
                }
                Err(_) => return 4,
            }
        }
        if misses > rounds / 2 { 5 } else { 0 }
    });
    for i in 0..rounds {
        let m = a.recv_bytes_timeout(T30).unwrap();
        assert_eq!(m, i.to_le_bytes());
        a.send_bytes(b"ack", 0, None).unwrap();
    }
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
}

/// Flush on drop and on close: batched messages of a writer that drops (or closes) its end
/// without flushing all arrive, then `Eof`.
#[test]
fn batched_messages_are_flushed_on_drop_and_close() {
    for close in [false, true] {
        let (mut r, mut w) = Pipe::simplex::<()>().unwrap();
        let mut child = fork(move || {
            for i in 0..10u8 {
                if w.send_bytes_batched(&[i], 0, None).is_err() {
                    return 2;
                }
            }
            if close {
                w.close();
                std::mem::forget(w);
            }
            0
        });
        for i in 0..10u8 {
            assert_eq!(r.recv_bytes_timeout(T30).unwrap(), [i]);
        }
        assert_eq!(r.recv_bytes_timeout(T30), Err(RecvError::Eof));
        assert_eq!(child.wait_timeout(T30), Exit::Code(0));
    }
}

/// The documented trade-off: a writer killed (SIGKILL) with an unflushed batch loses exactly
/// the unpublished messages, although `send_bytes_batched` returned `Ok` for them; every
/// message sent with `send_bytes` (or flushed) before arrives, then `Eof`.
#[test]
fn a_killed_writer_loses_only_its_unpublished_batch() {
    let (mut r, mut w) = Pipe::simplex::<()>().unwrap();
    let (mut done_r, mut done_w) = Pipe::simplex::<()>().unwrap();
    let mut child = fork(move || {
        for i in 0..5u8 {
            if w.send_bytes(&[i], 0, None).is_err() {
                return 2;
            }
        }
        for i in 5..8u8 {
            if w.send_bytes_batched(&[i], 0, None).is_err() {
                return 3;
            }
        }
        let _ = w.flush();
        for i in 8..12u8 {
            if w.send_bytes_batched(&[i], 0, None).is_err() {
                return 4;
            }
        }
        let _ = done_w.send_bytes(b"k", 0, None);
        // SAFETY: plain syscall; the process dies at once, without unwinding or destructors.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        6
    });
    // The reader does not read (so it is not asleep and the batch stays unpublished) until
    // the writer is dead.
    assert_eq!(done_r.recv_bytes_timeout(T30).unwrap(), b"k");
    assert_eq!(child.wait_timeout(T30), Exit::Signal(libc::SIGKILL));
    for i in 0..8u8 {
        assert_eq!(r.recv_bytes_timeout(T30).unwrap(), [i]);
    }
    assert_eq!(r.recv_bytes_timeout(T30), Err(RecvError::Eof));
}

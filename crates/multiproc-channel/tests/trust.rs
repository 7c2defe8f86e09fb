//! Issue 12 (channel part): what a hostile or dead process can do to a pipe or a queue. Each test
//! names the item of the issue it pins.

mod common;

use common::{Exit, fork, unique_name};
use multiproc_channel::{
    ChannelError, GetError, Pipe, PipeMode, PutError, Queue, QueueOptions, RecvError,
    queue::MIN_SLOT_SIZE,
};
use multiproc_ring::{MpmcRing, SpscRing};
use multiproc_shm::{HEADER_SIZE, SegmentHandle, ShmError};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const T30: Duration = Duration::from_secs(30);

/// Offsets in a queue's control block (payload): magic, maxsize, max_message, id.
const Q_MAX_MESSAGE: u64 = 16;
const Q_ID: u64 = 24;
/// Offset of a named pipe's max_message in its control block.
const P_MAX_MESSAGE: u64 = 16;

fn shm_file(name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm/multiproc.{name}"))
        .unwrap()
}

fn write_u64(name: &str, payload_off: u64, v: u64) {
    shm_file(name)
        .write_all_at(&v.to_le_bytes(), HEADER_SIZE as u64 + payload_off)
        .unwrap();
}

fn queue_id(name: &str) -> u64 {
    let mut b = [0u8; 8];
    shm_file(name)
        .read_exact_at(&mut b, HEADER_SIZE as u64 + Q_ID)
        .unwrap();
    u64::from_le_bytes(b)
}

/// The record a queue pushes for a large message: `[1][len: u64 LE][side segment name]`.
fn side_record(len: u64, full_name: &str) -> Vec<u8> {
    let mut r = vec![1u8];
    r.extend_from_slice(&len.to_le_bytes());
    r.extend_from_slice(full_name.as_bytes());
    r
}

/// Runs `f` on a thread and fails (instead of hanging the suite) if it has not returned in 20 s.
fn within_20s<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what}: still blocked after 20 s"))
}

/// Item 4: a side-segment name that points at a FIFO must not block `get_timeout(1 s)` in
/// open(2): the open is non-blocking and refuses anything but a regular memory file.
#[test]
fn side_name_pointing_at_a_fifo_fails_get_timeout_instead_of_hanging() {
    let name = unique_name("fifo");
    let q: Queue<Vec<u8>> = Queue::create_named(&name, 4).unwrap();
    let id = queue_id(&name);
    let fifo = format!("multiproc.qside-{id:016x}-1-1");
    let path = std::ffi::CString::new(format!("/dev/shm/{fifo}")).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let ring = MpmcRing::open_named(&format!("{name}.ring")).unwrap();
    ring.try_push(&side_record(1000, &fifo)).unwrap();
    let r = within_20s("get_timeout on a FIFO side name", move || {
        q.get_timeout(Duration::from_secs(1))
    });
    let _ = std::fs::remove_file(format!("/dev/shm/{fifo}"));
    assert!(matches!(r, Err(GetError::Lost(_))), "{r:?}");
}

/// Item 6: dropping the handle that created a queue must not delete the side segment of a
/// message still in the queue: another handle in this process, and a forked child, read it.
#[test]
fn dropping_the_creating_handle_keeps_large_messages_in_flight() {
    let q: Queue<Vec<u8>> = Queue::new(4).unwrap();
    let other: Queue<Vec<u8>> = postcard::from_bytes(&postcard::to_allocvec(&q).unwrap()).unwrap();
    q.put(vec![7u8; 10_000]).unwrap();
    drop(q);
    assert_eq!(other.get_timeout(T30).unwrap(), vec![7u8; 10_000]);

    let q: Queue<Vec<u8>> = Queue::new(4).unwrap();
    let go: Queue<u8> = Queue::new(1).unwrap();
    let (q2, go2) = (q.clone(), go.clone());
    let mut child = fork(move || {
        if go2.get_timeout(T30).is_err() {
            return 2;
        }
        match q2.get_timeout(T30) {
            Ok(v) if v == vec![9u8; 20_000] => 0,
            Ok(_) => 3,
            Err(GetError::Lost(_)) => 4,
            Err(_) => 5,
        }
    });
    q.put(vec![9u8; 20_000]).unwrap();
    drop(q);
    go.put(1).unwrap();
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
}

/// Item 5: a control block claiming `max_message` = 2^40 is refused on open (the local limit is
/// 64 MiB), and a record announcing more than the local maximum is an error, never a giant
/// allocation (on main the opener died of SIGABRT in `Vec::with_capacity`).
#[test]
fn huge_max_message_in_the_control_block_is_refused_not_an_abort() {
    let name = unique_name("maxmsg");
    let q: Queue<Vec<u8>> = Queue::create_named(&name, 4).unwrap();
    let id = queue_id(&name);
    // A regular side file with a plausible header, so main's reader reaches its allocation.
    let side = format!("multiproc.qside-{id:016x}-1-2");
    let mut hdr = vec![0u8; 256];
    hdr[..8].copy_from_slice(b"MPQSIDE1");
    std::fs::write(format!("/dev/shm/{side}"), &hdr).unwrap();
    write_u64(&name, Q_MAX_MESSAGE, 1 << 40);
    let ring = MpmcRing::open_named(&format!("{name}.ring")).unwrap();
    ring.try_push(&side_record(1 << 39, &side)).unwrap();
    let n2 = name.clone();
    let mut child = fork(move || match Queue::<Vec<u8>>::open_named(&n2) {
        Err(ChannelError::Shm(ShmError::OutOfRange { .. })) => 0,
        Err(_) => 2,
        Ok(q) => match q.get_timeout(Duration::from_secs(1)) {
            Err(_) => 3,
            Ok(_) => 4,
        },
    });
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
    // The creator's handle kept its validated copy (64 MiB): the record is refused, not read.
    let r = q.get_timeout(Duration::from_secs(1));
    assert!(matches!(r, Err(GetError::Corrupted(_))), "{r:?}");
    let _ = std::fs::remove_file(format!("/dev/shm/{side}"));
}

/// Item 5 (named pipe): the opener validates `max_message` against its local limit.
#[test]
fn named_pipe_opener_refuses_a_max_message_over_the_local_limit() {
    let name = unique_name("npmax");
    let _c = Pipe::create_named::<Vec<u8>>(&name, PipeMode::Duplex).unwrap();
    write_u64(&name, P_MAX_MESSAGE, 1 << 35);
    match Pipe::open_named::<Vec<u8>>(&name) {
        Err(ChannelError::Shm(ShmError::OutOfRange { .. })) => {}
        r => panic!("{r:?}"),
    }
}

/// Item 7: a slot too small for a side-segment record is refused at create (on main every large
/// message was refused later, naming the record's length); the smallest accepted slot carries a
/// large message.
#[test]
fn slot_too_small_for_a_side_record_is_refused_at_create() {
    let opts = |slot_size| QueueOptions {
        slot_size,
        max_message: 1 << 20,
    };
    match Queue::<Vec<u8>>::with_options(4, opts(32)) {
        Err(ChannelError::InvalidParams(m)) => assert!(m.contains("slot_size"), "{m}"),
        Ok(q) => panic!("accepted: a 1 KiB put gives {:?}", q.put(vec![1; 1024])),
        Err(e) => panic!("{e}"),
    }
    let q = Queue::<Vec<u8>>::with_options(4, opts(MIN_SLOT_SIZE)).unwrap();
    q.put(vec![5u8; 100_000]).unwrap();
    assert_eq!(q.get_timeout(T30).unwrap(), vec![5u8; 100_000]);
    match q.put(vec![0u8; 2 << 20]) {
        Err(PutError::TooLarge { len, max, .. }) => {
            // The message's encoded length (plus a varint prefix), not a record's.
            assert!(len > 2 << 20 && len < (2 << 20) + 8, "{len}");
            assert_eq!(max, 1 << 20);
        }
        r => panic!("{r:?}"),
    }
}

/// What a connection serializes as (mirrors the crate's private handle).
#[derive(Serialize, Deserialize)]
struct ConnHandle {
    tx: Option<SegmentHandle>,
    rx: Option<SegmentHandle>,
    max_message: u64,
}

/// A raw producer on the ring that `end` sends on (as a process that took the sending side
/// over would have), for writing fragments by hand.
fn raw_sender<T: Serialize + for<'de> Deserialize<'de>>(
    end: &multiproc_channel::Connection<T>,
) -> multiproc_ring::Producer {
    let h: ConnHandle = postcard::from_bytes(&postcard::to_allocvec(end).unwrap()).unwrap();
    SpscRing::open_handle(&h.tx.unwrap())
        .unwrap()
        .producer()
        .unwrap()
}

/// Item 9: a FIRST fragment announcing 0 bytes is an (empty) message, delivered, not dropped.
#[test]
fn first_fragment_of_total_zero_is_delivered_as_an_empty_message() {
    let (a, mut b) = Pipe::duplex::<Vec<u8>>().unwrap();
    let mut p = raw_sender(&a);
    let mut first = vec![1u8];
    first.extend_from_slice(&0u64.to_le_bytes());
    p.push(&first).unwrap();
    p.push(&[0, b'x']).unwrap();
    assert_eq!(b.recv_bytes_timeout(T30).unwrap(), b"");
    assert_eq!(b.recv_bytes_timeout(T30).unwrap(), b"x");
}

/// Item 8 (pipe part): a reader that starts in the middle of a large message (a consumer that
/// took over from a dead one) skips to the next message boundary, reporting the loss once; a
/// message cut short by a new FIRST is reported once too. On main it stayed stuck on
/// "unexpected fragment tag".
#[test]
fn pipe_reader_resynchronises_on_the_next_message_after_orphan_fragments() {
    let (a, mut b) = Pipe::duplex::<Vec<u8>>().unwrap();
    let mut p = raw_sender(&a);
    p.push(&[2, 1, 2, 3]).unwrap();
    p.push(&[2, 4, 5, 6]).unwrap();
    p.push(&[0, b'o', b'k']).unwrap();
    let mut first = vec![1u8];
    first.extend_from_slice(&10u64.to_le_bytes());
    first.extend_from_slice(b"abc");
    p.push(&first).unwrap();
    p.push(&[0, b'n', b'e', b'x', b't']).unwrap();
    assert!(matches!(b.recv_bytes_timeout(T30), Err(RecvError::Lost(_))));
    assert_eq!(b.recv_bytes_timeout(T30).unwrap(), b"ok");
    assert!(matches!(b.recv_bytes_timeout(T30), Err(RecvError::Lost(_))));
    assert_eq!(b.recv_bytes_timeout(T30).unwrap(), b"next");
    assert_eq!(
        b.recv_bytes_timeout(Duration::from_millis(10)),
        Err(RecvError::Timeout)
    );
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Msg(u64);

/// Item 11: a queue handle sent through another queue, whose sender then dropped the queue, must
/// be refused (its fd numbers now name a new queue of the same type), with an error that says
/// the handle is stale, in-process and in a forked child.
#[test]
fn stale_queue_handle_taken_out_of_a_carrier_is_refused_not_aliased() {
    let check = |carrier: &Queue<Queue<Msg>>| -> Result<(), String> {
        match carrier.get_timeout(T30) {
            Ok(q) => Err(format!("stale handle opened: {:?}", q.get_nowait())),
            Err(GetError::Codec(e)) if e.0.contains("stale handle") => Ok(()),
            Err(e) => Err(format!("refused without saying why: {e:?}")),
        }
    };
    let carrier: Queue<Queue<Msg>> = Queue::new(4).unwrap();
    let old: Queue<Msg> = Queue::new(4).unwrap();
    carrier.put(old.clone()).unwrap();
    drop(old);
    let new: Queue<Msg> = Queue::new(4).unwrap();
    new.put(Msg(42)).unwrap();
    check(&carrier).unwrap();
    assert_eq!(new.get_nowait().unwrap(), Msg(42));

    let old: Queue<Msg> = Queue::new(4).unwrap();
    carrier.put(old.clone()).unwrap();
    drop(old);
    let new: Queue<Msg> = Queue::new(4).unwrap();
    new.put(Msg(7)).unwrap();
    let c2 = carrier.clone();
    let mut child = fork(move || match check(&c2) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            2
        }
    });
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
    assert_eq!(new.get_nowait().unwrap(), Msg(7));
}

/// Item 11 for pipe ends: a connection handle whose rings were dropped and whose fd numbers
/// were reused is refused with a stale-handle error.
#[test]
fn stale_connection_handle_is_refused() {
    let carrier: Queue<multiproc_channel::Connection<Msg>> = Queue::new(4).unwrap();
    let (a, b) = Pipe::duplex::<Msg>().unwrap();
    carrier.put(a).unwrap();
    drop(b);
    let (_c, _d) = Pipe::duplex::<Msg>().unwrap();
    match carrier.get_timeout(T30) {
        Err(GetError::Codec(e)) if e.0.contains("stale handle") => {}
        r => panic!("{r:?}"),
    }
}

/// Item 13: `qsize()` stays within `0..=maxsize` while four threads put and get on a maxsize-1
/// queue (the issue saw up to 46,534 on main; here main gave `usize::MAX`, the difference going
/// negative), and `full()`/`empty()` agree with `qsize()` once the queue is quiet.
#[test]
fn qsize_stays_within_the_bound_under_concurrent_puts_and_gets() {
    let q: Queue<u32> = Queue::new(1).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let (q, stop) = (&q, &stop);
            s.spawn(move || {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    // Non-blocking, so the counters move as fast as they can.
                    if t % 2 == 0 {
                        let _ = q.put_nowait(i);
                    } else {
                        let _ = q.get_nowait();
                    }
                    i = i.wrapping_add(1);
                }
            });
        }
        let mut bad = Vec::new();
        for _ in 0..1_000_000 {
            let n = q.qsize();
            if n > 1 {
                bad.push(n);
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(
            bad.is_empty(),
            "qsize beyond maxsize 1: {:?}",
            &bad[..bad.len().min(10)]
        );
    });
    // Quiet again: full() and empty() agree with qsize() (separate calls are separate
    // snapshots, so this is only checked once nothing moves).
    assert_eq!(q.full(), q.qsize() == 1);
    assert_eq!(q.empty(), q.qsize() == 0);
    assert_ne!(q.full(), q.empty());
}

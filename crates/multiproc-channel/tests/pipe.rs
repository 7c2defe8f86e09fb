//! Pipe/Connection across processes, with the conformance items 45-49, 52, 53 of
//! python-reference.md (each names the CPython test it mirrors).

mod common;

use common::{Exit, fork};
use multiproc_channel::{Connection, Pipe, PipeOptions, Plain, RecvError, SendError, wait};
use std::time::{Duration, Instant};

const T30: Duration = Duration::from_secs(30);

/// Item 45, test_connection: objects, bytes, recv_bytes_into with an offset and BufferTooShort, EOF
/// after the peer closes (the child echoes everything back, then exits).
#[test]
fn connection_objects_bytes_into_and_eof_after_peer_closes() {
    let (mut conn, mut child_conn) = Pipe::duplex::<(String, Vec<i32>)>().unwrap();
    let mut child = fork(move || {
        // Echo raw messages until EOF.
        loop {
            match child_conn.recv_bytes() {
                Ok(m) if m == b"STOP" => return 0,
                Ok(m) => {
                    if child_conn.send_bytes(&m, 0, None).is_err() {
                        return 2;
                    }
                }
                Err(RecvError::Eof) => return 0,
                Err(_) => return 3,
            }
        }
    });
    let obj = ("hello".to_string(), vec![1, 2, 3, -4]);
    conn.send(&obj).unwrap();
    assert_eq!(conn.recv().unwrap(), obj);

    let long = b"abcdefghijklmnopqrstuvwxyz".repeat(100);
    conn.send_bytes(&long, 0, None).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), long);

    conn.send_bytes(b"0123456789", 0, None).unwrap();
    let mut buf = [0u8; 32];
    assert_eq!(conn.recv_bytes_into(&mut buf, 8).unwrap(), 10);
    assert_eq!(&buf[8..18], b"0123456789");

    // BufferTooShort: the message stays for the next receive.
    conn.send_bytes(b"too long for it", 0, None).unwrap();
    let mut small = [0u8; 4];
    assert_eq!(
        conn.recv_bytes_into(&mut small, 0),
        Err(RecvError::BufferTooShort { needed: 15 })
    );
    let mut big = [0u8; 64];
    assert_eq!(conn.recv_bytes_into(&mut big, 1).unwrap(), 15);
    assert_eq!(&big[1..16], b"too long for it");

    // EOF once the peer is gone and the pipe is drained.
    conn.send_bytes(b"last", 0, None).unwrap();
    assert!(conn.poll(T30).unwrap());
    conn.send_bytes(b"STOP", 0, None).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"last");
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
    assert_eq!(conn.recv_bytes(), Err(RecvError::Eof));
    assert_eq!(conn.recv(), Err(RecvError::Eof));
}

/// Item 46, test_connection (poll): poll() answers at once; poll(t) waits about t.
#[test]
fn poll_returns_false_at_once_and_waits_for_timeout() {
    let (mut a, mut b) = Pipe::duplex::<u32>().unwrap();
    let t = Instant::now();
    assert!(!a.poll(Duration::ZERO).unwrap());
    assert!(t.elapsed() < Duration::from_secs(1));
    let t = Instant::now();
    assert!(!a.poll(Duration::from_millis(200)).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(150));
    let mut buf = [0u8; 8];
    assert_eq!(
        a.recv_bytes_into_timeout(&mut buf, 0, Duration::from_millis(20)),
        Err(RecvError::Timeout)
    );
    assert_eq!(
        a.recv_timeout(Duration::from_millis(20)),
        Err(RecvError::Timeout)
    );
    b.send(&7).unwrap();
    assert!(a.poll(Duration::ZERO).unwrap());
    assert_eq!(a.recv().unwrap(), 7);
}

/// Item 47, test_duplex_false: the wrong direction is an error.
#[test]
fn simplex_wrong_direction_is_an_error() {
    let (mut reader, mut writer) = Pipe::simplex::<u32>().unwrap();
    assert!(reader.readable() && !reader.writable());
    assert!(writer.writable() && !writer.readable());
    assert_eq!(reader.send(&1), Err(SendError::NotWritable));
    assert_eq!(writer.recv(), Err(RecvError::NotReadable));
    assert_eq!(writer.poll(Duration::ZERO), Err(RecvError::NotReadable));
    writer.send(&5).unwrap();
    assert_eq!(reader.recv().unwrap(), 5);
}

/// Item 48, test_sendbytes: offset and size work; bad bounds are BadRange.
#[test]
fn send_bytes_offset_size_and_bad_bounds() {
    let (mut a, mut b) = Pipe::duplex::<u8>().unwrap();
    let msg = b"abcdefghijklmnopq";
    a.send_bytes(msg, 0, None).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), msg);
    a.send_bytes(msg, 5, None).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), &msg[5..]);
    a.send_bytes(msg, 7, Some(8)).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), &msg[7..15]);
    a.send_bytes(msg, 17, Some(0)).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"");
    a.send_bytes(msg, 17, None).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"");
    for (off, size) in [
        (18, None),
        (0, Some(18)),
        (10, Some(8)),
        (usize::MAX, Some(1)),
        (1, Some(usize::MAX)),
    ] {
        assert!(
            matches!(
                a.send_bytes(msg, off, size),
                Err(SendError::BadRange { .. })
            ),
            "offset {off} size {size:?}"
        );
    }
    assert!(
        !b.poll(Duration::ZERO).unwrap(),
        "nothing was sent for bad ranges"
    );
}

/// Item 49, test_context: after closing, use is an error (Closed); the peer reads EOF.
#[test]
fn closed_connection_errors_and_peer_sees_eof() {
    let (mut a, mut b) = Pipe::duplex::<u32>().unwrap();
    a.send(&1).unwrap();
    a.close();
    assert!(a.closed());
    assert_eq!(a.recv(), Err(RecvError::Closed));
    assert_eq!(a.send(&2), Err(SendError::Closed));
    assert_eq!(a.poll(Duration::ZERO), Err(RecvError::Closed));
    assert_eq!(b.recv().unwrap(), 1);
    assert_eq!(b.recv(), Err(RecvError::Eof));
    // Like a socket buffer, sends into a pipe whose reader closed succeed while there is room;
    // once it is full, the writer gets Disconnected instead of blocking.
    let mut sent = 0;
    let err = loop {
        match b.send(&3) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 1_000_000);
    };
    assert_eq!(err, SendError::Disconnected);
}

/// Dropping an unused end in the only process that has it closes it (no fork happened).
#[test]
fn dropping_the_peer_gives_eof() {
    let (mut a, b) = Pipe::duplex::<u32>().unwrap();
    drop(b);
    assert_eq!(a.recv_timeout(T30), Err(RecvError::Eof));
}

/// Item 52, TestWait.test_wait: wait() multiplexes 4 readers (4 child processes) until EOF.
#[test]
fn wait_multiplexes_four_readers_until_eof() {
    let mut readers = Vec::new();
    let mut kids = Vec::new();
    for i in 0..4u32 {
        let (r, mut w) = Pipe::simplex::<u32>().unwrap();
        kids.push(fork(move || {
            for j in 0..10 {
                if w.send(&(i * 100 + j)).is_err() {
                    return 2;
                }
                std::thread::sleep(Duration::from_micros(200 * u64::from(i)));
            }
            0 // _exit: the parent sees the writer process die, then EOF
        }));
        readers.push(r);
    }
    let mut got = vec![Vec::new(); 4];
    let mut open: Vec<usize> = (0..4).collect();
    let deadline = Instant::now() + T30;
    while !open.is_empty() {
        assert!(Instant::now() < deadline, "wait loop did not finish");
        let mut live: Vec<&mut Connection<u32>> = Vec::new();
        let mut idx = Vec::new();
        for (i, r) in readers.iter_mut().enumerate() {
            if open.contains(&i) {
                live.push(r);
                idx.push(i);
            }
        }
        for k in wait(&mut live, Some(Duration::from_secs(5))) {
            let i = idx[k];
            match live[k].recv() {
                Ok(v) => got[i].push(v),
                Err(RecvError::Eof) => open.retain(|&o| o != i),
                Err(e) => panic!("reader {i}: {e}"),
            }
        }
    }
    for (i, g) in got.iter().enumerate() {
        let want: Vec<u32> = (0..10).map(|j| i as u32 * 100 + j).collect();
        assert_eq!(g, &want);
    }
    for k in kids {
        k.join_ok();
    }
}

/// Item 53, test_wait_timeout: wait() with a timeout and nothing ready returns [] after about t.
#[test]
fn wait_with_timeout_returns_empty() {
    let (mut a, _b) = Pipe::duplex::<u32>().unwrap();
    let (mut c, _d) = Pipe::duplex::<u32>().unwrap();
    let t = Instant::now();
    let r = wait(&mut [&mut a, &mut c], Some(Duration::from_millis(200)));
    assert!(r.is_empty());
    assert!(t.elapsed() >= Duration::from_millis(150));
    let r = wait(&mut [&mut a, &mut c], Some(Duration::ZERO));
    assert!(r.is_empty());
}

/// Messages larger than a ring record are split and reassembled, never truncated; over the
/// maximum is a clear error.
#[test]
fn large_messages_cross_processes_intact_and_over_max_is_refused() {
    let opts = PipeOptions {
        capacity: 64 * 1024,
        max_message: 8 * 1024 * 1024,
    };
    let (mut a, mut b) = Pipe::duplex_with::<Vec<u8>, multiproc_channel::Postcard>(opts).unwrap();
    let sizes = [
        0usize,
        1,
        32 * 1024 - 20,
        32 * 1024,
        100_000,
        3 * 1024 * 1024,
    ];
    let mut child = fork(move || {
        for &n in &sizes {
            let v: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            if b.send(&v).is_err() {
                return 2;
            }
            let raw: Vec<u8> = (0..n).map(|i| (i % 7) as u8).collect();
            if b.send_bytes(&raw, 0, None).is_err() {
                return 3;
            }
        }
        match b.send_bytes(&vec![0u8; 8 * 1024 * 1024 + 1], 0, None) {
            Err(SendError::TooLarge { .. }) => 0,
            _ => 4,
        }
    });
    for &n in &sizes {
        let v = a.recv_timeout(T30).unwrap();
        assert_eq!(v.len(), n);
        assert!(
            v.iter()
                .enumerate()
                .all(|(i, &x)| x == (i * 31 % 251) as u8)
        );
        if n > 10 {
            let mut small = vec![0u8; 10];
            assert!(matches!(
                a.recv_bytes_into(&mut small, 0),
                Err(RecvError::BufferTooShort { .. })
            ));
        }
        let raw = a.recv_bytes_timeout(T30).unwrap();
        assert_eq!(raw.len(), n);
        assert!(raw.iter().enumerate().all(|(i, &x)| x == (i % 7) as u8));
    }
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
    assert_eq!(a.recv_timeout(T30), Err(RecvError::Eof));
}

/// Plain-data messages bypass the codec.
#[test]
fn plain_codec_round_trips_across_fork() {
    let (mut a, mut b) = Pipe::duplex_with::<[u64; 4], Plain>(PipeOptions::default()).unwrap();
    let mut child = fork(move || {
        for i in 0..1000u64 {
            match b.recv() {
                Ok(m) if m == [i, i + 1, i + 2, i * 3] => {}
                _ => return 2,
            }
        }
        if b.send(&[9, 9, 9, 9]).is_err() {
            return 3;
        }
        0
    });
    for i in 0..1000u64 {
        a.send(&[i, i + 1, i + 2, i * 3]).unwrap();
    }
    assert_eq!(a.recv_timeout(T30).unwrap(), [9, 9, 9, 9]);
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
}

/// A connection serializes as its rings' handles and works once reopened.
#[test]
fn connection_serializes_as_handles() {
    let (mut a, b) = Pipe::duplex::<String>().unwrap();
    let bytes = postcard::to_allocvec(&b).unwrap();
    drop(b); // exported: does not close
    let mut b2: Connection<String> = postcard::from_bytes(&bytes).unwrap();
    a.send(&"over the handle".to_string()).unwrap();
    assert_eq!(b2.recv().unwrap(), "over the handle");
    b2.send(&"back".to_string()).unwrap();
    assert_eq!(a.recv().unwrap(), "back");
}

/// A writer SIGKILLed at random moments: the reader never hangs, never sees a torn or
/// truncated message (checksummed), and gets EOF after what was whole.
#[test]
fn writer_killed_at_random_points_reader_gets_whole_messages_then_eof() {
    for round in 0..12u64 {
        let opts = PipeOptions {
            capacity: 16 * 1024,
            max_message: 1 << 20,
        };
        let (mut r, mut w) =
            Pipe::simplex_with::<Vec<u8>, multiproc_channel::Postcard>(opts).unwrap();
        let mut child = fork(move || {
            let mut i = 0u64;
            loop {
                // Mix small and fragmented messages; last 8 bytes = checksum of the rest.
                let n = if i.is_multiple_of(5) {
                    20_000 + (i as usize % 7) * 1000
                } else {
                    10 + (i as usize % 50)
                };
                let mut v: Vec<u8> = (0..n).map(|k| (k as u64 ^ i) as u8).collect();
                let sum = v
                    .iter()
                    .fold(0u64, |s, &x| s.wrapping_mul(31).wrapping_add(u64::from(x)));
                v.extend_from_slice(&sum.to_le_bytes());
                if w.send(&v).is_err() {
                    return 2;
                }
                i += 1;
            }
        });
        // The writer binds its end on first use: wait for its first message (a writer killed
        // before it ever used its end cannot be told apart from one not started yet).
        let first = r.recv_timeout(T30).unwrap();
        assert!(first.len() > 8);
        std::thread::sleep(Duration::from_micros(500 + round * 700));
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(child.pid, libc::SIGKILL) };
        let mut n = 0;
        loop {
            match r.recv_timeout(T30) {
                Ok(v) => {
                    let (body, sum) = v.split_at(v.len() - 8);
                    let s = body
                        .iter()
                        .fold(0u64, |s, &x| s.wrapping_mul(31).wrapping_add(u64::from(x)));
                    assert_eq!(s.to_le_bytes(), sum, "round {round} message {n} corrupted");
                    n += 1;
                }
                Err(RecvError::Eof) => break,
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(child.wait_timeout(T30), Exit::Signal(libc::SIGKILL));
    }
}

/// A reader SIGKILLed: the blocked writer gets Disconnected instead of hanging.
#[test]
fn reader_killed_writer_gets_disconnected() {
    let opts = PipeOptions {
        capacity: 4096,
        max_message: 1 << 20,
    };
    let (mut r, mut w) = Pipe::simplex_with::<Vec<u8>, multiproc_channel::Postcard>(opts).unwrap();
    let mut child = fork(move || {
        loop {
            if r.recv().is_err() {
                return 2;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let t = Instant::now();
    let mut killed = false;
    loop {
        match w.send_timeout(&vec![7u8; 1000], T30) {
            Ok(()) => {}
            Err(SendError::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
        if !killed && t.elapsed() > Duration::from_millis(50) {
            // SAFETY: plain syscall on our own child.
            unsafe { libc::kill(child.pid, libc::SIGKILL) };
            killed = true;
        }
    }
    assert_eq!(child.wait_timeout(T30), Exit::Signal(libc::SIGKILL));
}

/// Bytes that do not decode as `T` are a Codec error (the message is consumed) and the
/// connection stays usable; `bind` binds an end eagerly.
#[test]
fn undecodable_message_is_a_codec_error_and_the_pipe_goes_on() {
    let (mut a, mut b) = Pipe::duplex::<(u64, String)>().unwrap();
    b.bind().unwrap();
    a.send_bytes(&[0xff; 3], 0, None).unwrap();
    assert!(matches!(b.recv(), Err(RecvError::Codec(_))));
    a.send_bytes(&[1, 1, b'x', 9], 0, None).unwrap(); // a valid message plus a trailing byte
    assert!(matches!(b.recv(), Err(RecvError::Codec(_))));
    a.send(&(5, "ok".into())).unwrap();
    assert_eq!(b.recv().unwrap(), (5, "ok".to_string()));
}

/// Issue 16, item 1: a reader that closed its end in another process makes the very next send
/// Disconnected (it used to be accepted until the ring filled, 16,315 sends later).
#[test]
fn send_after_reader_closed_elsewhere_is_disconnected_at_once() {
    let (mut reader, mut writer) = Pipe::simplex::<u32>().unwrap();
    let child = fork(move || {
        if reader.recv_timeout(T30) != Ok(1) {
            return 2;
        }
        reader.close();
        0
    });
    writer.send(&1).unwrap();
    child.join_ok();
    assert_eq!(writer.send(&2), Err(SendError::Disconnected));
}

/// Issue 16, item 1: a SIGKILLed reader is noticed within a few thousand sends (a liveness
/// check every 4096 sends), long before the ring fills.
#[test]
fn send_to_a_killed_reader_is_disconnected_before_the_ring_fills() {
    let (mut reader, mut writer) = Pipe::simplex::<u32>().unwrap();
    let (mut ready_r, mut ready_w) = Pipe::simplex::<u8>().unwrap();
    let mut child = fork(move || {
        if reader.recv_timeout(T30) != Ok(0) || ready_w.send(&1).is_err() {
            return 2;
        }
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    writer.send(&0).unwrap();
    assert_eq!(ready_r.recv_timeout(T30), Ok(1));
    child.kill();
    let mut n = 0u32;
    let r = loop {
        n += 1;
        match writer.send_timeout(&n, Duration::from_secs(5)) {
            Ok(()) if n < 10_000 => {}
            r => break r,
        }
    };
    assert_eq!(r, Err(SendError::Disconnected), "after {n} sends");
}

/// Issue 16, item 3: `for m in &mut conn` ends at Eof after the peer in another process is
/// gone; `try_iter` drains without blocking; `IntoIterator` for an owned end.
#[test]
fn connection_iterators_end_at_eof() {
    let (mut a, mut b) = Pipe::duplex::<u32>().unwrap();
    let child = fork(move || {
        for i in 0..10 {
            if b.send(&i).is_err() {
                return 2;
            }
        }
        0
    });
    let mut got = Vec::new();
    for m in &mut a {
        got.push(m.unwrap());
    }
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    child.join_ok();

    let (mut a, mut b) = Pipe::duplex::<u32>().unwrap();
    b.send(&1).unwrap();
    b.send(&2).unwrap();
    assert_eq!(a.try_iter().map(Result::unwrap).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(a.try_iter().count(), 0);
    b.send(&3).unwrap();
    drop(b);
    assert_eq!(a.into_iter().collect::<Result<Vec<_>, _>>(), Ok(vec![3]));
}

/// `send_bytes_vectored`: the parts arrive as one message equal to their concatenation, as
/// one record and in fragments (parts that cross fragment boundaries, empty parts), in a
/// child process; an oversized total is `TooLarge` and sends nothing.
#[test]
fn vectored_send_arrives_as_the_joined_message_whole_and_fragmented() {
    let opts = PipeOptions {
        capacity: 4096,
        max_message: 1 << 20,
    };
    let (mut r, mut w) = Pipe::simplex_with::<Vec<u8>, multiproc_channel::Postcard>(opts).unwrap();
    let body: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let expected: Vec<Vec<u8>> = [(3usize, 10usize), (0, 0), (7, 3000), (8, 50_000)]
        .iter()
        .map(|&(h, b)| {
            let mut v = vec![0xAB; h];
            v.extend_from_slice(&body[..b]);
            v
        })
        .collect();
    let body2 = body.clone();
    let mut child = fork(move || {
        for (h, b) in [(3usize, 10usize), (0, 0), (7, 3000), (8, 50_000)] {
            let head = vec![0xAB; h];
            // The body in two parts around an empty one.
            let (x, y) = body2[..b].split_at(b / 3);
            if w.send_bytes_vectored(&[&head, x, &[], y]).is_err() {
                return 2;
            }
        }
        match w.send_bytes_vectored(&[&vec![0u8; 1 << 19], &vec![0u8; (1 << 19) + 1]]) {
            Err(SendError::TooLarge { len, max }) if len == (1 << 20) + 1 && max == 1 << 20 => {}
            _ => return 3,
        }
        if w.send_bytes(b"end", 0, None).is_err() {
            return 4;
        }
        0
    });
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(&r.recv_bytes_timeout(T30).unwrap(), want, "message {i}");
    }
    assert_eq!(r.recv_bytes_timeout(T30).unwrap(), b"end");
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
}

/// `recv_bytes_into` of messages larger than the ring (fragments copied straight into the
/// caller's buffer): exact bytes at an offset; a buffer too short is `BufferTooShort` with the
/// room needed and the message stays (received whole afterwards); a writer stopped (SIGSTOP)
/// in the middle of a message makes `recv_bytes_into_timeout` time out with the message half
/// received, and after SIGCONT the same message completes: every message whole and in order.
#[test]
fn recv_bytes_into_large_messages_direct_short_buffer_and_timeout_mid_message() {
    let opts = PipeOptions {
        capacity: 4096,
        max_message: 1 << 20,
    };
    let (mut r, mut w) = Pipe::simplex_with::<Vec<u8>, multiproc_channel::Postcard>(opts).unwrap();
    // Message i: 30,000 + i bytes of (k * 7 + i) as u8.
    let msg = |i: usize| -> Vec<u8> { (0..30_000 + i).map(|k| (k * 7 + i) as u8).collect() };
    let mut child = fork(move || {
        for i in 0..200 {
            if w.send_bytes(&msg(i), 0, None).is_err() {
                return 2;
            }
        }
        0
    });
    let mut buf = vec![0u8; 64 * 1024];
    // Direct, at an offset.
    let n = r.recv_bytes_into_timeout(&mut buf, 100, T30).unwrap();
    assert_eq!(n, 30_000);
    assert_eq!(&buf[100..100 + n], &msg(0)[..]);
    // Too short: told the room, nothing lost.
    let mut small = vec![0u8; 1000];
    match r.recv_bytes_into_timeout(&mut small, 10, T30) {
        Err(RecvError::BufferTooShort { needed }) => assert_eq!(needed, 10 + 30_001),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.recv_bytes_timeout(T30).unwrap(), msg(1));
    // Stop the writer at some point, drain until a timeout (most likely mid-message), resume.
    let mut i = 2;
    let mut stops = 0;
    while i < 200 {
        if i % 25 == 0 && stops < 6 {
            stops += 1;
            // SAFETY: plain syscalls on our own child.
            unsafe { libc::kill(child.pid, libc::SIGSTOP) };
            loop {
                match r.recv_bytes_into_timeout(&mut buf, 0, Duration::from_millis(30)) {
                    Ok(n) => {
                        assert_eq!(&buf[..n], &msg(i)[..], "message {i}");
                        i += 1;
                    }
                    Err(RecvError::Timeout) => break,
                    Err(e) => panic!("message {i}: {e}"),
                }
            }
            // Scribble over the caller's buffer: a half-received message must not live there.
            buf.fill(0xEE);
            // SAFETY: as above.
            unsafe { libc::kill(child.pid, libc::SIGCONT) };
        }
        let n = r.recv_bytes_into_timeout(&mut buf, 0, T30).unwrap();
        assert_eq!(&buf[..n], &msg(i)[..], "message {i}");
        i += 1;
    }
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
}

/// `send_bytes_vectored_timeout` into a ring nobody reads: `Timeout` once full, and what was
/// sent before is received whole.
#[test]
fn vectored_send_times_out_on_a_full_ring() {
    let opts = PipeOptions {
        capacity: 4096,
        max_message: 1 << 20,
    };
    let (mut r, mut w) = Pipe::simplex_with::<Vec<u8>, multiproc_channel::Postcard>(opts).unwrap();
    let mut sent = 0;
    loop {
        match w
            .send_bytes_vectored_timeout(&[b"head", &[sent as u8; 300]], Duration::from_millis(20))
        {
            Ok(()) => sent += 1,
            Err(SendError::Timeout) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(sent < 100, "a 4 KiB ring took {sent} messages of 304 bytes");
    }
    assert!(sent > 0);
    for i in 0..sent {
        let m = r.recv_bytes_timeout(T30).unwrap();
        assert_eq!(&m[..4], b"head");
        assert_eq!(&m[4..], &[i as u8; 300][..]);
    }
}

//! Named pipes: `Pipe::create_named` in one process, `Pipe::open_named` in another (here a
//! forked child that opens by name only, as an unrelated process would).

mod common;

use common::{Exit, fork, shm_exists, unique_name};
use multiproc_channel::{ChannelError, Pipe, PipeMode, Plain, RecvError, SendError};
use multiproc_ring::RingError;
use multiproc_shm::ShmError;
use std::time::Duration;

const T30: Duration = Duration::from_secs(30);

fn gone(name: &str) -> bool {
    !shm_exists(name) && !shm_exists(&format!("{name}.c2o")) && !shm_exists(&format!("{name}.o2c"))
}

/// Duplex: the child opens by name; messages go both ways; the child's exit is EOF for the
/// creator; the creator's drop unlinks every segment.
#[test]
fn named_duplex_across_fork_both_directions_then_unlinked() {
    let name = unique_name("np-duplex");
    let mut conn = Pipe::create_named::<(u32, String)>(&name, PipeMode::Duplex).unwrap();
    assert!(shm_exists(&name));
    assert!(shm_exists(&format!("{name}.c2o")));
    assert!(shm_exists(&format!("{name}.o2c")));
    let mut child = fork(|| {
        let Ok(mut c) = Pipe::open_named::<(u32, String)>(&name) else {
            return 2;
        };
        // Echo each message back with its number doubled, until "stop".
        loop {
            match c.recv_timeout(T30) {
                Ok((_, s)) if s == "stop" => return 0,
                Ok((n, s)) => {
                    if c.send(&(n * 2, s)).is_err() {
                        return 3;
                    }
                }
                Err(_) => return 4,
            }
        }
    });
    for i in 0..100u32 {
        conn.send(&(i, format!("m{i}"))).unwrap();
        assert_eq!(conn.recv_timeout(T30).unwrap(), (i * 2, format!("m{i}")));
    }
    // A large message (fragmented through the ring) both ways.
    let big = "x".repeat(700_000);
    conn.send(&(7, big.clone())).unwrap();
    assert_eq!(conn.recv_timeout(T30).unwrap(), (14, big));
    conn.send(&(0, "stop".to_string())).unwrap();
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
    assert_eq!(conn.recv_timeout(T30), Err(RecvError::Eof));
    drop(conn);
    assert!(gone(&name));
}

/// Simplex: the creator reads, the opener writes; wrong directions are errors.
#[test]
fn named_simplex_opener_writes_creator_reads() {
    let name = unique_name("np-simplex");
    let mut r = Pipe::create_named::<u64>(&name, PipeMode::Simplex).unwrap();
    assert!(!shm_exists(&format!("{name}.c2o")));
    assert_eq!(r.send(&1), Err(SendError::NotWritable));
    let mut child = fork(|| {
        let Ok(mut w) = Pipe::open_named::<u64>(&name) else {
            return 2;
        };
        if w.recv_timeout(Duration::ZERO) != Err(RecvError::NotReadable) {
            return 3;
        }
        for i in 0..1000 {
            if w.send(&i).is_err() {
                return 4;
            }
        }
        0
    });
    for i in 0..1000u64 {
        assert_eq!(r.recv_timeout(T30).unwrap(), i);
    }
    assert_eq!(r.recv_timeout(T30), Err(RecvError::Eof));
    assert_eq!(child.wait_timeout(T30), Exit::Code(0));
    drop(r);
    assert!(gone(&name));
}

/// The type fingerprint refuses another `T` (or another codec); a second opener is refused
/// while the first is attached; a second creator of the same name is refused.
#[test]
fn named_open_with_wrong_type_second_opener_and_name_clash_are_errors() {
    let name = unique_name("np-type");
    let _creator = Pipe::create_named::<u32>(&name, PipeMode::Duplex).unwrap();
    match Pipe::open_named::<String>(&name) {
        Err(ChannelError::Shm(e @ ShmError::WrongType { .. })) => {
            let msg = e.to_string();
            assert!(msg.contains("wrong type"), "{msg}");
            assert!(msg.contains("u32") && msg.contains("String"), "{msg}");
        }
        other => panic!("expected a type error, got {other:?}"),
    }
    assert!(matches!(
        Pipe::open_named_with::<u32, Plain>(&name),
        Err(ChannelError::Shm(ShmError::WrongType { .. }))
    ));
    assert!(matches!(
        Pipe::create_named::<u32>(&name, PipeMode::Duplex),
        Err(ChannelError::Shm(ShmError::AlreadyExists { .. }))
    ));
    assert!(matches!(
        Pipe::open_named::<u32>(&unique_name("np-missing")),
        Err(ChannelError::Shm(ShmError::NotFound { .. }))
    ));
    let mut first = Pipe::open_named::<u32>(&name).unwrap();
    assert!(matches!(
        Pipe::open_named::<u32>(&name),
        Err(ChannelError::Ring(RingError::AlreadyAttached { .. }))
    ));
    first.close();
    drop(first);
    assert!(matches!(
        Pipe::open_named::<u32>(&name),
        Err(ChannelError::Ring(RingError::Closed(_)))
    ));
    drop(_creator);
    assert!(gone(&name));
}

/// The creator dying (SIGKILL) is EOF for the opener, after what was sent; a stale name is
/// reclaimed by the next creator.
#[test]
fn named_creator_killed_opener_sees_eof_and_name_is_reusable() {
    let name = unique_name("np-kill");
    let mut child = fork(|| {
        let Ok(mut c) = Pipe::create_named::<u32>(&name, PipeMode::Duplex) else {
            return 2;
        };
        if c.send(&42).is_err() {
            return 3;
        }
        // Wait for the parent's go (it kills us meanwhile).
        let _ = c.recv_timeout(T30);
        0
    });
    // Open once the child made it.
    let mut c = loop {
        match Pipe::open_named::<u32>(&name) {
            Ok(c) => break c,
            Err(ChannelError::Shm(ShmError::NotFound { .. })) => {
                assert_eq!(child.exited(), None, "creator exited early");
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(c.recv_timeout(T30).unwrap(), 42);
    child.kill();
    assert_eq!(c.recv_timeout(T30), Err(RecvError::Eof));
    drop(c);
    // The dead creator left the names; a new creator reclaims them.
    let again = Pipe::create_named::<u32>(&name, PipeMode::Duplex).unwrap();
    drop(again);
    assert!(gone(&name));
}

//! Checksummed messages, and the queue and pipe children that send and check them.

use crate::board::{
    Board, CHILD_WAIT, ERR_CHECKSUM, ERR_DUP, ERR_OTHER, ERR_PIPE_ORDER, MAX_SEQ, PIPE_RECV,
    PIPE_SENT, PRODUCERS, Q_LOST, Q_RECV, SENT,
};
use crate::round::Objects;
use multiproc::{Connection, GetError, PutError, RecvError, SendError};
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `[p u8][seq u64][payload][fnv1a of all before, u64]`.
pub fn message(p: u8, seq: u64, payload: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload + 17);
    v.push(p);
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((0..payload).map(|k| (k as u64 ^ seq ^ (u64::from(p) * 31)) as u8));
    let s = fnv1a(&v);
    v.extend_from_slice(&s.to_le_bytes());
    v
}

/// The (p, seq) of a message whose checksum holds.
pub fn check(v: &[u8]) -> Option<(usize, u64)> {
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

pub fn queue_payload(seq: u64) -> usize {
    if seq % 50 == 7 {
        1500 // larger than a slot: goes through a side file
    } else {
        (seq % 97) as usize
    }
}

pub fn pipe_payload(seq: u64) -> usize {
    if seq % 20 == 3 {
        20_000 // larger than the ring's largest record: chunked
    } else {
        (seq % 200) as usize
    }
}

pub fn producer(o: &Objects, p: usize) -> i32 {
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

pub fn take(board: &Board, v: &[u8]) -> Result<(), usize> {
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

pub fn consumer(o: &Objects) -> i32 {
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

pub fn pipe_writer(board: &Board, w: &mut Connection<Vec<u8>>) -> i32 {
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

pub fn pipe_reader(board: &Board, r: &mut Connection<Vec<u8>>) -> i32 {
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

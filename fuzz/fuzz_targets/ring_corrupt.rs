//! Rings in real (memfd) segments whose control block and data are overwritten with arbitrary
//! bytes: re-opening, attaching and every non-blocking operation must give a value or a clear
//! error, never a panic, UB (run under ASan by cargo-fuzz) or a hang.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use multiproc_ring::{MpmcRing, SpscRing};

#[derive(Arbitrary, Debug)]
struct Input {
    mpmc: bool,
    warmup: u8,
    /// (offset, bytes) patches into the payload (control block + data).
    patches: Vec<(u16, Vec<u8>)>,
    ops: Vec<u8>,
}

fn patch(base: *mut u8, len: usize, patches: &[(u16, Vec<u8>)]) {
    for (off, bytes) in patches {
        let off = *off as usize % len;
        let n = bytes.len().min(len - off);
        // SAFETY: [off, off + n) lies inside the payload mapping of `len` bytes; nothing else
        // uses the ring concurrently (single-threaded fuzz target).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(off), n) };
    }
}

fuzz_target!(|input: Input| {
    let mut v = Vec::new();
    if input.mpmc {
        let q = MpmcRing::new(8, 24).unwrap();
        for i in 0..input.warmup % 12 {
            let _ = q.try_push(&[i; 5]);
            if i % 3 == 0 {
                let _ = q.try_pop_into(&mut v);
            }
        }
        let seg = q.segment().unwrap().clone();
        patch(seg.payload_ptr().as_ptr(), seg.payload_len(), &input.patches);
        let Ok(q) = MpmcRing::from_segment(seg) else {
            return;
        };
        for op in &input.ops {
            match op % 3 {
                0 => drop(q.try_push(&[*op; 7])),
                1 => {
                    if let Ok(n) = q.try_pop_into(&mut v) {
                        assert!(n <= q.slot_size());
                    }
                }
                _ => drop(q.recover()),
            }
        }
    } else {
        let ring = SpscRing::new(256).unwrap();
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.consumer().unwrap();
        for i in 0..input.warmup % 40 {
            let _ = tx.try_push(&vec![i; (i as usize * 7) % 100]);
            if i % 3 == 0 {
                let _ = rx.try_pop_into(&mut v);
            }
        }
        let seg = ring.segment().unwrap().clone();
        patch(seg.payload_ptr().as_ptr(), seg.payload_len(), &input.patches);
        // Re-opening validates the control block; attaching validates indices (both sides are
        // held by live handles here, so attaching may also be refused: any error is fine).
        if let Ok(r2) = SpscRing::from_segment(seg) {
            let _ = r2.producer();
            let _ = r2.consumer();
        }
        // The live handles keep operating on the corrupted memory.
        let mut tx = Some(tx);
        let mut rx = Some(rx);
        for op in &input.ops {
            match op % 4 {
                0 => {
                    if let Some(tx) = tx.as_mut() {
                        let _ = tx.try_push(&[*op; 9]);
                    }
                }
                1 => {
                    if let Some(tx) = tx.as_mut()
                        && let Ok(mut g) = tx.try_reserve(*op as usize)
                    {
                        g.as_mut_slice().fill(1);
                        g.commit();
                    }
                }
                2 => {
                    if let Some(rx) = rx.as_mut()
                        && let Ok(n) = rx.try_pop_into(&mut v)
                    {
                        assert!(n <= ring.max_record());
                    }
                }
                _ => {
                    if let Some(rx) = rx.as_mut() {
                        let _ = rx.try_pop_batch(4, |r| assert!(r.len() <= 120));
                    }
                }
            }
        }
    }
});

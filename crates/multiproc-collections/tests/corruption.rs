//! A corrupted segment gives errors, never a panic, a hang or an out-of-bounds access: random
//! bytes are scribbled over the control block, tables and arenas (not over the pthread mutex,
//! which is glibc's), and every operation is tried after each scribble.

mod common;

use common::unique_name;
use multiproc_collections::{
    CollectionOptions, CreateError, Error, MAGIC_OFFSET, SharedDict, SharedList,
};
use multiproc_shm::ShmError;
use multiproc_testutil::Rng;

/// Bytes at the start of the payload left alone: the pthread mutex.
const MUTEX: usize = 40;

fn scribble(seg: &multiproc_shm::Segment, r: &mut Rng) {
    let len = seg.payload_len();
    // Half the time aim at the control block (counters, journal, active index).
    let off = if r.next().is_multiple_of(2) {
        MUTEX + (r.next() as usize % (512 - MUTEX))
    } else {
        MUTEX + (r.next() as usize % (len - MUTEX))
    };
    let n = 1 + (r.next() as usize % 8).min(len - off - 1);
    for i in 0..n {
        // SAFETY: off + i < payload_len, inside the mapping; the test is single-threaded here.
        unsafe {
            seg.payload_ptr()
                .as_ptr()
                .add(off + i)
                .write(r.next() as u8)
        };
    }
}

#[test]
fn scribbled_dict_answers_errors_never_panics() {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let mut errors = 0;
    for round in 0..40 {
        let d: SharedDict<String, Vec<u16>> =
            SharedDict::with_options(32, CollectionOptions { bytes: Some(1024) }).unwrap();
        for i in 0..20u16 {
            d.insert(&format!("key{i}"), &vec![i; i as usize]).unwrap();
        }
        for _ in 0..50 {
            scribble(d.segment(), &mut r);
            let k = format!("key{}", r.next() % 25);
            let results: [Result<(), Error>; 9] = [
                d.get(k.as_str()).map(|_| ()).map_err(Error::from),
                d.len().map(|_| ()).map_err(Error::from),
                d.items().map(|_| ()).map_err(Error::from),
                d.keys().map(|_| ()).map_err(Error::from),
                d.verify().map(|_| ()).map_err(Error::from),
                d.insert(&k, &vec![1, 2, 3]).map_err(Error::from),
                d.update(k.as_str(), |v| v.unwrap_or_default())
                    .map(|_| ())
                    .map_err(Error::from),
                d.remove(k.as_str()).map(|_| ()).map_err(Error::from),
                d.contains_key(k.as_str()).map(|_| ()).map_err(Error::from),
            ];
            errors += results.iter().filter(|x| x.is_err()).count();
            if round % 10 == 0 {
                let _ = d.clear();
            }
        }
    }
    println!("{errors} errors answered");
    assert!(errors > 0);
}

#[test]
fn scribbled_list_answers_errors_never_panics() {
    let mut r = Rng(0xD1B5_4A32_D192_ED03);
    for _ in 0..40 {
        let l: SharedList<String> =
            SharedList::with_options(32, CollectionOptions { bytes: Some(1024) }).unwrap();
        for i in 0..20 {
            l.push(&format!("item{i}")).unwrap();
        }
        for _ in 0..50 {
            scribble(l.segment(), &mut r);
            let i = (r.next() % 25) as usize;
            let _ = l.get(i);
            let _ = l.len();
            let _ = l.to_vec();
            let _ = l.verify();
            let _ = l.set(i, &"x".into());
            let _ = l.insert(i, &"y".into());
            let _ = l.remove(i);
            let _ = l.push(&"z".into());
            let _ = l.pop();
        }
    }
}

#[test]
fn corrupted_geometry_is_refused_at_open() {
    let name = unique_name("geo");
    let d: SharedDict<u8, u8> = SharedDict::create_named(&name, 8).unwrap();
    // The slot count follows the magic word.
    let slots_off = MAGIC_OFFSET + 8;
    // SAFETY: inside the payload's control block.
    unsafe {
        d.segment()
            .payload_ptr()
            .as_ptr()
            .add(slots_off)
            .cast::<u64>()
            .write(1 << 40)
    };
    // Refused by the geometry check at open (`Shared`'s validation: an out-of-range field).
    assert!(matches!(
        SharedDict::<u8, u8>::open_named(&name),
        Err(CreateError::Shm(ShmError::OutOfRange { .. }))
    ));
    // SAFETY: as above; the magic word.
    unsafe {
        d.segment()
            .payload_ptr()
            .as_ptr()
            .add(MAGIC_OFFSET)
            .write(0)
    };
    assert!(matches!(
        SharedDict::<u8, u8>::open_named(&name),
        Err(CreateError::Shm(ShmError::Corrupted(_)))
    ));
}

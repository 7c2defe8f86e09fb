//! The trust model (issue 12): what a process that writes a collection's segment, or misuses
//! the safe API, can and cannot do to another. It may cause errors; it may not cause a hang, a
//! panic, an overflow or an unmapped lock.

mod common;

use common::{Exit, fork, unique_name};
use multiproc_collections::{
    CollectionOptions, CreateError, Error, MAGIC_OFFSET, ReadError, SharedDict, SharedList,
    SharedLock, WriteError,
};
use multiproc_shm::{Segment, ShmError};
use std::sync::mpsc;
use std::time::Duration;

/// Runs `f` on a thread and waits at most 20 s for it: a hang fails the test instead of hanging
/// the suite (the stuck thread is left behind; the test binary exits anyway).
fn within_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} hung (no answer within 20 s)"))
}

/// Bytes before the payload (the segment header), for `Segment::scribble` offsets.
fn header_len(seg: &Segment) -> usize {
    seg.mapped_len() - seg.payload_len()
}

fn scribble_u64(seg: &Segment, payload_off: usize, v: u64) {
    seg.scribble(header_len(seg) + payload_off, &v.to_le_bytes());
}

/// Issue 12 item 3: a dict whose slot count was rewritten to a non-power of two (with the arena
/// resized so the total still matches the segment) used to pass the open checks; its table
/// masks probes with `slots - 1`, so a compaction's probe for an empty slot cycled over two
/// slots forever while holding the robust lock, and every user of the dict hung. It must be
/// refused at open (or at least answer).
#[test]
fn dict_with_a_non_power_of_two_slot_count_is_refused_not_hung() {
    let name = unique_name("pow2");
    // capacity 4: 8 slots, arena 512 + 8 bytes.
    let d: SharedDict<String, u64> =
        SharedDict::create_named_with(&name, 4, CollectionOptions { bytes: Some(512) }).unwrap();
    let seg = d.segment().clone();
    let (slots, arena) = (6u64, 536u64); // 16 * 8 + 2 * 520 == 16 * 6 + 2 * 536
    scribble_u64(&seg, MAGIC_OFFSET + 8, slots);
    scribble_u64(&seg, MAGIC_OFFSET + 16, arena);
    // Every slot of table[0] names the (all-zero, hence valid and empty) entry at offset 8, so
    // an insert finds no room and compacts.
    let table = seg.payload_len() - (16 * slots + 2 * arena) as usize;
    for i in 0..slots as usize {
        scribble_u64(&seg, table + 8 * i, 8);
    }
    let r = within_deadline("open + insert on a 6-slot dict", move || {
        let o = SharedDict::<String, u64>::open_named(&name)?;
        o.insert(&"x".to_string(), &1)?;
        Ok::<_, Error>(o.len()?)
    });
    assert!(
        matches!(
            r,
            Err(Error::Create(CreateError::Shm(ShmError::OutOfRange { .. })))
        ),
        "a non-power-of-two slot count must be refused at open, got {r:?}"
    );
    drop(d);
}

/// Whether the page holding `p` is mapped in this process.
fn is_mapped(p: *const u8) -> bool {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let start = (p as usize) & !(page - 1);
    // SAFETY: msync only inspects the range; on an unmapped range it fails with ENOMEM.
    unsafe { libc::msync(start as *mut libc::c_void, page, libc::MS_ASYNC) == 0 }
}

/// Forks a child that leaks a guard (`mem::forget`), drops every handle, then checks the lock's
/// memory is still mapped and that the thread can go on taking other robust locks. Exit 0 if
/// so, 1 if the mapping was cut (the bug: the robust mutex still on the thread's robust list
/// then points into whatever gets mapped there next).
fn leak_guard_in_child(f: impl FnOnce() -> *const u8) -> Exit {
    let mut child = fork(move || {
        let p = f();
        if !is_mapped(p) {
            return 1;
        }
        // The thread keeps working with other robust locks (the robust list stays valid).
        let other: SharedDict<u8, u8> = match SharedDict::with_capacity(4) {
            Ok(d) => d,
            Err(_) => return 2,
        };
        if other.insert(&1, &2).is_err() || other.get(&1).ok().flatten() != Some(2) {
            return 3;
        }
        0
    });
    child.wait_timeout(Duration::from_secs(30))
}

/// Issue 12 item 1 (collections): leaking a dict's guard and dropping the dict must leak the
/// mapping, not unmap a robust mutex this thread still holds.
#[test]
fn leaked_dict_guard_keeps_the_mapping() {
    let r = leak_guard_in_child(|| {
        let d: SharedDict<u8, u8> = SharedDict::with_capacity(4).unwrap();
        let p = d.segment().payload_ptr().as_ptr() as *const u8;
        std::mem::forget(d.get_lock().unwrap());
        drop(d);
        p
    });
    assert_eq!(
        r,
        Exit::Code(0),
        "the dict's mapping was cut under a held lock"
    );
}

#[test]
fn leaked_list_guard_keeps_the_mapping() {
    let r = leak_guard_in_child(|| {
        let l: SharedList<u8> = SharedList::with_capacity(4).unwrap();
        let p = l.segment().payload_ptr().as_ptr() as *const u8;
        std::mem::forget(l.get_lock_timeout(Duration::from_secs(1)).unwrap());
        drop(l);
        p
    });
    assert_eq!(
        r,
        Exit::Code(0),
        "the list's mapping was cut under a held lock"
    );
}

#[test]
fn leaked_shared_lock_guard_keeps_the_mapping() {
    let r = leak_guard_in_child(|| {
        let lock = SharedLock::new().unwrap();
        let p = lock.segment().payload_ptr().as_ptr() as *const u8;
        std::mem::forget(lock.lock().unwrap());
        drop(lock);
        p
    });
    assert_eq!(r, Exit::Code(0), "the lock's mapping was cut while held");
}

/// Issue 12 item 9 (collections): `remove(usize::MAX)` computed `index + 1` (an overflow panic
/// in debug builds; in release, on an empty list, a decode of nothing).
#[test]
fn list_remove_of_usize_max_is_index_out_of_range() {
    let l: SharedList<u32> = SharedList::with_capacity(4).unwrap();
    assert!(matches!(
        l.remove(usize::MAX),
        Err(WriteError::IndexOutOfRange {
            index: usize::MAX,
            len: 0
        })
    ));
    l.push(&7).unwrap();
    assert!(matches!(
        l.remove(usize::MAX),
        Err(WriteError::IndexOutOfRange { len: 1, .. })
    ));
    assert!(matches!(
        l.remove(1),
        Err(WriteError::IndexOutOfRange { index: 1, len: 1 })
    ));
    assert_eq!(l.remove(0).unwrap(), 7);
    assert!(matches!(
        l.remove(0),
        Err(WriteError::IndexOutOfRange { index: 0, len: 0 })
    ));
}

/// Creation sizes are the caller's: `bytes = usize::MAX` overflowed the rounding (a panic in
/// debug builds) instead of answering BadParameter.
#[test]
fn huge_creation_sizes_are_bad_parameters_not_overflows() {
    assert!(matches!(
        SharedDict::<u8, u8>::with_options(
            1,
            CollectionOptions {
                bytes: Some(usize::MAX)
            }
        ),
        Err(CreateError::BadParameter(_))
    ));
    assert!(matches!(
        SharedList::<u8>::with_options(
            1,
            CollectionOptions {
                bytes: Some(usize::MAX)
            }
        ),
        Err(CreateError::BadParameter(_))
    ));
    assert!(matches!(
        SharedDict::<u8, u8>::with_capacity(usize::MAX / 4),
        Err(CreateError::BadParameter(_))
    ));
    assert!(matches!(
        SharedList::<u8>::with_capacity(usize::MAX),
        Err(CreateError::BadParameter(_))
    ));
}

/// The geometry is read once at open and kept by the handle: rewriting it afterwards changes
/// nothing for open handles (they keep indexing with their validated copy), and a new open
/// refuses it.
#[test]
fn geometry_rewritten_after_open_is_ignored_by_open_handles() {
    let d: SharedDict<u32, u32> = SharedDict::with_capacity(8).unwrap();
    for i in 0..8 {
        d.insert(&i, &(i * 10)).unwrap();
    }
    let seg = d.segment().clone();
    scribble_u64(&seg, MAGIC_OFFSET + 8, 1 << 31);
    scribble_u64(&seg, MAGIC_OFFSET + 16, 1 << 40);
    for i in 0..8 {
        assert_eq!(d.get(&i).unwrap(), Some(i * 10));
    }
    d.compact().unwrap();
    assert_eq!(d.verify().unwrap(), 8);
    assert!(SharedDict::<u32, u32>::open_handle(&d.handle()).is_err());
}

/// A list element or dict entry whose stored length is rewritten to the arena's size is
/// refused before it sizes a copy or an allocation.
#[test]
fn rewritten_entry_lengths_are_refused_before_any_copy() {
    let l: SharedList<Vec<u8>> =
        SharedList::with_options(4, CollectionOptions { bytes: Some(256) }).unwrap();
    l.push(&vec![1, 2, 3]).unwrap();
    let seg = l.segment().clone();
    // The list's first element is at arena[0] offset 8 (tables of 4 slots, then the arenas).
    let arena = seg.payload_len() - 2 * (256 + 8);
    // lens = key_len | val_len << 32: a value of 2^32 - 1 bytes.
    scribble_u64(&seg, arena + 8 + 8, 0xffff_ffff << 32);
    assert!(matches!(l.get(0), Err(ReadError::Corrupted(_))));
    assert!(matches!(l.to_vec(), Err(ReadError::Corrupted(_))));
    assert!(l.pop().is_err());
}

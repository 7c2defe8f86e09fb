//! Segment creation and opening: every open-error case answers a clear error, stale segments of
//! dead creators are reclaimed, and nothing stays in /dev/shm.

mod common;

use common::{Exit, fork, shm_exists, unique_name};
use multiproc::shm::{
    Expect, HEADER_SIZE, ObjectKind, Segment, SegmentSpec, ShmError, TypeFingerprint, header,
};
use multiproc::{Array, CreateError, Value};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn shm_err(e: CreateError) -> ShmError {
    match e {
        CreateError::Shm(s) => s,
        other => panic!("expected a segment error, got {other}"),
    }
}

fn raw_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = std::path::PathBuf::from(format!("/dev/shm/multiproc.{name}"));
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&p)
        .unwrap();
    f.write_all(bytes).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Bytes of a ready header for a `Value<i64>` plus its payload, to be corrupted by tests.
fn good_value_bytes() -> Vec<u8> {
    let name = unique_name("proto");
    let v = Value::create_named(&name, 5i64).unwrap();
    let bytes = std::fs::read(format!("/dev/shm/multiproc.{name}")).unwrap();
    drop(v);
    bytes
}

#[test]
fn open_missing_name_is_not_found() {
    let e = shm_err(Value::<i64>::open_named(&unique_name("missing")).unwrap_err());
    assert!(matches!(e, ShmError::NotFound { .. }), "{e}");
}

#[test]
fn creating_an_existing_live_name_is_already_exists() {
    let name = unique_name("exists");
    let _v = Value::create_named(&name, 1u8).unwrap();
    let e = shm_err(Value::create_named(&name, 2u8).unwrap_err());
    assert!(
        matches!(e, ShmError::AlreadyExists { creator_pid: Some(p), .. } if p == std::process::id()),
        "{e}"
    );
}

#[test]
fn wrong_type_is_refused_value_i64_as_f64() {
    let name = unique_name("wrongtype");
    let _v = Value::create_named(&name, 1i64).unwrap();
    let e = shm_err(Value::<f64>::open_named(&name).unwrap_err());
    assert!(matches!(e, ShmError::WrongType { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("i64") && msg.contains("f64"), "{msg}");
}

#[test]
fn wrong_kind_is_refused_array_as_value() {
    let name = unique_name("wrongkind");
    let _a = Array::<i64>::create_named(&name, 4).unwrap();
    let e = shm_err(Value::<i64>::open_named(&name).unwrap_err());
    assert!(matches!(e, ShmError::WrongKind { .. }), "{e}");
}

#[test]
fn bad_magic_is_refused() {
    let name = unique_name("magic");
    let p = raw_file(&name, &[0xAB; 512]);
    let e = shm_err(Value::<i64>::open_named(&name).unwrap_err());
    std::fs::remove_file(p).unwrap();
    assert!(matches!(e, ShmError::BadMagic { .. }), "{e}");
}

#[test]
fn other_layout_version_is_refused() {
    let mut b = good_value_bytes();
    b[8..12].copy_from_slice(&999u32.to_le_bytes());
    let name = unique_name("version");
    let p = raw_file(&name, &b);
    let e = shm_err(Value::<i64>::open_named(&name).unwrap_err());
    std::fs::remove_file(p).unwrap();
    assert!(
        matches!(e, ShmError::VersionMismatch { found: 999, .. }),
        "{e}"
    );
}

#[test]
fn truncated_file_is_refused() {
    let name = unique_name("trunc");
    let p = raw_file(&name, &good_value_bytes()[..100]);
    let expect = Expect::new(ObjectKind::Value, TypeFingerprint::of::<i64>());
    let e = Segment::open_named_timeout(&name, &expect, Duration::from_millis(50)).unwrap_err();
    std::fs::remove_file(p).unwrap();
    assert!(matches!(e, ShmError::Truncated { actual: 100, .. }), "{e}");
}

#[test]
fn file_size_disagreeing_with_header_is_refused() {
    let mut b = good_value_bytes();
    b.extend_from_slice(&[0u8; 64]);
    let name = unique_name("size");
    let p = raw_file(&name, &b);
    let e = shm_err(Value::<i64>::open_named(&name).unwrap_err());
    std::fs::remove_file(p).unwrap();
    assert!(matches!(e, ShmError::SizeMismatch { .. }), "{e}");
}

#[test]
fn corrupted_array_length_is_refused_not_read_out_of_bounds() {
    let name = unique_name("arrlen");
    let a = Array::<u32>::create_named(&name, 4).unwrap();
    let mut b = std::fs::read(format!("/dev/shm/multiproc.{name}")).unwrap();
    drop(a);
    // The length sits right after the lock at the start of the payload.
    let off = HEADER_SIZE + std::mem::size_of::<multiproc::sync::RobustMutex>();
    b[off..off + 8].copy_from_slice(&1_000_000u64.to_le_bytes());
    let p = raw_file(&name, &b);
    let e = shm_err(Array::<u32>::open_named(&name).unwrap_err());
    std::fs::remove_file(p).unwrap();
    assert!(
        matches!(
            e,
            ShmError::SizeMismatch { .. } | ShmError::Corrupted(_) | ShmError::OutOfRange { .. }
        ),
        "{e}"
    );
}

#[test]
fn segment_never_marked_ready_times_out() {
    let mut b = good_value_bytes();
    b[header::INIT_STATE_OFFSET..header::INIT_STATE_OFFSET + 4]
        .copy_from_slice(&0u32.to_le_bytes());
    let name = unique_name("notready");
    let p = raw_file(&name, &b);
    let expect = Expect::new(ObjectKind::Value, TypeFingerprint::of::<i64>());
    let e = Segment::open_named_timeout(&name, &expect, Duration::from_millis(50)).unwrap_err();
    std::fs::remove_file(p).unwrap();
    assert!(matches!(e, ShmError::InitTimeout(_)), "{e}");
}

#[test]
fn permission_denied_for_another_user() {
    let name = unique_name("perm");
    let _v = Value::create_named(&name, 1i32).unwrap();
    let name2 = name.clone();
    // The child drops to `nobody` (tests run as root here, and root bypasses mode 0600).
    let mut child = fork(move || {
        // SAFETY: plain syscalls in the child.
        if unsafe { libc::geteuid() } == 0 && unsafe { libc::setuid(65534) } != 0 {
            return 10;
        }
        match Value::<i32>::open_named(&name2) {
            Err(CreateError::Shm(ShmError::PermissionDenied { .. })) => 0,
            Ok(_) => 1,
            Err(_) => 2,
        }
    });
    assert_eq!(child.wait_timeout(Duration::from_secs(10)), Exit::Code(0));
}

#[test]
fn invalid_names_are_refused() {
    for bad in ["", "a/b", "x y", ".."] {
        let e = shm_err(Value::create_named(bad, 0u8).unwrap_err());
        assert!(matches!(e, ShmError::InvalidName { .. }), "{bad:?}: {e}");
    }
}

#[test]
fn stale_segment_of_a_killed_creator_is_reclaimed_on_create() {
    let name = unique_name("stale");
    let name2 = name.clone();
    // The child creates the segment and dies without unlinking (SIGKILL-like: no destructors).
    let mut child = fork(move || match Value::create_named(&name2, 1u64) {
        Ok(v) => {
            std::mem::forget(v);
            0
        }
        Err(_) => 1,
    });
    assert_eq!(child.wait_timeout(Duration::from_secs(10)), Exit::Code(0));
    assert!(shm_exists(&name));
    let v = Value::create_named(&name, 2u64).unwrap();
    assert_eq!(v.load().unwrap(), 2);
    drop(v);
    assert!(!shm_exists(&name));
}

#[test]
fn forked_child_dropping_its_copy_does_not_unlink_the_parents_segment() {
    let name = unique_name("forkdrop");
    let v = Value::create_named(&name, 1u64).unwrap();
    let v2 = v.clone();
    fork(move || {
        drop(v2);
        0
    })
    .join_ok();
    assert!(shm_exists(&name));
    drop(v);
    assert!(!shm_exists(&name));
}

#[test]
fn failing_init_marks_nothing_ready_and_leaves_nothing() {
    let name = unique_name("initfail");
    let spec = SegmentSpec::new(ObjectKind::Raw, TypeFingerprint::of::<u8>(), 16, 8);
    let e = Segment::create_named(&name, &spec, |_, _| {
        Err(ShmError::Corrupted("test failure"))
    })
    .unwrap_err();
    assert!(matches!(e, ShmError::Corrupted(_)));
    assert!(!shm_exists(&name));
}

#[test]
fn every_named_object_of_this_process_is_gone_after_drop() {
    let names: Vec<String> = (0..5).map(|_| unique_name("leak")).collect();
    {
        let _a = Value::create_named(&names[0], 0u8).unwrap();
        let _b = Array::<u64>::create_named(&names[1], 100).unwrap();
        let _c = multiproc::RawValue::create_named(&names[2], 0u16).unwrap();
        let _d = multiproc::RawArray::<i8>::create_named(&names[3], 3).unwrap();
        let _e = Value::create_named(&names[4], [0u32; 8]).unwrap();
        assert!(names.iter().all(|n| shm_exists(n)));
    }
    for n in &names {
        assert!(!shm_exists(n), "{n} left in /dev/shm");
    }
}

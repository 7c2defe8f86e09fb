//! The build identity (issue 20, item 3): it survives `touch` of the executable and still
//! refuses a different build. Its own test binary: it changes the executable's mtime.
#![allow(missing_docs)]

use multiproc_process::{Process, StartError, StartMethod, task};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

multiproc_process::init_before_main!();

#[task(crate = multiproc_process)]
fn square(x: u64) -> u64 {
    x * x
}

fn touch_own_executable() {
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let before = std::fs::metadata(&exe).unwrap().modified().unwrap();
    let c = CString::new(exe.as_os_str().as_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
    ];
    // SAFETY: a NUL-terminated path and an array of two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    let after = std::fs::metadata(&exe).unwrap().modified().unwrap();
    assert_ne!(before, after, "the mtime did not change");
}

#[test]
fn touching_the_executable_keeps_spawn_working_and_another_build_is_still_refused() {
    let methods = [StartMethod::Spawn, StartMethod::ForkServer];
    for m in methods {
        let mut p = Process::builder().start_method(m).spawn(square, 3).unwrap();
        assert_eq!(p.join().unwrap(), 9, "{m:?}");
    }
    touch_own_executable();
    for m in methods {
        let mut p = Process::builder()
            .start_method(m)
            .spawn(square, 4)
            .unwrap_or_else(|e| panic!("{m:?} after touch: {e}"));
        assert_eq!(p.join().unwrap(), 16, "{m:?}");
    }
    for m in methods {
        match Process::builder()
            .start_method(m)
            .__corrupt_build_id()
            .spawn(square, 2)
        {
            Err(StartError::Refused(msg)) => assert!(msg.contains("different build"), "{msg}"),
            other => panic!("{m:?}: {other:?}"),
        }
    }
}

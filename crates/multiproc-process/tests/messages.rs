//! Issue 16, item 8: error texts show no Debug formatting (`Some(0)`), codec errors name the
//! direction and the Rust type, and the unregistered-task text is the one the Pool uses too.
#![allow(missing_docs)]

use multiproc_process::registry;
use multiproc_process::{CodecError, Process, StartError, StartMethod, StartMethodAlreadySet};
use serde::{Serialize, Serializer};

multiproc_process::init_before_main!();

/// A value postcard cannot encode (its `Serialize` fails).
#[derive(serde::Deserialize)]
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: Serializer>(&self, _s: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refused on purpose"))
    }
}

#[multiproc_process::task(crate = multiproc_process)]
fn takes_unencodable(_x: Unencodable) {}

fn not_a_task(x: u64) -> u64 {
    x
}

#[test]
fn handshake_eof_says_exit_status_not_some() {
    let e = StartError::HandshakeEof { exitcode: Some(0) };
    let s = e.to_string();
    assert!(s.contains("(exit status 0)"), "{s}");
    assert!(!s.contains("Some"), "{s}");
    let e = StartError::HandshakeEof { exitcode: Some(-9) };
    assert!(e.to_string().contains("(killed by signal 9)"), "{e}");
    let e = StartError::HandshakeEof { exitcode: None };
    assert!(e.to_string().contains("(exit status unknown)"), "{e}");
}

#[test]
fn start_method_already_set_uses_the_python_name() {
    let e = StartMethodAlreadySet(StartMethod::ForkServer);
    assert_eq!(
        e.to_string(),
        "context has already been set (start method forkserver); pass force = true to change it"
    );
}

#[test]
fn encoding_error_names_direction_what_and_type() {
    let e = Process::spawn(takes_unencodable, Unencodable).unwrap_err();
    let s = e.to_string();
    assert!(
        matches!(
            e,
            StartError::Codec(CodecError {
                direction: "encoding",
                ..
            })
        ),
        "{s}"
    );
    assert!(
        s.starts_with("encoding the task arguments (messages::Unencodable) with postcard failed"),
        "{s}"
    );
}

#[test]
fn decoding_error_names_direction_what_and_type() {
    let e = registry::decode::<(u64, String)>(&[], "the task arguments").unwrap_err();
    assert!(
        e.starts_with("decoding the task arguments ((u64, alloc::string::String)) with postcard"),
        "{e}"
    );
}

#[test]
fn unregistered_task_text_is_the_shared_one() {
    let e = Process::spawn(not_a_task, 1).unwrap_err();
    let name = std::any::type_name_of_val(&not_a_task);
    assert_eq!(
        e.to_string(),
        multiproc_process::task_not_registered_text(name)
    );
    assert!(
        e.to_string()
            .starts_with("`messages::not_a_task` is not a registered task"),
        "{e}"
    );
}

//! Errors of segment creation and opening.

use std::io;
use std::time::Duration;

/// Why a segment could not be created or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShmError {
    /// No segment by that name.
    #[error("shared-memory segment {name:?} not found")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// A live process already created a segment by that name.
    #[error("shared-memory segment {name:?} already exists ({})", creator_text(*.creator_pid))]
    AlreadyExists {
        /// The name asked for.
        name: String,
        /// The creator recorded in its header, if it could be read.
        creator_pid: Option<u32>,
    },
    /// The OS refused access (mode 0600 segments belong to their creator's user).
    #[error("permission denied for shared-memory segment {name:?}")]
    PermissionDenied {
        /// The name asked for.
        name: String,
    },
    /// The name cannot be a segment name.
    #[error("invalid segment name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The first eight bytes are not multiproc's magic: not one of our segments.
    #[error("not a multiproc segment: bad magic {found:#018x}")]
    BadMagic {
        /// The magic found.
        found: u64,
    },
    /// Made by a build with another layout version.
    #[error("segment layout version {found}, this build reads version {expected}")]
    VersionMismatch {
        /// The version found.
        found: u32,
        /// The version this build writes.
        expected: u32,
    },
    /// The segment holds another kind of object (a Queue opened as a Value, say).
    #[error("wrong object kind: the segment holds a {found}, expected a {expected}")]
    WrongKind {
        /// The kind found (its name, or the raw number if unknown).
        found: String,
        /// The kind expected.
        expected: String,
    },
    /// The segment holds another element type (a `Value<i64>` opened as `Value<f64>`).
    #[error("wrong type: the segment holds {found}, expected {expected}")]
    WrongType {
        /// The type found: name, size, align.
        found: String,
        /// The type expected: name, size, align.
        expected: String,
    },
    /// The file is smaller than its header (or than the header says).
    #[error("segment truncated: file is {actual} bytes, needs at least {needed}")]
    Truncated {
        /// Size of the file.
        actual: u64,
        /// Size needed.
        needed: u64,
    },
    /// The header's sizes disagree with the file or with the type.
    #[error("size mismatch: {what}: header says {header}, expected {expected}")]
    SizeMismatch {
        /// Which size.
        what: &'static str,
        /// What the header holds.
        header: u64,
        /// What it must be.
        expected: u64,
    },
    /// A header field is out of range.
    #[error("segment header corrupted: {0}")]
    Corrupted(&'static str),
    /// The creator did not mark the segment Ready in time.
    #[error(
        "segment was not initialized within {0:?} (creator still working, or died while creating)"
    )]
    InitTimeout(Duration),
    /// The creator marked the segment as failed.
    #[error("the segment's creator failed while initializing it")]
    InitFailed,
    /// The payload needs more alignment than a segment gives.
    #[error("payload alignment {0} exceeds the supported maximum")]
    AlignTooLarge(usize),
    /// A handle no longer names the segment it was made from: its fd number was closed and reused,
    /// or its name was unlinked and created again. Using it would reach another object.
    #[error("stale handle: {what}")]
    StaleHandle {
        /// What did not match.
        what: &'static str,
    },
    /// A value read from shared memory is beyond what this process accepts (a corrupted or
    /// hostile segment), caught before it was used to index, loop or allocate.
    #[error("segment field out of range: {what} is {found}, limit {limit}")]
    OutOfRange {
        /// Which field.
        what: &'static str,
        /// The value found.
        found: u64,
        /// The limit this process enforces.
        limit: u64,
    },
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Os {
        /// The call.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl ShmError {
    pub(crate) fn os(op: &'static str) -> ShmError {
        ShmError::Os {
            op,
            source: io::Error::last_os_error(),
        }
    }
}

/// Result of segment operations.
pub type Result<T, E = ShmError> = std::result::Result<T, E>;

/// `created by pid 8412, which is alive` / `its creator is alive` (no `Some(..)` in messages).
fn creator_text(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("created by pid {pid}, which is alive"),
        None => "its creator is alive".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16, item 8: no `Some(8412)` in a message.
    #[test]
    fn already_exists_names_the_creator_pid_without_debug_formatting() {
        let e = ShmError::AlreadyExists {
            name: "jobs".into(),
            creator_pid: Some(8412),
        };
        assert_eq!(
            e.to_string(),
            "shared-memory segment \"jobs\" already exists (created by pid 8412, which is alive)"
        );
        let e = ShmError::AlreadyExists {
            name: "jobs".into(),
            creator_pid: None,
        };
        assert_eq!(
            e.to_string(),
            "shared-memory segment \"jobs\" already exists (its creator is alive)"
        );
    }
}

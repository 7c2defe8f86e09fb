//! Logging as Python's `multiprocessing.log_to_stderr`: lines `[LEVEL/process-name] message`
//! on stderr, through `tracing`. The level is handed to children this process starts.
//!
//! ```no_run
//! multiproc_process::log_to_stderr(tracing::Level::INFO).unwrap();
//! tracing::info!("hello"); // [INFO/MainProcess] hello
//! ```

use crate::facade::{AtomicU8, Ordering};
use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

static LEVEL: AtomicU8 = AtomicU8::new(0);

/// Installing the stderr logger failed (another global subscriber is already set).
#[derive(Debug, thiserror::Error)]
#[error("a global tracing subscriber is already installed")]
pub struct LogInitError;

/// Installs a global `tracing` subscriber printing `[LEVEL/name] message` to stderr for events at
/// `level` and above, and makes children started from now on do the same.
pub fn log_to_stderr(level: Level) -> Result<(), LogInitError> {
    // Relaxed: read by this process's later spawns only.
    LEVEL.store(level_to_u8(level), Ordering::Relaxed);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .event_format(PythonFormat)
        .try_init()
        .map_err(|_| LogInitError)
}

/// The level set by [`log_to_stderr`], encoded for the bootstrap record.
pub(crate) fn current_level() -> Option<u8> {
    match LEVEL.load(Ordering::Relaxed) {
        0 => None,
        l => Some(l),
    }
}

fn level_to_u8(l: Level) -> u8 {
    match l {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

pub(crate) fn level_from_u8(l: u8) -> Option<Level> {
    Some(match l {
        1 => Level::ERROR,
        2 => Level::WARN,
        3 => Level::INFO,
        4 => Level::DEBUG,
        5 => Level::TRACE,
        _ => return None,
    })
}

/// Python's level names.
pub fn level_name(l: &Level) -> &'static str {
    match *l {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// `[%(levelname)s/%(processName)s] %(message)s`.
pub struct PythonFormat;

impl<S, N> FormatEvent<S, N> for PythonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let name = crate::state::with_current(|c| c.name.clone());
        write!(
            writer,
            "[{}/{}] ",
            level_name(event.metadata().level()),
            name
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

//! Logging as Python's `multiprocessing.log_to_stderr`: lines `[LEVEL/process-name] message`
//! on stderr, through `tracing`. The level is handed to children this process starts.
//!
//! ```no_run
//! multiproc_process::log_to_stderr(tracing::Level::INFO).unwrap();
//! tracing::info!("hello"); // [INFO/MainProcess] hello
//! ```
//!
//! An application with its own subscriber adds [`stderr_layer`] to it instead (a global
//! subscriber can be set only once):
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::util::SubscriberInitExt;
//! tracing_subscriber::registry()
//!     .with(multiproc_process::stderr_layer(tracing::Level::INFO))
//!     // .with(the application's own layers)
//!     .init();
//! ```
//!
//! Everything here but [`level_name`] needs the `log-to-stderr` feature (on by default), which
//! brings in `tracing-subscriber`.

use crate::facade::{AtomicU8, Ordering};
#[cfg(feature = "log-to-stderr")]
use std::fmt;
use tracing::Level;
#[cfg(feature = "log-to-stderr")]
use tracing::{Event, Subscriber};
#[cfg(feature = "log-to-stderr")]
use tracing_subscriber::fmt::format::Writer;
#[cfg(feature = "log-to-stderr")]
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
#[cfg(feature = "log-to-stderr")]
use tracing_subscriber::registry::LookupSpan;

static LEVEL: AtomicU8 = AtomicU8::new(0);

/// Installing the stderr logger failed (another global subscriber is already set).
#[derive(Debug, thiserror::Error)]
#[error("a global tracing subscriber is already installed")]
pub struct LogInitError;

/// Installs a global `tracing` subscriber printing `[LEVEL/name] message` to stderr for events at
/// `level` and above, and makes children started from now on do the same.
///
/// If a global subscriber is already installed (the application's), it is left alone: nothing
/// is installed and `Err(LogInitError)` says so; children still get `level` (a child whose
/// [`init_with`](crate::init_with) setup installs a subscriber keeps that one). To have both,
/// add [`stderr_layer`] to the application's subscriber instead of calling this.
#[cfg(feature = "log-to-stderr")]
pub fn log_to_stderr(level: Level) -> Result<(), LogInitError> {
    set_children_level(level);
    if tracing::dispatcher::has_been_set() {
        return Err(LogInitError);
    }
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::registry().with(stderr_layer_inner(level));
    tracing::subscriber::set_global_default(subscriber).map_err(|_| LogInitError)
}

/// The [`log_to_stderr`] output as a `tracing-subscriber` layer (Python's format, events at
/// `level` and above, to stderr), for an application that builds its own subscriber. Children
/// started from now on log at `level` too.
#[cfg(feature = "log-to-stderr")]
pub fn stderr_layer<S>(level: Level) -> impl tracing_subscriber::Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    set_children_level(level);
    stderr_layer_inner(level)
}

#[cfg(feature = "log-to-stderr")]
fn stderr_layer_inner<S>(level: Level) -> impl tracing_subscriber::Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .event_format(PythonFormat)
        .with_filter(tracing_subscriber::filter::LevelFilter::from_level(level))
}

#[cfg(feature = "log-to-stderr")]
fn set_children_level(level: Level) {
    // Relaxed: read by this process's later spawns only.
    LEVEL.store(level_to_u8(level), Ordering::Relaxed);
}

/// The level set by [`log_to_stderr`], encoded for the bootstrap record.
pub(crate) fn current_level() -> Option<u8> {
    match LEVEL.load(Ordering::Relaxed) {
        0 => None,
        l => Some(l),
    }
}

#[cfg(feature = "log-to-stderr")]
fn level_to_u8(l: Level) -> u8 {
    match l {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

#[cfg(feature = "log-to-stderr")]
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
#[cfg(feature = "log-to-stderr")]
pub struct PythonFormat;

#[cfg(feature = "log-to-stderr")]
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

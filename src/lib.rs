//! multiproc

pub use multiproc_process::{
    ChildInfo, ParentProcess, Process, ProcessBuilder, ProcessError, ProcessInfo, StartMethod,
    active_children, current_process, get_all_start_methods, get_start_method, init,
    init_before_main, log_to_stderr, parent_process, set_start_method, task,
};
/// Processes: start methods, the task registry, logging (the `multiproc-process` crate).
pub use multiproc_process as process;
#[doc(hidden)]
pub use multiproc_process::__private;

//! Models in forked processes: refusing what would hang.
//!
//! `fork` copies a process's memory but only the calling thread. TensorFlow
//! starts process-wide thread pools with its first session; in a fork its
//! memory says they exist, and a run that hands work to them waits forever.
//! Measured with TF 2.21 (docs/reliability.md): a forked child hangs in any
//! TF run that uses a pool, whether its model was loaded before the fork or
//! in the child, unless every TF model loaded before the fork, and the one
//! run, have `inter_op_threads=0` (ops run on the calling thread) and
//! `intra_op_threads=1` (no intra-op pool). So the core records where TF's
//! first session was made and refuses TF loads and runs in its forks outside
//! that setting, with an error instead of a hang.
//!
//! TorchScript runs in forks (its backend runs ops on the forking thread
//! single-threaded, see its `infer`), and python models do.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::backend::BackendOptions;
use crate::config::Platform;
use crate::error::{Error, Result};

/// The process that made this process image's first TF session (0: none).
/// Inherited by forks, which is the point.
static TF_FIRST_SESSION_PID: AtomicU32 = AtomicU32::new(0);
/// Whether a TF session with thread pools was made (a fork cannot run it).
static TF_POOLS_STARTED: AtomicBool = AtomicBool::new(false);

/// No thread pool to lose: ops run on the calling thread.
fn runs_on_calling_thread(options: &BackendOptions) -> bool {
    options.inter_op_threads == Some(0) && options.intra_op_threads == Some(1)
}

/// Checks that a model may be loaded here, and records that its platform's
/// pools will exist in this process. Call before the backend loads it.
pub(crate) fn before_load(platform: Platform, options: &BackendOptions) -> Result<()> {
    check(platform, options)?;
    if platform == Platform::TensorFlow {
        let pid = std::process::id();
        // Only the first session's process counts: forks inherit it.
        let _ = TF_FIRST_SESSION_PID.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst);
        if !runs_on_calling_thread(options) {
            TF_POOLS_STARTED.store(true, Ordering::SeqCst);
        }
    }
    Ok(())
}

/// Checks that a model loaded with `options` may run in this process.
pub(crate) fn check(platform: Platform, options: &BackendOptions) -> Result<()> {
    if platform != Platform::TensorFlow {
        return Ok(());
    }
    let pools_pid = TF_FIRST_SESSION_PID.load(Ordering::SeqCst);
    let pid = std::process::id();
    if pools_pid == 0 || pools_pid == pid {
        return Ok(());
    }
    if runs_on_calling_thread(options) && !TF_POOLS_STARTED.load(Ordering::SeqCst) {
        return Ok(());
    }
    Err(Error::UnsafeAfterFork {
        platform: platform.name().to_string(),
        pid,
        pools_pid,
        safe_setting: ", or give every tensorflow model loaded before the fork, and this one, \
                       inter_op_threads=0 and intra_op_threads=1"
            .to_string(),
    })
}

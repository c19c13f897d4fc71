//! The interpreter python models run in: the calling one inside Python; in a
//! Rust program, one started here on first use.

use std::ffi::CString;
use std::sync::Mutex;

use pyo3::ffi;

/// The Python version (major.minor) this backend was compiled for.
pub const BUILT_FOR: &str = env!("NEUROPODS_PYTHON_BUILT_FOR");

/// Whether `Py_GetVersion()`'s text (`3.12.1 (main, ...)`) is of the
/// release this backend was compiled for.
fn same_release(running: &str) -> bool {
    running
        .strip_prefix(BUILT_FOR)
        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with(' '))
}

/// Starts an interpreter unless the process has one. Its program name is
/// the executable from [`neuropods_frameworks::location::python_executable`]
/// (`NEUROPODS_PYTHON`, else `python3` on `PATH`), so that a virtualenv's
/// site-packages are found as that executable would find them.
pub fn ensure_started() -> Result<(), String> {
    static STARTING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = STARTING.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: may be called before initialisation.
    if unsafe { ffi::Py_IsInitialized() } != 0 {
        return Ok(());
    }
    // The libpython opened for us (see the core's registry) must be the
    // release pyo3 compiled this backend for: another one's structures and
    // ABI differ. Py_GetVersion may be called before initialisation.
    // SAFETY: returns a static NUL-terminated string.
    let running = unsafe { std::ffi::CStr::from_ptr(ffi::Py_GetVersion()) }.to_string_lossy();
    if !same_release(&running) {
        return Err(format!(
            "this backend was built for Python {BUILT_FOR}, but the libpython loaded is {}",
            running.split_whitespace().next().unwrap_or("unknown")
        ));
    }
    let program = neuropods_frameworks::location::python_executable();
    let program = CString::new(program.to_string_lossy().into_owned())
        .map_err(|_| "the Python executable's path contains a NUL byte".to_string())?;
    // SAFETY: the documented PyConfig sequence: init, set, initialize, clear.
    unsafe {
        let mut config = std::mem::MaybeUninit::<ffi::PyConfig>::zeroed();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let config = config.assume_init_mut();
        // The host program owns its signals and its command line.
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        let status =
            ffi::PyConfig_SetBytesString(config, &mut config.program_name, program.as_ptr());
        let status = if ffi::PyStatus_Exception(status) != 0 {
            status
        } else {
            ffi::Py_InitializeFromConfig(config)
        };
        ffi::PyConfig_Clear(config);
        if ffi::PyStatus_Exception(status) != 0 {
            let message = if status.err_msg.is_null() {
                "unknown error".to_string()
            } else {
                std::ffi::CStr::from_ptr(status.err_msg)
                    .to_string_lossy()
                    .into_owned()
            };
            return Err(format!(
                "cannot start Python ({}): {message}",
                program.to_string_lossy()
            ));
        }
        // Initialising left this thread attached; detach so that any thread
        // (this one included) attaches when it runs Python.
        ffi::PyEval_SaveThread();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_release_built_for_passes() {
        assert!(same_release(&format!("{BUILT_FOR}.7 (main, Jan 1 2026)")));
        assert!(!same_release("2.7.18 (default)"));
        // 3.1 must not pass for 3.12, nor 3.12 for 3.1.
        let longer = format!("{BUILT_FOR}0.1 (main)");
        assert!(!same_release(&longer));
    }
}

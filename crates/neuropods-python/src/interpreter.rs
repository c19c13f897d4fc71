//! The interpreter python models run in: the calling one inside Python; in a
//! Rust program, one started here on first use.

use std::ffi::CString;
use std::sync::Mutex;

use pyo3::ffi;

/// Starts an interpreter unless the process has one. Its program name is
/// the executable from [`neuropods_core::backend::registry::python_executable`]
/// (`NEUROPODS_PYTHON`, else `python3` on `PATH`), so that a virtualenv's
/// site-packages are found as that executable would find them.
pub fn ensure_started() -> Result<(), String> {
    static STARTING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = STARTING.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: may be called before initialisation.
    if unsafe { ffi::Py_IsInitialized() } != 0 {
        return Ok(());
    }
    let program = neuropods_core::backend::registry::python_executable();
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

//! Opening shared libraries: backend libraries, framework libraries,
//! libpython and custom op libraries all go through [`open`].
//!
//! Opening a library runs its initialisers, which are C++ for every
//! framework and op library: one that throws (a custom op library whose
//! `TORCH_LIBRARY` namespace is already registered in the process) would
//! unwind a C++ exception into Rust, which aborts the process ("Rust cannot
//! catch foreign exceptions"). `cpp/dlopen_guard.cpp` calls `dlopen` inside
//! a C++ `try` and turns the exception into an error.
//!
//! Catching is a last resort, not a recovery. glibc (checked on 2.36) takes
//! its loader lock (`dl_load_lock`) in `dlopen` and releases it on its own
//! return paths only; an exception unwinding through `dlopen` skips them.
//! The lock stays held by the thread that called `dlopen`: that thread can
//! still open libraries (the lock is recursive), but `dlopen` from any other
//! thread then blocks for ever, and so does `exit` called from another
//! thread (`_dl_fini` takes the same lock); the half-initialised library
//! stays mapped (a second `dlopen` of it returns a handle without running
//! its initialisers again). The error says so; callers that know why a
//! library would throw check before opening it (see the TorchScript
//! backend's custom ops).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libloading::os::unix::Library;

extern "C" {
    fn neuropods_guarded_dlopen(
        path: *const c_char,
        mode: c_int,
        error: *mut *mut c_char,
        threw: *mut c_int,
    ) -> *mut c_void;
    fn neuropods_dlopen_free_error(error: *mut c_char);
}

/// Whether a library's symbols resolve references of libraries opened later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `RTLD_GLOBAL`: frameworks, libpython, custom ops.
    Global,
    /// `RTLD_LOCAL`: backend libraries, reached through their entry point.
    Local,
}

/// Opens a library (`RTLD_NOW`), running its initialisers under the C++
/// guard. The error is the loader's reason, or what an initialiser threw.
pub fn open(path: &Path, scope: Scope) -> Result<Library, String> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{}: path contains a NUL byte", path.display()))?;
    let mode = libc::RTLD_NOW
        | match scope {
            Scope::Global => libc::RTLD_GLOBAL,
            Scope::Local => libc::RTLD_LOCAL,
        };
    let mut error: *mut c_char = std::ptr::null_mut();
    let mut threw: c_int = 0;
    // SAFETY: a NUL-terminated path and valid out-pointers; the guard
    // returns a dlopen handle or null with a malloc'ed message.
    let handle = unsafe { neuropods_guarded_dlopen(c_path.as_ptr(), mode, &mut error, &mut threw) };
    if !handle.is_null() {
        // SAFETY: a handle dlopen just returned.
        return Ok(unsafe { Library::from_raw(handle) });
    }
    let message = if error.is_null() {
        "dlopen failed".to_string()
    } else {
        // SAFETY: the guard's NUL-terminated message, freed once here.
        let text = unsafe { CStr::from_ptr(error) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: as above: freed once, after it was copied.
        unsafe { neuropods_dlopen_free_error(error) };
        text
    };
    if threw == 0 {
        return Err(message);
    }
    Err(format!(
        "{}: its initialiser threw a C++ exception while being opened: {}. \
         The library stays half-initialised in this process and the dynamic \
         loader's lock stays held by this thread (dlopen, and exit, from other \
         threads would block): restart the process",
        path.display(),
        first_paragraph(&message)
    ))
}

/// libtorch's messages append a C++ backtrace after the message itself.
fn first_paragraph(message: &str) -> &str {
    let end = message
        .find("\nException raised from")
        .or_else(|| message.find("\nframe #"))
        .unwrap_or(message.len());
    message.get(..end).unwrap_or(message).trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_the_loaders_reason() {
        let err = open(Path::new("/nonexistent/libnothing.so"), Scope::Local).unwrap_err();
        assert!(err.contains("libnothing.so"), "{err}");
        assert!(err.contains("No such file"), "{err}");
    }

    #[test]
    fn a_system_library_opens() {
        let library = open(Path::new("libm.so.6"), Scope::Local).unwrap();
        // SAFETY: cos has this signature.
        let cos = unsafe { library.get::<extern "C" fn(f64) -> f64>(b"cos") }.unwrap();
        assert_eq!(cos(0.0), 1.0);
    }

    #[test]
    fn backtraces_are_cut_from_messages() {
        let message =
            "namespace x is taken\nException raised from registerLibrary at D.cpp:1\nframe #0: ...";
        assert_eq!(first_paragraph(message), "namespace x is taken");
        assert_eq!(first_paragraph("plain"), "plain");
    }
}

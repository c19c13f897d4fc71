//! Where this binary is and which Python a Rust program embeds: found from
//! the library's own location (`dladdr`) and documented variables, so that
//! any program (Rust, C, Python) finds the same things.

use std::path::{Path, PathBuf};

/// The folder of the binary (executable or shared library) holding this
/// code: this crate is linked into each backend library too, so called from
/// a backend this is the backend library's folder.
pub fn own_dir() -> Option<PathBuf> {
    // SAFETY: `Dl_info` is plain data, for which all zeroes is a value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address and fills `info`.
    let found = unsafe { libc::dladdr(own_dir as *const libc::c_void, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
    }
    // SAFETY: dladdr returned a NUL-terminated file name.
    let file = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    let path = PathBuf::from(file.to_string_lossy().into_owned());
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    path.parent().map(Path::to_path_buf)
}

/// The Python executable whose interpreter a Rust program embeds for python
/// models: `NEUROPODS_PYTHON`, else `python3` on `PATH`.
pub fn python_executable() -> PathBuf {
    if let Some(path) = std::env::var_os("NEUROPODS_PYTHON") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("python3"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("python3"))
}

//! Where an installed framework is and which release it is, found without
//! loading it. libtorch's C++ ABI changes with every release, so the
//! TorchScript backend is built once per torch release, and the registry
//! must know the installed release before it opens any backend library:
//! opening a build made for another release is undefined behaviour.

use std::ffi::{c_void, CStr};
use std::path::{Path, PathBuf};

use neuropods_abi::{Platform, Release};

/// A framework found on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledFramework {
    /// The folder of its shared libraries.
    pub lib_dir: PathBuf,
    /// Its version as the framework writes it (`2.13.0+cu130`).
    pub version: String,
    /// The release that version names.
    pub release: Release,
}

/// Folders where a framework's own libraries may be, from the environment
/// (`NEUROPODS_LIBTORCH_DIR` or tch's `LIBTORCH`; `NEUROPODS_TENSORFLOW_DIR`;
/// `NEUROPODS_ONNXRUNTIME_DIR`). Installed wheels do not need these: backend
/// libraries find the framework through their rpath into site-packages, and
/// the Python package sets them when the framework is installed elsewhere
/// on `sys.path`.
pub fn framework_lib_dirs(platform: Platform) -> Vec<PathBuf> {
    let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
    match platform {
        Platform::TorchScript => [
            var("NEUROPODS_LIBTORCH_DIR"),
            var("LIBTORCH").map(|p| p.join("lib")),
        ]
        .into_iter()
        .flatten()
        .collect(),
        Platform::TensorFlow => var("NEUROPODS_TENSORFLOW_DIR").into_iter().collect(),
        Platform::Onnx => var("NEUROPODS_ONNXRUNTIME_DIR").into_iter().collect(),
        Platform::Python => Vec::new(),
    }
}

/// The files of every object mapped into the process (the executable first).
pub fn mapped_libraries() -> Vec<PathBuf> {
    unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _: usize, data: *mut c_void) -> i32 {
        // SAFETY: `data` is the vector `mapped_libraries` passed, and
        // `info` an entry the loader lends for this call; its name, when
        // set, is NUL-terminated.
        unsafe {
            let found = &mut *(data as *mut Vec<PathBuf>);
            let name = (*info).dlpi_name;
            if !name.is_null() && *name != 0 {
                found.push(PathBuf::from(
                    CStr::from_ptr(name).to_string_lossy().into_owned(),
                ));
            }
        }
        0
    }
    let mut found: Vec<PathBuf> = Vec::new();
    // SAFETY: the callback only reads the entries it is given.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut found as *mut _ as *mut c_void) };
    found
}

/// The folder of a mapped library with this file name.
pub fn mapped_library_dir(file_name: &str) -> Option<PathBuf> {
    mapped_libraries()
        .into_iter()
        .find(|p| p.file_name().is_some_and(|f| f == file_name))
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

/// The library that makes a folder a libtorch library folder.
pub const LIBTORCH_CPU: &str = "libtorch_cpu.so";

/// The libtorch this process uses or would use, in order: the one already
/// loaded (torch imported in Python), the folders the environment names,
/// then `site-packages/torch/lib` for each folder of backend builds
/// `site-packages/neuropods_native/backends` (what the backend library's
/// rpath points at).
pub fn locate_libtorch(backend_dirs: &[PathBuf]) -> Result<InstalledFramework, String> {
    let beside_wheel = backend_dirs
        .iter()
        .filter_map(|d| d.parent()?.parent())
        .map(|site| site.join("torch/lib"));
    let candidates: Vec<PathBuf> = mapped_library_dir(LIBTORCH_CPU)
        .into_iter()
        .chain(framework_lib_dirs(Platform::TorchScript))
        .chain(beside_wheel)
        .collect();
    first_libtorch(&candidates)
}

/// The first of `candidates` holding libtorch, with its version.
fn first_libtorch(candidates: &[PathBuf]) -> Result<InstalledFramework, String> {
    let Some(lib_dir) = candidates.iter().find(|d| d.join(LIBTORCH_CPU).is_file()) else {
        return Err(format!(
            "no {LIBTORCH_CPU} is loaded or in {}",
            candidates
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let lib_dir = std::fs::canonicalize(lib_dir).unwrap_or_else(|_| lib_dir.clone());
    let version = libtorch_version(&lib_dir)?;
    let release = Release::parse(&version).ok_or_else(|| {
        format!(
            "unreadable libtorch version '{version}' in {}",
            lib_dir.display()
        )
    })?;
    Ok(InstalledFramework {
        lib_dir,
        version,
        release,
    })
}

/// `__version__` of a torch package's `version.py`.
fn version_py_version(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("__version__"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|value| value.trim().trim_matches(|c| c == '\'' || c == '"'))
        .find(|v| !v.is_empty())
        .map(str::to_string)
}

/// The version of the libtorch in `lib_dir`: `version.py` of the torch
/// package it belongs to (`torch/lib/..`), or `build-version` of a
/// standalone libtorch (`libtorch/lib/..`).
pub fn libtorch_version(lib_dir: &Path) -> Result<String, String> {
    let root = lib_dir
        .parent()
        .ok_or_else(|| format!("{} has no parent folder", lib_dir.display()))?;
    let version_py = root.join("version.py");
    let build_version = root.join("build-version");
    if let Ok(text) = std::fs::read_to_string(&version_py) {
        return version_py_version(&text)
            .ok_or_else(|| format!("{} has no __version__", version_py.display()));
    }
    match std::fs::read_to_string(&build_version) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        _ => Err(format!(
            "neither {} nor {} is readable",
            version_py.display(),
            build_version.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_py_is_read() {
        let text = "from typing import Optional\n\n__all__ = ['__version__']\n__version__ = '2.13.0+cu130'\ndebug = False\n";
        assert_eq!(version_py_version(text).as_deref(), Some("2.13.0+cu130"));
        assert_eq!(
            version_py_version("__version__ = \"2.1.0\"\n").as_deref(),
            Some("2.1.0")
        );
        assert_eq!(version_py_version("debug = False\n"), None);
    }

    /// A torch package laid out as pip installs it, with `version`.
    fn torch_package(version: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let lib = root.path().join("site-packages/torch/lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join(LIBTORCH_CPU), b"").unwrap();
        std::fs::write(
            lib.join("../version.py"),
            format!("__version__ = '{version}'\n"),
        )
        .unwrap();
        root
    }

    #[test]
    fn the_first_folder_holding_libtorch_is_taken_with_its_release() {
        let site = torch_package("2.12.0+cu130");
        let empty = tempfile::tempdir().unwrap();
        let found = first_libtorch(&[
            empty.path().to_path_buf(),
            site.path().join("site-packages/torch/lib"),
        ])
        .unwrap();
        assert_eq!(found.version, "2.12.0+cu130");
        assert_eq!(found.release, Release::parse("2.12.0").unwrap());
        assert!(
            found.lib_dir.ends_with("site-packages/torch/lib"),
            "{found:?}"
        );
    }

    #[test]
    fn no_libtorch_names_the_folders_looked_in() {
        let empty = tempfile::tempdir().unwrap();
        let err = first_libtorch(&[empty.path().join("torch/lib")]).unwrap_err();
        assert!(err.contains(LIBTORCH_CPU), "{err}");
        assert!(
            err.contains(&empty.path().join("torch/lib").display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn an_unreadable_version_is_an_error_naming_the_files() {
        let root = tempfile::tempdir().unwrap();
        let lib = root.path().join("torch/lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join(LIBTORCH_CPU), b"").unwrap();
        let err = first_libtorch(&[lib]).unwrap_err();
        assert!(
            err.contains("version.py") && err.contains("build-version"),
            "{err}"
        );
    }
}

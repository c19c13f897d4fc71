//! Finding and opening ONNX Runtime, once per process.
//!
//! The library is looked for, in order: `ORT_DYLIB_PATH` (a file: `ort`'s
//! own variable), the folder `NEUROPODS_ONNXRUNTIME_DIR` names, and the
//! `onnxruntime` wheel installed beside Neuropods' (its
//! `site-packages/onnxruntime/capi/`, found from this library's folder,
//! `site-packages/neuropods_native/backends/`). The `onnxruntime-gpu` wheel
//! installs the same folder.
//!
//! The backend speaks ONNX Runtime's C API at version 17 (`ort` without an
//! `api-NN` feature), which every later 1.x runtime serves: `GetApi(17)` is
//! part of ONNX Runtime's compatibility promise. So: 1.17 or later, not 2.

use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use neuropods_abi::{Error, Platform, Release, Result, VersionRange};
use neuropods_frameworks::{framework::framework_lib_dirs, location::own_dir};

/// The ONNX Runtime releases the backend supports (see the module's docs).
pub const SUPPORTED: &str = ">=1.17.0 <2.0.0";

/// The name of the runtime's library in a folder (the wheel's file has the
/// version after it: `libonnxruntime.so.1.32.0`).
const LIBRARY: &str = "libonnxruntime.so";

/// ONNX Runtime, opened.
pub struct Runtime {
    /// The library file.
    pub path: PathBuf,
    /// Its version, e.g. "1.32.0".
    pub version: String,
    /// The version read as a release; `None` (with a warning at load) when
    /// it cannot be read.
    pub release: Option<Release>,
    // Sessions are made in this environment; `ort` only keeps a weak
    // reference to it.
    environment: ort::environment::Environment,
}

impl Runtime {
    /// The environment sessions are made in.
    pub fn environment(&self) -> &ort::environment::Environment {
        &self.environment
    }
}

/// Why the runtime is not usable; kept for the process's later loads.
#[derive(Clone, Debug)]
enum Unusable {
    NotFound(String),
    Version(String),
}

/// The runtime, opened by the first call; every later call gets the same
/// runtime, or the same error.
pub fn get() -> Result<&'static Runtime> {
    static RUNTIME: OnceLock<std::result::Result<Runtime, Unusable>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| open(&find()?))
        .as_ref()
        .map_err(|unusable| match unusable.clone() {
            Unusable::NotFound(detail) => Error::FrameworkNotFound {
                platform: Platform::Onnx.name().into(),
                // The core fills in the framework and the install hint.
                framework: String::new(),
                hint: String::new(),
                detail,
            },
            Unusable::Version(detail) => Error::FrameworkVersion {
                platform: Platform::Onnx.name().into(),
                detail,
            },
        })
}

/// The library file, from the places in the module's docs.
fn find() -> std::result::Result<PathBuf, Unusable> {
    if let Some(file) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        let file = PathBuf::from(file);
        return if file.is_file() {
            Ok(file)
        } else {
            Err(Unusable::NotFound(format!(
                "ORT_DYLIB_PATH names {}, which is not a file",
                file.display()
            )))
        };
    }
    let mut dirs = framework_lib_dirs(Platform::Onnx);
    if let Some(own) = own_dir() {
        dirs.push(own.join("../../onnxruntime/capi"));
    }
    dirs.iter().find_map(|dir| library_in(dir)).ok_or_else(|| {
        let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        Unusable::NotFound(format!(
            "no {LIBRARY} in {}",
            if searched.is_empty() {
                "any folder (this library's own folder is unknown)".to_string()
            } else {
                searched.join(", ")
            }
        ))
    })
}

/// The runtime's library in `dir`: `libonnxruntime.so`, else the newest
/// versioned one (`libonnxruntime.so.1.32.0`).
fn library_in(dir: &Path) -> Option<PathBuf> {
    let plain = dir.join(LIBRARY);
    if plain.is_file() {
        return Some(plain);
    }
    let mut versioned: Vec<(Release, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_str()?;
            let version = name.strip_prefix(LIBRARY)?.strip_prefix('.')?;
            Some((Release::parse(version)?, path))
        })
        .filter(|(_, path)| path.is_file())
        .collect();
    versioned.sort_by_key(|(release, _)| (release.major, release.minor, release.patch));
    versioned.pop().map(|(_, path)| path)
}

/// Opens the library, checks its version, and starts `ort` on it.
fn open(path: &Path) -> std::result::Result<Runtime, Unusable> {
    let version = version_of(path).map_err(Unusable::NotFound)?;
    let release = check(&version).map_err(Unusable::Version)?;
    let not_found =
        |e: &dyn std::fmt::Display| Unusable::NotFound(format!("{}: {e}", path.display()));
    let environment = ort::init_from(path)
        .map_err(|e| not_found(&e))?
        .with_name("neuropods")
        .build()
        .map_err(|e| not_found(&e))?;
    Ok(Runtime {
        path: path.to_path_buf(),
        version,
        release,
        environment,
    })
}

type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;

/// The version the library reports (`OrtGetApiBase()->GetVersionString()`),
/// read before `ort` asks it for its API, which an older runtime lacks.
fn version_of(path: &Path) -> std::result::Result<String, String> {
    // SAFETY: opening runs the library's initialisers, which only set up
    // its own state. It stays open: `ort` opens the same file next.
    let library = unsafe { libloading::Library::new(path) }
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: the symbol has this signature in every ONNX Runtime.
    let get_base = unsafe { library.get::<GetApiBase>(b"OrtGetApiBase") }.map_err(|_| {
        format!(
            "{} has no OrtGetApiBase: not an ONNX Runtime library",
            path.display()
        )
    })?;
    // SAFETY: OrtGetApiBase returns a pointer to a static struct whose
    // GetVersionString returns a static NUL-terminated string.
    let version = unsafe {
        let base = get_base();
        if base.is_null() {
            return Err(format!("{}: OrtGetApiBase returned null", path.display()));
        }
        let text: *const c_char = ((*base).GetVersionString)();
        CStr::from_ptr(text).to_string_lossy().into_owned()
    };
    std::mem::forget(library);
    Ok(version)
}

/// Checks a runtime version against [`SUPPORTED`]; returns its release, or
/// `None` when the version string cannot be read (the runtime is then
/// tried; `ort` refuses one without the API it needs).
pub fn check(version: &str) -> std::result::Result<Option<Release>, String> {
    let Some(release) = Release::parse(version) else {
        return Ok(None);
    };
    let supported = VersionRange::parse(SUPPORTED)?;
    if !supported.allows(release) {
        return Err(format!(
            "this backend supports ONNX Runtime {SUPPORTED} (it speaks the C API of 1.17), \
             but the ONNX Runtime found is {version}: install a supported one, e.g. \
             `pip install -U onnxruntime`"
        ));
    }
    Ok(Some(release))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_versions_pass() {
        for v in ["1.17.0", "1.17.3", "1.32.0", "1.40.1-dev"] {
            assert!(check(v).unwrap().is_some(), "{v}");
        }
    }

    #[test]
    fn unsupported_versions_are_refused_naming_both() {
        for v in ["1.16.3", "1.9.0", "2.0.0"] {
            let err = check(v).unwrap_err();
            assert!(err.contains(v) && err.contains(SUPPORTED), "{err}");
        }
    }

    #[test]
    fn an_unreadable_version_is_tried() {
        assert_eq!(check("unknown").unwrap(), None);
    }

    #[test]
    fn the_newest_versioned_library_is_chosen() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "libonnxruntime.so.1.9.0",
            "libonnxruntime.so.1.32.0",
            "libonnxruntime_providers_shared.so",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(
            library_in(dir.path()),
            Some(dir.path().join("libonnxruntime.so.1.32.0"))
        );
        std::fs::write(dir.path().join(LIBRARY), b"").unwrap();
        assert_eq!(library_in(dir.path()), Some(dir.path().join(LIBRARY)));
        assert_eq!(library_in(&dir.path().join("absent")), None);
    }
}

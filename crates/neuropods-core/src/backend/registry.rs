//! Which backend library serves which platform, and opening it once.
//!
//! Search order for a backend library: the directories in
//! `NEUROPODS_BACKEND_DIR` (`:`-separated), then, relative to the binary
//! that holds this code (the Python extension or a Rust program), the same
//! folder, its `backends/` subfolder and its parent (cargo puts examples and
//! tests one level below the libraries). A backend built per framework
//! release ([`PerRelease`]: TorchScript) is looked for by release first,
//! for the release [`framework`] finds installed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

pub use neuropods_frameworks::framework::framework_lib_dirs;
use neuropods_frameworks::framework::{self, InstalledFramework};
use neuropods_frameworks::library::{self, Scope};
pub use neuropods_frameworks::location::{own_dir, python_executable};

use super::abi::{BackendVTable, EntryPoint, ABI_VERSION, ENTRY_POINT};
use crate::config::Platform;
use crate::error::{Error, Result};

/// Static facts about the backend of one platform.
#[derive(Clone, Copy, Debug)]
pub struct BackendInfo {
    /// The platform.
    pub platform: Platform,
    /// File name of the backend library.
    pub library: &'static str,
    /// The framework it needs, for error messages.
    pub framework: &'static str,
    /// What to install when the framework is missing.
    pub install_hint: &'static str,
    /// Framework libraries to open first (with `RTLD_GLOBAL`) when their
    /// folder is known; see [`framework_lib_dirs`].
    pub framework_libs: &'static [&'static str],
    /// For a backend built once per framework release: how its libraries
    /// are named and how the installed release is found.
    pub per_release: Option<PerRelease>,
    /// Environment defaults set (unless the user set them) before the
    /// library is opened: frameworks read some settings only at load time.
    pub env_defaults: &'static [(&'static str, &'static str)],
    /// Which lines the framework writes to stderr while its libraries open
    /// are kept (see [`StartupFilter`]); `None` keeps all.
    pub startup_filter: Option<StartupFilter>,
}

/// A backend built once per framework release, because the framework's ABI
/// changes with each (libtorch's C++ does). The build for release X.Y is
/// `{library_prefix}X.Y.so`; the one matching the installed framework is
/// opened, and none is opened when no build matches.
#[derive(Clone, Copy, Debug)]
pub struct PerRelease {
    /// File name up to the release, e.g. `libneuropods_torchscript-torch`.
    pub library_prefix: &'static str,
    /// The framework's package name, as users install it.
    pub package: &'static str,
    /// Finds the installed framework, given the folders holding builds.
    pub locate: fn(&[PathBuf]) -> std::result::Result<InstalledFramework, String>,
}

impl PerRelease {
    /// The release a file of this backend was built for, from its name.
    fn release_of(&self, file_name: &str) -> Option<(u64, u64)> {
        let (major, minor) = file_name
            .strip_prefix(self.library_prefix)?
            .strip_suffix(".so")?
            .split_once('.')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    }

    /// The builds in `dirs`, by release (the first folder wins), newest last.
    fn builds(&self, dirs: &[PathBuf]) -> Vec<((u64, u64), PathBuf)> {
        let mut builds: Vec<((u64, u64), PathBuf)> = Vec::new();
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(release) = name.to_str().and_then(|n| self.release_of(n)) else {
                    continue;
                };
                if !builds.iter().any(|(r, _)| *r == release) {
                    builds.push((release, entry.path()));
                }
            }
        }
        builds.sort();
        builds
    }
}

/// Decides, per line, what a framework printed while opening is kept. For
/// frameworks that log from their static initialisers, before any setting
/// of theirs can silence them.
pub type StartupFilter = fn(&str) -> bool;

/// TF's libraries print INFO lines (`I0000 00:00:...`, the oneDNN notice)
/// and absl's "before InitializeLog" notice while they initialise, ignoring
/// `TF_CPP_MIN_LOG_LEVEL`. Dropped unless that level lets INFO through,
/// as TF itself would.
fn tensorflow_startup_line_kept(line: &str) -> bool {
    let min_level: i32 = std::env::var("TF_CPP_MIN_LOG_LEVEL")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    tensorflow_line_kept(line, min_level)
}

fn tensorflow_line_kept(line: &str, min_level: i32) -> bool {
    let bytes = line.as_bytes();
    let info = bytes.len() > 5
        && bytes.first() == Some(&b'I')
        && bytes
            .get(1..5)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let absl_notice = line.starts_with("WARNING: All log messages before absl::InitializeLog()");
    min_level < 1 || !(info || absl_notice)
}

/// The one table of backends.
pub const BACKENDS: &[BackendInfo] = &[
    BackendInfo {
        platform: Platform::TorchScript,
        // A build from cargo without a release in its name; installed
        // packages hold the per-release builds below.
        library: "libneuropods_torchscript.so",
        framework: "PyTorch's libtorch (torch 2.11, 2.12 or 2.13)",
        install_hint: "install it with `pip install torch==2.13.0` (or 2.12.x, 2.11.x)",
        // Not libtorch.so: it pulls in libtorch_cuda.so and gigabytes of
        // CUDA libraries, which are opened only when a model asks for a GPU.
        framework_libs: &["libc10.so", "libtorch_cpu.so"],
        per_release: Some(PerRelease {
            library_prefix: "libneuropods_torchscript-torch",
            package: "torch",
            locate: framework::locate_libtorch,
        }),
        env_defaults: &[],
        startup_filter: None,
    },
    BackendInfo {
        platform: Platform::TensorFlow,
        library: "libneuropods_tensorflow.so",
        framework: "TensorFlow (2.20 or a later 2.x)",
        install_hint: "install it with `pip install tensorflow-cpu==2.21.0`",
        framework_libs: &["libtensorflow_framework.so.2", "libtensorflow_cc.so.2"],
        per_release: None,
        // TF logs its start-up (oneDNN, CPU features, SavedModel reading)
        // at INFO while loading; 2 keeps warnings of its own out too.
        env_defaults: &[("TF_CPP_MIN_LOG_LEVEL", "2")],
        startup_filter: Some(tensorflow_startup_line_kept),
    },
    BackendInfo {
        platform: Platform::Python,
        library: "libneuropods_python.so",
        // The backend is built for one Python release (the wheel's).
        framework: "a Python interpreter of the release Neuropods was built for, with a shared libpython",
        install_hint: "set NEUROPODS_PYTHON to its executable (default: python3 on PATH), or NEUROPODS_LIBPYTHON to its libpython3.X.so",
        framework_libs: &[],
        per_release: None,
        env_defaults: &[],
        startup_filter: None,
    },
    BackendInfo {
        platform: Platform::Onnx,
        library: "libneuropods_onnx.so",
        framework: "ONNX Runtime 1.17 or later",
        install_hint: "install it with `pip install onnxruntime` (or onnxruntime-gpu), or set \
                       NEUROPODS_ONNXRUNTIME_DIR to the folder of its libonnxruntime.so",
        // The backend opens the runtime itself (ort's load-dynamic), from
        // the folder `framework_lib_dirs` gives or the installed wheel.
        framework_libs: &[],
        per_release: None,
        env_defaults: &[],
        startup_filter: None,
    },
];

/// The backend facts for a platform.
// BACKENDS has an entry for every platform; the fallback is never taken.
#[allow(clippy::indexing_slicing)]
pub fn info(platform: Platform) -> &'static BackendInfo {
    BACKENDS
        .iter()
        .find(|b| b.platform == platform)
        .unwrap_or(&BACKENDS[0])
}

fn loaded() -> &'static Mutex<HashMap<Platform, &'static BackendVTable>> {
    static LOADED: OnceLock<Mutex<HashMap<Platform, &'static BackendVTable>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

/// Registers a backend linked into the program, so that no library is
/// opened for its platform (for embedders that link a backend crate, and
/// for tests).
pub fn register(platform: Platform, vtable: &'static BackendVTable) {
    let mut map = loaded().lock().unwrap_or_else(|p| p.into_inner());
    map.insert(platform, vtable);
}

/// The backend for a platform, opening its library on first use.
pub fn backend(platform: Platform) -> Result<&'static BackendVTable> {
    // Held while opening so that two threads never open one library twice.
    let mut map = loaded().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(vtable) = map.get(&platform) {
        return Ok(vtable);
    }
    let vtable = open(info(platform))?;
    map.insert(platform, vtable);
    Ok(vtable)
}

/// Folders searched for backend libraries, in order.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("NEUROPODS_BACKEND_DIR")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    if let Some(own) = own_dir() {
        dirs.push(own.join("backends"));
        if let Some(parent) = own.parent() {
            dirs.push(parent.to_path_buf());
        }
        dirs.push(own);
    }
    dirs
}

/// Makes the Python C API's symbols global before the python backend is
/// opened (it does not link libpython, so that inside Python it uses the
/// running interpreter). Nothing to do inside a Python process; in a Rust
/// program, opens `NEUROPODS_LIBPYTHON`, else the libpython that
/// [`python_executable`] reports.
fn preload_libpython() -> std::result::Result<(), String> {
    // SAFETY: dlsym on the global scope only reads.
    let in_python =
        unsafe { !libc::dlsym(libc::RTLD_DEFAULT, c"Py_IsInitialized".as_ptr()).is_null() };
    if in_python {
        return Ok(());
    }
    let library = match std::env::var_os("NEUROPODS_LIBPYTHON") {
        Some(path) => PathBuf::from(path),
        None => {
            let python = python_executable();
            // Debian's python3.11 is linked statically yet ships the shared
            // library too: ask for the file, not for Py_ENABLE_SHARED.
            let query = "import os, sysconfig as s; \
                         p = os.path.join(s.get_config_var('LIBDIR') or '', s.get_config_var('INSTSONAME') or ''); \
                         print(p if os.path.isfile(p) else '')";
            let output = std::process::Command::new(&python)
                .args(["-c", query])
                .output()
                .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
            let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
            if !output.status.success() || path.is_empty() {
                return Err(format!(
                    "{} has no shared libpython (built without --enable-shared, or its libpython package is not installed)",
                    python.display()
                ));
            }
            PathBuf::from(path)
        }
    };
    // libpython's initialisers only set up its own state; the interpreter
    // is started later, by the backend.
    open_globally(&library)
}

/// Opens a framework library with `RTLD_GLOBAL`, for good: its symbols
/// then resolve the backend library's references by name.
fn open_globally(path: &Path) -> std::result::Result<(), String> {
    // Framework initialisers run once; the library is never closed.
    let library = library::open(path, Scope::Global)?;
    std::mem::forget(library);
    Ok(())
}

fn framework_missing(info: &BackendInfo, detail: String) -> Error {
    Error::FrameworkNotFound {
        platform: info.platform.name().to_string(),
        framework: info.framework.to_string(),
        hint: info.install_hint.to_string(),
        detail,
    }
}

/// The backend library to open for `info`, and for a per-release backend
/// the folder of the installed framework it was chosen for.
fn choose_library(info: &BackendInfo, dirs: &[PathBuf]) -> Result<(PathBuf, Option<PathBuf>)> {
    if let Some(per_release) = &info.per_release {
        let builds = per_release.builds(dirs);
        if let Some(((newest_major, newest_minor), _)) = builds.last() {
            let mut build_dirs: Vec<PathBuf> = Vec::new();
            for dir in builds.iter().filter_map(|(_, path)| path.parent()) {
                if !build_dirs.iter().any(|d| d == dir) {
                    build_dirs.push(dir.to_path_buf());
                }
            }
            let installed =
                (per_release.locate)(&build_dirs).map_err(|e| framework_missing(info, e))?;
            let wanted = (installed.release.major, installed.release.minor);
            if let Some((_, path)) = builds.iter().find(|(release, _)| *release == wanted) {
                return Ok((path.clone(), Some(installed.lib_dir)));
            }
            let package = per_release.package;
            let supported = builds
                .iter()
                .map(|((major, minor), _)| format!("{major}.{minor}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::FrameworkNotFound {
                platform: info.platform.name().to_string(),
                framework: info.framework.to_string(),
                hint: format!(
                    "install a release it was built for, e.g. `pip install '{package}=={newest_major}.{newest_minor}.*'`"
                ),
                detail: format!(
                    "{package} {} is installed ({}), and this Neuropods has backends for {package} {supported} only",
                    installed.version,
                    installed.lib_dir.display()
                ),
            });
        }
    }
    match dirs
        .iter()
        .map(|d| d.join(info.library))
        .find(|p| p.is_file())
    {
        Some(path) => Ok((path, None)),
        None => Err(Error::BackendNotFound {
            platform: info.platform.name().to_string(),
            library: match &info.per_release {
                Some(per_release) => {
                    format!(
                        "{}<release>.so or {}",
                        per_release.library_prefix, info.library
                    )
                }
                None => info.library.to_string(),
            },
            searched: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn open(info: &BackendInfo) -> Result<&'static BackendVTable> {
    let dirs = search_dirs();
    let (path, framework_dir) = choose_library(info, &dirs)?;
    for (name, value) in info.env_defaults {
        if std::env::var_os(name).is_none() {
            // Runs once per platform, under the registry lock, before the
            // framework starts threads of its own.
            std::env::set_var(name, value);
        }
    }
    let open_libraries = || {
        preload_framework(info, framework_dir.as_deref())
            .map_err(|e| framework_missing(info, e))?;
        // Backend libraries are never closed: models and tensors they made
        // may live until the process exits.
        library::open(&path, Scope::Local).map_err(|e| framework_missing(info, e))
    };
    let library = match info.startup_filter {
        Some(keep) => filter_stderr(keep, open_libraries),
        None => open_libraries(),
    }?;
    // SAFETY: the symbol has the EntryPoint signature by the ABI's contract.
    let entry: EntryPoint = unsafe {
        *library
            .get::<EntryPoint>(ENTRY_POINT.as_bytes())
            .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?
    };
    // SAFETY: the entry point returns a pointer to a static vtable.
    let vtable = unsafe { entry().as_ref() }
        .ok_or_else(|| Error::Internal(format!("{}: entry point returned null", path.display())))?;
    if vtable.abi_version != ABI_VERSION {
        return Err(Error::Internal(format!(
            "{} speaks backend ABI {}, this core speaks {ABI_VERSION}: rebuild it",
            path.display(),
            vtable.abi_version
        )));
    }
    std::mem::forget(library);
    Ok(vtable)
}

/// Runs `f` with stderr (fd 2) sent to a temporary file, then writes the
/// lines `keep` accepts to the real stderr. Lines other threads write
/// meanwhile are delayed, not lost. Without a temporary file or a spare
/// descriptor, `f` just runs.
fn filter_stderr<T>(keep: StartupFilter, f: impl FnOnce() -> T) -> T {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let Ok(mut file) = tempfile::tempfile() else {
        return f();
    };
    // SAFETY: plain descriptor calls; fd 2 is restored before returning.
    let saved = unsafe { libc::dup(2) };
    if saved < 0 {
        return f();
    }
    // SAFETY: as above.
    unsafe { libc::dup2(file.as_raw_fd(), 2) };
    let result = f();
    // SAFETY: as above.
    unsafe {
        libc::dup2(saved, 2);
        libc::close(saved);
    }
    let mut bytes = Vec::new();
    if file.rewind().is_ok() && file.read_to_end(&mut bytes).is_ok() {
        let text = String::from_utf8_lossy(&bytes);
        let kept: String = text.split_inclusive('\n').filter(|l| keep(l)).collect();
        let _ = std::io::stderr().write_all(kept.as_bytes());
    }
    result
}

/// Opens the framework's libraries globally from `chosen_dir` (the installed
/// framework a per-release backend was chosen for), else from the folders
/// the environment names, so that the backend library's dependencies resolve
/// by soname to them rather than to whatever its rpath finds.
fn preload_framework(
    info: &BackendInfo,
    chosen_dir: Option<&Path>,
) -> std::result::Result<(), String> {
    if info.platform == Platform::Python {
        return preload_libpython();
    }
    let dirs = match chosen_dir {
        Some(dir) => vec![dir.to_path_buf()],
        None => framework_lib_dirs(info.platform),
    };
    for dir in dirs {
        for lib in info.framework_libs {
            let path = dir.join(lib);
            if path.is_file() {
                open_globally(&path)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::Release;

    fn installed(version: &str) -> InstalledFramework {
        InstalledFramework {
            lib_dir: PathBuf::from("/site/torch/lib"),
            version: version.to_string(),
            release: Release::parse(version).unwrap(),
        }
    }

    /// The torchscript entry, with the installed torch given by `locate`.
    fn torchscript_with(
        locate: fn(&[PathBuf]) -> std::result::Result<InstalledFramework, String>,
    ) -> BackendInfo {
        let mut info = *self::info(Platform::TorchScript);
        info.per_release = info.per_release.map(|p| PerRelease { locate, ..p });
        info
    }

    /// A backends folder holding (empty) builds for torch 2.11 and 2.13,
    /// and a file that only looks like one.
    fn backends_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "libneuropods_torchscript-torch2.11.so",
            "libneuropods_torchscript-torch2.13.so",
            "libneuropods_torchscript-torch2.x.so",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        dir
    }

    #[test]
    fn the_build_for_the_installed_release_is_chosen_patch_releases_included() {
        let dir = backends_folder();
        let info = torchscript_with(|_| Ok(installed("2.13.1+cu130")));
        let (path, framework_dir) = choose_library(&info, &[dir.path().to_path_buf()]).unwrap();
        assert_eq!(
            path,
            dir.path().join("libneuropods_torchscript-torch2.13.so")
        );
        assert_eq!(framework_dir, Some(PathBuf::from("/site/torch/lib")));
    }

    #[test]
    fn a_release_without_a_build_names_it_and_the_builds() {
        let dir = backends_folder();
        let info = torchscript_with(|_| Ok(installed("2.12.0+cu130")));
        let err = choose_library(&info, &[dir.path().to_path_buf()]).unwrap_err();
        assert!(matches!(err, Error::FrameworkNotFound { .. }), "{err:?}");
        let message = err.to_string();
        for fragment in [
            "torch 2.12.0+cu130 is installed (/site/torch/lib)",
            "backends for torch 2.11, 2.13 only",
            "pip install 'torch==2.13.*'",
        ] {
            assert!(message.contains(fragment), "{message}");
        }
    }

    #[test]
    fn no_torch_found_is_framework_not_found_with_where_it_looked() {
        let dir = backends_folder();
        let info = torchscript_with(|_| Err("no libtorch_cpu.so in /nowhere".into()));
        let err = choose_library(&info, &[dir.path().to_path_buf()]).unwrap_err();
        assert!(matches!(err, Error::FrameworkNotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("/nowhere"), "{err}");
    }

    #[test]
    fn without_per_release_builds_cargo_s_library_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let info = torchscript_with(|_| panic!("not asked: no per-release build"));
        let err = choose_library(&info, &[dir.path().to_path_buf()]).unwrap_err();
        assert!(matches!(err, Error::BackendNotFound { .. }), "{err:?}");
        std::fs::write(dir.path().join("libneuropods_torchscript.so"), b"").unwrap();
        let (path, framework_dir) = choose_library(&info, &[dir.path().to_path_buf()]).unwrap();
        assert_eq!(path, dir.path().join("libneuropods_torchscript.so"));
        assert_eq!(framework_dir, None);
    }

    #[test]
    fn tensorflow_info_lines_are_dropped_unless_the_level_keeps_them() {
        let onednn =
            "I0000 00:00:1795560207.194508   19640 port.cc:153] oneDNN custom operations are on.\n";
        let notice = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n";
        let warning = "W0000 00:00:1795560207.194508   19640 cpu.cc:1] something is off\n";
        for line in [onednn, notice] {
            assert!(!tensorflow_line_kept(line, 2), "{line}");
            assert!(!tensorflow_line_kept(line, 1), "{line}");
            assert!(tensorflow_line_kept(line, 0), "{line}");
        }
        assert!(tensorflow_line_kept(warning, 2));
        assert!(tensorflow_line_kept("Illegal instruction\n", 2));
        assert!(tensorflow_line_kept("a user's own line\n", 3));
    }
}

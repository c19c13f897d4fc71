//! Which libtorch this backend runs on: the version it was compiled against,
//! the one actually loaded (a different one is refused: the backend's C++
//! and tch's bindings assume the headers' layouts, so another libtorch is
//! undefined behaviour, not a likely-compatible upgrade), and its CUDA
//! library, opened on demand.

use std::ffi::{c_char, c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use neuropods_core::backend::library::{self, Scope};
use neuropods_core::{Error, Release};

extern "C" {
    fn npt_built_torch_version() -> *const c_char;
}

/// The libtorch version of the headers this backend was compiled against.
pub fn built_version() -> &'static str {
    // SAFETY: a pointer to a string literal in cpp/libtorch_info.cpp.
    unsafe { CStr::from_ptr(npt_built_torch_version()) }
        .to_str()
        .unwrap_or("unknown")
}

/// The files of every object mapped into the process (the executable first).
pub fn mapped_libraries() -> Vec<PathBuf> {
    unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _: usize, data: *mut c_void) -> i32 {
        let found = &mut *(data as *mut Vec<PathBuf>);
        let name = (*info).dlpi_name;
        if !name.is_null() && *name != 0 {
            found.push(PathBuf::from(
                CStr::from_ptr(name).to_string_lossy().into_owned(),
            ));
        }
        0
    }
    let mut found: Vec<PathBuf> = Vec::new();
    // SAFETY: the callback only reads the entries it is given.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut found as *mut _ as *mut c_void) };
    found
}

/// The folder of the loaded `libtorch_cpu.so`.
pub fn libtorch_dir() -> Option<PathBuf> {
    mapped_libraries()
        .into_iter()
        .find(|p| p.file_name().is_some_and(|f| f == "libtorch_cpu.so"))
        .and_then(|p| p.parent().map(Path::to_path_buf))
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
fn version_of(lib_dir: &Path) -> Result<String, String> {
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

/// Compares the loaded libtorch's version with the build's (major.minor.patch;
/// local versions such as `+cpu` are builds of the same release).
fn compare(built: &str, loaded: &str, lib_dir: &Path) -> Result<Release, String> {
    let built_release =
        Release::parse(built).ok_or_else(|| format!("bad built version {built}"))?;
    let loaded_release = Release::parse(loaded).ok_or_else(|| {
        format!(
            "unreadable libtorch version '{loaded}' in {}",
            lib_dir.display()
        )
    })?;
    if loaded_release == built_release {
        return Ok(loaded_release);
    }
    Err(format!(
        "this backend was built against libtorch {built}, but the libtorch loaded in this \
         process ({}) is {loaded}: install torch=={built} (`pip install torch=={built}`), \
         or rebuild Neuropods against torch {loaded_release}",
        lib_dir.display()
    ))
}

/// What the version check found, once per process.
enum Checked {
    Matches(Release),
    /// The version could not be read; the build's release is assumed.
    Unknown(Release, String),
    Mismatch(String),
}

/// Checks the loaded libtorch against the build. Returns the release a
/// model's `platform_version_semver` is checked against, and a warning when
/// the loaded version could not be determined (then the build's is assumed:
/// refusing would block every model over a missing file).
pub fn check_version() -> Result<(Release, Option<String>), Error> {
    static CHECKED: OnceLock<Checked> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let built = built_version();
        let assumed = Release::parse(built).unwrap_or(Release {
            major: 0,
            minor: 0,
            patch: 0,
        });
        let unknown = |why: String| {
            Checked::Unknown(
                assumed,
                format!(
                    "cannot tell which libtorch version is loaded ({why}); assuming {built}, \
                     the version this backend was built against"
                ),
            )
        };
        let Some(dir) = libtorch_dir() else {
            return unknown("libtorch_cpu.so is not among the loaded libraries".into());
        };
        match version_of(&dir) {
            Err(why) => unknown(why),
            Ok(loaded) => match compare(built, &loaded, &dir) {
                Ok(release) => Checked::Matches(release),
                Err(detail) if Release::parse(&loaded).is_some() => Checked::Mismatch(detail),
                Err(why) => unknown(why),
            },
        }
    });
    match checked {
        Checked::Matches(release) => Ok((*release, None)),
        Checked::Unknown(release, warning) => Ok((*release, Some(warning.clone()))),
        Checked::Mismatch(detail) => Err(Error::FrameworkVersion {
            platform: "torchscript".into(),
            detail: detail.clone(),
        }),
    }
}

/// tch links with `--as-needed`, so `libtorch_cuda.so` is not a dependency
/// of this library and CUDA stays invisible until it is opened. It is
/// opened once, and only when a model asks for a GPU: it maps gigabytes of
/// CUDA libraries.
pub fn load_cuda() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let dir = libtorch_dir().ok_or("libtorch_cpu.so is not loaded")?;
            let path = dir.join("libtorch_cuda.so");
            if !path.is_file() {
                return Err(format!(
                    "{} does not exist (a CPU-only torch?)",
                    path.display()
                ));
            }
            // libtorch's own CUDA library; registers kernels, never closed.
            let library = library::open(&path, Scope::Global)?;
            std::mem::forget(library);
            Ok(())
        })
        .clone()
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

    #[test]
    fn local_versions_are_builds_of_the_same_release() {
        let dir = Path::new("/x/torch/lib");
        assert_eq!(
            compare("2.13.0", "2.13.0+cpu", dir).unwrap().to_string(),
            "2.13.0"
        );
        assert!(compare("2.13.0", "2.13.0", dir).is_ok());
    }

    #[test]
    fn another_release_is_refused_naming_both_and_what_to_install() {
        let dir = Path::new("/x/torch/lib");
        for other in ["2.13.1", "2.12.0+cu121", "3.0.0"] {
            let err = compare("2.13.0", other, dir).unwrap_err();
            assert!(
                err.contains("built against libtorch 2.13.0")
                    && err.contains(other)
                    && err.contains("pip install torch==2.13.0")
                    && err.contains("/x/torch/lib"),
                "{err}"
            );
        }
    }

    /// The real check, against the libtorch this test binary runs on.
    #[test]
    fn the_loaded_libtorch_is_found_and_matches_the_build() {
        // Make sure libtorch is mapped (the test binary links it lazily).
        let _ = tch::Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu));
        let dir = libtorch_dir().expect("libtorch_cpu.so is loaded");
        let loaded = version_of(&dir).expect("the loaded libtorch's version is readable");
        assert_eq!(Release::parse(&loaded), Release::parse(built_version()));
        let (release, warning) = check_version().unwrap();
        assert_eq!(
            release.to_string(),
            Release::parse(built_version()).unwrap().to_string()
        );
        assert_eq!(warning, None);
    }
}

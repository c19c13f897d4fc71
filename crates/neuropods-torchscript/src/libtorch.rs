//! Which libtorch this backend runs on: the version it was compiled against,
//! the one actually loaded (another release is refused: the backend's C++
//! and tch's bindings assume the headers' layouts, so another release is
//! undefined behaviour, not a likely-compatible upgrade; patch releases
//! keep the ABI and are accepted), and its CUDA library, opened on demand.
//!
//! The core already opens the build made for the installed release (see
//! `neuropods_frameworks::framework`); this check is what stops a build
//! without a release in its file name (cargo's, for Rust programs) and a
//! libtorch loaded from elsewhere than the core found.

use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use neuropods_abi::{Error, Release};
use neuropods_frameworks::framework;
use neuropods_frameworks::library::{self, Scope};

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

/// The folder of the loaded `libtorch_cpu.so`.
pub fn libtorch_dir() -> Option<PathBuf> {
    framework::mapped_library_dir(framework::LIBTORCH_CPU)
}

/// Compares the loaded libtorch's version with the build's: major.minor must
/// match (PyTorch's patch releases are fixes that keep the C++ ABI; local
/// versions such as `+cpu` are builds of the same release).
fn compare(built: &str, loaded: &str, lib_dir: &Path) -> Result<Release, String> {
    let built_release =
        Release::parse(built).ok_or_else(|| format!("bad built version {built}"))?;
    let loaded_release = Release::parse(loaded).ok_or_else(|| {
        format!(
            "unreadable libtorch version '{loaded}' in {}",
            lib_dir.display()
        )
    })?;
    if (loaded_release.major, loaded_release.minor) == (built_release.major, built_release.minor) {
        return Ok(loaded_release);
    }
    let line = format!("{}.{}", built_release.major, built_release.minor);
    Err(format!(
        "this backend was built against libtorch {built}, but the libtorch loaded in this \
         process ({}) is {loaded}: install torch {line} (`pip install 'torch=={line}.*'`), \
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
        match framework::libtorch_version(&dir) {
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
    fn local_versions_and_patch_releases_are_the_same_release() {
        let dir = Path::new("/x/torch/lib");
        assert_eq!(
            compare("2.13.0", "2.13.0+cpu", dir).unwrap().to_string(),
            "2.13.0"
        );
        assert!(compare("2.13.0", "2.13.0", dir).is_ok());
        // The loaded patch release is what models' ranges are checked against.
        assert_eq!(
            compare("2.12.0", "2.12.1+cu130", dir).unwrap().to_string(),
            "2.12.1"
        );
    }

    #[test]
    fn another_release_is_refused_naming_both_and_what_to_install() {
        let dir = Path::new("/x/torch/lib");
        for other in ["2.14.0", "2.12.0+cu121", "3.13.0"] {
            let err = compare("2.13.0", other, dir).unwrap_err();
            assert!(
                err.contains("built against libtorch 2.13.0")
                    && err.contains(other)
                    && err.contains("pip install 'torch==2.13.*'")
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
        let loaded =
            framework::libtorch_version(&dir).expect("the loaded libtorch's version is readable");
        assert_eq!(Release::parse(&loaded), Release::parse(built_version()));
        let (release, warning) = check_version().unwrap();
        assert_eq!(
            release.to_string(),
            Release::parse(built_version()).unwrap().to_string()
        );
        assert_eq!(warning, None);
    }
}

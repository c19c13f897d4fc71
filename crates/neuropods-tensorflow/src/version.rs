//! Which TensorFlow versions this backend runs on.
//!
//! The backend speaks TF's C API only (`c_api.h`), which TensorFlow covers
//! by semantic versioning: functions are not removed or changed within a
//! major version. It is linked against 2.21's libraries and uses no
//! function 2.20 lacks (a missing one would fail the library's opening, as
//! symbols are bound when it opens). So: 2.20 or any later 2.x; not 3.
//! Tested with tensorflow-cpu 2.20 and 2.21 (scripts/test-matrix.sh).

use std::ffi::CStr;

use neuropods_abi::{Error, Release, Result, VersionRange};

use tensorflow_sys as tf;

/// The TensorFlow releases the backend supports (see the module's docs).
pub const SUPPORTED: &str = ">=2.20.0 <3.0.0";

/// `TF_Version()` of the loaded TensorFlow, e.g. "2.21.0".
pub fn loaded() -> String {
    // SAFETY: TF_Version returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(tf::TF_Version()) }
        .to_string_lossy()
        .into_owned()
}

/// Checks a TensorFlow version against [`SUPPORTED`]; returns its release,
/// or `None` (with a warning) when the version string cannot be read.
pub fn check(version: &str) -> Result<(Option<Release>, Option<String>)> {
    let Some(release) = Release::parse(version) else {
        return Ok((
            None,
            Some(format!(
                "cannot read TensorFlow's version '{version}' (TF_Version()); \
                 assuming it is one this backend supports ({SUPPORTED})"
            )),
        ));
    };
    let supported = VersionRange::parse(SUPPORTED).map_err(Error::Internal)?;
    if !supported.allows(release) {
        return Err(Error::FrameworkVersion {
            platform: "tensorflow".into(),
            detail: format!(
                "this backend supports TensorFlow {SUPPORTED} (tested with 2.20 and 2.21), \
                 but the TensorFlow loaded in this process is {version}: install a supported \
                 one, e.g. `pip install tensorflow-cpu==2.21.0`"
            ),
        });
    }
    Ok((Some(release), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_versions_pass() {
        for v in ["2.20.0", "2.21.0", "2.21.3", "2.25.1", "2.21.0-rc1"] {
            assert!(check(v).unwrap().0.is_some(), "{v}");
        }
    }

    #[test]
    fn unsupported_versions_are_refused_naming_both() {
        for v in ["2.19.1", "1.15.0", "3.0.0"] {
            let err = check(v).unwrap_err().to_string();
            assert!(err.contains(v) && err.contains(SUPPORTED), "{err}");
        }
    }

    #[test]
    fn an_unreadable_version_is_a_warning() {
        let (release, warning) = check("unknown").unwrap();
        assert_eq!(release, None);
        assert!(warning.unwrap().contains("'unknown'"));
    }

    /// The real TF_Version() of the TensorFlow this test runs on.
    #[test]
    fn the_loaded_tensorflow_is_supported() {
        let version = loaded();
        assert!(Release::parse(&version).is_some(), "{version}");
        assert!(check(&version).is_ok(), "{version}");
    }
}

//! Framework versions, and config.json's `platform_version_semver`: an
//! npm-style range (`1.13.1`, `> 1.13.1`, `1.4.0 - 1.6.0`, `^2.0`, `~1.2`,
//! `1.x`, `*`, space-separated intersections, `||` unions), as in the
//! original Neuropod, parsed by the `nodejs-semver` crate (npm's grammar and
//! semantics, small and dependency-light) and checked against the version of
//! the framework that runs the model: libtorch (torchscript), TensorFlow
//! (tensorflow), the Python interpreter (python and pytorch, as the
//! original's Python bridge did).

use std::fmt;

use nodejs_semver::{Range, Version};

use crate::error::{Error, Result};

/// A framework release: major.minor.patch. Local versions (`+cu130`) and
/// pre-release tags are not part of it: a package needs "torch 2.13.0",
/// whichever build of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Release {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
}

impl Release {
    /// Reads the leading `major[.minor[.patch]]` of a version string such as
    /// `2.13.0+cu130`, `2.21.0-rc1` or `3.11.7`; missing parts are 0.
    pub fn parse(text: &str) -> Option<Release> {
        let text = text.trim();
        let end = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let mut parts = text.get(..end)?.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().map_or(Some(0), |p| p.parse().ok())?;
        let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
        Some(Release {
            major,
            minor,
            patch,
        })
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A parsed `platform_version_semver`; displays as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRange {
    text: String,
    range: Range,
}

impl VersionRange {
    /// Parses an npm-style range; the error says what is accepted.
    pub fn parse(text: &str) -> std::result::Result<VersionRange, String> {
        // npm reads an empty range as "*"; keep that.
        let range = Range::parse(text).map_err(|_| {
            format!(
                "'{text}' is not an npm-style version range (e.g. \"2.13.0\", \">= 2.1\", \
                 \"1.4.0 - 1.6.0\", \"^2.0\", \"~2.13\", \"2.x\", \"*\", joined by spaces or ||)"
            )
        })?;
        Ok(VersionRange {
            text: text.to_string(),
            range,
        })
    }

    /// The range as written in config.json.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a release is in the range.
    pub fn allows(&self, release: Release) -> bool {
        let version = Version::new(release.major, release.minor, release.patch, vec![], vec![]);
        self.range.satisfies(&version)
    }

    /// Refuses a model whose range excludes the framework `release` that
    /// would run it; `framework` names it for the message (e.g. "libtorch").
    pub fn check(&self, platform: &str, framework: &str, release: Release) -> Result<()> {
        if self.allows(release) {
            return Ok(());
        }
        Err(Error::FrameworkVersion {
            platform: platform.to_string(),
            detail: format!(
                "the model's config.json asks for {framework} \"{}\" (platform_version_semver), \
                 but this process runs {framework} {release}: install a {framework} in that \
                 range, or repackage the model with a range that includes {release}",
                self.text
            ),
        })
    }
}

impl Default for VersionRange {
    fn default() -> Self {
        VersionRange {
            text: "*".to_string(),
            range: Range::any(),
        }
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(text: &str) -> Release {
        Release::parse(text).unwrap()
    }

    fn allows(range: &str, version: &str) -> bool {
        VersionRange::parse(range).unwrap().allows(release(version))
    }

    #[test]
    fn releases_ignore_local_and_prerelease_parts() {
        assert_eq!(release("2.13.0+cu130").to_string(), "2.13.0");
        assert_eq!(release("2.21.0-rc1").to_string(), "2.21.0");
        assert_eq!(release("3.11.7").to_string(), "3.11.7");
        assert_eq!(release("2.13").to_string(), "2.13.0");
        assert_eq!(release(" 2 ").to_string(), "2.0.0");
        for bad in ["", "x", "+cpu", ".1"] {
            assert_eq!(Release::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn exact_versions() {
        assert!(allows("1.13.1", "1.13.1"));
        assert!(!allows("1.13.1", "1.13.2"));
        assert!(allows("=2.13.0", "2.13.0"));
    }

    #[test]
    fn comparators() {
        assert!(allows("> 1.13.1", "1.13.2"));
        assert!(!allows("> 1.13.1", "1.13.1"));
        assert!(allows(">=1.13.1", "1.13.1"));
        assert!(allows("<2", "1.99.0"));
        assert!(!allows("<2", "2.0.0"));
        assert!(allows("<=2.13.0", "2.13.0"));
    }

    #[test]
    fn hyphen_ranges_are_inclusive() {
        assert!(allows("1.4.0 - 1.6.0", "1.4.0"));
        assert!(allows("1.4.0 - 1.6.0", "1.6.0"));
        assert!(!allows("1.4.0 - 1.6.0", "1.6.1"));
        assert!(!allows("1.4.0 - 1.6.0", "1.3.9"));
        // A partial upper bound takes the whole minor.
        assert!(allows("1.4 - 1.6", "1.6.5"));
    }

    #[test]
    fn caret_and_tilde() {
        assert!(allows("^2.0", "2.13.0"));
        assert!(!allows("^2.0", "3.0.0"));
        assert!(!allows("^0.2.3", "0.3.0"));
        assert!(allows("~1.2", "1.2.9"));
        assert!(!allows("~1.2", "1.3.0"));
        assert!(allows("~2.13.0", "2.13.4"));
    }

    #[test]
    fn wildcards() {
        for range in ["*", "", "x", "2.x", "2.*", "2.13.x", "2"] {
            assert!(allows(range, "2.13.0"), "{range:?}");
        }
        assert!(!allows("1.x", "2.13.0"));
    }

    #[test]
    fn intersections_and_unions() {
        assert!(allows(">=2.0 <2.14", "2.13.0"));
        assert!(!allows(">=2.0 <2.13", "2.13.0"));
        assert!(allows("1.x || >=2.13", "2.13.0"));
        assert!(allows("1.x || >=2.13", "1.4.0"));
        assert!(!allows("1.x || >=2.14", "2.13.0"));
    }

    #[test]
    fn invalid_ranges_are_refused_with_examples() {
        for bad in ["banana", ">>1", "1.2.3.4.5", "^^1"] {
            let err = VersionRange::parse(bad).unwrap_err();
            assert!(
                err.contains(bad) && err.contains("npm-style"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_refusal_names_range_and_version() {
        let range = VersionRange::parse("< 2.0").unwrap();
        assert!(range
            .check("torchscript", "libtorch", release("1.9.0"))
            .is_ok());
        let err = range
            .check("torchscript", "libtorch", release("2.13.0+cpu"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"< 2.0\"") && err.contains("libtorch 2.13.0"),
            "{err}"
        );
    }
}

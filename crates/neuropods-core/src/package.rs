//! Packages on disk: a directory, or a zip of that directory's tree.
//!
//! A zip is extracted into a private temporary folder that lives as long as
//! the [`Package`] (and belongs to the process that made it, see
//! the `extraction` module); entries that would land outside it (`..`, absolute paths,
//! symlinks) and archives that inflate far beyond their size are refused.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

pub use neuropods_frameworks::digest::sha256_file;

use crate::config::{ModelConfig, CONFIG_FILE};
use crate::error::{Error, Result};
use crate::extraction::ExtractionDir;
use crate::json;

/// The manifest's file name at the package root.
pub const MANIFEST_FILE: &str = "manifest.json";
pub use neuropods_abi::BACKEND_CONFIG_FILE;

/// Limits on what a zip package may inflate to.
#[derive(Clone, Copy, Debug)]
pub struct ZipLimits {
    /// Most bytes all entries may inflate to together.
    pub max_total_bytes: u64,
    /// Most any entry may inflate relative to its compressed size (entries
    /// under 1 MiB are exempt: small text compresses well).
    pub max_ratio: u64,
}

impl Default for ZipLimits {
    fn default() -> Self {
        // Model weights barely compress; a 1000:1 ratio only comes from
        // crafted or degenerate data.
        ZipLimits {
            max_total_bytes: 64 << 30,
            max_ratio: 1000,
        }
    }
}

/// An opened package: its root folder on disk and its parsed config.
#[derive(Debug)]
pub struct Package {
    source: PathBuf,
    root: PathBuf,
    config: ModelConfig,
    // Declared last so that it is removed after everything else is dropped.
    _extracted: Option<ExtractionDir>,
}

impl Package {
    /// Opens a directory or zip package and parses its config.
    pub fn open(path: impl AsRef<Path>) -> Result<Package> {
        Package::open_with_limits(path, ZipLimits::default())
    }

    /// [`Package::open`] with explicit zip limits.
    pub fn open_with_limits(path: impl AsRef<Path>, limits: ZipLimits) -> Result<Package> {
        let source = path.as_ref().to_path_buf();
        let meta = fs::metadata(&source).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::PackageNotFound {
                path: source.clone(),
            },
            _ => Error::io(&source, e),
        })?;
        let (root, extracted) = if meta.is_dir() {
            check_entries(&source)?;
            (source.clone(), None)
        } else if !meta.is_file() {
            return Err(Error::InvalidPackage {
                path: source,
                reason: format!(
                    "is a {}, neither a folder nor a zip file",
                    special_kind(&meta)
                ),
            });
        } else {
            let dir = ExtractionDir::create()?;
            let tree = dir.tree();
            extract_zip(&source, &tree, limits)?;
            (find_root(&source, &tree)?, Some(dir))
        };
        let config_path = root.join(CONFIG_FILE);
        let text = fs::read_to_string(&config_path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::InvalidPackage {
                path: source.clone(),
                reason: format!("no {CONFIG_FILE} at the package root"),
            },
            _ => Error::io(&config_path, e),
        })?;
        let config = ModelConfig::from_json(&text)?;
        Ok(Package {
            source,
            root,
            config,
            _extracted: extracted,
        })
    }

    /// The path the package was opened from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The folder holding config.json (a temporary one for zips).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The parsed config.json.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The text of `0/config.json`, if the package has one.
    pub fn backend_config(&self) -> Result<Option<String>> {
        let path = self.root.join(BACKEND_CONFIG_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Every file of the package (relative paths with `/`, sorted) and its
    /// size in bytes.
    pub fn files(&self) -> Result<Vec<(String, u64)>> {
        let names = list_files(&self.root).map_err(|e| Error::io(&self.root, e))?;
        names
            .into_iter()
            .map(|rel| {
                let path = self.root.join(&rel);
                let size = fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
                Ok((rel, size))
            })
            .collect()
    }

    /// Whether the package has a `manifest.json`.
    pub fn has_manifest(&self) -> bool {
        self.root.join(MANIFEST_FILE).is_file()
    }

    /// Checks every file against `manifest.json`: each listed file must exist
    /// with its sha256, and every file must be listed.
    pub fn verify_manifest(&self) -> Result<()> {
        let invalid = |reason: String| Error::InvalidPackage {
            path: self.source.clone(),
            reason,
        };
        let manifest_path = self.root.join(MANIFEST_FILE);
        let text = fs::read_to_string(&manifest_path)
            .map_err(|e| invalid(format!("cannot read {MANIFEST_FILE}: {e}")))?;
        let expected = parse_manifest(&text)?;
        let mut found = BTreeMap::new();
        for rel in list_files(&self.root).map_err(|e| Error::io(&self.root, e))? {
            if rel != MANIFEST_FILE {
                found.insert(rel, ());
            }
        }
        for (rel, digest) in &expected {
            if !found.contains_key(rel) {
                return Err(invalid(format!("{rel} is in the manifest but missing")));
            }
            let actual = sha256_file(&self.root.join(rel)).map_err(|e| Error::io(rel, e))?;
            if &actual != digest {
                return Err(invalid(format!(
                    "{rel}: sha256 mismatch (manifest {digest}, file {actual})"
                )));
            }
        }
        if let Some(extra) = found.keys().find(|rel| !expected.contains_key(*rel)) {
            return Err(invalid(format!("{extra} is not in the manifest")));
        }
        Ok(())
    }
}

/// Builds `manifest.json` text for a package folder (every file but the
/// manifest itself, by relative path with `/` separators).
pub fn build_manifest(root: &Path) -> Result<String> {
    let mut files = serde_json::Map::new();
    for rel in list_files(root).map_err(|e| Error::io(root, e))? {
        if rel != MANIFEST_FILE {
            let digest = sha256_file(&root.join(&rel)).map_err(|e| Error::io(&rel, e))?;
            files.insert(rel, Value::from(digest));
        }
    }
    let manifest = serde_json::json!({"manifest_version": 1, "files": files});
    Ok(serde_json::to_string_pretty(&manifest).unwrap_or_default())
}

/// manifest.json as written.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a JSON object with manifest_version and files"
)]
struct Manifest {
    manifest_version: u64,
    files: BTreeMap<String, Sha256Hex>,
}

/// A sha256 digest as 64 hex digits (kept in lower case).
struct Sha256Hex(String);

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(serde::de::Error::custom(format!(
                "expected a sha256 digest (64 hex digits), got '{text}'"
            )));
        }
        Ok(Sha256Hex(text.to_ascii_lowercase()))
    }
}

/// The sha256 of each file listed in manifest.json text.
fn parse_manifest(text: &str) -> Result<BTreeMap<String, String>> {
    let manifest: Manifest = json::parse(MANIFEST_FILE, text)?;
    if manifest.manifest_version != 1 {
        return Err(Error::config(
            MANIFEST_FILE,
            "manifest_version",
            format!(
                "this Neuropods reads version 1, got {}",
                manifest.manifest_version
            ),
        ));
    }
    Ok(manifest
        .files
        .into_iter()
        .map(|(path, digest)| (path, digest.0))
        .collect())
}

/// Regular files under `root`, as sorted `/`-separated relative paths.
fn list_files(root: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        for entry in fs::read_dir(root.join(&rel_dir))? {
            let entry = entry?;
            let rel = rel_dir.join(entry.file_name());
            let kind = fs::metadata(entry.path())?;
            if kind.is_dir() {
                stack.push(rel);
            } else {
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Checks what a package folder holds: folders, regular files, and
/// symlinks to those inside the package. Anything else (a FIFO, a socket, a
/// device) is refused before any file is opened: reading a FIFO would wait
/// forever for a writer.
fn check_entries(root: &Path) -> Result<()> {
    let canonical_root = fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
    let refuse = |reason: String| Error::InvalidPackage {
        path: root.to_path_buf(),
        reason,
    };
    let mut stack = vec![canonical_root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            let inside = path
                .strip_prefix(&canonical_root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let file_type = entry.file_type().map_err(|e| Error::io(&path, e))?;
            if file_type.is_symlink() {
                let target = fs::canonicalize(&path).map_err(|e| Error::io(&path, e))?;
                if !target.starts_with(&canonical_root) {
                    return Err(refuse(format!(
                        "symlink {inside} points outside the package (to {})",
                        target.display()
                    )));
                }
                // The target is checked where the walk meets it.
            } else if file_type.is_dir() {
                stack.push(path);
            } else if !file_type.is_file() {
                let meta = entry.metadata().map_err(|e| Error::io(&path, e))?;
                return Err(refuse(format!(
                    "{inside} is a {}: a package holds only files and folders",
                    special_kind(&meta)
                )));
            }
        }
    }
    Ok(())
}

/// What a file that is neither a regular file nor a folder is, in words.
fn special_kind(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_fifo() {
        "FIFO (named pipe)"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

fn extract_zip(zip_path: &Path, dest: &Path, limits: ZipLimits) -> Result<()> {
    let invalid = |reason: String| Error::InvalidPackage {
        path: zip_path.to_path_buf(),
        reason,
    };
    let file = File::open(zip_path).map_err(|e| Error::io(zip_path, e))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| invalid(format!("neither a directory nor a readable zip: {e}")))?;
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| invalid(format!("zip entry {i}: {e}")))?;
        let name = entry
            .name()
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| format!("#{i}"));
        let rel = safe_relative_path(&name)
            .ok_or_else(|| invalid(format!("zip entry '{name}' escapes the package folder")))?;
        if entry.is_symlink() {
            return Err(invalid(format!(
                "zip entry '{name}' is a symlink; links are not allowed in zip packages"
            )));
        }
        let target = dest.join(&rel);
        if entry.is_dir() {
            fs::create_dir_all(&target).map_err(|e| Error::io(&target, e))?;
            continue;
        }
        let declared = entry.size();
        let compressed = entry.compressed_size().max(1);
        let allowed = if declared > (1 << 20) {
            declared.min(compressed.saturating_mul(limits.max_ratio))
        } else {
            declared
        };
        if allowed < declared || total.saturating_add(declared) > limits.max_total_bytes {
            return Err(invalid(format!(
                "zip entry '{name}' inflates to {declared} bytes from {compressed}: refusing a possible zip bomb"
            )));
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let mut out = File::create(&target).map_err(|e| Error::io(&target, e))?;
        // Never trust the declared size: read at most one byte past it.
        let written = io::copy(&mut (&mut entry).take(declared + 1), &mut out)
            .map_err(|e| invalid(format!("zip entry '{name}': {e}")))?;
        if written != declared {
            return Err(invalid(format!(
                "zip entry '{name}' holds {written}+ bytes but declares {declared}"
            )));
        }
        out.flush().map_err(|e| Error::io(&target, e))?;
        total += written;
    }
    Ok(())
}

/// A zip entry name as a path that stays inside the destination, or `None`.
fn safe_relative_path(name: &str) -> Option<PathBuf> {
    if name.contains('\0') || name.contains('\\') {
        return None;
    }
    let path = Path::new(name);
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// The folder holding config.json: the extraction folder itself, or the one
/// folder at its top (zips made of the package folder rather than its tree).
fn find_root(source: &Path, extracted: &Path) -> Result<PathBuf> {
    if extracted.join(CONFIG_FILE).is_file() {
        return Ok(extracted.to_path_buf());
    }
    let entries: Vec<PathBuf> = fs::read_dir(extracted)
        .map_err(|e| Error::io(extracted, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    match entries.as_slice() {
        [only] if only.join(CONFIG_FILE).is_file() => Ok(only.clone()),
        _ => Err(Error::InvalidPackage {
            path: source.to_path_buf(),
            reason: format!("no {CONFIG_FILE} at the zip's root"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zip_names_that_escape_are_refused() {
        assert!(safe_relative_path("../evil").is_none());
        assert!(safe_relative_path("a/../../evil").is_none());
        assert!(safe_relative_path("/etc/passwd").is_none());
        assert!(safe_relative_path("a\\..\\b").is_none());
        assert_eq!(
            safe_relative_path("./0/data/model.pt"),
            Some(PathBuf::from("0/data/model.pt"))
        );
    }
}

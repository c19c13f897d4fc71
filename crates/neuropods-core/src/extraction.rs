//! The private folders zip packages are extracted to, and who may remove
//! them.
//!
//! A folder `neuropod-XXXXXX` in the temp dir holds the package's tree under
//! `package/` and a lock file `owner.lock` on which the creating process
//! holds an `flock` while the folder lives. Two rules follow:
//!
//! - Only the creating process removes the folder. A forked child (gunicorn
//!   `--preload`) that closes its inherited copy of a model, or exits, leaves
//!   it to the parent.
//! - The kernel releases an `flock` when the last descriptor of its open file
//!   description closes, which happens when the owner exits, even by
//!   SIGKILL. A folder whose lock another process can take is stale, and the
//!   next zip load removes it. Forked children share the lock, so the folder
//!   stays while any of them lives. No pids are compared across processes,
//!   so pid reuse cannot make a live folder look stale.

use std::fs::{self, File};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Name prefix of extraction folders in the temp dir.
const PREFIX: &str = "neuropod-";
/// The owner's lock file, inside the folder.
const LOCK_FILE: &str = "owner.lock";
/// Where the package's tree goes, inside the folder.
const TREE_DIR: &str = "package";

/// An extraction folder, removed on drop by the process that made it.
#[derive(Debug)]
pub(crate) struct ExtractionDir {
    // Dropped before the lock, so that the folder is gone before it is
    // unlocked and no sweeper can find it half removed.
    dir: tempfile::TempDir,
    _lock: File,
    owner_pid: u32,
}

impl ExtractionDir {
    /// Makes a fresh folder in the temp dir, locked by this process, after
    /// removing stale ones left by processes that are gone.
    pub(crate) fn create() -> Result<ExtractionDir> {
        let temp_dir = std::env::temp_dir();
        remove_stale(&temp_dir);
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(&temp_dir)
            .map_err(|e| Error::io(&temp_dir, e))?;
        // Locked under another name and then renamed, so that a sweeper
        // never finds `owner.lock` unlocked in a folder that is in use.
        let pending = dir.path().join(".owner.lock.new");
        let lock = File::create(&pending).map_err(|e| Error::io(&pending, e))?;
        if !try_lock(&lock) {
            return Err(Error::io(&pending, std::io::Error::last_os_error()));
        }
        let lock_path = dir.path().join(LOCK_FILE);
        fs::rename(&pending, &lock_path).map_err(|e| Error::io(&lock_path, e))?;
        let tree = dir.path().join(TREE_DIR);
        fs::create_dir(&tree).map_err(|e| Error::io(&tree, e))?;
        Ok(ExtractionDir {
            dir,
            _lock: lock,
            owner_pid: std::process::id(),
        })
    }

    /// The folder the package's tree is extracted into.
    pub(crate) fn tree(&self) -> PathBuf {
        self.dir.path().join(TREE_DIR)
    }
}

impl Drop for ExtractionDir {
    fn drop(&mut self) {
        if std::process::id() != self.owner_pid {
            // A forked child's copy: the folder is its parent's.
            self.dir.disable_cleanup(true);
        }
    }
}

/// Takes an exclusive `flock` without waiting; false if another open file
/// description holds it (or the call fails).
fn try_lock(file: &File) -> bool {
    // SAFETY: flock on a descriptor this File owns.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Removes the extraction folders in `temp_dir` whose owners are gone.
/// Best effort: a folder that cannot be read or removed is left as it is.
pub(crate) fn remove_stale(temp_dir: &Path) {
    let Ok(entries) = fs::read_dir(temp_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let is_candidate = entry.file_name().to_string_lossy().starts_with(PREFIX)
            // The entry's own type: a symlink named like a folder is skipped.
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_candidate {
            continue;
        }
        let folder = entry.path();
        // Folders without a lock file (being created, or made by another
        // program) are never candidates.
        let Ok(lock) = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(folder.join(LOCK_FILE))
        else {
            continue;
        };
        if try_lock(&lock) {
            // Removed while holding the lock, so no other sweeper races us.
            let _ = fs::remove_dir_all(&folder);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_live_folder_is_not_stale_and_is_removed_on_drop() {
        let dir = ExtractionDir::create().unwrap();
        let folder = dir.dir.path().to_path_buf();
        assert!(dir.tree().is_dir());
        remove_stale(folder.parent().unwrap());
        assert!(folder.join(LOCK_FILE).is_file());
        drop(dir);
        assert!(!folder.exists());
    }

    #[test]
    fn unlocked_folder_is_stale_and_lockless_folder_is_not() {
        let temp = tempfile::tempdir().unwrap();
        let stale = temp.path().join("neuropod-stale");
        fs::create_dir_all(stale.join(TREE_DIR)).unwrap();
        File::create(stale.join(LOCK_FILE)).unwrap();
        let lockless = temp.path().join("neuropod-nolock");
        fs::create_dir(&lockless).unwrap();
        let foreign = temp.path().join("other-stale");
        fs::create_dir(&foreign).unwrap();
        File::create(foreign.join(LOCK_FILE)).unwrap();
        remove_stale(temp.path());
        assert!(!stale.exists());
        assert!(lockless.exists());
        assert!(foreign.exists());
    }
}

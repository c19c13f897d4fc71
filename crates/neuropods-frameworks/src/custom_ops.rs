//! Opening a package's custom op libraries (`0/ops/`, named by
//! `custom_ops` in config.json), each once per process.
//!
//! An op library registers its ops with the framework when it is opened,
//! and frameworks refuse (TensorFlow) or throw on (libtorch) a second
//! registration of the same ops. That is the normal case, not an accident:
//! the process that made a model has its op library loaded (the packager's
//! self-test loads the package's copy), and a process may load two packages
//! that ship the same library. So a library whose contents are already
//! loaded is not opened again. Contents, not path: each package holds a
//! copy, at its own path. The sha256 is compared with the libraries opened
//! through here and with every file mapped in the process
//! (`dl_iterate_phdr`: `tf.load_op_library`, `torch.ops.load_library`).
//! The original Neuropod did the same, by sha256.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use neuropods_abi::{Error, ModelConfig, Result};

use crate::digest::sha256_file;
use crate::framework::mapped_libraries;

/// The folder of a package that holds its op libraries.
pub const OPS_DIR: &str = "0/ops";

/// sha256 of each op library opened through [`load`].
static OPENED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Opens each op library `config` lists with `open` (the framework's way:
/// `TF_LoadLibrary`, `dlopen`), skipping those whose contents are already
/// loaded. A failure is a package error naming the library, with `open`'s
/// reason.
pub fn load(
    root: &Path,
    config: &ModelConfig,
    mut open: impl FnMut(&Path) -> std::result::Result<(), String>,
) -> Result<()> {
    for op in &config.custom_ops {
        let path = root.join(OPS_DIR).join(op);
        let fail = |reason: String| Error::InvalidPackage {
            path: root.to_path_buf(),
            reason: format!("custom op {op}: {reason}"),
        };
        let digest = sha256_file(&path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        // Held while opening, so two threads never open one library twice.
        let mut opened = OPENED.lock().unwrap_or_else(|p| p.into_inner());
        let opened = opened.get_or_insert_with(HashSet::new);
        if opened.contains(&digest) || is_mapped(&path, &digest) {
            opened.insert(digest);
            continue;
        }
        open(&path).map_err(fail)?;
        opened.insert(digest);
    }
    Ok(())
}

/// Whether a file with these contents is mapped in the process.
fn is_mapped(path: &Path, digest: &str) -> bool {
    let Ok(size) = std::fs::metadata(path).map(|m| m.len()) else {
        return false;
    };
    mapped_libraries().iter().any(|mapped| {
        std::fs::metadata(mapped).is_ok_and(|m| m.len() == size)
            && sha256_file(mapped).is_ok_and(|d| d == digest)
    })
}

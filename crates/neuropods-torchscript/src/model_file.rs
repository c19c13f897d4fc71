//! Recognises TorchScript files libtorch cannot read before libtorch sees
//! them, so the error says what the file is and how to fix it.

use std::path::Path;

use neuropods_abi::{Error, Result};

/// Refuses a TorchScript file in the legacy format that PyTorch 1.0 to 1.3
/// wrote: a zip with `<name>/model.json` and tensors under `tensors/`, but no
/// `data.pkl` (the pickled module every later version writes). libtorch 2.x
/// only says "Legacy model format is not supported on mobile" about it.
/// Files that are not zips are left to libtorch's own message.
pub fn refuse_legacy_format(root: &Path, model_file: &str) -> Result<()> {
    let Ok(file) = std::fs::File::open(root.join(model_file)) else {
        return Ok(());
    };
    let Ok(archive) = zip::ZipArchive::new(file) else {
        return Ok(());
    };
    let has = |leaf: &str| {
        archive
            .file_names()
            .filter_map(|name| name.ok())
            .any(|name| name.rsplit('/').next() == Some(leaf))
    };
    if has("model.json") && !has("data.pkl") {
        return Err(Error::InvalidPackage {
            path: root.to_path_buf(),
            reason: format!(
                "{model_file} is a TorchScript file in the legacy format of PyTorch 1.0-1.3 \
                 (model.json, no data.pkl), which libtorch {} cannot read: load it with a \
                 PyTorch that still reads that format (1.4 up to 1.x) and save it again \
                 (torch.jit.load, then torch.jit.save), then package the new file",
                crate::libtorch::built_version()
            ),
        });
    }
    Ok(())
}

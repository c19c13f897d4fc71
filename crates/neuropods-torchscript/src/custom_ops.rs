//! Opening a package's custom op libraries (`0/ops/`), each once per process.
//!
//! A `TORCH_LIBRARY(ns, m)` library registers namespace `ns` in its
//! initialiser, and libtorch throws from there when `ns` is already
//! registered. That is the normal case, not an accident: the process that
//! scripted a model has its op library loaded (the packager's self-test
//! loads the package's copy of it), and a process may load two packages
//! that ship the same library. So, before opening a library:
//!
//! - one whose contents are already loaded is not opened again. Contents,
//!   not path: the package holds a copy, at another path. The sha256 is
//!   compared with the libraries this backend opened and with every file
//!   mapped in the process (`dl_iterate_phdr`: `torch.ops.load_library`
//!   and the like). Asking the dispatcher instead could only say that a
//!   namespace is taken, not whether by this very library or by another one.
//! - the namespaces its `TORCH_LIBRARY` blocks register (the static
//!   `TORCH_LIBRARY_static_init_<ns>` object in its symbol table) are put to
//!   the dispatcher; a taken one is an error naming the library, raised
//!   before its initialiser can throw.
//! - what remains (a stripped library, whose symbol table is gone) is opened
//!   under the core's C++ guard, which turns a throw into an error too, at a
//!   cost the error explains (see `neuropods_core::backend::library`).

use std::collections::HashSet;
use std::ffi::{c_char, CString};
use std::path::Path;
use std::sync::Mutex;

use neuropods_core::backend::library::{self, Scope};
use neuropods_core::package::sha256_file;
use neuropods_core::{Error, ModelConfig, Result};

use neuropods_core::backend::framework::mapped_libraries;

extern "C" {
    fn npt_operator_namespace_taken(ns: *const c_char) -> i32;
}

/// sha256 of each op library this backend opened.
static OPENED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Opens the custom op libraries `config` lists, skipping those already loaded.
pub fn load(root: &Path, config: &ModelConfig) -> Result<()> {
    for op in &config.custom_ops {
        let path = root.join("0/ops").join(op);
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
        let bytes = std::fs::read(&path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        if let Some(ns) = torch_library_namespaces(&bytes)
            .into_iter()
            .find(|ns| namespace_taken(ns))
        {
            return Err(fail(format!(
                "it registers the operator namespace `{ns}` (TORCH_LIBRARY), which another \
                 library already registered in this process; libtorch allows one library per \
                 namespace, so this one cannot be loaded here (another version of the same ops?). \
                 Load the model in a process without the other library"
            )));
        }
        let library = library::open(&path, Scope::Global).map_err(fail)?;
        // Its kernels are registered with libtorch for good: never closed.
        std::mem::forget(library);
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

/// The namespaces a library's `TORCH_LIBRARY` blocks register, read from the
/// names of their static objects in its symbol table (empty when stripped).
fn torch_library_namespaces(bytes: &[u8]) -> Vec<String> {
    const PREFIX: &[u8] = b"TORCH_LIBRARY_static_init_";
    let mut found: Vec<String> = Vec::new();
    let mut rest = bytes;
    while let Some(at) = rest.windows(PREFIX.len()).position(|w| w == PREFIX) {
        rest = &rest[at + PREFIX.len()..];
        let len = rest
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
            .unwrap_or(rest.len());
        let ns = String::from_utf8_lossy(&rest[..len]).into_owned();
        if !ns.is_empty() && !found.contains(&ns) {
            found.push(ns);
        }
        rest = &rest[len..];
    }
    found
}

fn namespace_taken(ns: &str) -> bool {
    let Ok(c_ns) = CString::new(ns) else {
        return false;
    };
    // SAFETY: a NUL-terminated name; the C++ side catches everything.
    unsafe { npt_operator_namespace_taken(c_ns.as_ptr()) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_read_from_symbol_names() {
        let strtab = b"\0_ZL44TORCH_LIBRARY_static_init_neuropods_test_ops\0\
                       _ZL37TORCH_LIBRARY_init_neuropods_test_opsRN5torch7LibraryE\0\
                       _ZL99TORCH_LIBRARY_FRAGMENT_static_init_other_C10_UID\0\
                       _ZL30TORCH_LIBRARY_static_init_second\0\
                       _ZL44TORCH_LIBRARY_static_init_neuropods_test_ops\0";
        assert_eq!(
            torch_library_namespaces(strtab),
            vec!["neuropods_test_ops".to_string(), "second".to_string()]
        );
        assert!(torch_library_namespaces(b"no symbols here").is_empty());
    }

    #[test]
    fn the_dispatcher_knows_builtin_namespaces() {
        // libtorch's own TORCH_LIBRARY(aten, m) is registered once libtorch is loaded.
        let _ = tch::Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu));
        assert!(namespace_taken("aten"));
        assert!(!namespace_taken("neuropods_no_such_namespace"));
        // The probe gave the free namespace back.
        assert!(!namespace_taken("neuropods_no_such_namespace"));
    }
}

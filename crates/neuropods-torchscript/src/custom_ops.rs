//! Opening a package's TorchScript op libraries, through the core's
//! once-per-process loader (`neuropods_frameworks::custom_ops`).
//!
//! A `TORCH_LIBRARY(ns, m)` library registers namespace `ns` in its
//! initialiser, and libtorch throws from there when `ns` is already
//! registered (by another library: the same one is never opened twice).
//! So before a library is opened, the namespaces its `TORCH_LIBRARY` blocks
//! register (the static `TORCH_LIBRARY_static_init_<ns>` object in its
//! symbol table) are put to the dispatcher; a taken one is an error naming
//! the library, raised before its initialiser can throw. What remains (a
//! stripped library, whose symbol table is gone) is opened under the core's
//! C++ guard, which turns a throw into an error too, at a cost the error
//! explains (see `neuropods_frameworks::library`).

use std::ffi::{c_char, CString};
use std::path::Path;

use neuropods_abi::{ModelConfig, Result};
use neuropods_frameworks::custom_ops;
use neuropods_frameworks::library::{self, Scope};

extern "C" {
    fn npt_operator_namespace_taken(ns: *const c_char) -> i32;
}

/// Opens the custom op libraries `config` lists, skipping those already loaded.
pub fn load(root: &Path, config: &ModelConfig) -> Result<()> {
    custom_ops::load(root, config, |path| {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(ns) = torch_library_namespaces(&bytes)
            .into_iter()
            .find(|ns| namespace_taken(ns))
        {
            return Err(format!(
                "it registers the operator namespace `{ns}` (TORCH_LIBRARY), which another \
                 library already registered in this process; libtorch allows one library per \
                 namespace, so this one cannot be loaded here (another version of the same ops?). \
                 Load the model in a process without the other library"
            ));
        }
        let library = library::open(path, Scope::Global)?;
        // Its kernels are registered with libtorch for good: never closed.
        std::mem::forget(library);
        Ok(())
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

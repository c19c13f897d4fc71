//! Backends: one per platform, each a shared library opened the first time a
//! model of its platform is loaded, and spoken to through the C ABI in
//! [`abi`]. The [`registry`] says which library serves which platform.

pub mod abi;
pub mod convert;
pub mod library;
pub mod plugin;
pub mod registry;

use std::ffi::c_void;
use std::path::Path;

use serde_json::Value;

use abi::{BackendVTable, ErrorKind, LoadRequest, OwnedTensor, Sink, StrRef};
use convert::{import_tensor, tensor_ref, RefParts};

use crate::config::Platform;
use crate::error::{Error, Result};
use crate::tensor::TensorMap;

/// Device and thread settings passed to a backend when loading.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendOptions {
    /// GPU to run on; `None` for the CPU.
    pub visible_gpu: Option<u32>,
    /// Threads used inside one op (torch `set_num_threads`, TF intra-op);
    /// at least 1.
    pub intra_op_threads: Option<u32>,
    /// Threads running independent ops (torch interop, TF inter-op). 0: no
    /// inter-op pool, ops run on the calling thread (TF; torch runs ops on
    /// the calling thread anyway and keeps its pool for `fork`). That saves
    /// a thread hand-off per call, the main cost of a small TF graph.
    pub inter_op_threads: Option<u32>,
}

impl BackendOptions {
    /// Refuses values no framework accepts.
    pub fn validate(&self) -> Result<()> {
        if self.intra_op_threads == Some(0) {
            return Err(Error::InvalidOption(
                "intra_op_threads must be at least 1 (or None for the framework's default)".into(),
            ));
        }
        Ok(())
    }

    /// As JSON, for the ABI.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "visible_gpu": self.visible_gpu,
            "intra_op_threads": self.intra_op_threads,
            "inter_op_threads": self.inter_op_threads,
        })
        .to_string()
    }

    /// From JSON written by [`BackendOptions::to_json`].
    pub fn from_json(v: &Value) -> Result<Self> {
        let field = |name: &str| -> Result<Option<u32>> {
            match v.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| Error::Internal(format!("backend option {name}: {x}"))),
            }
        };
        Ok(BackendOptions {
            visible_gpu: field("visible_gpu")?,
            intra_op_threads: field("intra_op_threads")?,
            inter_op_threads: field("inter_op_threads")?,
        })
    }
}

/// Collects what a backend reports through a [`Sink`] during one call.
#[derive(Default)]
struct Collected {
    outputs: TensorMap,
    error: Option<(ErrorKind, String)>,
    warnings: Vec<String>,
}

unsafe extern "C" fn on_tensor(ctx: *mut c_void, tensor: OwnedTensor) {
    let collected = &mut *(ctx as *mut Collected);
    match import_tensor(tensor) {
        Ok((name, tensor)) => {
            collected.outputs.insert(name, tensor);
        }
        Err(e) => {
            collected
                .error
                .get_or_insert((ErrorKind::Internal, e.to_string()));
        }
    }
}

unsafe extern "C" fn on_error(ctx: *mut c_void, kind: u32, message: StrRef) {
    let collected = &mut *(ctx as *mut Collected);
    collected.error = Some((ErrorKind::from_code(kind), message.to_string_lossy()));
}

unsafe extern "C" fn on_warning(ctx: *mut c_void, message: StrRef) {
    let collected = &mut *(ctx as *mut Collected);
    collected.warnings.push(message.to_string_lossy());
}

impl Collected {
    fn sink(&mut self) -> Sink {
        Sink {
            ctx: self as *mut Collected as *mut c_void,
            tensor: on_tensor,
            error: on_error,
            warning: on_warning,
        }
    }

    fn into_error(kind: ErrorKind, message: String, platform: Platform, package: &Path) -> Error {
        match kind {
            ErrorKind::Backend => Error::Backend {
                platform: platform.name().to_string(),
                message,
            },
            ErrorKind::InvalidInput => Error::InvalidInput(message),
            ErrorKind::RequirementsNotMet => Error::RequirementsNotMet(message),
            ErrorKind::FrameworkVersion => Error::FrameworkVersion {
                platform: platform.name().to_string(),
                detail: message,
            },
            ErrorKind::InvalidPackage => Error::InvalidPackage {
                path: package.to_path_buf(),
                reason: message,
            },
            ErrorKind::Internal => Error::Internal(message),
        }
    }
}

/// A model loaded inside a backend library.
pub struct BackendModel {
    vtable: &'static BackendVTable,
    handle: *mut c_void,
    platform: Platform,
    package: std::path::PathBuf,
}

// SAFETY: the ABI requires backend models to be usable from any thread.
unsafe impl Send for BackendModel {}
unsafe impl Sync for BackendModel {}

impl BackendModel {
    /// Loads a model through a backend; returns it with the backend's warnings.
    pub fn load(
        vtable: &'static BackendVTable,
        platform: Platform,
        package_root: &Path,
        config_json: &str,
        backend_config_json: Option<&str>,
        options: &BackendOptions,
    ) -> Result<(BackendModel, Vec<String>)> {
        let root = package_root.to_string_lossy();
        let options_json = options.to_json();
        let request = LoadRequest {
            package_root: StrRef::new(&root),
            config_json: StrRef::new(config_json),
            backend_config_json: backend_config_json.map_or(
                StrRef {
                    ptr: std::ptr::null(),
                    len: 0,
                },
                StrRef::new,
            ),
            options_json: StrRef::new(&options_json),
        };
        let mut collected = Collected::default();
        let sink = collected.sink();
        // SAFETY: request and sink outlive the call.
        let handle = unsafe { (vtable.load)(&request, &sink) };
        if handle.is_null() {
            let (kind, message) = collected.error.take().unwrap_or((
                ErrorKind::Internal,
                "backend failed to load the model without saying why".into(),
            ));
            return Err(Collected::into_error(kind, message, platform, package_root));
        }
        let model = BackendModel {
            vtable,
            handle,
            platform,
            package: package_root.to_path_buf(),
        };
        Ok((model, collected.warnings))
    }

    /// Runs the model (no spec checks here; see [`crate::Neuropod::infer`]).
    pub fn infer(&self, inputs: &TensorMap) -> Result<TensorMap> {
        let mut parts: Vec<RefParts> = inputs.iter().map(|_| RefParts::default()).collect();
        let refs: Vec<_> = inputs
            .iter()
            .zip(parts.iter_mut())
            .map(|((name, tensor), parts)| tensor_ref(name, tensor, parts))
            .collect();
        let mut collected = Collected::default();
        let sink = collected.sink();
        // SAFETY: the inputs, their parts and the sink outlive the call.
        let ok = unsafe { (self.vtable.infer)(self.handle, refs.as_ptr(), refs.len(), &sink) };
        match collected.error.take() {
            Some((kind, message)) => Err(Collected::into_error(
                kind,
                message,
                self.platform,
                &self.package,
            )),
            None if !ok => Err(Error::Internal("backend failed without saying why".into())),
            None => Ok(collected.outputs),
        }
    }
}

impl Drop for BackendModel {
    fn drop(&mut self) {
        // SAFETY: the handle came from this vtable's load and is freed once.
        unsafe { (self.vtable.free)(self.handle) }
    }
}

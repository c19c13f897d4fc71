//! Backends: one per platform, each a shared library opened the first time a
//! model of its platform is loaded, and spoken to through the C ABI in
//! [`abi`]. The [`registry`] says which library serves which platform.

pub mod registry;

pub use neuropods_abi::{abi, convert, load_request, plugin, BackendOptions};
pub use neuropods_frameworks::{custom_ops, framework, library};

use std::ffi::c_void;
use std::path::Path;

use abi::{BackendVTable, LoadRequest, OwnedTensor, SharedAllocatorRef, Sink, StrRef};
use convert::{export_tensor, import_tensor, take_ownership};
use load_request::ConfigParts;

use crate::config::{ModelConfig, Platform};
use crate::error::{Error, ErrorKind, Result};
use crate::tensor::TensorMap;

/// Collects what a backend reports through a [`Sink`] during one call.
#[derive(Default)]
struct Collected {
    outputs: TensorMap,
    error: Option<Reported>,
    warnings: Vec<String>,
}

/// An error as a backend reported it.
enum Reported {
    /// Through [`Sink::error`]: the kind's code, the message, the detail.
    Kind(u32, String, String),
    /// Through [`Sink::config_error`].
    Config {
        file: String,
        field: String,
        reason: String,
    },
}

// The sink's callbacks: `ctx` is the `Collected` that made the sink
// (`Collected::sink`), which lives, borrowed by nothing else, until the
// backend's call returns; the backend calls them during that call only, on
// its thread (the ABI's contract), and the strings it passes live for the
// callback.

unsafe extern "C" fn on_tensor(ctx: *mut c_void, tensor: OwnedTensor) {
    // SAFETY: see the callbacks' comment above.
    let collected = unsafe { &mut *(ctx as *mut Collected) };
    // SAFETY: the backend hands the tensor over once, valid until released.
    match unsafe { import_tensor(take_ownership(&tensor)) } {
        Ok((name, tensor)) => {
            collected.outputs.insert(name, tensor);
        }
        Err(e) => {
            collected.error.get_or_insert(Reported::Kind(
                ErrorKind::Internal.code(),
                e.to_string(),
                String::new(),
            ));
        }
    }
}

unsafe extern "C" fn on_error(ctx: *mut c_void, kind: u32, message: StrRef, detail: StrRef) {
    // SAFETY: see the callbacks' comment above.
    unsafe {
        let collected = &mut *(ctx as *mut Collected);
        collected.error = Some(Reported::Kind(
            kind,
            message.to_string_lossy(),
            detail.to_string_lossy(),
        ));
    }
}

unsafe extern "C" fn on_config_error(
    ctx: *mut c_void,
    file: StrRef,
    field: StrRef,
    reason: StrRef,
) {
    // SAFETY: see the callbacks' comment above.
    unsafe {
        let collected = &mut *(ctx as *mut Collected);
        collected.error = Some(Reported::Config {
            file: file.to_string_lossy(),
            field: field.to_string_lossy(),
            reason: reason.to_string_lossy(),
        });
    }
}

unsafe extern "C" fn on_warning(ctx: *mut c_void, message: StrRef) {
    // SAFETY: see the callbacks' comment above.
    unsafe {
        let collected = &mut *(ctx as *mut Collected);
        collected.warnings.push(message.to_string_lossy());
    }
}

impl Collected {
    fn sink(&mut self) -> Sink {
        Sink {
            ctx: self as *mut Collected as *mut c_void,
            tensor: on_tensor,
            error: on_error,
            config_error: on_config_error,
            warning: on_warning,
        }
    }

    /// The core's error for what a backend reported: the platform and
    /// the package are added here, once. A kind a backend has no business
    /// reporting (one only the core raises) is kept as close as its message
    /// allows.
    fn into_error(reported: Reported, platform: Platform, package: &Path) -> Error {
        let (code, message, detail) = match reported {
            Reported::Kind(code, message, detail) => (code, message, detail),
            Reported::Config {
                file,
                field,
                reason,
            } => {
                return Error::InvalidConfig {
                    file,
                    field,
                    reason,
                }
            }
        };
        let kind = match ErrorKind::try_from(code) {
            Ok(kind) => kind,
            Err(unknown) => {
                return Error::Internal(format!("backend reported {unknown}: {message}"))
            }
        };
        let platform_name = platform.name().to_string();
        let in_package = |reason: String| Error::InvalidPackage {
            path: package.to_path_buf(),
            reason,
        };
        match kind {
            ErrorKind::Backend
            | ErrorKind::BackendNotFound
            | ErrorKind::UnsafeAfterFork
            | ErrorKind::Worker => Error::Backend {
                platform: platform_name,
                message,
                detail,
            },
            ErrorKind::UnknownTensor
            | ErrorKind::DTypeMismatch
            | ErrorKind::ShapeMismatch
            | ErrorKind::InvalidInput => Error::InvalidInput(message),
            ErrorKind::InvalidOption => Error::InvalidOption(message),
            ErrorKind::RequirementsNotMet => Error::RequirementsNotMet(message),
            ErrorKind::FrameworkVersion => Error::FrameworkVersion {
                platform: platform_name,
                detail: message,
            },
            ErrorKind::FrameworkNotFound => {
                let info = registry::info(platform);
                Error::FrameworkNotFound {
                    platform: platform_name,
                    framework: info.framework.to_string(),
                    hint: info.install_hint.to_string(),
                    detail: message,
                }
            }
            // A file of the package the backend could not read.
            ErrorKind::PackageNotFound
            | ErrorKind::InvalidConfig
            | ErrorKind::InvalidPackage
            | ErrorKind::Io => in_package(message),
            ErrorKind::Serialization => Error::Serialization(message),
            ErrorKind::Internal => Error::Internal(message),
            ErrorKind::Interrupted => Error::Interrupted(message),
            ErrorKind::Exit => Error::Exit(message),
            ErrorKind::OutOfMemory => Error::OutOfMemory(message),
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
// SAFETY: as for Send: `infer` may run on many threads at once.
unsafe impl Sync for BackendModel {}

impl BackendModel {
    /// Loads a model through a backend; returns it with the backend's
    /// warnings. `shared_allocator` is [`SharedAllocatorRef::NONE`] except
    /// in an out-of-process worker.
    pub fn load(
        vtable: &'static BackendVTable,
        platform: Platform,
        package_root: &Path,
        config: &ModelConfig,
        backend_config_json: Option<&str>,
        options: &BackendOptions,
        shared_allocator: SharedAllocatorRef,
    ) -> Result<(BackendModel, Vec<String>)> {
        let root = package_root.to_string_lossy();
        let config_parts = ConfigParts::new(config);
        let request = LoadRequest {
            package_root: StrRef::new(&root),
            config: config_parts.describe(),
            backend_config_json: backend_config_json.map_or(
                StrRef {
                    ptr: std::ptr::null(),
                    len: 0,
                },
                StrRef::new,
            ),
            options: options.into(),
            shared_allocator,
        };
        let mut collected = Collected::default();
        let sink = collected.sink();
        // SAFETY: request (with the parts it points into) and sink outlive
        // the call.
        let handle = unsafe { (vtable.load)(&request, &sink) };
        if handle.is_null() {
            let reported = collected.error.take().unwrap_or(Reported::Kind(
                ErrorKind::Internal.code(),
                "backend failed to load the model without saying why".into(),
                String::new(),
            ));
            return Err(Collected::into_error(reported, platform, package_root));
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
        // Each input crosses with a share of its owner (an Arc clone, no
        // copy of the data), so a backend that keeps one keeps its memory.
        let owned: Vec<OwnedTensor> = inputs
            .iter()
            .map(|(name, tensor)| export_tensor(name, tensor))
            .collect();
        let mut collected = Collected::default();
        let sink = collected.sink();
        // SAFETY: the backend takes over every input (OwnedTensor has no
        // destructor, so dropping `owned` afterwards frees only the array);
        // the names it borrows and the sink outlive the call.
        let ok = unsafe { (self.vtable.infer)(self.handle, owned.as_ptr(), owned.len(), &sink) };
        match collected.error.take() {
            Some(reported) => Err(Collected::into_error(
                reported,
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

//! The backend side of the ABI: a backend crate implements [`Backend`] and
//! calls [`export_backend!`](crate::export_backend); this module turns it
//! into the C functions of [`BackendVTable`], catching every panic.

use std::cell::RefCell;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use crate::abi::{
    BackendVTable, LoadRequest, OwnedTensor, SharedAllocatorRef, Sink, StrRef, ABI_VERSION,
};
use crate::config::ModelConfig;
use crate::config::BACKEND_CONFIG_FILE;
use crate::convert::{export_tensor, import_tensor, take_ownership};
use crate::error::{Error, Result};
use crate::load_request::read_config;
use crate::options::BackendOptions;
use crate::tensor::TensorMap;

/// A loaded model inside a backend. Shared by all threads calling `infer`.
pub trait BackendModel: Send + Sync {
    /// Runs the model. Each input's buffer holds the caller's memory alive
    /// (through its owner), so a model may keep an input past the call. An
    /// output must still never alias an input: the caller may write to its
    /// arrays after the call, which would change the output.
    fn infer(&self, inputs: &TensorMap) -> Result<TensorMap>;
}

/// Whether `ptr` points into the memory of one of `inputs`. An output found
/// there must be copied before it is returned (see [`BackendModel::infer`]).
pub fn points_into_inputs(inputs: &TensorMap, ptr: *const u8) -> bool {
    inputs.values().any(|t| t.contains(ptr))
}

/// Everything a backend gets to load a model.
pub struct LoadContext {
    /// The package folder.
    pub package_root: PathBuf,
    /// The parsed config.json.
    pub config: ModelConfig,
    /// The text of 0/config.json, if present.
    pub backend_config: Option<String>,
    /// Device and thread settings.
    pub options: BackendOptions,
    /// Shared memory for large allocations, in an out-of-process worker
    /// (see [`SharedAllocatorRef`]); None in-process.
    pub shared_allocator: Option<SharedAllocatorRef>,
    warnings: RefCell<Vec<String>>,
}

impl LoadContext {
    /// Builds a context (the plugin glue does this from a [`LoadRequest`]).
    pub fn new(
        package_root: PathBuf,
        config: ModelConfig,
        backend_config: Option<String>,
        options: BackendOptions,
    ) -> Self {
        LoadContext {
            package_root,
            config,
            backend_config,
            options,
            shared_allocator: None,
            warnings: RefCell::new(Vec::new()),
        }
    }

    /// Parses the text of 0/config.json into the backend's own type of it
    /// (strictly: see [`crate::json::parse`]); `None` when the file is absent.
    pub fn parse_backend_config<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>> {
        self.backend_config
            .as_deref()
            .map(|text| crate::json::parse(BACKEND_CONFIG_FILE, text))
            .transpose()
    }

    /// Records a warning for the caller to log (e.g. a fallback to CPU).
    pub fn warn(&self, message: impl Into<String>) {
        self.warnings.borrow_mut().push(message.into());
    }

    /// Warnings recorded so far.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut self.warnings.borrow_mut())
    }
}

/// A backend: how to load a model of its platform.
pub trait Backend {
    /// Loads a model.
    fn load(ctx: &LoadContext) -> Result<Box<dyn BackendModel>>;
}

/// Reports `err` through the sink: its kind, and its message without what
/// the core adds back on its side (the platform, the package's path).
///
/// # Safety
/// `sink` is the one the core passed to the call being answered, during
/// that call.
unsafe fn report(sink: &Sink, err: &Error) {
    let message = match err {
        Error::InvalidConfig {
            file,
            field,
            reason,
        } => {
            // SAFETY: the caller's contract; the strings live for the call.
            unsafe {
                (sink.config_error)(
                    sink.ctx,
                    StrRef::new(file),
                    StrRef::new(field),
                    StrRef::new(reason),
                )
            };
            return;
        }
        Error::Backend { message, .. } => message.clone(),
        Error::FrameworkVersion { detail, .. } | Error::FrameworkNotFound { detail, .. } => {
            detail.clone()
        }
        Error::InvalidPackage { reason, .. } => reason.clone(),
        Error::Internal(message)
        | Error::InvalidInput(message)
        | Error::InvalidOption(message)
        | Error::RequirementsNotMet(message)
        | Error::Serialization(message)
        | Error::Interrupted(message)
        | Error::Exit(message)
        | Error::OutOfMemory(message) => message.clone(),
        Error::PackageNotFound { .. }
        | Error::Spec(_)
        | Error::BackendNotFound { .. }
        | Error::UnsafeAfterFork { .. }
        | Error::Io { .. }
        | Error::Worker { .. } => err.to_string(),
    };
    let detail = err.detail().unwrap_or_default();
    // SAFETY: the caller's contract; the strings live for the call.
    unsafe {
        (sink.error)(
            sink.ctx,
            err.kind().code(),
            StrRef::new(&message),
            StrRef::new(detail),
        )
    };
}

/// Runs `f`, turning a panic into [`Error::Internal`].
pub fn catch_panics<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(Error::from_panic(p)))
}

/// The context of a [`LoadRequest`]: the config and options as the core
/// parsed them, the backend's own config as text.
///
/// # Safety
/// Every pointer in `request` is valid for its length (the ABI's contract
/// for `load`).
unsafe fn load_request(request: &LoadRequest) -> Result<LoadContext> {
    // SAFETY: the caller's contract; the bytes are copied at once.
    let text = |s: &StrRef| String::from_utf8_lossy(unsafe { s.as_bytes() }).into_owned();
    let backend_config =
        (!request.backend_config_json.ptr.is_null()).then(|| text(&request.backend_config_json));
    let mut ctx = LoadContext::new(
        PathBuf::from(text(&request.package_root)),
        // SAFETY: the caller's contract.
        unsafe { read_config(&request.config) }?,
        backend_config,
        BackendOptions::try_from(&request.options)?,
    );
    let shared = request.shared_allocator;
    ctx.shared_allocator =
        (shared.allocate.is_some() && shared.release.is_some()).then_some(shared);
    Ok(ctx)
}

/// `load` of the vtable for backend `B`.
///
/// # Safety
/// Called through the ABI with valid pointers.
pub unsafe extern "C" fn load<B: Backend>(
    request: *const LoadRequest,
    sink: *const Sink,
) -> *mut c_void {
    // SAFETY: the core passes a valid request and sink
    // for the duration of this call (the ABI's contract).
    let sink = unsafe { &*sink };
    let result = catch_panics(|| {
        // SAFETY: as above.
        let ctx = unsafe { load_request(&*request) }?;
        let model = B::load(&ctx);
        for warning in ctx.take_warnings() {
            // SAFETY: as above; the text lives for the callback.
            unsafe { (sink.warning)(sink.ctx, StrRef::new(&warning)) };
        }
        model
    });
    match result {
        // Box the trait object again to get a thin pointer for C.
        Ok(model) => Box::into_raw(Box::new(model)) as *mut c_void,
        Err(err) => {
            // SAFETY: as above.
            unsafe { report(sink, &err) };
            std::ptr::null_mut()
        }
    }
}

/// `infer` of the vtable.
///
/// # Safety
/// Called through the ABI with a model from [`load`] and `count` valid
/// inputs, which this function takes over.
pub unsafe extern "C" fn infer(
    model: *mut c_void,
    inputs: *const OwnedTensor,
    count: usize,
    sink: *const Sink,
) -> bool {
    // SAFETY: the core passes a model from `load`, not
    // yet freed, `count` inputs handed over to this call, and a sink valid
    // during it (the ABI's contract).
    let sink = unsafe { &*sink };
    // Own every input before anything can fail, so that each is released
    // exactly once whatever happens next.
    let owned = if count == 0 {
        Vec::new()
    } else {
        // SAFETY: as above; each input is taken over exactly once, here.
        unsafe {
            std::slice::from_raw_parts(inputs, count)
                .iter()
                .map(|t| take_ownership(t))
                .collect()
        }
    };
    let result = catch_panics(|| {
        // SAFETY: as above.
        let model = unsafe { &*(model as *const Box<dyn BackendModel>) };
        let mut map = TensorMap::new();
        for input in owned {
            // SAFETY: as above: valid until its owner is released.
            let (name, tensor) = unsafe { import_tensor(input) }?;
            map.insert(name, tensor);
        }
        model.infer(&map)
    });
    match result {
        Ok(outputs) => {
            for (name, tensor) in outputs {
                // SAFETY: as above; the core takes the tensor over.
                unsafe { (sink.tensor)(sink.ctx, export_tensor(&name, &tensor)) };
            }
            true
        }
        Err(err) => {
            // SAFETY: as above.
            unsafe { report(sink, &err) };
            false
        }
    }
}

/// `free` of the vtable.
///
/// # Safety
/// `model` must come from [`load`] and not have been freed.
pub unsafe extern "C" fn free(model: *mut c_void) {
    // A panic in a destructor must not unwind into C.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller's contract: a model from `load`, freed once.
        drop(unsafe { Box::from_raw(model as *mut Box<dyn BackendModel>) });
    }));
}

/// The vtable of backend `B`.
pub const fn vtable<B: Backend>() -> BackendVTable {
    BackendVTable {
        abi_version: ABI_VERSION,
        load: load::<B>,
        infer,
        free,
    }
}

/// Exports a [`Backend`] type as this library's backend entry point.
#[macro_export]
macro_rules! export_backend {
    ($backend:ty) => {
        #[no_mangle]
        pub extern "C" fn neuropods_backend_entry() -> *const $crate::abi::BackendVTable {
            static VTABLE: $crate::abi::BackendVTable = $crate::plugin::vtable::<$backend>();
            &VTABLE
        }
    };
}

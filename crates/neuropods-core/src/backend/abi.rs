//! The C ABI between the core and a backend library.
//!
//! Backends are separate shared libraries, opened the first time a model of
//! their platform is loaded, so only `#[repr(C)]` data and `extern "C"`
//! functions cross the boundary: never Rust types, allocations or panics.
//! A backend exports one symbol, [`ENTRY_POINT`], returning a
//! [`BackendVTable`]. Memory handed across is borrowed for the duration of a
//! call, except [`OwnedTensor`]s, which carry their own release function.
//! Backend crates do not write these by hand: see [`super::plugin`].

use std::ffi::c_void;

/// Version of this ABI; a library built against another version is refused.
pub const ABI_VERSION: u32 = 1;

/// Name of the symbol every backend library exports.
pub const ENTRY_POINT: &str = "neuropods_backend_entry";

/// Signature of [`ENTRY_POINT`].
pub type EntryPoint = unsafe extern "C" fn() -> *const BackendVTable;

/// Borrowed UTF-8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StrRef {
    /// First byte (may dangle when `len` is 0).
    pub ptr: *const u8,
    /// Byte length.
    pub len: usize,
}

impl StrRef {
    /// Borrows a string.
    pub fn new(s: &str) -> StrRef {
        StrRef {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// Reads the bytes back as a string, replacing invalid UTF-8.
    ///
    /// # Safety
    /// `ptr`/`len` must describe readable bytes.
    pub unsafe fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }

    /// The bytes.
    ///
    /// # Safety
    /// `ptr`/`len` must describe readable bytes living as long as `'a`.
    pub unsafe fn as_bytes<'a>(&self) -> &'a [u8] {
        if self.len == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(self.ptr, self.len)
        }
    }
}

/// A borrowed tensor: numeric data in `data`/`nbytes`, or strings in
/// `strings`/`nstrings`, row-major.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TensorRef {
    /// Tensor name.
    pub name: StrRef,
    /// [`crate::DType::code`].
    pub dtype: u32,
    /// Dimensions.
    pub shape: *const u64,
    /// Number of dimensions.
    pub rank: usize,
    /// Numeric elements (null for strings).
    pub data: *const u8,
    /// Byte length of `data`.
    pub nbytes: usize,
    /// String elements (null for numeric tensors).
    pub strings: *const StrRef,
    /// Number of strings.
    pub nstrings: usize,
}

/// A tensor handed over with ownership: the receiver calls `release(owner)`
/// exactly once when it no longer needs the memory `tensor` points to.
#[repr(C)]
#[derive(Debug)]
pub struct OwnedTensor {
    /// The tensor's description.
    pub tensor: TensorRef,
    /// Whatever keeps the memory alive.
    pub owner: *mut c_void,
    /// Frees `owner`.
    pub release: unsafe extern "C" fn(owner: *mut c_void),
}

/// What kind of failure a backend reports; mapped to [`crate::Error`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The framework failed.
    Backend = 1,
    /// The caller's tensors or options are wrong.
    InvalidInput = 2,
    /// The package's files are wrong (backend config, model file).
    InvalidPackage = 3,
    /// A bug, e.g. a caught panic.
    Internal = 4,
    /// The model needs packages the environment lacks.
    RequirementsNotMet = 5,
    /// The framework's version is not one the backend or the model supports.
    FrameworkVersion = 6,
}

impl ErrorKind {
    /// Decodes a kind; unknown codes are internal errors.
    pub fn from_code(code: u32) -> ErrorKind {
        match code {
            1 => ErrorKind::Backend,
            2 => ErrorKind::InvalidInput,
            5 => ErrorKind::RequirementsNotMet,
            6 => ErrorKind::FrameworkVersion,
            3 => ErrorKind::InvalidPackage,
            _ => ErrorKind::Internal,
        }
    }
}

/// Callbacks through which a backend returns results, errors and warnings.
#[repr(C)]
pub struct Sink {
    /// Passed back to every callback.
    pub ctx: *mut c_void,
    /// Receives one output tensor (the receiver now owns it).
    pub tensor: unsafe extern "C" fn(ctx: *mut c_void, tensor: OwnedTensor),
    /// Receives the error of a failed call.
    pub error: unsafe extern "C" fn(ctx: *mut c_void, kind: u32, message: StrRef),
    /// Receives a warning (e.g. a GPU fallback) to be logged.
    pub warning: unsafe extern "C" fn(ctx: *mut c_void, message: StrRef),
}

/// What the core tells a backend when loading a model.
#[repr(C)]
pub struct LoadRequest {
    /// The package folder (extracted, for zips).
    pub package_root: StrRef,
    /// The text of config.json.
    pub config_json: StrRef,
    /// The text of 0/config.json; `ptr` is null when the file is absent.
    pub backend_config_json: StrRef,
    /// [`super::BackendOptions`] as JSON.
    pub options_json: StrRef,
}

/// The functions a backend library provides.
#[repr(C)]
pub struct BackendVTable {
    /// Must equal [`ABI_VERSION`].
    pub abi_version: u32,
    /// Loads a model; returns null after reporting an error to the sink.
    pub load: unsafe extern "C" fn(request: *const LoadRequest, sink: *const Sink) -> *mut c_void,
    /// Runs a model; outputs go to the sink. Returns false after reporting an
    /// error. May be called from many threads at once.
    pub infer: unsafe extern "C" fn(
        model: *mut c_void,
        inputs: *const TensorRef,
        count: usize,
        sink: *const Sink,
    ) -> bool,
    /// Frees a model returned by `load`.
    pub free: unsafe extern "C" fn(model: *mut c_void),
}

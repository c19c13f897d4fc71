//! The C ABI between the core and a backend library.
//!
//! Backends are separate shared libraries, opened the first time a model of
//! their platform is loaded, so only `#[repr(C)]` data and `extern "C"`
//! functions cross the boundary: never Rust types, allocations or panics.
//! A backend exports one symbol, [`ENTRY_POINT`], returning a
//! [`BackendVTable`]. Strings and descriptions handed across are borrowed for
//! the duration of a call; tensor memory never is: every tensor crosses as an
//! [`OwnedTensor`] with its release function (in both directions, like
//! DLPack's `DLManagedTensor`), so whoever keeps a tensor past a call keeps
//! its memory alive.
//! Backend crates do not write these by hand: see [`crate::plugin`].

use std::ffi::c_void;

/// Version of this ABI; a library built against another version is refused.
pub const ABI_VERSION: u32 = 5;

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
        // SAFETY: the caller's contract; the bytes are copied at once.
        String::from_utf8_lossy(unsafe { self.as_bytes() }).into_owned()
    }

    /// The bytes.
    ///
    /// # Safety
    /// `ptr`/`len` must describe readable bytes living as long as `'a`.
    pub unsafe fn as_bytes<'a>(&self) -> &'a [u8] {
        if self.len == 0 {
            &[]
        } else {
            // SAFETY: the caller's contract (non-null, as `len` > 0).
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
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
    /// [`TENSOR_LENT`] or 0.
    pub flags: u32,
    /// String elements (null for numeric tensors).
    pub strings: *const StrRef,
    /// Number of strings.
    pub nstrings: usize,
}

/// [`TensorRef::flags`]: `data` is lent by an owner who may write it while
/// the receiver holds it (a caller's numpy array), so the receiver must not
/// read it in place from Rust (see [`crate::ForeignBuffer`]). Without the
/// flag nobody writes it while the tensor is held, and neither may the
/// receiver.
pub const TENSOR_LENT: u32 = 1;

/// A tensor handed over with ownership: the receiver calls `release(owner)`
/// exactly once when it no longer needs the memory `tensor` points to (its
/// data, shape and strings; the name is borrowed for the call only). It may
/// release from any thread, and after the call that handed it over returned.
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

/// Callbacks through which a backend returns results, errors and warnings.
#[repr(C)]
pub struct Sink {
    /// Passed back to every callback.
    pub ctx: *mut c_void,
    /// Receives one output tensor (the receiver now owns it).
    pub tensor: unsafe extern "C" fn(ctx: *mut c_void, tensor: OwnedTensor),
    /// Receives the error of a failed call: its [`crate::ErrorKind`]
    /// code, the message a client may see, and the detail only a log
    /// should (a traceback; empty if none).
    pub error: unsafe extern "C" fn(ctx: *mut c_void, kind: u32, message: StrRef, detail: StrRef),
    /// Receives the error of a failed call that is a wrong field in one of
    /// the package's files (`0/config.json`): the file, the field's path and
    /// what is wrong with it, for the core to raise as a config error.
    pub config_error:
        unsafe extern "C" fn(ctx: *mut c_void, file: StrRef, field: StrRef, reason: StrRef),
    /// Receives a warning (e.g. a GPU fallback) to be logged.
    pub warning: unsafe extern "C" fn(ctx: *mut c_void, message: StrRef),
}

/// [`DimRef::kind`] of a fixed dim (`size`).
pub const DIM_FIXED: u32 = 0;
/// [`DimRef::kind`] of a dim of any size.
pub const DIM_ANY: u32 = 1;
/// [`DimRef::kind`] of a symbol (`symbol`).
pub const DIM_SYMBOL: u32 = 2;

/// One dim of a tensor spec ([`crate::Dim`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DimRef {
    /// [`DIM_FIXED`], [`DIM_ANY`] or [`DIM_SYMBOL`].
    pub kind: u32,
    /// The size of a fixed dim (0 otherwise).
    pub size: u64,
    /// The name of a symbol (empty otherwise).
    pub symbol: StrRef,
}

/// A tensor spec ([`crate::TensorSpec`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TensorSpecRef {
    /// Tensor name.
    pub name: StrRef,
    /// [`crate::DType::code`].
    pub dtype: u32,
    /// Dims (may dangle when `rank` is 0).
    pub dims: *const DimRef,
    /// Number of dims.
    pub rank: usize,
}

/// [`InputDeviceRef::device`] of an input placed on the model's GPU.
pub const DEVICE_GPU: u32 = 0;
/// [`InputDeviceRef::device`] of an input kept on the CPU.
pub const DEVICE_CPU: u32 = 1;

/// One entry of `input_tensor_device`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InputDeviceRef {
    /// The input's name.
    pub input: StrRef,
    /// [`DEVICE_GPU`] or [`DEVICE_CPU`].
    pub device: u32,
}

/// The parsed config.json ([`crate::ModelConfig`]), described field by
/// field: the backend reads it back without parsing anything.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModelConfigRef {
    /// Model name.
    pub name: StrRef,
    /// Platform code: 1 torchscript, 2 tensorflow, 3 python, 4 onnx.
    pub platform: u32,
    /// The framework version range, as written (`"*"` when absent).
    pub platform_version_semver: StrRef,
    /// Input specs (may dangle when `n_inputs` is 0).
    pub inputs: *const TensorSpecRef,
    /// Number of inputs.
    pub n_inputs: usize,
    /// Output specs (may dangle when `n_outputs` is 0).
    pub outputs: *const TensorSpecRef,
    /// Number of outputs.
    pub n_outputs: usize,
    /// Placement of inputs (may dangle when `n_input_devices` is 0).
    pub input_devices: *const InputDeviceRef,
    /// Number of placements.
    pub n_input_devices: usize,
    /// Custom op libraries (may dangle when `n_custom_ops` is 0).
    pub custom_ops: *const StrRef,
    /// Number of custom op libraries.
    pub n_custom_ops: usize,
}

/// [`crate::BackendOptions`]; -1 is an unset value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendOptionsRef {
    /// GPU index, or -1 for the CPU.
    pub visible_gpu: i64,
    /// Intra-op threads, or -1 for the framework's default.
    pub intra_op_threads: i64,
    /// Inter-op threads, or -1 for the framework's default.
    pub inter_op_threads: i64,
}

/// Shared memory a backend may put its large CPU allocations in: given to
/// the backends in the worker of an out-of-process model, so that an output
/// the framework allocates there reaches the caller without a copy.
/// In-process, `allocate` is None and backends allocate as they always do.
/// A backend that can route its framework's allocations (libtorch's CPU
/// allocator) sends those of at least `min_bytes` here; `allocate` returns
/// null when it cannot, and the backend then allocates as usual. Every
/// pointer `allocate` returned goes back through `release`, once.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SharedAllocatorRef {
    /// Passed back to both functions.
    pub ctx: *mut c_void,
    /// Page-aligned memory of `len` bytes (not cleared when reused), or null.
    pub allocate: Option<unsafe extern "C" fn(ctx: *mut c_void, len: usize) -> *mut u8>,
    /// Frees what `allocate` returned.
    pub release: Option<unsafe extern "C" fn(ctx: *mut c_void, ptr: *mut u8)>,
    /// Smaller allocations stay with the framework's own allocator.
    pub min_bytes: usize,
}

// SAFETY: the functions may be called from any thread (the ABI's contract).
unsafe impl Send for SharedAllocatorRef {}
// SAFETY: as for Send; it holds nothing but those functions and their
// context.
unsafe impl Sync for SharedAllocatorRef {}

impl SharedAllocatorRef {
    /// None: allocate as usual.
    pub const NONE: SharedAllocatorRef = SharedAllocatorRef {
        ctx: std::ptr::null_mut(),
        allocate: None,
        release: None,
        min_bytes: usize::MAX,
    };
}

/// What the core tells a backend when loading a model. Everything is
/// borrowed for the duration of the `load` call.
#[repr(C)]
pub struct LoadRequest {
    /// The package folder (extracted, for zips).
    pub package_root: StrRef,
    /// The parsed config.json.
    pub config: ModelConfigRef,
    /// The text of 0/config.json, which only the backend knows the schema
    /// of; `ptr` is null when the file is absent.
    pub backend_config_json: StrRef,
    /// Device and thread settings.
    pub options: BackendOptionsRef,
    /// Where large allocations may go (out-of-process workers only).
    pub shared_allocator: SharedAllocatorRef,
}

/// The functions a backend library provides.
#[repr(C)]
pub struct BackendVTable {
    /// Must equal [`ABI_VERSION`].
    pub abi_version: u32,
    /// Loads a model; returns null after reporting an error to the sink.
    pub load: unsafe extern "C" fn(request: *const LoadRequest, sink: *const Sink) -> *mut c_void,
    /// Runs a model; outputs go to the sink. The backend takes over the
    /// inputs: it releases each exactly once, whenever it is done with it
    /// (at once, or later if the model keeps it), also when the call fails.
    /// Returns false after reporting an error. May be called from many
    /// threads at once.
    pub infer: unsafe extern "C" fn(
        model: *mut c_void,
        inputs: *const OwnedTensor,
        count: usize,
        sink: *const Sink,
    ) -> bool,
    /// Frees a model returned by `load`.
    pub free: unsafe extern "C" fn(model: *mut c_void),
}

//! Rust side of `cpp/forward.cpp`.

use std::ffi::{c_char, c_void, CStr};

use tch::{CModule, Kind};

#[repr(C)]
struct NptInput {
    name: *const u8,
    name_len: usize,
    tensor: *const c_void,
    strings: *const *const u8,
    string_lens: *const usize,
    nstrings: usize,
}

type EmitTensor = unsafe extern "C" fn(
    ctx: *mut c_void,
    name: *const u8,
    len: usize,
    position: i64,
    t: *mut c_void,
);
type EmitStrings = unsafe extern "C" fn(
    ctx: *mut c_void,
    name: *const u8,
    len: usize,
    position: i64,
    strings: *const *const u8,
    lens: *const usize,
    count: usize,
);

extern "C" {
    fn npt_forward(
        module: *mut c_void,
        inputs: *const NptInput,
        count: usize,
        ctx: *mut c_void,
        on_tensor: EmitTensor,
        on_strings: EmitStrings,
        missing_input: *mut i32,
        detail: *mut *mut c_char,
    ) -> *mut c_char;
    fn npt_from_blob(
        data: *mut c_void,
        dims: *const i64,
        rank: usize,
        scalar_type: i8,
        owner: *mut c_void,
        release: unsafe extern "C" fn(*mut c_void),
        error: *mut *mut c_char,
    ) -> *mut c_void;
    fn npt_free_error(message: *mut c_char);
}

/// Takes a message from forward.cpp and frees it.
///
/// # Safety
/// `error` is a non-null, NUL-terminated message from `npt_error`.
unsafe fn take_error(error: *mut c_char) -> String {
    // SAFETY: the caller's contract; the text is copied before it is freed,
    // once.
    unsafe {
        let message = CStr::from_ptr(error).to_string_lossy().into_owned();
        npt_free_error(error);
        message
    }
}

/// libtorch's `c10::ScalarType` number of a kind (c10/core/ScalarType.h);
/// the kinds Neuropods maps to.
fn scalar_type(kind: Kind) -> Option<i8> {
    Some(match kind {
        Kind::Uint8 => 0,
        Kind::Int8 => 1,
        Kind::Int16 => 2,
        Kind::Int => 3,
        Kind::Int64 => 4,
        Kind::Half => 5,
        Kind::Float => 6,
        Kind::Double => 7,
        Kind::Bool => 11,
        _ => return None,
    })
}

unsafe extern "C" fn release_owner<T>(owner: *mut c_void) {
    // SAFETY: `owner` is the box `tensor_over` made, released once by
    // forward.cpp.
    drop(unsafe { Box::from_raw(owner as *mut T) });
}

/// A CPU tensor viewing the `size`/`kind` elements at `data` without a
/// copy, whose storage keeps `owner` (and so whoever owns the memory) alive
/// until libtorch frees it. libtorch may write through `data` (a model
/// working in place): callers lend only memory that may be written.
pub fn tensor_over<T: Send + 'static>(
    data: *mut u8,
    owner: T,
    size: &[i64],
    kind: Kind,
) -> Result<tch::Tensor, String> {
    let scalar_type =
        scalar_type(kind).ok_or_else(|| format!("no libtorch scalar type for {kind:?}"))?;
    let owner = Box::into_raw(Box::new(owner)) as *mut c_void;
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: `data` holds the elements and stays valid while the boxed
    // owner lives, which forward.cpp releases exactly once.
    let tensor = unsafe {
        npt_from_blob(
            data as *mut c_void,
            size.as_ptr(),
            size.len(),
            scalar_type,
            owner,
            release_owner::<T>,
            &mut error,
        )
    };
    if tensor.is_null() {
        // SAFETY: forward.cpp sets the message whenever it returns NULL.
        return Err(unsafe { take_error(error) });
    }
    // SAFETY: forward.cpp hands over a new at::Tensor*, tch's C_tensor.
    Ok(unsafe { tch::Tensor::from_ptr(tensor as *mut _) })
}

/// An input ready for `forward`.
pub struct Input<'a> {
    name: &'a str,
    tensor: Option<tch::Tensor>,
    strings: Vec<*const u8>,
    lens: Vec<usize>,
}

impl<'a> Input<'a> {
    /// A tensor input.
    pub fn tensor(name: &'a str, tensor: tch::Tensor) -> Self {
        Input {
            name,
            tensor: Some(tensor),
            strings: Vec::new(),
            lens: Vec::new(),
        }
    }

    /// A `List[str]` input borrowing `strings`.
    pub fn strings(name: &'a str, strings: &'a [String]) -> Self {
        Input {
            name,
            tensor: None,
            strings: strings.iter().map(|s| s.as_ptr()).collect(),
            lens: strings.iter().map(String::len).collect(),
        }
    }
}

/// One output value.
pub enum Value {
    /// A tensor, on whatever device the model left it.
    Tensor(tch::Tensor),
    /// A list of strings.
    Strings(Vec<String>),
}

/// One output: named (dict key, namedtuple field) or at a position.
pub struct Output {
    /// Empty when the model returned it unnamed.
    pub name: String,
    /// Position in a tuple or of a single tensor.
    pub position: Option<usize>,
    /// The value.
    pub value: Value,
}

/// # Safety
/// `name` points to `len` readable bytes (or `len` is 0).
unsafe fn lossy_string(name: *const u8, len: usize) -> String {
    if len == 0 {
        String::new()
    } else {
        // SAFETY: the caller's contract; the bytes are copied at once.
        String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(name, len) }).into_owned()
    }
}

// forward.cpp's callbacks: `ctx` is the `Vec<Output>` that `forward` passed,
// used by nothing else until the call returns; the names and strings live
// for the callback.

unsafe extern "C" fn on_tensor(
    ctx: *mut c_void,
    name: *const u8,
    len: usize,
    position: i64,
    t: *mut c_void,
) {
    // SAFETY: see the callbacks' comment above; forward.cpp hands over a
    // new at::Tensor*, tch's C_tensor.
    unsafe {
        let outputs = &mut *(ctx as *mut Vec<Output>);
        outputs.push(Output {
            name: lossy_string(name, len),
            position: usize::try_from(position).ok(),
            value: Value::Tensor(tch::Tensor::from_ptr(t as *mut _)),
        });
    }
}

unsafe extern "C" fn on_strings(
    ctx: *mut c_void,
    name: *const u8,
    len: usize,
    position: i64,
    strings: *const *const u8,
    lens: *const usize,
    count: usize,
) {
    // SAFETY: see the callbacks' comment above; `strings` and `lens` hold
    // `count` entries.
    unsafe {
        let outputs = &mut *(ctx as *mut Vec<Output>);
        let values = (0..count)
            .map(|i| lossy_string(*strings.add(i), *lens.add(i)))
            .collect();
        outputs.push(Output {
            name: lossy_string(name, len),
            position: usize::try_from(position).ok(),
            value: Value::Strings(values),
        });
    }
}

/// The raw `torch::jit::Module*` inside a tch `CModule`.
fn module_ptr(module: &CModule) -> *mut c_void {
    // CModule is a struct with one field, the module pointer; equal sizes
    // prove the field sits at offset 0.
    const _: () = assert!(std::mem::size_of::<CModule>() == std::mem::size_of::<*mut c_void>());
    // SAFETY: see above.
    unsafe { *(module as *const CModule as *const *mut c_void) }
}

/// Why `forward` did not run.
#[derive(Debug)]
pub enum CallError {
    /// An argument without a default that no input fills.
    MissingInput(String),
    /// libtorch's error (without its C++ backtrace), or an input forward
    /// has no argument of.
    Failed {
        /// The exception's own line, for a client.
        message: String,
        /// The TorchScript interpreter's stack, for logs ("" if none).
        detail: String,
    },
}

/// Runs `forward` with `inputs`; returns the outputs or why it did not run.
pub fn call(module: &CModule, inputs: &[Input<'_>]) -> Result<Vec<Output>, CallError> {
    let raw: Vec<NptInput> = inputs
        .iter()
        .map(|i| NptInput {
            name: i.name.as_ptr(),
            name_len: i.name.len(),
            tensor: i
                .tensor
                .as_ref()
                .map_or(std::ptr::null(), |t| t.as_ptr() as *const c_void),
            strings: i.strings.as_ptr(),
            string_lens: i.lens.as_ptr(),
            nstrings: i.strings.len(),
        })
        .collect();
    let mut outputs: Vec<Output> = Vec::new();
    let mut missing_input = 0;
    let mut detail: *mut c_char = std::ptr::null_mut();
    // SAFETY: inputs outlive the call; callbacks match forward.cpp's types.
    let error = unsafe {
        npt_forward(
            module_ptr(module),
            raw.as_ptr(),
            raw.len(),
            &mut outputs as *mut Vec<Output> as *mut c_void,
            on_tensor,
            on_strings,
            &mut missing_input,
            &mut detail,
        )
    };
    if error.is_null() {
        return Ok(outputs);
    }
    // SAFETY: messages from forward.cpp, each freed once.
    let message = unsafe { take_error(error) };
    let detail = if detail.is_null() {
        String::new()
    } else {
        // SAFETY: as above.
        unsafe { take_error(detail) }
    };
    Err(if missing_input != 0 {
        CallError::MissingInput(message)
    } else {
        CallError::Failed { message, detail }
    })
}

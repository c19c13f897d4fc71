//! numpy arrays to core tensors and back, without copies where memory
//! allows. Shared by the Python bindings and the python backend, so that
//! both take and give arrays alike.

use std::any::Any;
use std::mem::ManuallyDrop;
use std::sync::Arc;

use neuropods_abi::tensor::AlignedBufferWriter;
use neuropods_abi::{Buffer, DType, ForeignBuffer, Tensor, TensorData};
use numpy::npyffi::{
    self, NPY_ARRAY_ALIGNED, NPY_ARRAY_C_CONTIGUOUS, NPY_ARRAY_WRITEABLE, PY_ARRAY_API,
};
use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyString};

/// Why a conversion failed.
#[derive(Debug)]
pub enum ConvertError {
    /// The value is not what the API takes (a type error for the caller).
    Type(String),
    /// The value broke a core rule.
    Core(neuropods_abi::Error),
    /// Python raised.
    Py(PyErr),
}

impl From<PyErr> for ConvertError {
    fn from(e: PyErr) -> Self {
        ConvertError::Py(e)
    }
}

impl From<pyo3::CastIntoError<'_>> for ConvertError {
    fn from(e: pyo3::CastIntoError<'_>) -> Self {
        ConvertError::Py(e.into())
    }
}

type Result<T> = std::result::Result<T, ConvertError>;

/// Keeps a Python object (the numpy array or bytes a buffer points into)
/// alive. May be dropped on any thread (a python model's outputs reach Rust
/// code): it attaches to release the object, or leaks it once the
/// interpreter is shutting down.
struct PyOwner(ManuallyDrop<Py<PyAny>>);

impl Drop for PyOwner {
    fn drop(&mut self) {
        Python::try_attach(|_| {
            // SAFETY: dropped once, here.
            unsafe { ManuallyDrop::drop(&mut self.0) }
        });
    }
}

/// Wraps the memory of an immutable Python object (a `bytes`) as a frozen
/// core buffer.
///
/// # Safety
/// `ptr`/`len` must be memory owned by `owner` that nobody frees, moves or
/// writes while `owner` is referenced.
pub unsafe fn buffer_from_python(ptr: *const u8, len: usize, owner: Py<PyAny>) -> Buffer {
    // SAFETY: the caller's contract is the frozen one.
    unsafe { Buffer::from_raw_parts(ptr, len, python_owner(owner)) }
}

fn python_owner(owner: Py<PyAny>) -> Arc<dyn Any + Send + Sync> {
    Arc::new(PyOwner(ManuallyDrop::new(owner)))
}

fn numeric_dtype(kind: u8, itemsize: usize) -> Option<DType> {
    Some(match (kind, itemsize) {
        (b'f', 2) => DType::Float16,
        (b'f', 4) => DType::Float32,
        (b'f', 8) => DType::Float64,
        (b'i', 1) => DType::Int8,
        (b'i', 2) => DType::Int16,
        (b'i', 4) => DType::Int32,
        (b'i', 8) => DType::Int64,
        (b'u', 1) => DType::Uint8,
        (b'u', 2) => DType::Uint16,
        (b'u', 4) => DType::Uint32,
        (b'u', 8) => DType::Uint64,
        (b'b', 1) => DType::Bool,
        _ => return None,
    })
}

/// Converts one numpy array. C-contiguous, aligned, native-endian, writable
/// numeric arrays are borrowed in place; others are copied once by numpy.
/// Either way the memory is numpy's, which the caller's other threads may
/// write while the GIL is released, so it is lent memory
/// ([`ForeignBuffer`]). Bools are the exception: copied once, and checked
/// on the copy.
pub fn tensor_from_numpy(py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> Result<Tensor> {
    let Ok(array) = value.cast::<PyUntypedArray>() else {
        return Err(ConvertError::Type(format!(
            "input '{name}': expected a numpy array, got {}",
            value.get_type().name()?
        )));
    };
    let descr = array.dtype();
    let kind = descr.kind();
    let shape = array.shape().to_vec();
    match kind {
        b'U' | b'S' | b'O' | b'T' => return string_tensor(name, array, kind, shape),
        _ => {}
    }
    let dtype = numeric_dtype(kind, descr.itemsize()).ok_or_else(|| {
        ConvertError::Type(format!(
            "input '{name}': numpy dtype {} is not supported",
            descr.str().map(|s| s.to_string()).unwrap_or_default()
        ))
    })?;
    let native = descr.is_native_byteorder().unwrap_or(true);
    // Borrowed arrays are lent to the framework as writable memory (a model
    // may work in place), so read-only ones are copied, like any array whose
    // layout the backend cannot take as it is.
    // The flags are read from the array's struct: `array.flags.writeable`
    // would build a flags object on every call.
    let borrowable = NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_WRITEABLE;
    // SAFETY: `array` is a live numpy array.
    let flags = unsafe { (*array.as_array_ptr()).fields.flags };
    let array = if flags & borrowable == borrowable && native {
        array.clone()
    } else {
        let numpy = py.import("numpy")?;
        let native_dtype = descr.call_method1("newbyteorder", ("=",))?;
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("dtype", native_dtype)?;
        kwargs.set_item("order", "C")?;
        numpy
            .call_method("array", (array,), Some(&kwargs))?
            .cast_into::<PyUntypedArray>()?
    };
    // SAFETY: `array` is a live numpy array.
    let data = unsafe { (*array.as_array_ptr()).fields.data } as *mut u8;
    let len = array.len() * dtype.item_size().unwrap_or(1);
    // SAFETY: a C-contiguous array's data is `len` bytes at `data`, kept
    // alive (not freed or moved; numpy arrays never move their data) by the
    // reference the owner holds.
    let lent = unsafe {
        ForeignBuffer::from_raw_parts(data, len, python_owner(array.into_any().unbind()))
    };
    if dtype == DType::Bool {
        // numpy bools are bytes that may hold any value (np.frombuffer,
        // .view), and the core's bools are 0 or 1: normalized on the copy
        // that the model reads, so that no later write can undo the check.
        let mut copy = AlignedBufferWriter::new(len);
        lent.copy_to(copy.as_mut_slice());
        for byte in copy.as_mut_slice() {
            *byte = u8::from(*byte != 0);
        }
        return Tensor::from_buffer(dtype, shape, copy.finish()).map_err(ConvertError::Core);
    }
    Tensor::from_foreign(dtype, shape, lent).map_err(ConvertError::Core)
}

fn string_tensor(
    name: &str,
    array: &Bound<'_, PyUntypedArray>,
    kind: u8,
    shape: Vec<usize>,
) -> Result<Tensor> {
    // Strings are always copied: the core holds them as UTF-8.
    let items = array.call_method0("ravel")?.call_method0("tolist")?;
    let mut strings = Vec::new();
    for (i, item) in items.try_iter()?.enumerate() {
        let item = item?;
        let text = match kind {
            b'S' => String::from_utf8(item.extract::<Vec<u8>>()?).map_err(|_| {
                ConvertError::Type(format!("input '{name}': element {i} is not valid UTF-8"))
            })?,
            // `<U`, StringDType (`T`) and object arrays give str items.
            _ => match item.cast::<PyString>() {
                Ok(s) => s.to_str().map(str::to_owned).map_err(|_| {
                    ConvertError::Type(format!(
                        "input '{name}': element {i} is a str that cannot be UTF-8 (a lone surrogate?)"
                    ))
                })?,
                Err(_) => {
                    return Err(ConvertError::Type(format!(
                        "input '{name}': object array element {i} is {}, expected str",
                        item.get_type().name()?
                    )))
                }
            },
        };
        strings.push(text);
    }
    Tensor::from_strings(shape, strings).map_err(ConvertError::Core)
}

/// Keeps alive the memory behind numpy arrays that Neuropods hands out; set
/// as their `base`, so the memory lives exactly as long as the arrays.
#[pyclass(frozen, module = "neuropods_native")]
pub struct TensorMemory {
    _owner: Arc<dyn Any + Send + Sync>,
}

fn numpy_descr<'py>(py: Python<'py>, dtype: DType) -> Bound<'py, PyArrayDescr> {
    use numpy::dtype as of;
    match dtype {
        DType::Float16 => of::<half::f16>(py),
        DType::Float32 => of::<f32>(py),
        DType::Float64 => of::<f64>(py),
        DType::Int8 => of::<i8>(py),
        DType::Int16 => of::<i16>(py),
        DType::Int32 => of::<i32>(py),
        DType::Int64 => of::<i64>(py),
        DType::Uint8 => of::<u8>(py),
        DType::Uint16 => of::<u16>(py),
        DType::Uint32 => of::<u32>(py),
        DType::Uint64 => of::<u64>(py),
        DType::Bool | DType::String => of::<bool>(py),
    }
}

/// Whether an array made from a tensor may be written to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// Outputs and deserialized tensors: their memory may be shared (a
    /// model's own tensor, a bytes object).
    ReadOnly,
    /// Inputs lent to a model: it may work in place on them, as on the
    /// arrays it gets when called directly. Lent memory (the caller's
    /// array) is viewed as it is; frozen bytes, which nobody may write, are
    /// copied first.
    Writable,
}

/// A numpy array viewing the `descr`/`shape` elements at `data`, which
/// `owner` keeps alive; `owner` becomes the array's base.
///
/// # Safety
/// `data` must hold the elements, C-contiguous and aligned, valid while
/// `owner` lives; with [`Access::Writable`], nobody else may rely on them
/// staying unchanged.
unsafe fn array_over<'py>(
    py: Python<'py>,
    descr: Bound<'py, PyArrayDescr>,
    shape: &[usize],
    data: *mut u8,
    owner: Arc<dyn Any + Send + Sync>,
    access: Access,
) -> PyResult<Bound<'py, PyAny>> {
    let mut dims: Vec<npyffi::npy_intp> = shape.iter().map(|&d| d as npyffi::npy_intp).collect();
    let memory = Bound::new(py, TensorMemory { _owner: owner })?;
    let flags = match access {
        Access::ReadOnly => NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED,
        Access::Writable => NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_WRITEABLE,
    };
    // SAFETY: per this function's contract; `memory` becomes the base.
    unsafe {
        let array_type = npyffi::get_type_object(py, npyffi::NpyTypes::PyArray_Type);
        let ptr = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            array_type,
            descr.into_dtype_ptr(),
            dims.len() as std::ffi::c_int,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            data.cast(),
            flags,
            std::ptr::null_mut(),
        );
        let array = Bound::from_owned_ptr_or_err(py, ptr)?;
        if PY_ARRAY_API.PyArray_SetBaseObject(
            py,
            ptr as *mut npyffi::PyArrayObject,
            memory.into_any().into_ptr(),
        ) < 0
        {
            return Err(PyErr::fetch(py));
        }
        Ok(array)
    }
}

/// A numpy array over frozen bytes: in place when read-only and aligned,
/// else over a copy that only the array holds.
fn array_over_frozen<'py>(
    py: Python<'py>,
    dtype: DType,
    shape: &[usize],
    buffer: &Buffer,
    access: Access,
) -> PyResult<Bound<'py, PyAny>> {
    let in_place =
        access == Access::ReadOnly && buffer.is_aligned_to(dtype.item_size().unwrap_or(1));
    let buffer = if in_place {
        buffer.clone()
    } else {
        Buffer::copy_from_slice(buffer)
    };
    let data = buffer.as_ptr().cast_mut();
    // SAFETY: the buffer holds the elements, C-contiguous and aligned
    // (checked, or a copy aligned to 64), and the array holds it; writable
    // only when it is the copy, which nobody else holds.
    unsafe {
        array_over(
            py,
            numpy_descr(py, dtype),
            shape,
            data,
            Arc::new(buffer),
            access,
        )
    }
}

/// A numpy array over lent bytes: in place when aligned (numpy reads and
/// writes them as the caller would), else over a frozen copy.
fn array_over_lent<'py>(
    py: Python<'py>,
    dtype: DType,
    shape: &[usize],
    lent: &ForeignBuffer,
    access: Access,
) -> PyResult<Bound<'py, PyAny>> {
    if !lent.is_aligned_to(dtype.item_size().unwrap_or(1)) {
        // Rare (numpy's and the worker's memory is aligned): a C caller's
        // unaligned bytes, read through a copy.
        return array_over_frozen(py, dtype, shape, &lent.to_frozen(), access);
    }
    // SAFETY: the bytes hold the elements, C-contiguous and aligned
    // (checked above), valid while the owner lives; they are lent memory,
    // which may be written.
    unsafe {
        array_over(
            py,
            numpy_descr(py, dtype),
            shape,
            lent.as_ptr(),
            lent.owner().clone(),
            access,
        )
    }
}

/// Converts a core tensor to numpy: numeric tensors become views of their
/// memory (no copy); strings an array of numpy's variable-width
/// `StringDType` (numpy >= 2), else of fixed-width unicode (`<U`).
pub fn tensor_to_numpy<'py>(
    py: Python<'py>,
    name: &str,
    tensor: Tensor,
    access: Access,
) -> Result<Bound<'py, PyAny>> {
    let shape = tensor.shape().to_vec();
    let dtype = tensor.dtype();
    let array = match tensor.data() {
        TensorData::Numeric(buffer) => {
            array_over_frozen(py, dtype, &shape, buffer, access).map_err(ConvertError::Py)
        }
        TensorData::Foreign(lent) => {
            array_over_lent(py, dtype, &shape, lent, access).map_err(ConvertError::Py)
        }
        TensorData::Strings(strings) => string_array(py, name, &shape, strings),
    };
    // numpy refuses shapes the core allows (e.g. more dims than numpy 1.x
    // takes): a typed error naming the tensor, not numpy's ValueError.
    array.map_err(|e| match e {
        ConvertError::Py(e) if !is_control_flow(py, &e) => {
            ConvertError::Core(neuropods_abi::Error::InvalidInput(format!(
                "tensor '{name}' of shape {shape:?} cannot be a numpy array: {e}"
            )))
        }
        other => other,
    })
}

/// Whether a Python exception must reach the caller as itself: Ctrl-C,
/// `sys.exit` and running out of memory are not errors about the data.
pub fn is_control_flow(py: Python<'_>, err: &PyErr) -> bool {
    use pyo3::exceptions::{PyException, PyMemoryError};
    !err.is_instance_of::<PyException>(py) || err.is_instance_of::<PyMemoryError>(py)
}

/// numpy's variable-width string dtype, on numpy >= 2; looked up once per
/// interpreter, not on every string tensor.
fn string_dtype<'py>(py: Python<'py>) -> Option<Bound<'py, PyAny>> {
    static STRING_DTYPE: PyOnceLock<Option<Py<PyAny>>> = PyOnceLock::new();
    STRING_DTYPE
        .get_or_init(py, || {
            py.import("numpy.dtypes")
                .and_then(|m| m.getattr("StringDType"))
                .and_then(|class| class.call0())
                .map(Bound::unbind)
                .ok()
        })
        .as_ref()
        .map(|dtype| dtype.bind(py).clone())
}

/// Fixed-width unicode stores every string at the width of the longest, 4
/// bytes a character: one long string among many short ones multiplies the
/// size. Beyond this factor over the strings' own size (and this floor), it
/// is refused as out of memory rather than attempted.
const FIXED_WIDTH_BLOWUP: usize = 16;
const FIXED_WIDTH_FLOOR: usize = 64 << 20;

fn string_array<'py>(
    py: Python<'py>,
    name: &str,
    shape: &[usize],
    strings: &[String],
) -> Result<Bound<'py, PyAny>> {
    if let Some(dtype) = string_dtype(py) {
        let list = PyList::new(py, strings.iter().map(|s| PyString::new(py, s)))?;
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("dtype", dtype)?;
        let flat = py
            .import("numpy")?
            .call_method("array", (list,), Some(&kwargs))?;
        return Ok(flat.call_method1("reshape", (shape.to_vec(),))?);
    }
    let chars: Vec<usize> = strings.iter().map(|s| s.chars().count()).collect();
    let width = chars.iter().copied().max().unwrap_or(0).max(1);
    let total_chars: usize = chars.iter().sum();
    let too_big = || {
        ConvertError::Core(neuropods_abi::Error::OutOfMemory(format!(
            "string tensor '{name}' ({} strings, the longest {width} characters) needs {} bytes as \
             fixed-width unicode on numpy < 2; numpy >= 2 returns variable-width strings",
            strings.len(),
            strings.len().saturating_mul(width).saturating_mul(4)
        )))
    };
    let cells = strings.len().checked_mul(width).ok_or_else(too_big)?;
    let limit = total_chars
        .saturating_mul(FIXED_WIDTH_BLOWUP)
        .max(FIXED_WIDTH_FLOOR / 4);
    if cells > limit {
        return Err(too_big());
    }
    let mut ucs4: Vec<u32> = Vec::new();
    ucs4.try_reserve_exact(cells).map_err(|_| too_big())?;
    ucs4.resize(cells, 0);
    for (chunk, s) in ucs4.chunks_mut(width).zip(strings) {
        for (slot, c) in chunk.iter_mut().zip(s.chars()) {
            *slot = c as u32;
        }
    }
    let descr = PyArrayDescr::new(py, format!("<U{width}"))?;
    let data = ucs4.as_mut_ptr().cast::<u8>();
    // SAFETY: the vector holds the shape's cells, C-contiguous and aligned,
    // and its heap block does not move into the Arc; only the array holds
    // it, so it may be written.
    Ok(unsafe { array_over(py, descr, shape, data, Arc::new(ucs4), Access::Writable) }?)
}

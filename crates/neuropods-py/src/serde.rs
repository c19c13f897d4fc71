//! `serialize` / `deserialize`: the core's wire format, from Python.

use neuropods_core::serialize::{self as wire, Serialized};
use neuropods_core::{Tensor, TensorMap};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::convert::{
    buffer_from_python, tensor_from_numpy, tensor_name, tensor_to_numpy, type_error, Access,
};
use crate::errors::{guard, CoreError};

/// Serializes a numpy array, or a dict of str to numpy array, to bytes.
#[pyfunction]
pub fn serialize<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    guard(|| {
        if let Ok(dict) = value.cast::<PyDict>() {
            let mut map = TensorMap::new();
            for (key, item) in dict.iter() {
                let name = tensor_name(&key)?;
                map.insert(name.clone(), tensor_from_numpy(py, &name, &item)?);
            }
            let len = wire::serialized_len_map(&map);
            new_bytes(py, len, |out| wire::write_map(&map, out))
        } else {
            let tensor: Tensor = tensor_from_numpy(py, "value", value)?;
            let len = wire::serialized_len_tensor(&tensor);
            new_bytes(py, len, |out| wire::write_tensor(&tensor, out))
        }
    })
}

/// Blobs from this size on are written with the GIL released and onto huge
/// pages.
const LARGE_BLOB: usize = 1 << 20;
/// Transparent huge page size on x86-64 and arm64 (4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// A new `bytes` object of `len` bytes, every one written by `write`.
///
/// Not `PyBytes::new_with`, which zeroes the body first: `write` covers every
/// byte anyway (padding included). And a large body is advised onto
/// transparent huge pages before it is first touched, as numpy does for its
/// arrays: a fresh 64 MB allocation otherwise takes 16k page faults, which
/// cost several times the copy itself (see benchmarks case 6).
fn new_bytes<'py>(
    py: Python<'py>,
    len: usize,
    write: impl FnOnce(&mut [u8]) -> neuropods_core::Result<()> + Send,
) -> PyResult<Bound<'py, PyBytes>> {
    let size = isize::try_from(len).map_err(|_| {
        pyo3::exceptions::PyOverflowError::new_err(format!(
            "serialized form of {len} bytes is too large"
        ))
    })?;
    // SAFETY: a NULL source asks CPython for an uninitialised body of `size`
    // bytes; the new reference is owned by the Bound (or NULL with an error).
    let bytes = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size),
        )?
    }
    .cast_into::<PyBytes>()?;
    // SAFETY: the body is `len` bytes, private to this function until the
    // object is returned (the object itself stays alive in `bytes`).
    let body = unsafe { pyo3::ffi::PyBytes_AsString(bytes.as_ptr()) } as usize;
    let result = if len >= LARGE_BLOB {
        advise_huge_pages(body, len);
        // SAFETY: as above; no Python object is touched while detached.
        py.detach(|| write(unsafe { std::slice::from_raw_parts_mut(body as *mut u8, len) }))
    } else {
        // SAFETY: as above.
        write(unsafe { std::slice::from_raw_parts_mut(body as *mut u8, len) })
    };
    result.map_err(CoreError)?;
    Ok(bytes)
}

/// Asks the kernel to back the whole huge pages inside `[start, start+len)`
/// with transparent huge pages. Advice only: refused advice (no THP support)
/// leaves ordinary pages, so its result is ignored.
fn advise_huge_pages(start: usize, len: usize) {
    let first = start.next_multiple_of(HUGE_PAGE);
    let end = (start + len) / HUGE_PAGE * HUGE_PAGE;
    if end > first {
        // SAFETY: the range lies inside one live allocation and madvise with
        // MADV_HUGEPAGE does not change its contents.
        unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
    }
}

/// Reads bytes written by `serialize` (in Python or Rust), from any object
/// with the buffer protocol. Numeric arrays view a `bytes` object's memory
/// without copying it when it is aligned; other buffers (bytearray,
/// memoryview, numpy) may change after the call, so they are copied once.
#[pyfunction]
pub fn deserialize<'py>(py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    guard(|| {
        let bytes = match data.cast::<PyBytes>() {
            Ok(bytes) => bytes.clone(),
            // Objects without the buffer protocol are refused rather than
            // passed to bytes(), which would turn an int into zeros.
            Err(_) => py
                .import("builtins")?
                .getattr("memoryview")?
                .call1((data,))
                .map_err(|_| {
                    type_error(format!(
                        "deserialize takes a bytes-like object, got {}",
                        data.get_type()
                            .name()
                            .map(|n| n.to_string())
                            .unwrap_or_default()
                    ))
                })?
                .call_method0("tobytes")?
                .cast_into::<PyBytes>()?,
        };
        let slice = bytes.as_bytes();
        // SAFETY: bytes objects are immutable and the buffer owns a
        // reference to this one.
        let buffer = unsafe {
            buffer_from_python(
                slice.as_ptr(),
                slice.len(),
                bytes.clone().into_any().unbind(),
            )
        };
        let parsed = py
            .detach(|| wire::deserialize(&buffer))
            .map_err(CoreError)?;
        match parsed {
            Serialized::Tensor(tensor) => tensor_to_numpy(py, "value", tensor, Access::ReadOnly),
            Serialized::Map(map) => {
                let dict = PyDict::new(py);
                for (name, tensor) in map {
                    let array = tensor_to_numpy(py, &name, tensor, Access::ReadOnly)?;
                    dict.set_item(name, array)?;
                }
                Ok(dict.into_any())
            }
        }
    })
}

//! `serialize` / `deserialize`: the core's wire format, from Python.

use neuropods_core::serialize::{self as wire, Serialized};
use neuropods_core::{Tensor, TensorMap};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::convert::{buffer_from_python, tensor_from_numpy, tensor_to_numpy, type_error};
use crate::errors::{guard, to_py};

/// Serializes a numpy array, or a dict of str to numpy array, to bytes.
#[pyfunction]
pub fn serialize<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    guard(py, || {
        if let Ok(dict) = value.cast::<PyDict>() {
            let mut map = TensorMap::new();
            for (key, item) in dict.iter() {
                let Ok(name) = key.cast::<PyString>() else {
                    return Err(type_error(
                        py,
                        format!("keys must be str, got {}", key.get_type().name()?),
                    ));
                };
                let name = name.to_str()?.to_string();
                map.insert(name.clone(), tensor_from_numpy(py, &name, &item)?);
            }
            let len = wire::serialized_len_map(&map);
            PyBytes::new_with(py, len, |out| {
                wire::write_map(&map, out).map_err(|e| to_py(py, e))
            })
        } else {
            let tensor: Tensor = tensor_from_numpy(py, "value", value)?;
            let len = wire::serialized_len_tensor(&tensor);
            PyBytes::new_with(py, len, |out| {
                wire::write_tensor(&tensor, out).map_err(|e| to_py(py, e))
            })
        }
    })
}

/// Reads bytes written by `serialize` (in Python or Rust). Numeric arrays
/// view the bytes object's memory without copying it when it is aligned.
#[pyfunction]
pub fn deserialize<'py>(py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    guard(py, || {
        let parsed = if let Ok(bytes) = data.cast::<PyBytes>() {
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
            py.detach(|| wire::deserialize(&buffer))
        } else {
            // Anything else with the buffer protocol (bytearray, memoryview,
            // numpy bytes) is copied; other objects are refused rather than
            // passed to bytes(), which would turn an int into zeros.
            let view = py
                .import("builtins")?
                .getattr("memoryview")?
                .call1((data,))
                .map_err(|_| {
                    type_error(
                        py,
                        format!(
                            "deserialize takes a bytes-like object, got {}",
                            data.get_type()
                                .name()
                                .map(|n| n.to_string())
                                .unwrap_or_default()
                        ),
                    )
                })?;
            let copy: Vec<u8> = view.call_method0("tobytes")?.extract()?;
            wire::deserialize_bytes(&copy)
        }
        .map_err(|e| to_py(py, e))?;
        match parsed {
            Serialized::Tensor(tensor) => tensor_to_numpy(py, tensor),
            Serialized::Map(map) => {
                let dict = PyDict::new(py);
                for (name, tensor) in map {
                    dict.set_item(name, tensor_to_numpy(py, tensor)?)?;
                }
                Ok(dict.into_any())
            }
        }
    })
}

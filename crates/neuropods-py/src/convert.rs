//! numpy conversions (shared with the python backend, in
//! `neuropods_python::arrays`), with their failures as Python exceptions.

use neuropods_core::Tensor;
use neuropods_python::arrays::{self, ConvertError};
use pyo3::prelude::*;

pub use neuropods_python::arrays::{buffer_from_python, Access, TensorMemory};

use crate::errors::{wrap_py, CoreError, ErrorClass};

/// `InputTypeError`: a value that is not what the API takes.
pub fn type_error(message: String) -> PyErr {
    ErrorClass::InputType.new_err(message)
}

/// A conversion failure as a Python exception.
fn convert_error(py: Python<'_>, name: &str, err: ConvertError) -> PyErr {
    match err {
        ConvertError::Type(message) => type_error(message),
        ConvertError::Core(e) => CoreError(e).into(),
        ConvertError::Py(e) => {
            wrap_py(py, e, ErrorClass::InvalidInput, &format!("tensor '{name}'"))
        }
    }
}

/// Converts one numpy array (see [`arrays::tensor_from_numpy`]).
pub fn tensor_from_numpy(py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<Tensor> {
    arrays::tensor_from_numpy(py, name, value).map_err(|e| convert_error(py, name, e))
}

/// Converts a tensor to numpy (see [`arrays::tensor_to_numpy`]).
pub fn tensor_to_numpy<'py>(
    py: Python<'py>,
    name: &str,
    tensor: Tensor,
    access: Access,
) -> PyResult<Bound<'py, PyAny>> {
    arrays::tensor_to_numpy(py, name, tensor, access).map_err(|e| convert_error(py, name, e))
}

/// A tensor name given by the caller (a dict key), as UTF-8.
pub fn tensor_name(key: &Bound<'_, PyAny>) -> PyResult<String> {
    let Ok(name) = key.cast::<pyo3::types::PyString>() else {
        return Err(type_error(format!(
            "dict keys must be str (tensor names), got {} ({})",
            key.get_type().name()?,
            key.repr()?
        )));
    };
    name.to_str().map(str::to_owned).map_err(|_| {
        type_error(format!(
            "tensor name {} cannot be UTF-8 (a lone surrogate?)",
            key.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    })
}

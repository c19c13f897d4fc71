//! numpy conversions (shared with the python backend, in
//! `neuropods_python::arrays`), with their failures as Python exceptions.

use neuropods_core::Tensor;
use neuropods_python::arrays::{self, ConvertError};
use pyo3::prelude::*;

pub use neuropods_python::arrays::{buffer_from_python, tensor_to_numpy, Access, TensorMemory};

use crate::errors::{raise, to_py};

/// `InputTypeError`: a value that is not what the API takes.
pub fn type_error(py: Python<'_>, message: String) -> PyErr {
    raise(py, "InputTypeError", message)
}

/// Converts one numpy array (see [`arrays::tensor_from_numpy`]).
pub fn tensor_from_numpy(py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<Tensor> {
    arrays::tensor_from_numpy(py, name, value).map_err(|e| match e {
        ConvertError::Type(message) => type_error(py, message),
        ConvertError::Core(e) => to_py(py, e),
        ConvertError::Py(e) => e,
    })
}

//! Core errors to Python exceptions. The classes live in
//! `neuropods_native/errors.py` (they need several bases, e.g. both
//! `NeuropodError` and `ValueError`); each core error kind has its own.

use std::panic::{catch_unwind, AssertUnwindSafe};

use neuropods_core::Error;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn errors_module(py: Python<'_>) -> PyResult<&Py<PyModule>> {
    MODULE.get_or_try_init(py, || {
        py.import("neuropods_native.errors").map(Bound::unbind)
    })
}

/// Looks the exception classes up once, while the extension is imported
/// (`neuropods_native/__init__.py` imports `errors` first), so that raising
/// never has to import: an import may detach from the interpreter, and a
/// raise can happen anywhere.
pub fn init(py: Python<'_>) -> PyResult<()> {
    errors_module(py).map(drop)
}

/// Raises `class_name` from `neuropods_native.errors` with `message`.
pub fn raise(py: Python<'_>, class_name: &str, message: String) -> PyErr {
    let module = errors_module(py);
    let class = module.and_then(|m| {
        m.bind(py)
            .getattr(class_name)
            .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from))
    });
    match class {
        Ok(class) => PyErr::from_type(class, message),
        Err(e) => e,
    }
}

/// The exception class for a core error.
fn class_of(err: &Error) -> &'static str {
    match err {
        Error::PackageNotFound { .. } => "PackageNotFoundError",
        Error::InvalidConfig { .. } => "ConfigError",
        Error::InvalidPackage { .. } => "PackageError",
        Error::Spec(spec) => match spec {
            neuropods_core::SpecError::UnknownTensor { .. } => "UnknownTensorError",
            neuropods_core::SpecError::DTypeMismatch { .. } => "DTypeError",
            _ => "ShapeError",
        },
        Error::InvalidInput(_) => "InvalidInputError",
        Error::InvalidOption(_) => "InvalidOptionError",
        Error::BackendNotFound { .. } => "BackendNotFoundError",
        Error::FrameworkNotFound { .. } => "FrameworkNotFoundError",
        Error::FrameworkVersion { .. } => "FrameworkVersionError",
        Error::RequirementsNotMet(_) => "RequirementsError",
        Error::Backend { .. } => "BackendError",
        Error::Serialization(_) => "SerializationError",
        Error::Io { .. } => "NeuropodIOError",
        Error::OutOfMemory(_) => "OutOfMemoryError",
        Error::UnsafeAfterFork { .. } => "UnsafeAfterForkError",
        Error::Worker { .. } => "WorkerError",
        _ => "InternalError",
    }
}

/// Converts a core error. Ctrl-C and `sys.exit` inside a python model come
/// back as themselves (`KeyboardInterrupt`, `SystemExit` with its code), so
/// that `except Exception` does not swallow them.
pub fn to_py(py: Python<'_>, err: Error) -> PyErr {
    match err {
        Error::Interrupted(message) => pyo3::exceptions::PyKeyboardInterrupt::new_err(message),
        Error::Exit(code) => match code.parse::<i64>() {
            Ok(n) => pyo3::exceptions::PySystemExit::new_err(n),
            Err(_) if code == "None" => pyo3::exceptions::PySystemExit::new_err(py.None()),
            Err(_) => pyo3::exceptions::PySystemExit::new_err(code),
        },
        err => raise(py, class_of(&err), err.to_string()),
    }
}

/// A Python exception raised while Neuropods handled the caller's values
/// (reading an array, a name): the caller's own `KeyboardInterrupt`,
/// `SystemExit` and `MemoryError` pass as they are; anything else becomes
/// `class_name` with the culprit named, so every error is a `NeuropodError`.
pub fn wrap_py(py: Python<'_>, err: PyErr, class_name: &str, culprit: &str) -> PyErr {
    if neuropods_python::arrays::is_control_flow(py, &err) {
        return err;
    }
    raise(py, class_name, format!("{culprit}: {err}"))
}

/// Runs `f`; a Rust panic becomes `InternalError` instead of unwinding
/// into Python (pyo3's own `PanicException` is not an `Exception`).
pub fn guard<T>(py: Python<'_>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|payload| Err(to_py(py, Error::from_panic(payload))))
}

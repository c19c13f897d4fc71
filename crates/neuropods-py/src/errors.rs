//! Core errors to Python exceptions. The classes live in
//! `neuropods_native/errors.py` (they need several bases, e.g. both
//! `NeuropodError` and `ValueError`); [`ErrorClass`] names each one Rust
//! raises, and [`CoreError`] converts a core error to its class with `?`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use neuropods_core::{Error, ErrorKind};
use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// An exception class of `neuropods_native.errors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    PackageNotFound,
    Config,
    Package,
    UnknownTensor,
    DType,
    Shape,
    InvalidInput,
    InputType,
    InvalidOption,
    Serialization,
    BackendNotFound,
    FrameworkNotFound,
    FrameworkVersion,
    Requirements,
    Backend,
    ModelClosed,
    UnsafeAfterFork,
    Worker,
    Io,
    OutOfMemory,
    Internal,
}

impl ErrorClass {
    /// Every class, in declaration order (`ALL[c as usize] == c`).
    const ALL: [ErrorClass; 21] = [
        Self::PackageNotFound,
        Self::Config,
        Self::Package,
        Self::UnknownTensor,
        Self::DType,
        Self::Shape,
        Self::InvalidInput,
        Self::InputType,
        Self::InvalidOption,
        Self::Serialization,
        Self::BackendNotFound,
        Self::FrameworkNotFound,
        Self::FrameworkVersion,
        Self::Requirements,
        Self::Backend,
        Self::ModelClosed,
        Self::UnsafeAfterFork,
        Self::Worker,
        Self::Io,
        Self::OutOfMemory,
        Self::Internal,
    ];

    /// The class's name in `neuropods_native.errors`: read once, when the
    /// extension is imported.
    const fn python_name(self) -> &'static str {
        match self {
            Self::PackageNotFound => "PackageNotFoundError",
            Self::Config => "ConfigError",
            Self::Package => "PackageError",
            Self::UnknownTensor => "UnknownTensorError",
            Self::DType => "DTypeError",
            Self::Shape => "ShapeError",
            Self::InvalidInput => "InvalidInputError",
            Self::InputType => "InputTypeError",
            Self::InvalidOption => "InvalidOptionError",
            Self::Serialization => "SerializationError",
            Self::BackendNotFound => "BackendNotFoundError",
            Self::FrameworkNotFound => "FrameworkNotFoundError",
            Self::FrameworkVersion => "FrameworkVersionError",
            Self::Requirements => "RequirementsError",
            Self::Backend => "BackendError",
            Self::ModelClosed => "ModelClosedError",
            Self::UnsafeAfterFork => "UnsafeAfterForkError",
            Self::Worker => "WorkerError",
            Self::Io => "NeuropodIOError",
            Self::OutOfMemory => "OutOfMemoryError",
            Self::Internal => "InternalError",
        }
    }

    /// An exception of this class with `message`, and the detail that
    /// only a log should show (a model's traceback), if any, as its
    /// `detail` attribute and a note (which Python prints below an
    /// uncaught exception, and `str()` leaves out).
    fn new_err_with_detail(self, message: String, detail: Option<&str>) -> PyErr {
        let err = self.new_err(message);
        if let Some(detail) = detail {
            Python::attach(|py| {
                let value = err.value(py);
                // Best effort: the exception is raised with its message
                // whatever happens to its decoration.
                let _ = value.setattr("detail", detail);
                if value.hasattr("add_note").unwrap_or(false) {
                    let _ = value.call_method1("add_note", (detail,));
                }
            });
        }
        err
    }

    /// An exception of this class with `message`.
    pub fn new_err(self, message: impl Into<String>) -> PyErr {
        let message = message.into();
        Python::attach(|py| match CLASSES.get(py) {
            Some(classes) => PyErr::from_type(classes[self as usize].bind(py).clone(), message),
            // Unreachable once the module is imported: `init` runs first.
            None => pyo3::exceptions::PyRuntimeError::new_err(message),
        })
    }
}

const _: () = {
    let mut i = 0;
    while i < ErrorClass::ALL.len() {
        assert!(ErrorClass::ALL[i] as usize == i);
        i += 1;
    }
};

/// How a core error reaches Python.
enum Raised {
    /// As an exception of `neuropods_native.errors`.
    Class(ErrorClass),
    /// As `KeyboardInterrupt` (Ctrl-C inside a python model).
    KeyboardInterrupt,
    /// As `SystemExit` (a python model called `sys.exit`).
    SystemExit,
}

impl Raised {
    /// The way each kind of the core's one table is raised.
    fn of(kind: ErrorKind) -> Raised {
        use ErrorClass as C;
        Raised::Class(match kind {
            ErrorKind::PackageNotFound => C::PackageNotFound,
            ErrorKind::InvalidConfig => C::Config,
            ErrorKind::InvalidPackage => C::Package,
            ErrorKind::UnknownTensor => C::UnknownTensor,
            ErrorKind::DTypeMismatch => C::DType,
            ErrorKind::ShapeMismatch => C::Shape,
            ErrorKind::InvalidInput => C::InvalidInput,
            ErrorKind::InvalidOption => C::InvalidOption,
            ErrorKind::BackendNotFound => C::BackendNotFound,
            ErrorKind::FrameworkNotFound => C::FrameworkNotFound,
            ErrorKind::FrameworkVersion => C::FrameworkVersion,
            ErrorKind::RequirementsNotMet => C::Requirements,
            ErrorKind::Backend => C::Backend,
            ErrorKind::UnsafeAfterFork => C::UnsafeAfterFork,
            ErrorKind::Serialization => C::Serialization,
            ErrorKind::Io => C::Io,
            ErrorKind::OutOfMemory => C::OutOfMemory,
            ErrorKind::Worker => C::Worker,
            ErrorKind::Internal => C::Internal,
            ErrorKind::Interrupted => return Raised::KeyboardInterrupt,
            ErrorKind::Exit => return Raised::SystemExit,
        })
    }
}

/// The classes, indexed by [`ErrorClass`].
static CLASSES: PyOnceLock<Vec<Py<PyType>>> = PyOnceLock::new();

/// Looks every class up once, while the extension is imported
/// (`neuropods_native/__init__.py` imports `errors` first), so that raising
/// never has to import (an import may detach from the interpreter, and a
/// raise can happen anywhere), and a class missing from `errors.py` fails
/// the import rather than a raise.
pub fn init(py: Python<'_>) -> PyResult<()> {
    CLASSES
        .get_or_try_init(py, || {
            let module = py.import("neuropods_native.errors")?;
            ErrorClass::ALL
                .iter()
                .map(|class| {
                    let found = module.getattr(class.python_name())?;
                    Ok(found.cast_into::<PyType>()?.unbind())
                })
                .collect::<PyResult<Vec<_>>>()
        })
        .map(drop)
}

/// A core error on its way to Python: `result.map_err(CoreError)?` raises
/// the exception of its [`ErrorClass`]. Ctrl-C and `sys.exit` inside a
/// python model come back as themselves (`KeyboardInterrupt`, `SystemExit`
/// with its code), so that `except Exception` does not swallow them.
pub struct CoreError(pub Error);

impl From<CoreError> for PyErr {
    fn from(CoreError(err): CoreError) -> PyErr {
        match (Raised::of(err.kind()), err) {
            (Raised::KeyboardInterrupt, Error::Interrupted(message)) => {
                PyKeyboardInterrupt::new_err(message)
            }
            (Raised::SystemExit, Error::Exit(code)) => match code.parse::<i64>() {
                Ok(n) => PySystemExit::new_err(n),
                Err(_) if code == "None" => PySystemExit::new_err(()),
                Err(_) => PySystemExit::new_err(code),
            },
            (Raised::Class(class), err) => class.new_err_with_detail(err.to_string(), err.detail()),
            // A kind is raised one way whatever its variant.
            (Raised::KeyboardInterrupt | Raised::SystemExit, err) => {
                ErrorClass::Internal.new_err(err.to_string())
            }
        }
    }
}

/// A Python exception raised while Neuropods handled the caller's values
/// (reading an array, a name): the caller's own `KeyboardInterrupt`,
/// `SystemExit` and `MemoryError` pass as they are; anything else becomes
/// `class` with the culprit named, so every error is a `NeuropodError`.
pub fn wrap_py(py: Python<'_>, err: PyErr, class: ErrorClass, culprit: &str) -> PyErr {
    if neuropods_python::arrays::is_control_flow(py, &err) {
        return err;
    }
    class.new_err(format!("{culprit}: {err}"))
}

/// Runs `f`; a Rust panic becomes `InternalError` instead of unwinding
/// into Python (pyo3's own `PanicException` is not an `Exception`).
pub fn guard<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|payload| Err(CoreError(Error::from_panic(payload)).into()))
}

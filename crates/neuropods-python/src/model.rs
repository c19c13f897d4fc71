//! Loading a python-platform package and calling its model.

use std::ffi::CString;
use std::mem::ManuallyDrop;

use neuropods_abi::plugin::{Backend, BackendModel, LoadContext};
use neuropods_abi::BACKEND_CONFIG_FILE;
use neuropods_abi::{Error, Release, Result, TensorMap};
use pyo3::exceptions::PyImportError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};
use serde::Deserialize;

use crate::arrays::{tensor_from_numpy, tensor_to_numpy, Access, ConvertError};
use crate::interpreter;

/// The python backend.
pub struct PythonBackend;

/// Code and data folders and the requirements file, relative to the package
/// root (the original Neuropod's layout).
pub const CODE_DIR: &str = "0/code";
pub const DATA_DIR: &str = "0/data";
pub const REQUIREMENTS_FILE: &str = "0/requirements.lock";

const HELPER_SOURCE: &str = include_str!("loader.py");

/// A Python exception as a core error: the model's failure as the
/// exception's own line, with the traceback of the package's code as the
/// detail (for logs, not clients); Ctrl-C, `sys.exit` and running out
/// of memory as their own kinds, so that they reach the caller as themselves
/// (an `except Exception` must not swallow a Ctrl-C).
fn python_error(py: Python<'_>, err: PyErr) -> Error {
    use pyo3::exceptions::{PyKeyboardInterrupt, PyMemoryError, PySystemExit};
    if err.is_instance_of::<PyKeyboardInterrupt>(py) {
        return Error::Interrupted(format!(
            "KeyboardInterrupt in the python model{}",
            suffix(py, &err)
        ));
    }
    if err.is_instance_of::<PySystemExit>(py) {
        // SystemExit's code: None (exit 0), an int, or any object (printed).
        let code = err
            .value(py)
            .getattr("code")
            .and_then(|c| c.str().map(|s| s.to_string()))
            .unwrap_or_else(|_| "None".into());
        return Error::Exit(code);
    }
    if err.is_instance_of::<PyMemoryError>(py) {
        return Error::OutOfMemory(format!(
            "MemoryError in the python model{}",
            suffix(py, &err)
        ));
    }
    // A client is told the exception's own line; the traceback (the
    // package's code, with the packager's paths) is the detail, for logs.
    let traceback = err
        .traceback(py)
        .and_then(|tb| tb.format().ok())
        .unwrap_or_default();
    Error::backend(&err, format!("{traceback}{err}"))
}

/// ": <message>" of an exception that has one.
fn suffix(py: Python<'_>, err: &PyErr) -> String {
    let text = err.value(py).to_string();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// The helper module (`loader.py`), made once per interpreter.
fn helper(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static HELPER: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    HELPER
        .get_or_try_init(py, || {
            let code = CString::new(HELPER_SOURCE).expect("loader.py has no NUL byte");
            PyModule::from_code(
                py,
                &code,
                c"neuropods_python_loader.py",
                c"_neuropods_python_loader",
            )
            .map(Bound::unbind)
        })
        .map(|m| m.bind(py))
}

/// A failure of the helper's requirement checks: a malformed line is a
/// config error naming it; a missing `packaging` (needed to check) is an
/// unmet requirement, named with what to install.
fn requirements_error(py: Python<'_>, err: PyErr) -> Error {
    if err.is_instance_of::<PyImportError>(py) {
        return Error::RequirementsNotMet(err.value(py).to_string());
    }
    let line_error = helper(py)
        .and_then(|h| h.getattr("RequirementLineError"))
        .is_ok_and(|class| err.matches(py, class).unwrap_or(false));
    match err.value(py).getattr("args").and_then(|a| a.extract()) {
        Ok((field, reason)) if line_error => Error::InvalidConfig {
            file: REQUIREMENTS_FILE.into(),
            field,
            reason,
        },
        _ => python_error(py, err),
    }
}

/// Checks requirements text (`0/requirements.lock`) as a load would: each
/// line must be a PEP 508 requirement. Lets a packager refuse what the
/// loader would.
pub fn check_requirements(py: Python<'_>, text: &str) -> Result<()> {
    helper(py)
        .and_then(|h| h.call_method1("parse_requirements", (text,)))
        .map(drop)
        .map_err(|e| requirements_error(py, e))
}

struct PythonModel {
    /// The private top-level module name the package's code lives under.
    prefix: String,
    /// What the entrypoint returned; released while attached (see Drop).
    model: ManuallyDrop<Py<PyAny>>,
    /// Its arguments without a default: an input left out is named before
    /// the call, as the caller's mistake.
    required: Vec<String>,
}

/// The backend's 0/config.json: the package's code is entered by calling
/// `entrypoint_package.entrypoint(data_root)`.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a JSON object with entrypoint_package and entrypoint"
)]
struct PythonBackendConfig {
    entrypoint_package: String,
    entrypoint: String,
}

impl Backend for PythonBackend {
    fn load(ctx: &LoadContext) -> Result<Box<dyn BackendModel>> {
        let root = &ctx.package_root;
        let PythonBackendConfig {
            entrypoint_package,
            entrypoint,
        } = ctx
            .parse_backend_config()?
            .ok_or_else(|| Error::InvalidPackage {
                path: root.clone(),
                reason: "a python package needs 0/config.json (entrypoint_package, entrypoint)"
                    .into(),
            })?;
        for (field, value) in [
            ("entrypoint_package", &entrypoint_package),
            ("entrypoint", &entrypoint),
        ] {
            if value.is_empty() {
                return Err(Error::InvalidConfig {
                    file: BACKEND_CONFIG_FILE.into(),
                    field: field.into(),
                    reason: "must not be empty".into(),
                });
            }
        }
        let requirements = match std::fs::read_to_string(root.join(REQUIREMENTS_FILE)) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(Error::Io {
                    path: root.join(REQUIREMENTS_FILE),
                    source: e,
                })
            }
        };
        if ctx.options.visible_gpu.is_some() {
            ctx.warn(
                "visible_gpu has no effect on python models: the package's code places its own tensors",
            );
        }
        interpreter::ensure_started().map_err(|detail| Error::FrameworkNotFound {
            platform: "python".into(),
            framework: format!("a Python {} interpreter", interpreter::BUILT_FOR),
            hint: "set NEUROPODS_PYTHON to its executable".into(),
            detail,
        })?;
        Python::attach(|py| {
            // As the original Neuropod's Python bridge: the range is of the
            // interpreter's version (for platform `pytorch` too).
            let running = py.version_info();
            let release = Release {
                major: running.major.into(),
                minor: running.minor.into(),
                patch: running.patch.into(),
            };
            ctx.config
                .platform_version_semver
                .check("python", "Python", release)?;
            let helper = helper(py).map_err(|e| python_error(py, e))?;
            if let Some(requirements) = requirements {
                let unmet: Vec<String> = helper
                    .call_method1("unmet_requirements", (requirements,))
                    .and_then(|v| v.extract())
                    .map_err(|e| requirements_error(py, e))?;
                if !unmet.is_empty() {
                    return Err(Error::RequirementsNotMet(unmet.join("; ")));
                }
            }
            let (prefix, model, required): (String, Py<PyAny>, Vec<String>) = helper
                .call_method1(
                    "load",
                    (
                        &ctx.config.name,
                        root.join(CODE_DIR).to_string_lossy(),
                        root.join(DATA_DIR).to_string_lossy(),
                        &entrypoint_package,
                        &entrypoint,
                    ),
                )
                .and_then(|v| v.extract())
                .map_err(|e| python_error(py, e))?;
            Ok(Box::new(PythonModel {
                prefix,
                model: ManuallyDrop::new(model),
                required,
            }) as Box<dyn BackendModel>)
        })
    }
}

fn convert_error(py: Python<'_>, err: ConvertError, invalid: fn(String) -> Error) -> Error {
    match err {
        ConvertError::Type(message) => invalid(message),
        ConvertError::Core(e) => e,
        ConvertError::Py(e) => python_error(py, e),
    }
}

impl BackendModel for PythonModel {
    fn infer(&self, inputs: &TensorMap) -> Result<TensorMap> {
        if let Some(missing) = self.required.iter().find(|n| !inputs.contains_key(*n)) {
            return Err(Error::InvalidInput(format!(
                "missing input '{missing}': the python model requires it"
            )));
        }
        Python::try_attach(|py| {
            let helper = helper(py).map_err(|e| python_error(py, e))?;
            let kwargs = PyDict::new(py);
            for (name, tensor) in inputs {
                // The model gets the inputs as it would if called directly:
                // writable views of the caller's memory (no copy; frozen
                // bytes are copied, see `Access::Writable`), which it may
                // keep (the view holds the memory alive).
                let array = tensor_to_numpy(py, name, tensor.clone(), Access::Writable)
                    .map_err(|e| convert_error(py, e, Error::InvalidInput))?;
                kwargs
                    .set_item(name, array)
                    .map_err(|e| python_error(py, e))?;
            }
            let outputs = helper
                .call_method1("call", (&*self.model, kwargs))
                .map_err(|e| python_error(py, e))?;
            let outputs = outputs
                .cast::<PyDict>()
                .map_err(|e| python_error(py, e.into()))?;
            let mut tensors = TensorMap::new();
            for (name, value) in outputs.iter() {
                let name: String = name.extract().map_err(|e| python_error(py, e))?;
                let tensor = tensor_from_numpy(py, &name, &value).map_err(|e| {
                    convert_error(py, e, |m| Error::framework(format!("output {m}")))
                })?;
                // The model may keep the array it returns and change it on
                // its next call (or return an input): the caller gets a
                // frozen copy, as it gets from every backend.
                tensors.insert(name, tensor.to_frozen());
            }
            Ok(tensors)
        })
        .unwrap_or_else(|| Err(Error::framework("the Python interpreter is shutting down")))
    }
}

impl Drop for PythonModel {
    fn drop(&mut self) {
        // Forget the package's modules so that they (and the model) can be
        // freed. Once the interpreter is gone there is nothing to free.
        Python::try_attach(|py| {
            if let Ok(helper) = helper(py) {
                let _ = helper.call_method1("unload", (&self.prefix,));
            }
            // SAFETY: dropped once, here.
            unsafe { ManuallyDrop::drop(&mut self.model) };
        });
    }
}

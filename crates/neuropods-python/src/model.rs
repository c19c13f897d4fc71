//! Loading a python-platform package and calling its model.

use std::ffi::CString;
use std::mem::ManuallyDrop;

use neuropods_core::backend::plugin::{Backend, BackendModel, LoadContext};
use neuropods_core::{Error, Release, Result, TensorMap};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};
use serde_json::Value;

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

fn backend_error(message: impl std::fmt::Display) -> Error {
    Error::Backend {
        platform: "python".into(),
        message: message.to_string(),
    }
}

/// A Python exception as text, with the traceback of the package's code.
fn python_error(py: Python<'_>, err: PyErr) -> Error {
    let traceback = err
        .traceback(py)
        .and_then(|tb| tb.format().ok())
        .unwrap_or_default();
    backend_error(format!("{traceback}{err}"))
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

struct PythonModel {
    /// The private top-level module name the package's code lives under.
    prefix: String,
    /// What the entrypoint returned; released while attached (see Drop).
    model: ManuallyDrop<Py<PyAny>>,
}

fn config_string(config: &Value, field: &str) -> Result<String> {
    config
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Error::InvalidConfig {
            file: "0/config.json".into(),
            field: field.into(),
            reason: "missing or not a non-empty string".into(),
        })
}

impl Backend for PythonBackend {
    fn load(ctx: &LoadContext) -> Result<Box<dyn BackendModel>> {
        let root = &ctx.package_root;
        let text = ctx
            .backend_config
            .as_deref()
            .ok_or_else(|| Error::InvalidPackage {
                path: root.clone(),
                reason: "a python package needs 0/config.json (entrypoint_package, entrypoint)"
                    .into(),
            })?;
        let config: Value = serde_json::from_str(text).map_err(|e| Error::InvalidConfig {
            file: "0/config.json".into(),
            field: "<document>".into(),
            reason: format!("not valid JSON: {e}"),
        })?;
        let entrypoint_package = config_string(&config, "entrypoint_package")?;
        let entrypoint = config_string(&config, "entrypoint")?;
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
            framework: "a Python 3.11 interpreter".into(),
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
                    .map_err(|e| Error::InvalidPackage {
                        path: root.clone(),
                        reason: format!("{REQUIREMENTS_FILE}: {}", e.value(py)),
                    })?;
                if !unmet.is_empty() {
                    return Err(Error::RequirementsNotMet(unmet.join("; ")));
                }
            }
            let (prefix, model): (String, Py<PyAny>) = helper
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
        Python::try_attach(|py| {
            let helper = helper(py).map_err(|e| python_error(py, e))?;
            let kwargs = PyDict::new(py);
            for (name, tensor) in inputs {
                // The model gets the inputs as it would if called directly:
                // writable views of the caller's memory (no copy), which it
                // may keep (the view holds the memory alive).
                let array = tensor_to_numpy(py, tensor.clone(), Access::Writable)
                    .map_err(|e| python_error(py, e))?;
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
                let tensor = tensor_from_numpy(py, &name, &value)
                    .map_err(|e| convert_error(py, e, |m| backend_error(format!("output {m}"))))?;
                tensors.insert(name, tensor);
            }
            Ok(tensors)
        })
        .unwrap_or_else(|| Err(backend_error("the Python interpreter is shutting down")))
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

//! `inspect(path)`: what a package is, read without loading its model (so
//! without its framework), for `neuropods inspect`.

use neuropods_core::package::Package;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::errors::{guard, CoreError};
use crate::model::spec_to_py;

/// A dict: name, platform, platform_version_semver, inputs, outputs,
/// input_tensor_device, custom_ops, files (path, size) and manifest
/// ({"status": "ok" | "absent" | "mismatch", "detail": str}).
#[pyfunction]
pub fn inspect<'py>(py: Python<'py>, path: std::path::PathBuf) -> PyResult<Bound<'py, PyDict>> {
    guard(|| {
        let package = py.detach(|| Package::open(&path)).map_err(CoreError)?;
        let config = package.config();
        let info = PyDict::new(py);
        info.set_item("name", &config.name)?;
        info.set_item("platform", config.platform.name())?;
        info.set_item(
            "platform_version_semver",
            config.platform_version_semver.as_str(),
        )?;
        info.set_item("inputs", spec_to_py(py, &config.input_spec)?)?;
        info.set_item("outputs", spec_to_py(py, &config.output_spec)?)?;
        let devices = PyDict::new(py);
        for (name, device) in &config.input_tensor_device {
            devices.set_item(name, format!("{device:?}").to_uppercase())?;
        }
        info.set_item("input_tensor_device", devices)?;
        info.set_item("custom_ops", &config.custom_ops)?;
        let files = PyList::empty(py);
        for (rel, size) in package.files().map_err(CoreError)? {
            let file = PyDict::new(py);
            file.set_item("path", rel)?;
            file.set_item("size", size)?;
            files.append(file)?;
        }
        info.set_item("files", files)?;
        let (status, detail) = if !package.has_manifest() {
            ("absent", String::new())
        } else {
            match py.detach(|| package.verify_manifest()) {
                Ok(()) => ("ok", String::new()),
                Err(e) => ("mismatch", e.to_string()),
            }
        };
        let manifest = PyDict::new(py);
        manifest.set_item("status", status)?;
        manifest.set_item("detail", detail)?;
        info.set_item("manifest", manifest)?;
        Ok(info)
    })
}

//! Python bindings of Neuropods (`neuropods_native._native`): the
//! `Neuropod` class and `serialize`/`deserialize`, with numpy zero-copy views
//! and the GIL released while models run.

mod convert;
mod errors;
mod inspect;
mod model;
mod serde;
mod serve;

use pyo3::prelude::*;

/// Panics on purpose, inside the same guard as every other entry point; lets
/// tests check that a Rust panic surfaces as `InternalError`.
#[pyfunction]
fn _panic_for_tests() -> PyResult<()> {
    errors::guard(|| panic!("deliberate panic for tests"))
}

/// Checks config.json text as the loader would; raises `ConfigError`.
#[pyfunction]
fn check_config(text: &str) -> PyResult<()> {
    errors::guard(|| {
        neuropods_core::ModelConfig::from_json(text).map_err(errors::CoreError)?;
        Ok(())
    })
}

/// Checks python-package requirements text as the loader would (PEP 508
/// lines); raises `ConfigError` naming the first malformed line.
#[pyfunction]
fn check_requirements(py: Python<'_>, text: &str) -> PyResult<()> {
    errors::guard(|| Ok(neuropods_python::check_requirements(py, text).map_err(errors::CoreError)?))
}

/// Writes `manifest.json` (sha256 of every file) into a package folder.
#[pyfunction]
fn write_manifest(package_dir: std::path::PathBuf) -> PyResult<()> {
    errors::guard(|| {
        let text =
            neuropods_core::package::build_manifest(&package_dir).map_err(errors::CoreError)?;
        let path = package_dir.join(neuropods_core::package::MANIFEST_FILE);
        std::fs::write(&path, text)
            .map_err(|source| errors::CoreError(neuropods_core::Error::Io { path, source }))?;
        Ok(())
    })
}

/// The python backend, linked in: python models run in this interpreter.
static PYTHON_BACKEND: neuropods_core::backend::abi::BackendVTable =
    neuropods_core::backend::plugin::vtable::<neuropods_python::PythonBackend>();

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::init(m.py())?;
    neuropods_core::backend::registry::register(neuropods_core::Platform::Python, &PYTHON_BACKEND);
    m.add_class::<model::Neuropod>()?;
    m.add_class::<convert::TensorMemory>()?;
    m.add_function(wrap_pyfunction!(serde::serialize, m)?)?;
    m.add_function(wrap_pyfunction!(serde::deserialize, m)?)?;
    m.add_function(wrap_pyfunction!(check_config, m)?)?;
    m.add_function(wrap_pyfunction!(check_requirements, m)?)?;
    m.add_function(wrap_pyfunction!(write_manifest, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::inspect, m)?)?;
    m.add_function(wrap_pyfunction!(serve::serve, m)?)?;
    m.add_function(wrap_pyfunction!(serve::serve_defaults, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

//! The Python backend (the `neuropods-python` crate) as the shared library
//! the core opens: its entry point, and nothing else.

neuropods_abi::export_backend!(backend::PythonBackend);

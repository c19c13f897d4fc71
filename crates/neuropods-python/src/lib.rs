//! The python backend of Neuropods: packages that carry Python code
//! (`0/code/`), data (`0/data/`) and optional pinned requirements
//! (`0/requirements.lock`), whose `entrypoint_package.entrypoint(data_root)`
//! returns the model callable.
//!
//! Inside Python the bindings link this crate and register the backend, so
//! models run in the calling interpreter. A Rust program opens the shared
//! library (`library/`: `libneuropods_python.so`, made from this crate) like
//! any backend, and the interpreter is started on first load (see
//! [`interpreter`]).
//!
//! [`arrays`] converts numpy arrays and core tensors both ways; the bindings
//! use it too.

pub mod arrays;
pub mod interpreter;
mod model;

pub use model::{check_requirements, PythonBackend, CODE_DIR, DATA_DIR, REQUIREMENTS_FILE};

//! What the Neuropods core and every backend library share: the C ABI
//! between them ([`abi`]), the tensor, error and config types that cross
//! it, and the glue a backend is built with ([`plugin`],
//! [`export_backend!`]).
//!
//! A backend depends on this crate, not on the core: it holds no package
//! reading, no backend registry and no worker process, and links no
//! framework. The core (`neuropods-core`) is the host side: it re-exports
//! these types, loads packages, opens backend libraries and runs workers.
#![deny(missing_docs)]
// The types here read untrusted data (config.json, callers' tensors, bytes
// from the ABI): no panicking access anywhere, outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod abi;
pub mod bytes;
pub mod config;
pub mod convert;
pub mod device;
pub mod dtype;
pub mod error;
pub mod json;
pub mod load_request;
mod options;
pub mod plugin;
pub mod spec;
pub mod tensor;
pub mod version;

pub use config::{ModelConfig, Platform, BACKEND_CONFIG_FILE};
pub use error::{shortened, Error, ErrorKind, Result, UnknownErrorKind};
pub use options::BackendOptions;
pub use spec::{Dim, SpecError, TensorSpec};
pub use tensor::{Buffer, DType, Element, ForeignBuffer, Tensor, TensorData, TensorMap};
pub use version::{Release, VersionRange};

//! Neuropods core: one uniform way to load a packaged deep-learning model and
//! run it, whatever framework made it.
//!
//! This crate links no framework. A [`Neuropod`] reads a package
//! ([`package`]), parses its [`config`], picks the backend for its platform
//! ([`backend`]), which is a shared library opened the first time a model of
//! that platform is loaded, and validates tensors against the [`spec`] on the
//! way in and on the way out.
//!
//! ```no_run
//! use neuropods_core::{LoadOptions, Neuropod, Tensor, TensorMap};
//!
//! let model = Neuropod::load("addition_model", &LoadOptions::default())?;
//! let mut inputs = TensorMap::new();
//! inputs.insert("x".into(), Tensor::from_vec(vec![2], vec![1.0f32, 2.0])?);
//! inputs.insert("y".into(), Tensor::from_vec(vec![2], vec![3.0f32, 4.0])?);
//! let outputs = model.infer(&inputs)?;
//! println!("{:?}", outputs["out"].as_slice::<f32>()?);
//! # Ok::<(), neuropods_core::Error>(())
//! ```
#![deny(missing_docs)]
// The core reads untrusted data (blobs, config.json, zip packages, callers'
// tensors): no panicking access anywhere in it, outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod backend;
mod extraction;
mod fork;
mod model;
pub mod package;
pub mod serialize;
pub mod worker;

// The types shared with backends live in `neuropods-abi`; they are the
// core's API too, at the same paths as before the split.
pub use neuropods_abi::{bytes, config, device, dtype, error, json, spec, tensor, version};

pub use config::{ModelConfig, Platform};
pub use error::{shortened, Error, ErrorKind, Result, UnknownErrorKind};
pub use model::{LoadOptions, Neuropod};
pub use neuropods_abi::export_backend;
pub use spec::{Dim, SpecError, TensorSpec};
pub use tensor::{Buffer, DType, Element, ForeignBuffer, Tensor, TensorData, TensorMap};
pub use version::{Release, VersionRange};
pub use worker::Allocation;

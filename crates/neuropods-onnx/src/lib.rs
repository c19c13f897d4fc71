//! The ONNX backend of Neuropods, on ONNX Runtime through the `ort` crate.
//!
//! Built as a shared library that the core opens the first time an onnx
//! model is loaded; it opens ONNX Runtime itself ([`runtime`]): the
//! `libonnxruntime.so` of the installed `onnxruntime` (or
//! `onnxruntime-gpu`) wheel, or one named by the environment. A package
//! holds `0/data/model.onnx`, with any external-data files beside it.
//!
//! Numeric inputs are handed to ONNX Runtime over the caller's memory, and
//! outputs are handed on without a copy, kept alive by their ONNX Runtime
//! value.

mod dtypes;
mod model;
mod run;
pub mod runtime;

pub use model::OnnxBackend;

neuropods_abi::export_backend!(OnnxBackend);

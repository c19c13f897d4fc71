//! The TensorFlow backend of Neuropods, on the TF C API (`tensorflow-sys`,
//! the binding under the `tensorflow` crate) from the `tensorflow-cpu`
//! wheel; see `scripts/lib/tf-pkgconfig.sh`.
//!
//! Built as a shared library that the core opens the first time a
//! tensorflow model is loaded. A package holds either a frozen GraphDef
//! (`0/data/model.pb`, with `node_name_mapping` and `init_op_names` in
//! `0/config.json`, as the original Neuropod wrote them) or a SavedModel
//! (`0/data/savedmodel/`, tag `serve`, signature `serving_default` unless
//! `0/config.json` names `signature_name`).
//!
//! Numeric inputs are handed to TF in place, and outputs are handed on
//! without a copy, kept alive by their TF tensor.

mod dtypes;
mod ffi;
mod model;
mod proto;
mod version;

pub use model::TensorFlowBackend;

neuropods_abi::export_backend!(TensorFlowBackend);

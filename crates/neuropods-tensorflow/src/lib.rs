//! The TensorFlow backend of Neuropods, on the `tensorflow` crate (the TF C
//! API from the `tensorflow-cpu` wheel; see `scripts/tf-pkgconfig.sh`).
//!
//! Built as a shared library that the core opens the first time a
//! tensorflow model is loaded. A package holds either a frozen GraphDef
//! (`0/data/model.pb`, with `node_name_mapping` and `init_op_names` in
//! `0/config.json`, as the original Neuropod wrote them) or a SavedModel
//! (`0/data/savedmodel/`, tag `serve`, signature `serving_default` unless
//! `0/config.json` names `signature_name`).
//!
//! Inputs are copied into TF-allocated tensors (the crate feeds only its own
//! tensors); outputs are handed on without a copy, kept alive by their TF
//! tensor.

mod model;

pub use model::TensorFlowBackend;

neuropods_core::export_backend!(TensorFlowBackend);

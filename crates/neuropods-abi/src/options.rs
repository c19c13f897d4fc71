//! The settings a backend loads a model with.

use crate::error::{Error, Result};

/// Device and thread settings passed to a backend when loading.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendOptions {
    /// GPU to run on; `None` for the CPU.
    pub visible_gpu: Option<u32>,
    /// Threads used inside one op (torch `set_num_threads`, TF intra-op);
    /// at least 1.
    pub intra_op_threads: Option<u32>,
    /// Threads running independent ops (torch interop, TF inter-op). 0: no
    /// inter-op pool, ops run on the calling thread (TF; torch runs ops on
    /// the calling thread anyway and keeps its pool for `fork`). That saves
    /// a thread hand-off per call, the main cost of a small TF graph.
    pub inter_op_threads: Option<u32>,
}

impl BackendOptions {
    /// Refuses values no framework accepts.
    pub fn validate(&self) -> Result<()> {
        if self.intra_op_threads == Some(0) {
            return Err(Error::InvalidOption(
                "intra_op_threads must be at least 1 (or None for the framework's default)".into(),
            ));
        }
        Ok(())
    }
}

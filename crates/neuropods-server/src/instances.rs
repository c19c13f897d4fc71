//! The copies of one served model, and which of them takes a call.

use std::sync::atomic::{AtomicUsize, Ordering};

use neuropods_core::{Neuropod, TensorMap};

/// A model's instances, each with a count of calls in flight.
pub(crate) struct Instances {
    models: Vec<(Neuropod, AtomicUsize)>,
}

impl Instances {
    /// Each model with its count of calls in flight.
    pub fn new(models: Vec<(Neuropod, AtomicUsize)>) -> Self {
        Instances { models }
    }

    /// Runs `inputs` on the least busy instance, on this thread.
    pub fn infer(&self, inputs: &TensorMap) -> neuropods_core::Result<TensorMap> {
        let least_busy = (0..self.models.len())
            .min_by_key(|&i| {
                self.models
                    .get(i)
                    .map_or(usize::MAX, |(_, busy)| busy.load(Ordering::Relaxed))
            })
            .unwrap_or(0);
        self.infer_on(least_busy, inputs)
    }

    /// Runs `inputs` on instance `index` (a batch runner's own).
    pub fn infer_on(&self, index: usize, inputs: &TensorMap) -> neuropods_core::Result<TensorMap> {
        let (model, busy) = self
            .models
            .get(index)
            .ok_or_else(|| neuropods_core::Error::Internal(format!("no instance {index}")))?;
        busy.fetch_add(1, Ordering::Relaxed);
        let result = model.infer(inputs);
        busy.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.models.len()
    }
}

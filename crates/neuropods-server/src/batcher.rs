//! Dynamic batching. Requests to a batchable model queue up; each instance
//! has a runner thread that, whenever its instance is free, takes the
//! request at the head of the queue, waits up to the queue delay for more
//! that can join it, stacks their inputs along the batch dim, runs the
//! model once and splits the outputs back to their callers.
//!
//! A batch is a run of consecutive requests of one signature (input names,
//! dtypes and shapes past the batch dim): a request that cannot join ends
//! the batch and heads the next one, so requests start in the order they
//! arrived and none from one connection overtakes another.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use neuropods_core::{DType, Dim, ModelConfig, Tensor, TensorMap};
use tokio::sync::oneshot;

use crate::error::RequestError;
use crate::metrics::Metrics;
use crate::repository::{BatchSettings, Instances};

/// The symbol that is the first dim of every input and output of `config`
/// and appears nowhere else, which makes the model batchable; otherwise
/// why not.
pub fn batch_symbol(config: &ModelConfig) -> Result<String, String> {
    let specs = config.input_spec.iter().chain(&config.output_spec);
    let mut symbol: Option<&str> = None;
    for spec in specs.clone() {
        match spec.shape.first() {
            Some(Dim::Symbol(s)) if symbol.is_none_or(|first| first == s) => symbol = Some(s),
            _ => {
                return Err(format!(
                    "'{}' does not have the batch symbol{} as its first dim",
                    spec.name,
                    symbol.map(|s| format!(" '{s}'")).unwrap_or_default()
                ))
            }
        }
    }
    let symbol = symbol.ok_or("it has no inputs")?;
    for spec in specs {
        if spec
            .shape
            .iter()
            .skip(1)
            .any(|d| matches!(d, Dim::Symbol(s) if s == symbol))
        {
            return Err(format!(
                "'{}' has the batch symbol '{symbol}' past its first dim",
                spec.name
            ));
        }
    }
    Ok(symbol.to_string())
}

/// What requests must share to run in one batch.
#[derive(PartialEq, Eq)]
struct Signature(Vec<(String, DType, Vec<usize>)>);

impl Signature {
    fn of(inputs: &TensorMap) -> Signature {
        Signature(
            inputs
                .iter()
                .map(|(name, t)| {
                    (
                        name.clone(),
                        t.dtype(),
                        t.shape().get(1..).unwrap_or_default().to_vec(),
                    )
                })
                .collect(),
        )
    }
}

/// A request waiting for its batch.
struct Pending {
    inputs: TensorMap,
    rows: usize,
    signature: Signature,
    queued: Instant,
    reply: oneshot::Sender<Result<TensorMap, RequestError>>,
}

/// The batching queue of one model.
pub struct Batcher {
    model: String,
    // Dropping it stops the runners once the queue is empty.
    queue: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts one runner thread per instance.
    pub fn start(
        model: String,
        instances: Arc<Instances>,
        settings: BatchSettings,
        metrics: Arc<Metrics>,
    ) -> Batcher {
        let (queue, receiver) = mpsc::channel::<Pending>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..instances.len() {
            let runner = Runner {
                model: model.clone(),
                instances: instances.clone(),
                index,
                settings,
                metrics: metrics.clone(),
                queue: receiver.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("batch-{model}-{index}"))
                .spawn(move || runner.run());
            if let Err(e) = spawned {
                tracing::error!("model '{model}': cannot start batch runner {index}: {e}");
            }
        }
        Batcher { model, queue }
    }

    /// Queues validated inputs and waits for their share of a batch's
    /// outputs.
    pub async fn infer(&self, inputs: TensorMap) -> Result<TensorMap, RequestError> {
        let rows = inputs
            .values()
            .next()
            .and_then(|t| t.shape().first().copied())
            .ok_or_else(|| {
                RequestError::bad_request(format!("model '{}': no inputs given", self.model))
            })?;
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            signature: Signature::of(&inputs),
            inputs,
            rows,
            queued: Instant::now(),
            reply,
        };
        self.queue.send(pending).map_err(|_| {
            RequestError::internal(format!("model '{}' is not running", self.model))
        })?;
        answer.await.map_err(|_| {
            RequestError::internal(format!("model '{}': its batch runner stopped", self.model))
        })?
    }
}

/// One instance's runner.
struct Runner {
    model: String,
    instances: Arc<Instances>,
    index: usize,
    settings: BatchSettings,
    metrics: Arc<Metrics>,
    queue: Arc<Mutex<mpsc::Receiver<Pending>>>,
}

impl Runner {
    fn run(self) {
        // A request that could not join the last batch heads the next.
        let mut carried: Option<Pending> = None;
        loop {
            let (batch, next) = match self.collect(carried.take()) {
                Some(collected) => collected,
                None => return,
            };
            carried = next;
            self.run_batch(batch);
        }
    }

    /// The next batch, and the request that ended it by not fitting; None
    /// once the queue is closed and empty.
    fn collect(&self, carried: Option<Pending>) -> Option<(Vec<Pending>, Option<Pending>)> {
        // Holding the lock while collecting: one free runner gathers at a
        // time, the others are running their batches.
        let queue = self
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let first = match carried {
            Some(first) => first,
            None => queue.recv().ok()?,
        };
        let deadline = first.queued + self.settings.max_queue_delay;
        let mut rows = first.rows;
        let mut batch = vec![first];
        while rows < self.settings.max_batch_size {
            let wait = deadline.saturating_duration_since(Instant::now());
            let next = match queue.recv_timeout(wait) {
                Ok(next) => next,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            };
            if next.signature != batch[0].signature
                || rows + next.rows > self.settings.max_batch_size
            {
                return Some((batch, Some(next)));
            }
            rows += next.rows;
            batch.push(next);
        }
        Some((batch, None))
    }

    fn run_batch(&self, mut batch: Vec<Pending>) {
        let started = Instant::now();
        let waits: Vec<Duration> = batch.iter().map(|p| started - p.queued).collect();
        // Callers that went away (client disconnected) need no run.
        batch.retain(|p| !p.reply.is_closed());
        if batch.is_empty() {
            return;
        }
        let rows: usize = batch.iter().map(|p| p.rows).sum();
        let result = if let [single] = batch.as_slice() {
            self.instances.infer_on(self.index, &single.inputs)
        } else {
            stack(&batch).and_then(|inputs| self.instances.infer_on(self.index, &inputs))
        };
        self.metrics
            .run(&self.model, rows, &waits, started.elapsed());
        match result {
            Ok(outputs) if batch.len() == 1 => {
                if let Some(pending) = batch.pop() {
                    let _ = pending.reply.send(Ok(outputs));
                }
            }
            Ok(outputs) => {
                let mut start = 0;
                for pending in batch {
                    let end = start + pending.rows;
                    let share = unstack(&outputs, start..end, rows)
                        .map_err(|e| RequestError::from_core(&self.model, e));
                    let _ = pending.reply.send(share);
                    start = end;
                }
            }
            Err(error) => {
                let error = RequestError::from_core(&self.model, error);
                for pending in batch {
                    let _ = pending.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// The batch's inputs stacked along the first dim.
fn stack(batch: &[Pending]) -> neuropods_core::Result<TensorMap> {
    let Some(first) = batch.first() else {
        return Ok(TensorMap::new());
    };
    first
        .inputs
        .keys()
        .map(|name| {
            let parts: Vec<&Tensor> = batch.iter().filter_map(|p| p.inputs.get(name)).collect();
            Ok((name.clone(), Tensor::concat_rows(&parts)?))
        })
        .collect()
}

/// One request's rows of every output (views of the batch's outputs).
fn unstack(
    outputs: &TensorMap,
    rows: std::ops::Range<usize>,
    total: usize,
) -> neuropods_core::Result<TensorMap> {
    outputs
        .iter()
        .map(|(name, tensor)| {
            if tensor.shape().first() != Some(&total) {
                return Err(neuropods_core::Error::Internal(format!(
                    "output '{name}' has shape {:?} for a batch of {total} rows",
                    tensor.shape()
                )));
            }
            Ok((name.clone(), tensor.rows(rows.clone())?))
        })
        .collect()
}

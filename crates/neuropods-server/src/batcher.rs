//! Dynamic batching. Requests to a batchable model queue up; each instance
//! has a runner thread that, whenever its instance is free, takes the
//! request at the head of the queue, waits up to the queue delay for more
//! that can join it, stacks their inputs along the batch dim, runs the
//! model once and splits the outputs back to their callers.
//!
//! A batch is a run of consecutive requests of one signature (input names,
//! dtypes and shapes past the batch dim): a request that cannot join ends
//! the batch and heads the next one (for whichever runner is free next), so
//! requests start in the order they arrived and none from one connection
//! overtakes another. A request of more rows than the batch size limit is
//! refused, as Triton does. A failed batch is run again in halves until
//! the requests the model refuses are alone: one bad request fails only
//! its own caller.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use neuropods_core::{DType, Dim, ModelConfig, Tensor, TensorMap};
use tokio::sync::oneshot;

use crate::error::RequestError;
use crate::instances::Instances;
use crate::metrics::Metrics;

/// Dynamic batching: concurrent requests to one model run as one call.
#[derive(Clone, Copy, Debug)]
pub struct BatchSettings {
    /// Most rows (entries of the batch dim) one run takes.
    pub max_batch_size: usize,
    /// Longest a request waits for others to join its batch.
    pub max_queue_delay: Duration,
}

impl BatchSettings {
    /// The queue delay when none is given.
    pub const DEFAULT_MAX_QUEUE_DELAY: Duration = Duration::from_micros(500);
}

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

/// The queue runners take batches from: the channel requests arrive on,
/// and the request that ended the last batch by not fitting in it, which
/// heads the next one (whichever runner takes it).
struct Queue {
    head: Option<Pending>,
    arrivals: mpsc::Receiver<Pending>,
}

/// The batching queue of one model.
pub struct Batcher {
    model: String,
    max_batch_size: usize,
    // Dropping it stops the runners once the queue is empty.
    queue: Option<mpsc::Sender<Pending>>,
    runners: Vec<std::thread::JoinHandle<()>>,
}

impl Batcher {
    /// Starts one runner thread per instance.
    pub fn start(
        model: String,
        instances: Arc<Instances>,
        settings: BatchSettings,
        metrics: Arc<Metrics>,
    ) -> Batcher {
        let (queue, arrivals) = mpsc::channel::<Pending>();
        let shared = Arc::new(Mutex::new(Queue {
            head: None,
            arrivals,
        }));
        let mut runners = Vec::new();
        for index in 0..instances.len() {
            let runner = Runner {
                model: model.clone(),
                instances: instances.clone(),
                index,
                settings,
                metrics: metrics.clone(),
                queue: shared.clone(),
            };
            match std::thread::Builder::new()
                .name(format!("batch-{model}-{index}"))
                .spawn(move || runner.run())
            {
                Ok(handle) => runners.push(handle),
                Err(e) => {
                    tracing::error!("model '{model}': cannot start batch runner {index}: {e}")
                }
            }
        }
        Batcher {
            model,
            max_batch_size: settings.max_batch_size,
            queue: Some(queue),
            runners,
        }
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
        if rows > self.max_batch_size {
            return Err(RequestError::bad_request(format!(
                "model '{}': a request of {rows} rows is over the batch size limit of {} \
                 (--max-batch-size)",
                self.model, self.max_batch_size
            )));
        }
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            signature: Signature::of(&inputs),
            inputs,
            rows,
            queued: Instant::now(),
            reply,
        };
        let sent = self.queue.as_ref().map(|queue| queue.send(pending));
        if !matches!(sent, Some(Ok(()))) {
            return Err(RequestError::internal(format!(
                "model '{}' is not running",
                self.model
            )));
        }
        answer.await.map_err(|_| {
            RequestError::internal(format!("model '{}': its batch runner stopped", self.model))
        })?
    }
}

impl Drop for Batcher {
    /// Closes the queue and waits for the runners to finish what is queued,
    /// so that the model's instances are dropped before the server returns.
    fn drop(&mut self) {
        self.queue = None;
        for runner in self.runners.drain(..) {
            let _ = runner.join();
        }
    }
}

/// One instance's runner.
struct Runner {
    model: String,
    instances: Arc<Instances>,
    index: usize,
    settings: BatchSettings,
    metrics: Arc<Metrics>,
    queue: Arc<Mutex<Queue>>,
}

impl Runner {
    fn run(self) {
        while let Some(batch) = self.collect() {
            // A panic here would lose this instance for good (and leave the
            // batch's callers waiting); it fails the batch instead.
            let callers =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_batch(batch)));
            if let Err(payload) = callers {
                let error = neuropods_core::Error::from_panic(payload);
                tracing::error!("model '{}': batch runner: {error}", self.model);
            }
        }
    }

    /// The next batch; None once the queue is closed and empty.
    fn collect(&self) -> Option<Vec<Pending>> {
        // Holding the lock while collecting: one free runner gathers at a
        // time, the others are running their batches.
        let mut queue = self
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let first = match queue.head.take() {
            Some(first) => first,
            None => queue.arrivals.recv().ok()?,
        };
        let deadline = first.queued + self.settings.max_queue_delay;
        let mut rows = first.rows;
        let mut batch = vec![first];
        while rows < self.settings.max_batch_size {
            let wait = deadline.saturating_duration_since(Instant::now());
            let next = match queue.arrivals.recv_timeout(wait) {
                Ok(next) => next,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            };
            if next.signature != batch[0].signature
                || rows + next.rows > self.settings.max_batch_size
            {
                queue.head = Some(next);
                break;
            }
            rows += next.rows;
            batch.push(next);
        }
        Some(batch)
    }

    fn run_batch(&self, mut batch: Vec<Pending>) {
        // Callers that went away (client disconnected) need no run.
        batch.retain(|p| !p.reply.is_closed());
        if !batch.is_empty() {
            self.run_group(batch);
        }
    }

    /// Runs requests as one batch and answers each with its rows. When the
    /// run fails, one request's rows may be what the model refused: the
    /// group is split in halves, each run again, down to single requests,
    /// so that only the culprits' callers get the error (a batch of n with
    /// one bad request costs about 2 log2(n) more runs).
    fn run_group(&self, mut group: Vec<Pending>) {
        let started = Instant::now();
        let waits: Vec<Duration> = group
            .iter()
            .map(|p| started.saturating_duration_since(p.queued))
            .collect();
        let rows: usize = group.iter().map(|p| p.rows).sum();
        let result = if let [single] = group.as_slice() {
            self.instances.infer_on(self.index, &single.inputs)
        } else {
            stack(&group).and_then(|inputs| self.instances.infer_on(self.index, &inputs))
        };
        self.metrics
            .run(&self.model, Some((rows, &waits)), started.elapsed());
        match result {
            Ok(outputs) if group.len() == 1 => {
                if let Some(pending) = group.pop() {
                    let _ = pending.reply.send(Ok(outputs));
                }
            }
            Ok(outputs) => {
                let mut start = 0;
                for pending in group {
                    let end = start + pending.rows;
                    let share = unstack(&outputs, start..end, rows)
                        .map_err(|e| RequestError::from_core(&self.model, e));
                    let _ = pending.reply.send(share);
                    start = end;
                }
            }
            Err(error) if group.len() == 1 => {
                if let Some(pending) = group.pop() {
                    let _ = pending
                        .reply
                        .send(Err(RequestError::from_core(&self.model, error)));
                }
            }
            Err(_) => {
                let second = group.split_off(group.len() / 2);
                for half in [group, second] {
                    self.run_batch(half);
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

//! The models a server serves: each package loaded once per instance, its
//! metadata, and the one path every protocol's inference request takes to
//! it (straight to the least busy instance, or through its batcher).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use neuropods_core::spec::{validate, Direction, SymbolBindings};
use neuropods_core::{Error, LoadOptions, ModelConfig, Neuropod, Tensor, TensorMap};

use crate::batcher::{batch_symbol, BatchSettings, Batcher};
use crate::error::{FailureKind, RequestError};
use crate::instances::Instances;
use crate::metrics::{Metrics, Protocol};

/// The only version of each model: a package is one version.
pub const MODEL_VERSION: &str = "1";

/// How each model is served.
#[derive(Clone, Debug)]
pub struct ModelSettings {
    /// Copies of each model (in-process sessions, or worker processes with
    /// `use_ope`); requests go to the least busy.
    pub instances: usize,
    /// Dynamic batching, for the models that can take it.
    pub batching: Option<BatchSettings>,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            instances: 1,
            batching: None,
        }
    }
}

/// One inference request, decoded from whichever protocol.
pub struct InferCall {
    /// Inputs by name.
    pub inputs: TensorMap,
    /// The outputs asked for, in order; `None` for all.
    pub outputs: Option<Vec<String>>,
}

/// Unbatched calls of an in-process model whose recent calls took less
/// than this, with inputs of at most [`RUN_INLINE_MAX_BYTES`], run on the
/// async thread that decoded the request instead of tokio's blocking pool:
/// that saves two hand-offs between threads (measured: 100 -> 43 us of
/// server time per 4-element add at one client), and a worker thread held
/// this long delays other requests little. Slower models, large inputs,
/// models in worker processes (whose call may wait for a busy or hung
/// worker), and every model until its first call has been timed, use the
/// blocking pool.
const RUN_INLINE_BELOW: Duration = Duration::from_micros(100);
const RUN_INLINE_MAX_BYTES: usize = 64 << 10;

/// Unbatched calls of one model in flight at once, per instance and core.
const CALLS_PER_INSTANCE_AND_CORE: usize = 4;

fn input_bytes(inputs: &TensorMap) -> usize {
    inputs
        .values()
        .map(|t| match t.numeric_bytes() {
            Some((_, len)) => len,
            None => t
                .strings()
                .unwrap_or_default()
                .iter()
                .map(|s| s.len() + 16)
                .sum(),
        })
        .sum()
}

/// A running mean of a model's recent run times (about the last 8).
struct RecentRunTime(AtomicU64);

impl RecentRunTime {
    const NONE: u64 = u64::MAX;

    fn record(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX - 1);
        let old = self.0.load(Ordering::Relaxed);
        let mean = if old == Self::NONE {
            nanos
        } else {
            old - old / 8 + nanos / 8
        };
        // Racing updates may lose a sample; it is a hint.
        self.0.store(mean, Ordering::Relaxed);
    }

    fn is_below(&self, limit: Duration) -> bool {
        u128::from(self.0.load(Ordering::Relaxed)) < limit.as_nanos()
    }
}

/// A model being served.
pub struct ServedModel {
    config: ModelConfig,
    recent_run_nanos: Arc<RecentRunTime>,
    out_of_process: bool,
    calls: tokio::sync::Semaphore,
    instances: Arc<Instances>,
    batcher: Option<Batcher>,
    metrics: Arc<Metrics>,
    logged_details: LoggedDetails,
}

/// The details (tracebacks) already written to the log for one model: a
/// model that refuses many requests the same way logs its traceback once,
/// then only each request's message.
#[derive(Default)]
struct LoggedDetails(std::sync::Mutex<std::collections::HashSet<u64>>);

impl LoggedDetails {
    /// Most details remembered; past it, every detail is logged again.
    const MAX: usize = 1024;

    /// Whether `detail` is new here (and is now remembered).
    fn first_time(&self, detail: &str) -> bool {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        detail.hash(&mut hasher);
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= Self::MAX {
            seen.clear();
        }
        seen.insert(hasher.finish())
    }
}

impl ServedModel {
    /// Its name, from its config.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Its parsed config (specs, platform).
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// How many instances serve it.
    pub fn instances(&self) -> usize {
        self.instances.len()
    }

    /// Whether requests to it are batched.
    pub fn is_batched(&self) -> bool {
        self.batcher.is_some()
    }

    /// Counts a finished inference request in the metrics and logs its
    /// failure: a warning for the server's fault, debug for the caller's;
    /// a detail (traceback) the first time it is seen for this model.
    pub fn record<T>(
        &self,
        protocol: Protocol,
        started: Instant,
        result: &Result<T, RequestError>,
    ) {
        let failure = result.as_ref().err();
        self.metrics.request(
            self.name(),
            protocol,
            started.elapsed(),
            failure.map(RequestError::metric_label),
        );
        let Some(error) = failure else { return };
        let text = match error.detail.as_deref() {
            Some(detail) if self.logged_details.first_time(detail) => error.for_log(),
            Some(_) => format!("{} (its traceback is logged above)", error.message),
            None => error.message.clone(),
        };
        if error.kind == FailureKind::Internal {
            tracing::warn!("{text}");
        } else {
            tracing::debug!("{text}");
        }
    }

    /// Runs one request and returns the outputs asked for, in the order
    /// asked (all outputs, in spec order, if none were named).
    pub async fn infer(&self, call: InferCall) -> Result<Vec<(String, Tensor)>, RequestError> {
        let name = self.name();
        let wanted = self.wanted_outputs(call.outputs)?;
        let mut outputs = match &self.batcher {
            Some(batcher) => {
                // Checked before queueing, so that a bad request fails alone
                // instead of failing the batch it would have joined.
                let mut bindings = SymbolBindings::new();
                validate(
                    &self.config.input_spec,
                    &call.inputs,
                    Direction::Input,
                    &mut bindings,
                )
                .map_err(|e| RequestError::from_core(name, e.into()))?;
                batcher.infer(call.inputs).await?
            }
            None => {
                // Blocking-pool threads stay bounded however many requests
                // come: the rest wait here, costing no thread.
                let _permit = self.calls.acquire().await.map_err(|_| {
                    RequestError::internal(format!("model '{name}' is shutting down"))
                })?;
                let inline = !self.out_of_process
                    && self.recent_run_nanos.is_below(RUN_INLINE_BELOW)
                    && input_bytes(&call.inputs) <= RUN_INLINE_MAX_BYTES;
                let instances = self.instances.clone();
                let metrics = self.metrics.clone();
                let recent = self.recent_run_nanos.clone();
                let model = name.to_string();
                let run = move || {
                    let start = Instant::now();
                    let result = instances.infer(&call.inputs);
                    let took = start.elapsed();
                    metrics.run(&model, None, took);
                    recent.record(took);
                    result
                };
                let result = if inline {
                    run()
                } else {
                    tokio::task::spawn_blocking(run)
                        .await
                        .map_err(|e| RequestError::internal(format!("model '{name}': {e}")))?
                };
                result.map_err(|e| RequestError::from_core(name, e))?
            }
        };
        wanted
            .into_iter()
            .map(|output| match outputs.remove(&output) {
                Some(tensor) => Ok((output, tensor)),
                None => Err(RequestError::internal(format!(
                    "model '{name}' did not return output '{output}'"
                ))),
            })
            .collect()
    }

    /// The outputs a request names, checked against the spec.
    fn wanted_outputs(&self, asked: Option<Vec<String>>) -> Result<Vec<String>, RequestError> {
        let spec = &self.config.output_spec;
        let Some(asked) = asked else {
            return Ok(spec.iter().map(|s| s.name.clone()).collect());
        };
        for (i, name) in asked.iter().enumerate() {
            if !spec.iter().any(|s| &s.name == name) {
                let known: Vec<&str> = spec.iter().map(|s| s.name.as_str()).collect();
                return Err(RequestError::bad_request(format!(
                    "model '{}' has no output '{name}' (outputs: {})",
                    self.name(),
                    known.join(", ")
                )));
            }
            if asked[..i].contains(name) {
                return Err(RequestError::bad_request(format!(
                    "output '{name}' is asked for twice"
                )));
            }
        }
        Ok(asked)
    }
}

/// Every served model, by name.
pub struct Repository {
    models: BTreeMap<String, Arc<ServedModel>>,
    metrics: Arc<Metrics>,
}

impl Repository {
    /// Loads each package `settings.instances` times. Fails on the first
    /// package that does not load, and on two packages of one name.
    ///
    /// Batching applies to the models that can take it (see
    /// [`batch_symbol`]); the others are served unbatched, with a warning
    /// logged.
    pub fn load(
        packages: &[PathBuf],
        options: &LoadOptions,
        settings: &ModelSettings,
    ) -> neuropods_core::Result<Repository> {
        let metrics = Arc::new(Metrics::default());
        let mut models = BTreeMap::new();
        let mut sources: BTreeMap<String, &PathBuf> = BTreeMap::new();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for path in packages {
            let mut loaded = Vec::new();
            for _ in 0..settings.instances.max(1) {
                let model = Neuropod::load(path, options).inspect_err(|e| {
                    tracing::error!("cannot load {}: {e}", path.display());
                })?;
                loaded.push((model, AtomicUsize::new(0)));
            }
            let config = loaded
                .first()
                .map(|(m, _)| m.config().clone())
                .ok_or_else(|| Error::Internal("no instance to serve".into()))?;
            if let Some(other) = sources.insert(config.name.clone(), path) {
                return Err(Error::InvalidOption(format!(
                    "two packages are named '{}' ({} and {}): model names must be unique",
                    config.name,
                    other.display(),
                    path.display()
                )));
            }
            let instances = Arc::new(Instances::new(loaded));
            let batcher = match settings.batching {
                Some(batching) => match batch_symbol(&config) {
                    Ok(_) => Some(Batcher::start(
                        config.name.clone(),
                        instances.clone(),
                        batching,
                        metrics.clone(),
                    )),
                    Err(why) => {
                        tracing::warn!("model '{}' is served without batching: {why}", config.name);
                        None
                    }
                },
                None => None,
            };
            let name = config.name.clone();
            models.insert(
                name,
                Arc::new(ServedModel {
                    config,
                    recent_run_nanos: Arc::new(RecentRunTime(AtomicU64::new(RecentRunTime::NONE))),
                    out_of_process: options.use_ope,
                    calls: tokio::sync::Semaphore::new(
                        instances.len() * cores * CALLS_PER_INSTANCE_AND_CORE,
                    ),
                    instances,
                    batcher,
                    metrics: metrics.clone(),
                    logged_details: LoggedDetails::default(),
                }),
            );
        }
        Ok(Repository { models, metrics })
    }

    /// A model by name and, optionally, version.
    pub fn get(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<&Arc<ServedModel>, RequestError> {
        let model = self.models.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.models.keys().map(String::as_str).collect();
            RequestError::not_found(format!(
                "no model named '{}' (serving: {})",
                crate::encoding::shorten(name),
                known.join(", ")
            ))
        })?;
        match version {
            None | Some("") | Some(MODEL_VERSION) => Ok(model),
            Some(other) => Err(RequestError::not_found(format!(
                "model '{name}' has no version '{}' (versions: {MODEL_VERSION})",
                crate::encoding::shorten(other)
            ))),
        }
    }

    /// Every model, by name.
    pub fn models(&self) -> impl Iterator<Item = &Arc<ServedModel>> {
        self.models.values()
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The server's metrics, for what outlives a borrow (the accept loops).
    pub(crate) fn metrics_handle(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }
}

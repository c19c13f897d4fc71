//! `serve(...)`: the Open Inference Protocol server
//! (`neuropods_server`), run in this process with the GIL released, for
//! `neuropods serve`. Python runs on the request path only inside
//! python-platform models.

use std::path::PathBuf;
use std::time::Duration;

use neuropods_server::{BatchSettings, ConnectionLimits, ModelSettings, Repository, ServerConfig};
use pyo3::prelude::*;

use crate::errors::{guard, CoreError, ErrorClass};
use crate::model::{use_ope_flag, verify_manifest_flag, LoadArgs};

/// Loads `packages` and serves them until SIGINT or SIGTERM, then drains
/// the requests in flight and returns. Prints `neuropods serve: HTTP on
/// ADDR` (and gRPC) to stdout once ready. `max_batch_size` > 0 turns on
/// dynamic batching for the models that can take it. Once it has run,
/// SIGTERM no longer ends this process by default (tokio's handler stays):
/// meant for a process that serves until it exits, as `neuropods serve`.
#[pyfunction]
#[pyo3(
    text_signature = "(packages, *, host='127.0.0.1', http_port=8000, grpc_port=8001, \
    instances=1, max_batch_size=0, max_queue_delay_us=500, max_body_bytes=67108864, \
    drain_timeout_s=30.0, header_timeout_s=30.0, idle_timeout_s=60.0, body_timeout_s=10.0, \
    max_idle_connections=None, visible_gpu=None, intra_op_threads=None, inter_op_threads=None, \
    verify_manifest=False, use_ope=False, ope_python=None)"
)]
#[pyo3(signature = (
    packages, *, host = "127.0.0.1".to_string(), http_port = Some(8000), grpc_port = Some(8001),
    instances = 1, max_batch_size = 0, max_queue_delay_us = 500, max_body_bytes = 64 << 20,
    drain_timeout_s = 30.0, header_timeout_s = 30.0, idle_timeout_s = 60.0, body_timeout_s = 10.0,
    max_idle_connections = None, visible_gpu = None, intra_op_threads = None,
    inter_op_threads = None, verify_manifest = false, use_ope = false, ope_python = None
))]
#[allow(clippy::too_many_arguments)]
pub fn serve(
    py: Python<'_>,
    packages: Vec<PathBuf>,
    host: String,
    http_port: Option<u16>,
    grpc_port: Option<u16>,
    instances: usize,
    max_batch_size: usize,
    max_queue_delay_us: u64,
    max_body_bytes: usize,
    drain_timeout_s: f64,
    header_timeout_s: f64,
    idle_timeout_s: f64,
    body_timeout_s: f64,
    max_idle_connections: Option<usize>,
    visible_gpu: Option<&Bound<'_, PyAny>>,
    intra_op_threads: Option<&Bound<'_, PyAny>>,
    inter_op_threads: Option<&Bound<'_, PyAny>>,
    #[pyo3(from_py_with = verify_manifest_flag)] verify_manifest: bool,
    #[pyo3(from_py_with = use_ope_flag)] use_ope: bool,
    ope_python: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    guard(|| {
        let load = LoadArgs {
            visible_gpu,
            intra_op_threads,
            inter_op_threads,
            verify_manifest,
            use_ope,
            ope_python,
        }
        .into_options(py)?;
        let invalid = |message: String| ErrorClass::InvalidOption.new_err(message);
        if packages.is_empty() {
            return Err(invalid("serve needs at least one package".into()));
        }
        if instances == 0 {
            return Err(invalid("instances must be at least 1".into()));
        }
        if http_port.is_none() && grpc_port.is_none() {
            return Err(invalid("give an HTTP port, a gRPC port or both".into()));
        }
        let seconds = |name: &str, value: f64| {
            Duration::try_from_secs_f64(value)
                .map_err(|_| invalid(format!("{name} must be >= 0, got {value}")))
        };
        let drain_timeout = seconds("drain_timeout_s", drain_timeout_s)?;
        let defaults = ConnectionLimits::default();
        let connections = ConnectionLimits {
            header_timeout: seconds("header_timeout_s", header_timeout_s)?,
            idle_timeout: seconds("idle_timeout_s", idle_timeout_s)?,
            body_grace: seconds("body_timeout_s", body_timeout_s)?,
            max_idle: max_idle_connections.unwrap_or(defaults.max_idle),
            ..defaults
        };
        let settings = ModelSettings {
            instances,
            batching: (max_batch_size > 0).then_some(BatchSettings {
                max_batch_size,
                max_queue_delay: Duration::from_micros(max_queue_delay_us),
            }),
        };
        let config = ServerConfig {
            host,
            http_port,
            grpc_port,
            max_body_bytes,
            drain_timeout,
            connections,
        };
        neuropods_server::init_logging();
        let repository = py
            .detach(|| Repository::load(&packages, &load, &settings))
            .map_err(CoreError)?;
        // A Ctrl-C while the models loaded reached only Python's handler.
        py.check_signals()?;
        py.detach(|| neuropods_server::run_until_signal(repository, config))
            .map_err(|message| ErrorClass::Io.new_err(message))
    })
}

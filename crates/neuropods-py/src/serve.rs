//! `serve(...)`: the Open Inference Protocol server
//! (`neuropods_server`), run in this process with the GIL released, for
//! `neuropods serve`. Python runs on the request path only inside
//! python-platform models.

use std::path::PathBuf;
use std::time::Duration;

use neuropods_server::{BatchSettings, ConnectionLimits, ModelSettings, Repository, ServerConfig};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::{guard, CoreError, ErrorClass};
use crate::model::{use_ope_flag, verify_manifest_flag, LoadArgs};

/// Loads `packages` and serves them until SIGINT or SIGTERM, then drains
/// the requests in flight and returns. Prints `neuropods serve: HTTP on
/// ADDR` (and gRPC) to stdout once ready. `max_batch_size` > 0 turns on
/// dynamic batching for the models that can take it. Once it has run,
/// SIGTERM no longer ends this process by default (tokio's handler stays):
/// meant for a process that serves until it exits, as `neuropods serve`.
#[pyfunction]
#[pyo3(signature = (
    packages, *, host = None, http_port = ServerConfig::default().http_port,
    grpc_port = ServerConfig::default().grpc_port, instances = None, max_batch_size = 0,
    max_queue_delay_us = None, max_body_bytes = None, drain_timeout_s = None,
    header_timeout_s = None, idle_timeout_s = None, body_timeout_s = None,
    max_idle_connections = None, visible_gpu = None, intra_op_threads = None,
    inter_op_threads = None, verify_manifest = false, use_ope = false, ope_python = None
))]
#[allow(clippy::too_many_arguments)]
pub fn serve(
    py: Python<'_>,
    packages: Vec<PathBuf>,
    host: Option<String>,
    http_port: Option<u16>,
    grpc_port: Option<u16>,
    instances: Option<usize>,
    max_batch_size: usize,
    max_queue_delay_us: Option<u64>,
    max_body_bytes: Option<usize>,
    drain_timeout_s: Option<f64>,
    header_timeout_s: Option<f64>,
    idle_timeout_s: Option<f64>,
    body_timeout_s: Option<f64>,
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
        if instances == Some(0) {
            return Err(invalid("instances must be at least 1".into()));
        }
        if http_port.is_none() && grpc_port.is_none() {
            return Err(invalid("give an HTTP port, a gRPC port or both".into()));
        }
        // Every value not given is the server's own default.
        let server = ServerConfig::default();
        let limits = server.connections;
        let seconds = |name: &str, value: Option<f64>, default: Duration| match value {
            None => Ok(default),
            Some(value) => Duration::try_from_secs_f64(value)
                .map_err(|_| invalid(format!("{name} must be >= 0, got {value}"))),
        };
        let connections = ConnectionLimits {
            header_timeout: seconds("header_timeout_s", header_timeout_s, limits.header_timeout)?,
            idle_timeout: seconds("idle_timeout_s", idle_timeout_s, limits.idle_timeout)?,
            body_grace: seconds("body_timeout_s", body_timeout_s, limits.body_grace)?,
            max_idle: max_idle_connections.unwrap_or(limits.max_idle),
            ..limits
        };
        let settings = ModelSettings {
            instances: instances.unwrap_or(ModelSettings::default().instances),
            batching: (max_batch_size > 0).then_some(BatchSettings {
                max_batch_size,
                max_queue_delay: max_queue_delay_us.map_or(
                    BatchSettings::DEFAULT_MAX_QUEUE_DELAY,
                    Duration::from_micros,
                ),
            }),
        };
        let config = ServerConfig {
            host: host.unwrap_or(server.host),
            http_port,
            grpc_port,
            max_body_bytes: max_body_bytes.unwrap_or(server.max_body_bytes),
            drain_timeout: seconds("drain_timeout_s", drain_timeout_s, server.drain_timeout)?,
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

/// The server's defaults, for the CLI's options and their help: the one
/// source of them is the server's `Default`s.
#[pyfunction]
pub fn serve_defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let server = ServerConfig::default();
    let limits = server.connections;
    let defaults = PyDict::new(py);
    defaults.set_item("host", server.host)?;
    defaults.set_item("http_port", server.http_port)?;
    defaults.set_item("grpc_port", server.grpc_port)?;
    defaults.set_item("instances", ModelSettings::default().instances)?;
    defaults.set_item("max_batch_size", 0)?;
    defaults.set_item(
        "max_queue_delay_us",
        BatchSettings::DEFAULT_MAX_QUEUE_DELAY.as_micros() as u64,
    )?;
    defaults.set_item("max_body_bytes", server.max_body_bytes)?;
    defaults.set_item("drain_timeout_s", server.drain_timeout.as_secs_f64())?;
    defaults.set_item("header_timeout_s", limits.header_timeout.as_secs_f64())?;
    defaults.set_item("idle_timeout_s", limits.idle_timeout.as_secs_f64())?;
    defaults.set_item("body_timeout_s", limits.body_grace.as_secs_f64())?;
    defaults.set_item(
        "body_min_bytes_per_second",
        limits.body_min_bytes_per_second,
    )?;
    defaults.set_item("max_idle_connections", limits.max_idle)?;
    Ok(defaults)
}

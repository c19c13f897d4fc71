//! Serves Neuropods packages over the Open Inference Protocol (KServe v2,
//! as Triton, KServe and MLServer speak it): REST over HTTP with the binary
//! tensor data extension, and gRPC. Requests go through the core's load and
//! infer path, which checks them; this crate only decodes the protocol,
//! batches, counts and answers.
//!
//! ```no_run
//! use neuropods_server::{Repository, ModelSettings, ServerConfig};
//!
//! let repository = Repository::load(
//!     &["addition_model".into()],
//!     &neuropods_core::LoadOptions::default(),
//!     &ModelSettings::default(),
//! )?;
//! neuropods_server::run_until_signal(repository, ServerConfig::default())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod batcher;
mod connections;
mod encoding;
mod error;
mod grpc;
mod instances;
mod metrics;
mod repository;
mod rest;

/// Code generated from `proto/inference.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("inference");
}

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use batcher::batch_symbol;
pub use batcher::BatchSettings;
pub use connections::ConnectionLimits;
pub use error::{FailureKind, RequestError};
pub use metrics::Metrics;
pub use repository::{InferCall, ModelSettings, Repository, ServedModel};

/// The name the server gives in its metadata.
pub const SERVER_NAME: &str = "neuropods";
/// The version the server gives in its metadata.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The protocol extensions served.
pub const EXTENSIONS: [&str; 1] = ["binary_tensor_data"];

fn server_metadata_json() -> serde_json::Value {
    serde_json::json!({
        "name": SERVER_NAME,
        "version": SERVER_VERSION,
        "extensions": EXTENSIONS,
    })
}

/// Where and how to listen.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on.
    pub host: String,
    /// HTTP port (0: any free port); None: no HTTP.
    pub http_port: Option<u16>,
    /// gRPC port (0: any free port); None: no gRPC.
    pub grpc_port: Option<u16>,
    /// Largest request body (HTTP) or message (gRPC) taken.
    pub max_body_bytes: usize,
    /// How long a shutdown waits for requests in flight.
    pub drain_timeout: Duration,
    /// Deadlines for requests to arrive, and the bound on idle connections.
    pub connections: ConnectionLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            http_port: Some(8000),
            grpc_port: Some(8001),
            max_body_bytes: 64 << 20,
            drain_timeout: Duration::from_secs(30),
            connections: ConnectionLimits::default(),
        }
    }
}

/// What every request handler shares.
pub struct ServerState {
    repository: Repository,
    config: ServerConfig,
    draining: AtomicBool,
}

impl ServerState {
    /// Ready until a shutdown starts (so load balancers stop sending).
    fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed)
    }
}

/// A server with its ports bound, not yet answering.
pub struct Server {
    state: Arc<ServerState>,
    http: Option<TcpListener>,
    grpc: Option<TcpListener>,
}

impl Server {
    /// Binds the configured ports. Must run inside a tokio runtime. The
    /// error names the protocol and address that could not be bound.
    pub async fn bind(repository: Repository, config: ServerConfig) -> std::io::Result<Server> {
        let listen = |protocol: &'static str, port: Option<u16>| {
            let host = config.host.clone();
            async move {
                let Some(port) = port else {
                    return Ok(None);
                };
                TcpListener::bind((host.as_str(), port))
                    .await
                    .map(Some)
                    .map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("cannot listen for {protocol} on {host}:{port}: {e}"),
                        )
                    })
            }
        };
        let http = listen("HTTP", config.http_port).await?;
        let grpc = listen("gRPC", config.grpc_port).await?;
        Ok(Server {
            state: Arc::new(ServerState {
                repository,
                config,
                draining: AtomicBool::new(false),
            }),
            http,
            grpc,
        })
    }

    /// The HTTP address bound, if any.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The gRPC address bound, if any.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Answers requests until `shutdown` completes, then stops taking new
    /// ones and waits (up to the drain timeout) for those in flight.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let state = self.state.clone();
        let drain_timeout = state.config.drain_timeout;
        let signal = async move {
            shutdown.await;
            state.draining.store(true, Ordering::Relaxed);
            tracing::info!("shutting down: finishing the requests in flight");
            let _ = stop.send(true);
        };
        let tracker = Arc::new(connections::Tracker::new(
            self.state.config.connections,
            self.state.repository.metrics_handle(),
        ));
        let mut servers = tokio::task::JoinSet::new();
        if let Some(listener) = self.http {
            let app = rest::router(self.state.clone());
            servers.spawn(connections::serve(
                listener,
                app,
                "http",
                false,
                tracker.clone(),
                stopped.clone(),
            ));
        }
        if let Some(listener) = self.grpc {
            let service = grpc::service(self.state.clone());
            servers.spawn(connections::serve(
                listener,
                service,
                "grpc",
                true,
                tracker,
                stopped.clone(),
            ));
        }
        tokio::spawn(signal);
        let mut drain_started = stopped.clone();
        let all_done = async {
            while let Some(result) = servers.join_next().await {
                result.map_err(std::io::Error::other)??;
            }
            Ok::<(), std::io::Error>(())
        };
        tokio::pin!(all_done);
        tokio::select! {
            result = &mut all_done => return result,
            _ = drain_started.wait_for(|&s| s) => {}
        }
        match tokio::time::timeout(drain_timeout, all_done).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(
                    "requests still in flight after {drain_timeout:?}: stopping without them"
                );
                Ok(())
            }
        }
    }
}

/// Sets up logging to stderr, filtered by `RUST_LOG` (default: info for
/// neuropods, warnings from the rest). Does nothing if already set up.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,neuropods_server=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// SIGINT (Ctrl-C) and SIGTERM, listened for from the moment this is made
/// (before the server says it is ready, so that no signal sent after that
/// is missed). Once made, they no longer end the process by themselves;
/// in a Python process, Python's own SIGINT handler still runs too.
struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn listen() -> std::io::Result<ShutdownSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves on the first signal. A second one ends the process at once
    /// (`_exit`: no destructors, which could crash under a model still
    /// running).
    async fn first(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
            tracing::warn!("second signal: exiting without waiting for requests in flight");
            // SAFETY: _exit ends the process; nothing runs after it.
            unsafe { libc::_exit(130) };
        });
    }
}

/// Serves `repository` until SIGINT or SIGTERM, then drains and returns.
/// Builds its own tokio runtime; prints one line per endpoint to stdout
/// once ready (`neuropods serve: HTTP on 127.0.0.1:8000`).
pub fn run_until_signal(repository: Repository, config: ServerConfig) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("neuropods-server")
        .build()
        .map_err(|e| format!("cannot start the server's runtime: {e}"))?;
    runtime.block_on(async move {
        let signals = ShutdownSignals::listen()
            .map_err(|e| format!("cannot listen for SIGINT and SIGTERM: {e}"))?;
        let server = Server::bind(repository, config)
            .await
            .map_err(|e| e.to_string())?;
        for model in server.state.repository.models() {
            tracing::info!(
                "serving model '{}' ({}, {} instance(s){})",
                model.name(),
                model.config().platform.name(),
                model.instances(),
                if model.is_batched() { ", batched" } else { "" }
            );
        }
        if let Some(addr) = server.http_addr() {
            println!("neuropods serve: HTTP on {addr}");
        }
        if let Some(addr) = server.grpc_addr() {
            println!("neuropods serve: gRPC on {addr}");
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        server
            .run(signals.first())
            .await
            .map_err(|e| format!("server failed: {e}"))
    })?;
    // Blocking work (model runs) finishing after the drain timeout is not
    // waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::info!("stopped");
    Ok(())
}

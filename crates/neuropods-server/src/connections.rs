//! The accept loop both protocols are served through, in place of
//! `axum::serve` and tonic's `Server`, which give no deadline for a
//! request's head and no bound on connections that never send a request:
//! a client trickling a byte every few seconds on enough connections would
//! hold every file descriptor, and health checks with them.
//!
//! - **Head deadline**: an HTTP/1 request head must arrive whole within
//!   `header_timeout` of the connection starting to wait for one (hyper's
//!   `header_read_timeout`: one deadline, not a timer each byte resets). It
//!   also ends an HTTP/1 keep-alive connection idle that long.
//! - **Idle connections**: a connection with no request in progress (none
//!   sent yet, or between requests) is idle. When more than `max_idle` are
//!   (both listeners together: they share the file descriptors), or when
//!   accepting fails for want of descriptors, the one idle longest is
//!   closed; a connection idle for `idle_timeout` is closed (HTTP/2 has no
//!   head deadline between requests).
//! - **Bodies**: every request's body, on both protocols, must arrive by a
//!   deadline that grows with the bytes received
//!   ([`ConnectionLimits::body_deadline`]): one total deadline at a minimum
//!   rate, which a byte now and then does not reset ([`DeadlineBody`]).
//!   A body past it ends in an error: 408 over HTTP, `DEADLINE_EXCEEDED`
//!   over gRPC (where HTTP/2 pings alone would keep a live but silent
//!   client's stream open forever). Every route is unary, a request being
//!   one body; a streaming RPC, if one is added, needs a rule of its own.
//! - HTTP/2 connections are pinged every `idle_timeout / 2` and closed when
//!   a ping goes unanswered.
//!
//! Each closing is logged (debug) and counted in
//! `neuropods_connections_closed_total{protocol, reason}`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Deadlines and bounds for client connections.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// An HTTP/1 request head must arrive within this.
    pub header_timeout: Duration,
    /// A connection with no request in progress for this long is closed.
    pub idle_timeout: Duration,
    /// Most idle connections kept; above it, the one idle longest is closed.
    pub max_idle: usize,
    /// A body gets this long, plus one second per `body_min_bytes_per_second`
    /// bytes received so far.
    pub body_grace: Duration,
    /// The slowest upload rate a body keeps its deadline growing at.
    pub body_min_bytes_per_second: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_idle: default_max_idle(),
            body_grace: Duration::from_secs(10),
            body_min_bytes_per_second: 64 << 10,
        }
    }
}

impl ConnectionLimits {
    /// When a body of which `received` bytes have arrived since `started`
    /// must have arrived whole, at the latest.
    pub fn body_deadline(&self, started: Instant, received: usize) -> Instant {
        let rate = self.body_min_bytes_per_second.max(1) as f64;
        started + self.body_grace + Duration::from_secs_f64(received as f64 / rate)
    }
}

/// Half the process's file descriptor limit (the other half for requests
/// in progress, models and their files), from 16 to 10,000 (a hyper
/// connection holds tens of KiB: a million idle ones would hold gigabytes).
fn default_max_idle() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let soft = if known && limit.rlim_cur != libc::RLIM_INFINITY {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1 << 16
    };
    (soft / 2).clamp(16, 10_000)
}

/// What one connection is doing.
struct Entry {
    /// Requests in progress.
    active: usize,
    /// Since when it has had none (meaningful when `active` is 0).
    idle_since: Instant,
    /// Told when the connection must close, or its state changed.
    wake: Arc<Notify>,
    /// Why it must close, once it must.
    close: Option<&'static str>,
}

/// Every open connection, of both listeners: the idle cap bounds them
/// together, as they share the process's file descriptors.
pub(crate) struct Tracker {
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    entries: Mutex<(u64, HashMap<u64, Entry>)>,
}

impl Tracker {
    /// A tracker for connections under `limits`, counting closings in
    /// `metrics`.
    pub(crate) fn new(limits: ConnectionLimits, metrics: Arc<Metrics>) -> Tracker {
        Tracker {
            limits,
            metrics,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, HashMap<u64, Entry>)> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a new (idle) connection; when that makes too many idle ones,
    /// tells the one idle longest to close.
    fn add(&self) -> (u64, Arc<Notify>) {
        let mut guard = self.lock();
        let (next, entries) = &mut *guard;
        let id = *next;
        *next += 1;
        let wake = Arc::new(Notify::new());
        entries.insert(
            id,
            Entry {
                active: 0,
                idle_since: Instant::now(),
                wake: wake.clone(),
                close: None,
            },
        );
        let idle = entries
            .values()
            .filter(|e| e.active == 0 && e.close.is_none())
            .count();
        if idle > self.limits.max_idle {
            close_oldest_idle(entries);
        }
        (id, wake)
    }

    /// Tells the connection idle longest to close: the process is out of
    /// file descriptors, and the next client is let in at its expense.
    fn make_room(&self) {
        close_oldest_idle(&mut self.lock().1);
    }

    fn request_started(&self, id: u64) {
        if let Some(entry) = self.lock().1.get_mut(&id) {
            entry.active += 1;
        }
    }

    fn request_ended(&self, id: u64) {
        if let Some(entry) = self.lock().1.get_mut(&id) {
            entry.active = entry.active.saturating_sub(1);
            if entry.active == 0 {
                entry.idle_since = Instant::now();
                entry.wake.notify_one();
            }
        }
    }

    /// Why the connection must close now, or when to look again (None:
    /// when woken).
    fn check(&self, id: u64) -> Result<Option<Instant>, &'static str> {
        let mut guard = self.lock();
        let Some(entry) = guard.1.get_mut(&id) else {
            return Err("idle_cap");
        };
        if entry.active > 0 {
            // A request arrived after it was picked to close: it stays.
            entry.close = None;
            return Ok(None);
        }
        if let Some(reason) = entry.close {
            return Err(reason);
        }
        let deadline = entry.idle_since + self.limits.idle_timeout;
        if Instant::now() >= deadline {
            entry.close = Some("idle_timeout");
            return Err("idle_timeout");
        }
        Ok(Some(deadline))
    }

    fn is_idle(&self, id: u64) -> bool {
        self.lock().1.get(&id).is_none_or(|entry| entry.active == 0)
    }

    fn remove(&self, id: u64) {
        self.lock().1.remove(&id);
    }

    fn closed(&self, protocol: &'static str, reason: &'static str) {
        tracing::debug!(
            "{protocol} connection closed: {}",
            match reason {
                "idle_cap" => "the oldest of more idle connections than the server keeps",
                "idle_timeout" => "idle too long",
                "header_timeout" => "no whole request head within the deadline",
                "body_timeout" => "a request body below the minimum rate",
                _ => reason,
            }
        );
        self.metrics.connection_closed(protocol, reason);
    }
}

/// Marks the connection idle longest to close, and wakes it.
fn close_oldest_idle(entries: &mut HashMap<u64, Entry>) {
    if let Some(oldest) = entries
        .values_mut()
        .filter(|e| e.active == 0 && e.close.is_none())
        .min_by_key(|e| e.idle_since)
    {
        oldest.close = Some("idle_cap");
        oldest.wake.notify_one();
    }
}

/// A service that tells the tracker when each request starts and ends,
/// and gives each request's body its deadline.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    tracker: Arc<Tracker>,
    id: u64,
    protocol: &'static str,
}

/// Why a request body ended early: it did not arrive by its deadline.
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body did not arrive in time: {received} bytes in {seconds:.1} s, below the \
     minimum rate of {rate} bytes/s"
)]
pub struct BodyTimeout {
    received: usize,
    seconds: f64,
    rate: u64,
}

/// A request body that must arrive by its deadline, which grows with the
/// bytes received ([`ConnectionLimits::body_deadline`]). The timer is made
/// only when the body makes the request wait: a body that is there at
/// once (most are) costs no timer.
pub struct DeadlineBody {
    inner: Incoming,
    tracker: Arc<Tracker>,
    protocol: &'static str,
    started: Instant,
    received: usize,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    timed_out: bool,
}

impl DeadlineBody {
    fn timeout(&mut self) -> Box<dyn std::error::Error + Send + Sync> {
        self.timed_out = true;
        self.tracker.closed(self.protocol, "body_timeout");
        let timeout = BodyTimeout {
            received: self.received,
            seconds: self.started.elapsed().as_secs_f64(),
            rate: self.tracker.limits.body_min_bytes_per_second,
        };
        if self.protocol == "grpc" {
            // tonic answers a request whose body failed with the status it
            // finds in the error.
            Box::new(tonic::Status::deadline_exceeded(timeout.to_string()))
        } else {
            Box::new(timeout)
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(None);
        }
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len();
                    if let Some(timer) = &mut this.timer {
                        let limits = this.tracker.limits;
                        timer
                            .as_mut()
                            .reset(limits.body_deadline(this.started, this.received));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
            Poll::Pending => {
                let limits = this.tracker.limits;
                let (started, received) = (this.started, this.received);
                let timer = this.timer.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(
                        limits.body_deadline(started, received),
                    ))
                });
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(this.timeout())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Ends a request in the tracker when dropped (the response is made, or
/// the request was abandoned).
struct RequestGuard {
    tracker: Arc<Tracker>,
    id: u64,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.tracker.request_ended(self.id);
    }
}

impl<S, B> tower_service::Service<http::Request<Incoming>> for Tracked<S>
where
    S: tower_service::Service<http::Request<DeadlineBody>, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Incoming>) -> Self::Future {
        self.tracker.request_started(self.id);
        let guard = RequestGuard {
            tracker: self.tracker.clone(),
            id: self.id,
        };
        let request = request.map(|inner| DeadlineBody {
            inner,
            tracker: self.tracker.clone(),
            protocol: self.protocol,
            started: Instant::now(),
            received: 0,
            timer: None,
            timed_out: false,
        });
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            drop(guard);
            result
        })
    }
}

/// Serves `service` on every connection `listener` accepts until `stop`
/// turns true; then stops accepting, closes idle connections, lets those
/// with a request in progress finish it, and returns once all are closed.
pub(crate) async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    protocol: &'static str,
    http2_only: bool,
    tracker: Arc<Tracker>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    S: tower_service::Service<
            http::Request<DeadlineBody>,
            Response = http::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limits = tracker.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.idle_timeout / 2)
        .keep_alive_timeout(limits.idle_timeout / 2);
    let builder = Arc::new(if http2_only {
        builder.http2_only()
    } else {
        builder
    });
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|&s| s) => break,
            // Reap finished connection tasks as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors (EMFILE, ENFILE) or a connection
                // reset before it was taken: not the listener's end. Out of
                // descriptors, the connection idle longest makes room.
                tracing::warn!("{protocol}: cannot accept a connection: {e}");
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    tracker.make_room();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small responses go out at once, not after the client's delayed
        // ACK (Nagle).
        let _ = stream.set_nodelay(true);
        let (id, wake) = tracker.add();
        let service = Tracked {
            inner: service.clone(),
            tracker: tracker.clone(),
            id,
            protocol,
        };
        let (builder, tracker, mut stop) = (builder.clone(), tracker.clone(), stop.clone());
        connections.spawn(async move {
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
            tokio::pin!(connection);
            let mut draining = false;
            let reason = loop {
                let next_look = match tracker.check(id) {
                    Ok(next_look) => next_look,
                    // Idle: closed at once (no request is cut short).
                    Err(reason) => break Some(reason),
                };
                let look_again = async {
                    match next_look {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    result = connection.as_mut() => {
                        break match result {
                            Err(e) if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout) => {
                                Some("header_timeout")
                            }
                            _ => None,
                        };
                    }
                    _ = wake.notified() => {}
                    _ = look_again => {}
                    _ = stop.wait_for(|&s| s), if !draining => {
                        if tracker.is_idle(id) {
                            break None;
                        }
                        // A request in progress finishes; then it closes.
                        connection.as_mut().graceful_shutdown();
                        draining = true;
                    }
                }
            };
            tracker.remove(id);
            if let Some(reason) = reason {
                tracker.closed(protocol, reason);
            }
        });
    }
    // Stopped: idle connections close at once, the others after their
    // requests (the caller bounds this with the drain timeout).
    while connections.join_next().await.is_some() {}
    Ok(())
}

//! The caller's side: a model running in a worker process.
//!
//! One worker per model, started by the load. Calls are queued (one in
//! flight per model, under a lock held without the GIL). While waiting, the
//! caller watches three things: a reply, the channel's end-of-file (the
//! worker died: at once) and the worker's heartbeat (stood still for
//! [`HUNG_AFTER`]: hung, killed). A worker lost during a call fails it
//! with [`Error::Worker`]; the next call starts a new worker and loads the
//! model again. A worker lost between calls is replaced before the next
//! call is sent, which then runs as if nothing happened.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use neuropods_ope::arena::SegmentId;
use neuropods_ope::{Arena, Channel, PeerSegments, Received, WorkerProcess};

use super::shared::{Allocation, UserSegments};
use super::transfer::{map_arrived, place, take, InPlace};
use super::wire::{self, Header, LoadMessage, Reader, Writer};
use crate::backend::{registry, BackendOptions};
use crate::error::{Error, Result};
use crate::tensor::TensorMap;

/// A worker whose heartbeat stands still this long is hung.
pub const HUNG_AFTER: Duration = Duration::from_secs(2);
/// How often a waiting caller looks at the heartbeat.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// The executable's file name.
pub const WORKER_PROGRAM: &str = "neuropods-worker";

/// What a worker needs to load the model.
#[derive(Clone, Debug)]
pub struct WorkerSetup {
    /// For messages.
    pub model_name: String,
    /// The package folder (a zip already extracted by the caller).
    pub package_root: PathBuf,
    /// Device and threads.
    pub options: BackendOptions,
    /// The Python executable whose interpreter runs python-platform models
    /// (None: `NEUROPODS_PYTHON`, else `python3` on `PATH`).
    pub python: Option<PathBuf>,
}

/// One worker process and what is shared with it.
struct Live {
    // Dropped first: closing the channel tells the worker to exit.
    channel: Channel,
    process: WorkerProcess,
    arena: Arena,
    peer: PeerSegments,
    /// Allocations whose descriptors the worker has.
    user_shared: Vec<SegmentId>,
    buf: Vec<u8>,
    spin: Duration,
}

/// Why a call failed.
enum Failure {
    /// The worker answered with an error; it is still good.
    Model(Error),
    /// The worker is dead, hung or confused; it must go.
    Lost(Error),
}

/// A model loaded in a worker process.
pub struct WorkerModel {
    setup: WorkerSetup,
    live: Mutex<Option<Live>>,
    user: Arc<UserSegments>,
}

impl WorkerModel {
    /// Starts a worker and loads the model in it; returns the backend's
    /// load warnings too.
    pub fn start(setup: WorkerSetup) -> Result<(WorkerModel, Vec<String>)> {
        let (live, warnings) = Live::start(&setup)?;
        let model = WorkerModel {
            setup,
            live: Mutex::new(Some(live)),
            user: Arc::default(),
        };
        Ok((model, warnings))
    }

    /// Runs the model in the worker (the caller checks the spec).
    pub fn infer(&self, inputs: &TensorMap) -> Result<TensorMap> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.as_mut().is_some_and(Live::gone) {
            // Nothing of this call has reached it: replaced, not reported.
            *live = None;
        }
        if live.is_none() {
            // The last worker was lost: a new one, the model loaded again.
            *live = Some(Live::start(&self.setup)?.0);
        }
        let Some(worker) = live.as_mut() else {
            return Err(Error::Internal("no worker after starting one".into()));
        };
        match worker.infer(&self.setup, &self.user, inputs) {
            Ok(outputs) => Ok(outputs),
            Err(Failure::Model(e)) => Err(e),
            Err(Failure::Lost(e)) => {
                *live = None;
                Err(e)
            }
        }
    }

    /// Zero-filled shared memory for one input, which reaches the worker
    /// without a copy.
    pub fn allocate(&self, len: usize) -> Result<Allocation> {
        self.user.allocate(len).map_err(|e| {
            Error::OutOfMemory(format!("cannot allocate {len} bytes of shared memory: {e}"))
        })
    }

    /// The worker's process id (None between a lost worker and the next call).
    pub fn worker_pid(&self) -> Option<u32> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.as_ref()
            .filter(|l| l.process.is_ours())
            .map(|l| l.process.pid())
    }
}

/// Where the worker executable is: `NEUROPODS_WORKER`, else beside the
/// backend libraries (the same folders, in the same order). The error says
/// where it looked.
pub fn worker_program() -> std::result::Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("NEUROPODS_WORKER") {
        return Ok(PathBuf::from(path));
    }
    let dirs = registry::search_dirs();
    dirs.iter()
        .map(|d| d.join(WORKER_PROGRAM))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "cannot start a worker: no {WORKER_PROGRAM} in {} (set NEUROPODS_WORKER to its path)",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// The worker's command: its environment says which Python runs python
/// models, which backends to use (the caller's), and which GPU it sees.
fn worker_command(setup: &WorkerSetup) -> Result<Command> {
    let program = worker_program().map_err(|detail| Error::Worker {
        model: setup.model_name.clone(),
        detail,
    })?;
    let mut command = Command::new(program);
    if let Some(python) = &setup.python {
        command.env("NEUROPODS_PYTHON", python);
    }
    if let Ok(dirs) = std::env::join_paths(registry::search_dirs()) {
        command.env("NEUROPODS_BACKEND_DIR", dirs);
    }
    // A python model's prints reach the caller's stdout as they happen,
    // not when (or if) the worker flushes at exit.
    if std::env::var_os("PYTHONUNBUFFERED").is_none() {
        command.env("PYTHONUNBUFFERED", "1");
    }
    command.env(
        "CUDA_VISIBLE_DEVICES",
        visible_devices(setup.options.visible_gpu),
    );
    Ok(command)
}

/// The worker sees only the chosen GPU (none for the CPU), as the original
/// Neuropod did; `visible_gpu` indexes the caller's own visible devices.
fn visible_devices(visible_gpu: Option<u32>) -> String {
    let Some(gpu) = visible_gpu else {
        return String::new();
    };
    match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .nth(gpu as usize)
            .map(|d| d.trim().to_string())
            // An index past the caller's devices: none, so the backend's
            // own "no such GPU" handling applies (CPU and a warning).
            .unwrap_or_else(|| "-1".to_string()),
        _ => gpu.to_string(),
    }
}

impl Live {
    fn start(setup: &WorkerSetup) -> Result<(Live, Vec<String>)> {
        let lost = |detail: String| Error::Worker {
            model: setup.model_name.clone(),
            detail,
        };
        let (ours, theirs) =
            Channel::pair().map_err(|e| lost(format!("cannot make its channel: {e}")))?;
        let process = WorkerProcess::spawn(worker_command(setup)?, theirs)
            .map_err(|e| lost(format!("cannot start a worker process: {e}")))?;
        let mut live = Live {
            channel: ours,
            process,
            arena: Arena::new(0),
            peer: PeerSegments::read_only(),
            user_shared: Vec::new(),
            buf: Vec::new(),
            spin: neuropods_ope::process::spin_time(),
        };
        let load = LoadMessage {
            package_root: setup.package_root.clone(),
            // The worker sees only that GPU, as device 0.
            visible_gpu: setup.options.visible_gpu.map(|_| 0),
            intra_op_threads: setup.options.intra_op_threads,
            inter_op_threads: setup.options.inter_op_threads,
        };
        let mut message = Writer::new(wire::LOAD, &Header::default());
        message.load(&load);
        let reply = live
            .send(setup, &message.finish(), &[], "load")
            .and_then(|_| live.receive(setup, "load"));
        let (n, fds) = match reply {
            Ok(reply) => reply,
            Err(Failure::Model(e) | Failure::Lost(e)) => return Err(e),
        };
        drop(fds);
        let parsed = Reader::new(live.buf.get(..n).unwrap_or_default()).and_then(
            |(tag, _, mut r)| match tag {
                wire::LOADED => r.strings().map(Ok),
                wire::FAILED => r.error().map(Err),
                other => Err(format!("unexpected reply {other} to load")),
            },
        );
        match parsed {
            Ok(Ok(warnings)) => Ok((live, warnings)),
            // The worker is dropped (and ends) with the failed load.
            Ok(Err(e)) => Err(e),
            Err(e) => Err(live.confused(setup, &e, "load")),
        }
    }

    /// Whether this worker cannot take a call, looked at before sending
    /// one: it ended between calls (the OOM killer), its heartbeat stood
    /// still (stopped; it is killed), or it is not ours (in a fork of the
    /// caller the worker is the parent's: this copy of its channel and
    /// memory is let go, and the fork starts its own).
    fn gone(&mut self) -> bool {
        if self.process.try_ended().is_some() {
            return true;
        }
        if self.process.stalled_for() >= HUNG_AFTER {
            self.process.kill();
            return true;
        }
        false
    }

    fn infer(
        &mut self,
        setup: &WorkerSetup,
        user: &UserSegments,
        inputs: &TensorMap,
    ) -> std::result::Result<TensorMap, Failure> {
        let in_place = InPlace {
            segments: user,
            peer_keeps: Some(&mut self.user_shared),
        };
        let placed = place(&mut self.arena, inputs, Some(in_place)).map_err(Failure::Model)?;
        let mut forgotten = self.arena.take_forgotten();
        for id in user.take_dropped() {
            if let Some(i) = self.user_shared.iter().position(|&s| s == id) {
                self.user_shared.swap_remove(i);
                forgotten.push(id);
            }
        }
        let header = Header {
            new_segments: placed.new_segments,
            given_back: self.peer.take_given_back(),
            forgotten,
        };
        let mut message = Writer::new(wire::INFER, &header);
        message.tensors(&placed.descs);
        let fds: Vec<_> = placed.segments.iter().map(|s| s.as_fd()).collect();
        if let Err(failure) = self.send(setup, &message.finish(), &fds, "infer") {
            // Nothing reached the worker (e.g. too many tensors for one
            // message): take back this message's loans and announcements,
            // or their memory would stay lent for good.
            let announced: Vec<SegmentId> = header.new_segments.iter().map(|s| s.id).collect();
            self.arena
                .not_sent(&placed.lent, &announced, header.forgotten);
            self.user_shared.retain(|id| !announced.contains(id));
            self.peer.unsent_given_back(header.given_back);
            return Err(failure);
        }
        drop(fds);
        // Single-use input segments: the worker's mapping keeps them now.
        drop(placed.segments);
        let (n, fds) = self.receive(setup, "infer")?;
        self.read_reply(n, fds)
            .unwrap_or_else(|e| Err(Failure::Lost(self.confused(setup, &e, "infer"))))
    }

    /// Parses the reply to an infer: Ok(Ok(outputs)), Ok(Err(failure)) for a
    /// reported error, Err(text) for a malformed reply.
    #[allow(clippy::type_complexity)]
    fn read_reply(
        &mut self,
        n: usize,
        fds: Vec<OwnedFd>,
    ) -> std::result::Result<std::result::Result<TensorMap, Failure>, String> {
        let bytes = self.buf.get(..n).unwrap_or_default();
        let (tag, header, mut reader) = Reader::new(bytes)?;
        for &id in &header.given_back {
            self.arena.given_back(id);
        }
        for &id in &header.forgotten {
            self.peer.forget(id);
        }
        let arrived = map_arrived(&mut self.peer, &header, fds)?;
        match tag {
            wire::OUTPUTS => {
                let descs = reader.tensors()?;
                Ok(Ok(take(&self.peer, &arrived, descs)?))
            }
            wire::FAILED => Ok(Err(Failure::Model(reader.error()?))),
            other => Err(format!("unexpected reply {other} to infer")),
        }
    }

    fn send(
        &mut self,
        setup: &WorkerSetup,
        bytes: &[u8],
        fds: &[std::os::fd::BorrowedFd<'_>],
        during: &str,
    ) -> std::result::Result<(), Failure> {
        match self.channel.send(bytes, fds) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(Failure::Model(
                Error::InvalidInput(format!("too many tensors for one call to a worker: {e}")),
            )),
            Err(_) => Err(Failure::Lost(self.died(setup, during))),
        }
    }

    /// Waits for the reply, watching the worker.
    fn receive(
        &mut self,
        setup: &WorkerSetup,
        during: &str,
    ) -> std::result::Result<(usize, Vec<OwnedFd>), Failure> {
        loop {
            match self
                .channel
                .recv(&mut self.buf, self.spin, Some(CHECK_EVERY))
            {
                Ok(Received::Message(n, fds)) => return Ok((n, fds)),
                Ok(Received::Closed) | Err(_) => {
                    return Err(Failure::Lost(self.died(setup, during)))
                }
                Ok(Received::TimedOut) => {
                    if self.process.try_ended().is_some() {
                        return Err(Failure::Lost(self.died(setup, during)));
                    }
                    if self.process.stalled_for() >= HUNG_AFTER {
                        let pid = self.process.pid();
                        let report = self.process.kill();
                        return Err(Failure::Lost(Error::Worker {
                            model: setup.model_name.clone(),
                            detail: format!(
                                "its worker process {pid} stopped answering during {during} (no heartbeat for {} s) and was killed{}; {}",
                                HUNG_AFTER.as_secs(),
                                next_call(during),
                                report.stderr_note()
                            ),
                        }));
                    }
                }
            }
        }
    }

    /// The error for a worker that ended (waits briefly for its status).
    fn died(&mut self, setup: &WorkerSetup, during: &str) -> Error {
        let pid = self.process.pid();
        let report = self.process.end(Duration::from_secs(1));
        Error::Worker {
            model: setup.model_name.clone(),
            detail: format!(
                "its worker process {pid} {} during {during}{}; {}",
                report.status,
                next_call(during),
                report.stderr_note()
            ),
        }
    }

    /// The error for a worker that broke the protocol; it is killed.
    fn confused(&mut self, setup: &WorkerSetup, problem: &str, during: &str) -> Error {
        let pid = self.process.pid();
        self.process.kill();
        Error::Worker {
            model: setup.model_name.clone(),
            detail: format!(
                "its worker process {pid} sent a malformed reply to {during} and was killed: {problem}{}",
                next_call(during)
            ),
        }
    }
}

fn next_call(during: &str) -> &'static str {
    if during == "load" {
        ""
    } else {
        "; the next call starts a new worker and loads the model again"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_sees_the_chosen_device_of_the_callers_own() {
        assert_eq!(visible_devices(None), "");
        std::env::remove_var("CUDA_VISIBLE_DEVICES");
        assert_eq!(visible_devices(Some(1)), "1");
        std::env::set_var("CUDA_VISIBLE_DEVICES", "4, 6");
        assert_eq!(visible_devices(Some(1)), "6");
        assert_eq!(visible_devices(Some(2)), "-1");
        std::env::remove_var("CUDA_VISIBLE_DEVICES");
    }
}

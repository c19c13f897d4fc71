//! A worker process: started with its end of the channel as fd 3 and its
//! heartbeat page as fd 4, watched, and reported on when it ends.
//!
//! - **Heartbeat**: the worker bumps a counter in a shared page every
//!   [`BEAT_INTERVAL`] from a thread of its own, whatever its model does. A
//!   worker that is busy keeps beating and is waited for; one whose counter
//!   stands still (stopped, or wedged as a whole) is hung.
//! - **Caller death**: the same thread watches the channel; when the caller
//!   is gone (closed the model, or died, even by SIGKILL) the worker exits.
//! - **stderr**: passed through to the caller's stderr as it comes, and its
//!   last lines kept to say why a worker died.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::channel::Channel;
use crate::segment::Segment;

/// The worker's end of the channel.
pub const CHANNEL_FD: RawFd = 3;
/// The worker's heartbeat page.
pub const HEARTBEAT_FD: RawFd = 4;
/// How often a worker beats.
pub const BEAT_INTERVAL: Duration = Duration::from_millis(100);
/// How long a side polls for the other's message before it sleeps (see
/// [`crate::Channel::recv`]): `NEUROPODS_OPE_SPIN_US` microseconds, 100 by
/// default; 0 never polls.
pub fn spin_time() -> Duration {
    let micros = std::env::var("NEUROPODS_OPE_SPIN_US")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(100);
    Duration::from_micros(micros)
}
/// Lines of stderr kept for reports.
const TAIL_LINES: usize = 20;
/// Bytes of stderr kept for reports.
const TAIL_BYTES: usize = 8 << 10;

/// How a worker ended, for error messages.
#[derive(Clone, Debug)]
pub struct ExitReport {
    /// "exited with status 3", "was killed by signal 11 (SIGSEGV)".
    pub status: String,
    /// The last lines it wrote to stderr (may be empty).
    pub stderr_tail: String,
}

impl ExitReport {
    /// "it wrote nothing to stderr", or its last lines.
    pub fn stderr_note(&self) -> String {
        if self.stderr_tail.trim().is_empty() {
            "it wrote nothing to stderr".to_string()
        } else {
            format!("the last lines it wrote to stderr:\n{}", self.stderr_tail)
        }
    }
}

impl std::fmt::Display for ExitReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; {}", self.status, self.stderr_note())
    }
}

/// Describes an exit status.
pub fn describe_status(status: ExitStatus) -> String {
    if let Some(signal) = status.signal() {
        let name = match signal {
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGKILL => "SIGKILL",
            libc::SIGABRT => "SIGABRT",
            libc::SIGBUS => "SIGBUS",
            libc::SIGFPE => "SIGFPE",
            libc::SIGILL => "SIGILL",
            libc::SIGTERM => "SIGTERM",
            libc::SIGINT => "SIGINT",
            libc::SIGPIPE => "SIGPIPE",
            _ => "",
        };
        let name = if name.is_empty() {
            String::new()
        } else {
            format!(" ({name})")
        };
        let hint = if signal == libc::SIGKILL {
            ", from outside (the kernel's OOM killer sends this when memory runs out)"
        } else {
            ""
        };
        format!("was killed by signal {signal}{name}{hint}")
    } else {
        format!("exited with status {}", status.code().unwrap_or(-1))
    }
}

#[derive(Default)]
struct Tail {
    bytes: VecDeque<u8>,
    ended: bool,
}

/// The last bytes a worker wrote to stderr.
#[derive(Default)]
struct StderrTail {
    tail: Mutex<Tail>,
    ended: Condvar,
}

impl StderrTail {
    /// Copies the pipe to this process's stderr, keeping its end.
    fn pump(&self, mut pipe: impl Read) {
        let mut chunk = [0u8; 4096];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    let Some(bytes) = chunk.get(..n) else { break };
                    let _ = io::stderr().write_all(bytes);
                    let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
                    tail.bytes.extend(bytes);
                    let excess = tail.bytes.len().saturating_sub(TAIL_BYTES);
                    tail.bytes.drain(..excess);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.tail.lock().unwrap_or_else(|p| p.into_inner()).ended = true;
        self.ended.notify_all();
    }

    /// The last lines, once the pipe has ended or `wait` has passed.
    fn last_lines(&self, wait: Duration) -> String {
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let (tail, _) = self
            .ended
            .wait_timeout_while(tail, wait, |t| !t.ended)
            .unwrap_or_else(|p| p.into_inner());
        let (front, back) = tail.bytes.as_slices();
        let text = String::from_utf8_lossy(&[front, back].concat()).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }
}

/// A running (or ended) worker process.
pub struct WorkerProcess {
    child: Child,
    /// The process that started it: the only one that may signal or reap
    /// it (a fork of the caller inherits this handle, not the child).
    spawner: u32,
    heartbeat: Segment,
    last_count: u64,
    last_change: Instant,
    stderr: Arc<StderrTail>,
    ended: Option<ExitReport>,
}

impl WorkerProcess {
    /// Starts `command` as a worker holding `channel` (the worker's end) as
    /// fd 3 and a fresh heartbeat page as fd 4. Its stdin is closed, its
    /// stdout is the caller's, its stderr is watched; it ignores SIGINT,
    /// which a terminal sends to the whole process group: Ctrl-C is for the
    /// caller to handle.
    pub fn spawn(mut command: Command, channel: Channel) -> io::Result<WorkerProcess> {
        let heartbeat = Segment::create(4096)?;
        let channel_fd = OwnedFd::from(channel);
        let (channel_raw, heartbeat_raw) = (channel_fd.as_raw_fd(), heartbeat_fd(&heartbeat));
        command.stdin(Stdio::null()).stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // dup2 clears close-on-exec on the copies; the order keeps
                // one source from being overwritten by the other's copy.
                let moved_heartbeat = libc::fcntl(heartbeat_raw, libc::F_DUPFD_CLOEXEC, 10);
                if moved_heartbeat < 0
                    || libc::dup2(channel_raw, CHANNEL_FD) < 0
                    || libc::dup2(moved_heartbeat, HEARTBEAT_FD) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                libc::signal(libc::SIGINT, libc::SIG_IGN);
                Ok(())
            });
        }
        let mut child = command.spawn()?;
        drop(channel_fd);
        let stderr = Arc::new(StderrTail::default());
        if let Some(pipe) = child.stderr.take() {
            let stderr = stderr.clone();
            thread::Builder::new()
                .name("neuropods-worker-stderr".into())
                .spawn(move || stderr.pump(pipe))?;
        }
        Ok(WorkerProcess {
            child,
            spawner: std::process::id(),
            heartbeat,
            last_count: 0,
            last_change: Instant::now(),
            stderr,
            ended: None,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How long the heartbeat has stood still.
    pub fn stalled_for(&mut self) -> Duration {
        let count = beat_counter(&self.heartbeat).load(Ordering::Acquire);
        if count != self.last_count {
            self.last_count = count;
            self.last_change = Instant::now();
        }
        self.last_change.elapsed()
    }

    /// Whether this process started the worker (false in a fork of it).
    pub fn is_ours(&self) -> bool {
        self.spawner == std::process::id()
    }

    /// The report, if the process has ended (reaps it).
    pub fn try_ended(&mut self) -> Option<ExitReport> {
        if !self.is_ours() {
            return Some(ExitReport {
                status: format!("belongs to process {}", self.spawner),
                stderr_tail: String::new(),
            });
        }
        if self.ended.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.ended = Some(self.report(status));
            }
        }
        self.ended.clone()
    }

    /// Waits up to `timeout` for the process to end by itself, then kills
    /// it; returns how it ended.
    pub fn end(&mut self, timeout: Duration) -> ExitReport {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(report) = self.try_ended() {
                return report;
            }
            if Instant::now() >= deadline {
                return self.kill();
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Kills the process (SIGKILL) and reaps it; returns how it ended.
    pub fn kill(&mut self) -> ExitReport {
        if let Some(report) = self.try_ended() {
            return report;
        }
        let _ = self.child.kill();
        let report = match self.child.wait() {
            Ok(status) => self.report(status),
            Err(e) => ExitReport {
                status: format!("could not be reaped: {e}"),
                stderr_tail: String::new(),
            },
        };
        self.ended = Some(report.clone());
        report
    }

    fn report(&self, status: ExitStatus) -> ExitReport {
        ExitReport {
            status: describe_status(status),
            // The pipe ends when the worker does (unless it left a child
            // holding it): a short wait for the last lines in flight.
            stderr_tail: self.stderr.last_lines(Duration::from_millis(500)),
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // The owner closed the channel first: a worker exits within a beat.
        // (In a fork of the owner, `end` leaves the owner's worker alone.)
        self.end(BEAT_INTERVAL * 10);
    }
}

fn heartbeat_fd(segment: &Segment) -> RawFd {
    use std::os::fd::AsFd;
    segment.as_fd().as_raw_fd()
}

fn beat_counter(segment: &Segment) -> &AtomicU64 {
    // SAFETY: the page is at least 8 bytes and page-aligned, and is only
    // accessed atomically.
    unsafe { &*(segment.as_ptr() as *const AtomicU64) }
}

/// In the worker: beats every [`BEAT_INTERVAL`] on the page at fd 4, and
/// ends the process when the caller's end of `channel` is gone. Returns
/// an error if fd 4 is not a heartbeat page.
pub fn start_heartbeat(channel_fd: RawFd) -> io::Result<()> {
    use std::os::fd::FromRawFd;
    // SAFETY: fd 4 was set up by `spawn` for this process and is used here only.
    let fd = unsafe { OwnedFd::from_raw_fd(HEARTBEAT_FD) };
    let page = Segment::map(fd, 4096)?;
    thread::Builder::new()
        .name("neuropods-heartbeat".into())
        .spawn(move || loop {
            beat_counter(&page).fetch_add(1, Ordering::Release);
            if caller_gone(channel_fd) {
                // The caller closed the model or died: nothing is left to
                // answer, and the model's own clean-up could hang.
                // SAFETY: ends the process at once.
                unsafe { libc::_exit(0) };
            }
            thread::sleep(BEAT_INTERVAL);
        })?;
    Ok(())
}

fn caller_gone(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd; zero timeout.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    rc > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_named_and_an_exit_code_given() {
        let status = ExitStatus::from_raw(libc::SIGSEGV);
        assert_eq!(describe_status(status), "was killed by signal 11 (SIGSEGV)");
        let status = ExitStatus::from_raw(3 << 8);
        assert_eq!(describe_status(status), "exited with status 3");
    }

    #[test]
    fn a_worker_that_dies_is_reported_with_its_last_stderr_lines() {
        let (_ours, theirs) = Channel::pair().unwrap();
        let mut command = Command::new("sh");
        command.args(["-c", "echo first >&2; echo 'last words' >&2; kill -SEGV $$"]);
        let mut worker = WorkerProcess::spawn(command, theirs).unwrap();
        let report = worker.end(Duration::from_secs(5));
        assert!(report.status.contains("SIGSEGV"), "{report}");
        assert!(report.stderr_tail.ends_with("last words"), "{report}");
    }

    #[test]
    fn the_worker_gets_its_channel_and_heartbeat_descriptors() {
        let (ours, theirs) = Channel::pair().unwrap();
        let mut command = Command::new("sh");
        // fd 3 is the socket: writing to it reaches our end.
        command.args(["-c", "test -e /proc/self/fd/4 && printf ok >&3"]);
        let mut worker = WorkerProcess::spawn(command, theirs).unwrap();
        let mut buf = Vec::new();
        match ours
            .recv(&mut buf, Duration::ZERO, Some(Duration::from_secs(5)))
            .unwrap()
        {
            crate::channel::Received::Message(n, _) => assert_eq!(&buf[..n], b"ok"),
            other => panic!("{other:?}"),
        }
        assert!(worker
            .end(Duration::from_secs(5))
            .status
            .contains("status 0"));
    }
}

//! Out-of-process execution (OPE): the mechanism that lets a model run in a
//! worker process of its own, so that a model that crashes, exits, leaks or
//! hangs cannot take its caller with it.
//!
//! This crate knows processes and memory, not tensors:
//! - [`segment`]: shared memory segments (`memfd`, so nothing is ever named
//!   in `/dev/shm` and nothing can be left behind, whoever dies);
//! - [`arena`]: the segments one side writes into and lends to the other,
//!   reused once the other side gives them back;
//! - [`peer`]: the other side's segments, mapped once, and the leases that
//!   say when their memory is no longer used here;
//! - [`channel`]: the control channel (a Unix `SOCK_SEQPACKET` pair that
//!   carries segment descriptors along with messages);
//! - [`process`]: starting a worker, watching its heartbeat and its stderr,
//!   and saying how it ended.
//!
//! The core (`neuropods_core::worker`) speaks its tensor protocol over these.

pub mod arena;
pub mod channel;
pub mod peer;
pub mod process;
pub mod segment;

pub use arena::{Arena, Region};
pub use channel::{Channel, Received};
pub use peer::{Lease, PeerSegments};
pub use process::{ExitReport, WorkerProcess};
pub use segment::Segment;

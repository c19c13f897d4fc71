//! Out-of-process execution: a model loaded with `use_ope` runs in a
//! worker process of its own (the `neuropods-worker` executable), and its
//! tensors cross in shared memory.
//!
//! The mechanism (segments, channel, processes, heartbeat) is the
//! `neuropods_ope` crate; this module is what crosses it: `wire` (the
//! messages), `transfer` (tensors into and out of shared memory), `client`
//! (the caller's side), `serve` (the worker's loop), `shared` (arrays a
//! caller allocates in shared memory) and `heap` (the worker's: where a
//! framework's large outputs are allocated, to be sent without a copy).
//!
//! Spec checks stay in the caller, before anything is sent and after the
//! outputs arrive; the worker runs the backend and nothing else. Errors
//! cross with their kind and every field, so a caller gets the same error
//! as in-process.

// Internals of the host: only what a program needs is public (the worker
// executable's `serve`, the caller's `Allocation`).
mod client;
mod heap;
mod serve;
mod shared;
mod transfer;
mod wire;

pub(crate) use client::{WorkerModel, WorkerSetup};
pub use serve::serve;
pub use shared::Allocation;

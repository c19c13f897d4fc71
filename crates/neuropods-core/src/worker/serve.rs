//! The worker's side: the loop run by the `neuropods-worker` executable.
//!
//! It loads the package with the same core and backends as a caller would
//! in-process, then answers calls until the caller closes the channel (or
//! dies), and exits at once: a model's own clean-up is not waited for.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};

use neuropods_ope::arena::SegmentId;
use neuropods_ope::process::{start_heartbeat, CHANNEL_FD};
use neuropods_ope::{Arena, Channel, PeerSegments, Received};

use super::heap::SharedHeap;
use super::transfer::{map_arrived, place, take, InPlace, Placed};
use super::wire::{self, Header, Reader, Writer};
use crate::backend::BackendOptions;
use crate::error::Error;
use crate::model::{LoadOptions, Neuropod};
use crate::tensor::{Tensor, TensorMap};

/// The worker's segment ids have the top bit set.
const WORKER_SIDE: SegmentId = 1 << 63;

struct Worker {
    model: Option<Neuropod>,
    arena: Arena,
    peer: PeerSegments,
    heap: &'static SharedHeap,
    /// Outputs sent where the framework allocated them (the heap), kept
    /// until the caller gives back that message's loan of their segment.
    lent_outputs: Vec<(SegmentId, Vec<Tensor>)>,
}

/// Runs the worker on the descriptors its caller set up; returns the exit
/// code when run by hand (the loop itself ends the process).
pub fn serve() -> i32 {
    if !is_socket(CHANNEL_FD) {
        eprintln!(
            "neuropods-worker runs models for Neuropods (load_neuropod(..., use_ope=True)); \
             it is started by the library, not by hand"
        );
        return 2;
    }
    // SAFETY: fd 3 is the channel the caller gave this process.
    let channel = Channel::from_fd(unsafe { OwnedFd::from_raw_fd(CHANNEL_FD) });
    if let Err(e) = start_heartbeat(CHANNEL_FD) {
        eprintln!("neuropods-worker: cannot start its heartbeat: {e}");
        return 2;
    }
    let mut worker = Worker {
        model: None,
        arena: Arena::new(WORKER_SIDE),
        peer: PeerSegments::writable(),
        heap: SharedHeap::get(),
        lent_outputs: Vec::new(),
    };
    let mut buf = Vec::new();
    let spin = neuropods_ope::process::spin_time();
    loop {
        let (n, fds) = match channel.recv(&mut buf, spin, None) {
            Ok(Received::Message(n, fds)) => (n, fds),
            Ok(Received::Closed) | Ok(Received::TimedOut) | Err(_) => break,
        };
        let message = buf.get(..n).unwrap_or_default();
        let reply = catch_unwind(AssertUnwindSafe(|| worker.handle(message, fds)))
            .unwrap_or_else(|payload| worker.failed(&Error::from_panic(payload)));
        let (bytes, segments) = reply;
        let fds: Vec<_> = segments.iter().map(|s| s.as_fd()).collect();
        if channel.send(&bytes, &fds).is_err() {
            break;
        }
    }
    // The caller is gone: leave without running the model's destructors
    // (a framework's shutdown may hang or crash, and nobody waits for it).
    // SAFETY: ends the process.
    unsafe { libc::_exit(0) }
}

type Reply = (Vec<u8>, Vec<std::sync::Arc<neuropods_ope::Segment>>);

impl Worker {
    fn handle(&mut self, message: &[u8], fds: Vec<OwnedFd>) -> Reply {
        let (tag, header, mut reader) = match Reader::new(message) {
            Ok(parsed) => parsed,
            Err(e) => return self.failed(&Error::Internal(format!("malformed request: {e}"))),
        };
        for &id in &header.given_back {
            self.arena.given_back(id);
            if let Some(i) = self.lent_outputs.iter().position(|(lent, _)| *lent == id) {
                self.lent_outputs.swap_remove(i);
            }
        }
        for &id in &header.forgotten {
            self.peer.forget(id);
        }
        let arrived = match map_arrived(&mut self.peer, &header, fds) {
            Ok(arrived) => arrived,
            Err(e) => return self.failed(&Error::Internal(e)),
        };
        match tag {
            wire::LOAD => match reader.load() {
                Ok(load) => {
                    let options = LoadOptions {
                        backend: BackendOptions {
                            visible_gpu: load.visible_gpu,
                            intra_op_threads: load.intra_op_threads,
                            inter_op_threads: load.inter_op_threads,
                        },
                        ..LoadOptions::default()
                    };
                    let heap = self.heap.allocator();
                    match Neuropod::load_with(&load.package_root, &options, heap) {
                        Ok(model) => {
                            let mut w = Writer::new(wire::LOADED, &Header::default());
                            w.strings(model.load_warnings());
                            self.model = Some(model);
                            (w.finish(), Vec::new())
                        }
                        Err(e) => self.failed(&e),
                    }
                }
                Err(e) => self.failed(&Error::Internal(format!("malformed load: {e}"))),
            },
            wire::INFER => {
                let Some(model) = &self.model else {
                    return self.failed(&Error::Internal("infer before load".into()));
                };
                let inputs = match reader.tensors().and_then(|d| take(&self.peer, &arrived, d)) {
                    Ok(inputs) => inputs,
                    Err(e) => {
                        return self.failed(&Error::Internal(format!("malformed infer: {e}")))
                    }
                };
                let outputs = model.infer_unchecked(&inputs);
                // Inputs the model did not keep are given back with this reply.
                drop(inputs);
                drop(arrived);
                let heap = InPlace {
                    segments: self.heap.segments(),
                    peer_keeps: None,
                };
                let placed = outputs.and_then(|outputs| {
                    let placed = place(&mut self.arena, &outputs, Some(heap))?;
                    self.keep_lent(&placed, &outputs);
                    Ok(placed)
                });
                // The caller never keeps heap segments mapped: nothing to
                // tell it when they go.
                self.heap.segments().take_dropped();
                match placed {
                    Ok(placed) => {
                        let header = Header {
                            new_segments: placed.new_segments,
                            given_back: self.peer.take_given_back(),
                            forgotten: self.arena.take_forgotten(),
                        };
                        let mut w = Writer::new(wire::OUTPUTS, &header);
                        w.tensors(&placed.descs);
                        (w.finish(), placed.segments)
                    }
                    Err(e) => self.failed(&e),
                }
            }
            other => self.failed(&Error::Internal(format!("unknown request {other}"))),
        }
    }

    /// Keeps the outputs sent in place: one entry per segment, as the
    /// caller takes one lease per segment per message.
    fn keep_lent(&mut self, placed: &Placed, outputs: &TensorMap) {
        let mut by_segment: Vec<(SegmentId, Vec<Tensor>)> = Vec::new();
        for (id, name) in &placed.in_place {
            let Some(tensor) = outputs.get(name) else {
                continue;
            };
            match by_segment.iter_mut().find(|(segment, _)| segment == id) {
                Some((_, tensors)) => tensors.push(tensor.clone()),
                None => by_segment.push((*id, vec![tensor.clone()])),
            }
        }
        self.lent_outputs.extend(by_segment);
    }

    fn failed(&mut self, err: &Error) -> Reply {
        let header = Header {
            new_segments: Vec::new(),
            given_back: self.peer.take_given_back(),
            forgotten: self.arena.take_forgotten(),
        };
        let mut w = Writer::new(wire::FAILED, &header);
        w.error(err);
        (w.finish(), Vec::new())
    }
}

fn is_socket(fd: i32) -> bool {
    // SAFETY: `stat` is plain data, for which all zeroes is a value.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat fills the struct; a closed fd is an error.
    unsafe { libc::fstat(fd, &mut stat) == 0 && stat.st_mode & libc::S_IFMT == libc::S_IFSOCK }
}

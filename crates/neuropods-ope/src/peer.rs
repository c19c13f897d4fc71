//! The other side's segments as mapped here, and the leases on them.
//!
//! Each message that refers to a segment takes one [`Lease`] on it; the
//! tensors made from the message's regions hold clones of it. When the last
//! clone is dropped (the call ended, or the numpy array a user kept was
//! freed), the lease's id is queued to be given back with the next message,
//! so the owner can reuse the memory. Mappings stay until the owner says
//! it forgot the segment, so that reused segments are not mapped again.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use crate::arena::SegmentId;
use crate::segment::Segment;

/// Ids of leases ended since the queue was last drained.
type GivenBack = Arc<Mutex<Vec<SegmentId>>>;

/// One message's hold on one of the other side's segments.
#[derive(Debug)]
pub struct Lease {
    id: SegmentId,
    segment: Arc<Segment>,
    /// Where its id goes when it ends (single-use segments too: the owner
    /// may hold something for it, e.g. the framework tensor it is).
    given_back: GivenBack,
}

impl Lease {
    /// The segment (this side's mapping).
    pub fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    /// The segment's id.
    pub fn id(&self) -> SegmentId {
        self.id
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.given_back
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(self.id);
    }
}

/// The other side's segments mapped here.
pub struct PeerSegments {
    mapped: HashMap<SegmentId, Arc<Segment>>,
    given_back: GivenBack,
    writable: bool,
}

impl PeerSegments {
    /// For a side that only reads what the other side sends (the caller,
    /// reading its worker's outputs): segments are mapped read-only, so
    /// nothing here can write the bytes a worker lent, whatever it runs.
    pub fn read_only() -> PeerSegments {
        PeerSegments::mapped(false)
    }

    /// For a side whose code may write what it is sent (the worker: a model
    /// may work in place on its inputs, which are the caller's memory as
    /// when called in-process): segments are mapped read-write.
    pub fn writable() -> PeerSegments {
        PeerSegments::mapped(true)
    }

    fn mapped(writable: bool) -> PeerSegments {
        PeerSegments {
            mapped: HashMap::new(),
            given_back: GivenBack::default(),
            writable,
        }
    }

    /// Whether segments are mapped writable here.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Maps a segment that arrived with a message (see [`Self::read_only`]
    /// and [`Self::writable`]). A single-use segment is not kept: the returned mapping, held by its lease, is its only one.
    pub fn insert(
        &mut self,
        id: SegmentId,
        fd: OwnedFd,
        len: usize,
        single_use: bool,
    ) -> io::Result<Arc<Segment>> {
        let segment = Arc::new(if self.writable {
            Segment::map(fd, len)?
        } else {
            Segment::map_read_only(fd, len)?
        });
        if !single_use {
            self.mapped.insert(id, segment.clone());
        }
        Ok(segment)
    }

    /// A new lease on a segment: `segment` when it came with this message,
    /// else the one mapped earlier (None if the id is unknown).
    pub fn lease(&self, id: SegmentId, arrived: Option<Arc<Segment>>) -> Option<Arc<Lease>> {
        let segment = arrived.or_else(|| self.mapped.get(&id).cloned())?;
        Some(Arc::new(Lease {
            id,
            segment,
            given_back: self.given_back.clone(),
        }))
    }

    /// The owner dropped the segment: unmap it once no lease uses it.
    pub fn forget(&mut self, id: SegmentId) {
        self.mapped.remove(&id);
    }

    /// Puts back ids from [`PeerSegments::take_given_back`] whose message
    /// could not be sent.
    pub fn unsent_given_back(&self, ids: Vec<SegmentId>) {
        self.given_back
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(ids);
    }

    /// Ids of leases that ended since the last call, one entry per lease.
    pub fn take_given_back(&self) -> Vec<SegmentId> {
        std::mem::take(&mut *self.given_back.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn each_lease_is_given_back_once_when_its_last_clone_goes() {
        let owner = Segment::create(4096).unwrap();
        let mut peer = PeerSegments::writable();
        let fd = owner.as_fd().try_clone_to_owned().unwrap();
        let arrived = peer.insert(7, fd, owner.len(), false).unwrap();
        let first = peer.lease(7, Some(arrived)).unwrap();
        let second = peer.lease(7, None).unwrap();
        let clone = first.clone();
        drop(first);
        assert!(peer.take_given_back().is_empty());
        drop(clone);
        drop(second);
        assert_eq!(peer.take_given_back(), vec![7, 7]);
        assert!(peer.lease(8, None).is_none());
    }

    #[test]
    fn a_lease_keeps_its_mapping_after_the_segment_is_forgotten() {
        let owner = Segment::create(4096).unwrap();
        let mut peer = PeerSegments::read_only();
        let fd = owner.as_fd().try_clone_to_owned().unwrap();
        let arrived = peer.insert(1, fd, owner.len(), false).unwrap();
        let lease = peer.lease(1, Some(arrived)).unwrap();
        peer.forget(1);
        drop(peer);
        // SAFETY: the test is the mappings' only user, one step at a time.
        unsafe {
            owner.bytes_mut(0, 1).unwrap()[0] = 9;
            assert_eq!(lease.segment().bytes(0, 1).unwrap(), [9]);
            assert!(lease.segment().bytes_mut(0, 1).is_none());
        }
    }
}

//! Tensors into and out of shared memory, the same way on both sides: the
//! sender copies each tensor into a region of its arena (or, for an array
//! the caller allocated in shared memory, points at it where it is), and the
//! receiver makes tensors that are views of those regions, each holding its
//! message's lease on the segment.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use neuropods_ope::arena::SegmentId;
use neuropods_ope::{Arena, Lease, PeerSegments, Segment};

use super::shared::UserSegments;
use super::wire::{Header, NewSegment, TensorDesc};
use crate::error::{Error, Result};
use crate::serialize::{deserialize, serialized_len_tensor, write_tensor, Serialized};
use crate::tensor::{Buffer, DType, Tensor, TensorData, TensorMap};

/// A message's tensors, placed.
#[derive(Default)]
pub struct Placed {
    /// Where each tensor is.
    pub descs: Vec<TensorDesc>,
    /// Segments the other side gets with this message.
    pub new_segments: Vec<NewSegment>,
    /// Their mappings, whose descriptors travel with the message.
    pub segments: Vec<Arc<Segment>>,
}

/// Puts `tensors` into shared memory for one message. `user` (the
/// caller's allocations) and `user_shared` (those the worker has) let an
/// array allocated in shared memory travel without a copy.
pub fn place(
    arena: &mut Arena,
    tensors: &TensorMap,
    user: Option<(&UserSegments, &mut Vec<SegmentId>)>,
) -> Result<Placed> {
    let mut placed = Placed::default();
    let mut lent: Vec<SegmentId> = Vec::new();
    let (user, user_shared) = match user {
        Some((u, s)) => (Some(u), Some(s)),
        None => (None, None),
    };
    let mut user_shared = user_shared;
    for (name, tensor) in tensors {
        let (dtype, shape) = (tensor.dtype(), tensor.shape().to_vec());
        if let TensorData::Numeric(buffer) = tensor.data() {
            let found = user.and_then(|u| u.find(buffer.as_ptr(), buffer.len()));
            if let (Some((id, segment, offset)), Some(shared)) = (found, user_shared.as_deref_mut())
            {
                if !shared.contains(&id) {
                    shared.push(id);
                    placed.new_segments.push(NewSegment {
                        id,
                        len: segment.len() as u64,
                        single_use: false,
                    });
                    placed.segments.push(segment);
                }
                placed.descs.push(TensorDesc {
                    name: name.clone(),
                    dtype,
                    shape,
                    segment: id,
                    offset: offset as u64,
                    len: buffer.len() as u64,
                });
                continue;
            }
        }
        let len = match tensor.data() {
            TensorData::Numeric(buffer) => buffer.len(),
            TensorData::Strings(_) => serialized_len_tensor(tensor),
        };
        let region = arena.alloc(len).map_err(|e| {
            Error::OutOfMemory(format!("no shared memory for tensor '{name}': {e}"))
        })?;
        // SAFETY: the region is fresh and not yet sent.
        let bytes = unsafe { region.bytes_mut() };
        match tensor.data() {
            TensorData::Numeric(buffer) => bytes.copy_from_slice(buffer),
            TensorData::Strings(_) => write_tensor(tensor, bytes)?,
        }
        if !lent.contains(&region.id) {
            lent.push(region.id);
            if let Some(segment) = arena.lend(&region) {
                placed.new_segments.push(NewSegment {
                    id: region.id,
                    len: segment.len() as u64,
                    single_use: region.single_use,
                });
                placed.segments.push(segment);
            }
        }
        placed.descs.push(TensorDesc {
            name: name.clone(),
            dtype,
            shape,
            segment: region.id,
            offset: region.offset as u64,
            len: len as u64,
        });
    }
    Ok(placed)
}

/// Maps the segments that arrived with a message (descriptors in the order
/// the header lists them).
pub fn map_arrived(
    peer: &mut PeerSegments,
    header: &Header,
    fds: Vec<OwnedFd>,
) -> std::result::Result<HashMap<SegmentId, (Arc<Segment>, bool)>, String> {
    if fds.len() != header.new_segments.len() {
        return Err(format!(
            "message announces {} segments but carries {} descriptors",
            header.new_segments.len(),
            fds.len()
        ));
    }
    let mut arrived = HashMap::new();
    for (new, fd) in header.new_segments.iter().zip(fds) {
        let len = usize::try_from(new.len).map_err(|_| format!("segment of {} bytes", new.len))?;
        let segment = peer
            .insert(new.id, fd, len, new.single_use)
            .map_err(|e| format!("cannot map segment {}: {e}", new.id))?;
        arrived.insert(new.id, (segment, new.single_use));
    }
    Ok(arrived)
}

/// Makes the tensors a message describes, as views of shared memory.
pub fn take(
    peer: &PeerSegments,
    arrived: &HashMap<SegmentId, (Arc<Segment>, bool)>,
    descs: Vec<TensorDesc>,
) -> std::result::Result<TensorMap, String> {
    let mut leases: HashMap<SegmentId, Arc<Lease>> = HashMap::new();
    let mut tensors = TensorMap::new();
    for desc in descs {
        let lease = match leases.get(&desc.segment) {
            Some(lease) => lease.clone(),
            None => {
                let (segment, single_use) = arrived
                    .get(&desc.segment)
                    .map(|(s, single)| (Some(s.clone()), *single))
                    .unwrap_or((None, false));
                let lease = peer
                    .lease(desc.segment, segment, single_use)
                    .ok_or_else(|| {
                        format!(
                            "tensor '{}' is in unknown segment {}",
                            desc.name, desc.segment
                        )
                    })?;
                leases.insert(desc.segment, lease.clone());
                lease
            }
        };
        let (offset, len) = (desc.offset as usize, desc.len as usize);
        // SAFETY: the sender wrote the region before sending and does not
        // touch it again until the lease is given back.
        let bytes = unsafe { lease.segment().bytes(offset, len) }.ok_or_else(|| {
            format!(
                "tensor '{}' at {offset}+{len} is outside its segment",
                desc.name
            )
        })?;
        let data = bytes.as_ptr();
        let owner: Arc<dyn std::any::Any + Send + Sync> = lease;
        // SAFETY: the lease keeps the mapping alive.
        let buffer = unsafe { Buffer::from_raw_parts(data, len, owner) };
        let tensor = if desc.dtype == DType::String {
            match deserialize(&buffer) {
                Ok(Serialized::Tensor(t)) if t.shape() == desc.shape.as_slice() => t,
                Ok(_) => {
                    return Err(format!(
                        "tensor '{}' is not the string tensor described",
                        desc.name
                    ))
                }
                Err(e) => return Err(format!("tensor '{}': {e}", desc.name)),
            }
        } else {
            Tensor::from_buffer(desc.dtype, desc.shape, buffer)
                .map_err(|e| format!("tensor '{}': {e}", desc.name))?
        };
        tensors.insert(desc.name, tensor);
    }
    Ok(tensors)
}

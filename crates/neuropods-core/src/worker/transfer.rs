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
use crate::tensor::{Buffer, DType, ForeignBuffer, Tensor, TensorData, TensorMap};

/// A message's tensors, placed.
#[derive(Default)]
pub struct Placed {
    /// Where each tensor is.
    pub descs: Vec<TensorDesc>,
    /// Segments the other side gets with this message.
    pub new_segments: Vec<NewSegment>,
    /// Their mappings, whose descriptors travel with the message.
    pub segments: Vec<Arc<Segment>>,
    /// Tensors sent where they already were (not copied), by segment.
    pub in_place: Vec<(SegmentId, String)>,
    /// Arena segments lent to the message (one loan each).
    pub lent: Vec<SegmentId>,
}

/// Shared memory that tensors may already be in: such a tensor is sent
/// where it is instead of being copied.
pub struct InPlace<'a> {
    /// The allocations to look in.
    pub segments: &'a UserSegments,
    /// Segments whose descriptors the other side keeps mapped (the
    /// caller's allocations, which a user fills again and again); None when
    /// it maps each anew and lets go with its last view (the worker's
    /// heap, each segment one framework allocation).
    pub peer_keeps: Option<&'a mut Vec<SegmentId>>,
}

/// Puts `tensors` into shared memory for one message: each is copied into
/// a region of `arena`, unless it is already in one of `in_place`'s
/// segments.
pub fn place(
    arena: &mut Arena,
    tensors: &TensorMap,
    mut in_place: Option<InPlace<'_>>,
) -> Result<Placed> {
    let mut placed = Placed::default();
    let result = place_each(arena, tensors, &mut in_place, &mut placed);
    if let Err(e) = result {
        // Nothing will be sent: take back what was lent and announced.
        let announced: Vec<SegmentId> = placed.new_segments.iter().map(|s| s.id).collect();
        arena.not_sent(&placed.lent, &announced, Vec::new());
        if let Some(kept) = in_place.and_then(|p| p.peer_keeps) {
            kept.retain(|id| !announced.contains(id));
        }
        return Err(e);
    }
    Ok(placed)
}

fn place_each(
    arena: &mut Arena,
    tensors: &TensorMap,
    in_place: &mut Option<InPlace<'_>>,
    placed: &mut Placed,
) -> Result<()> {
    for (name, tensor) in tensors {
        let (dtype, shape) = (tensor.dtype(), tensor.shape().to_vec());
        if let (Some((data, len)), Some(shared)) = (tensor.numeric_bytes(), in_place.as_mut()) {
            if let Some((id, segment, offset)) = shared.segments.find(data, len) {
                let announce = match shared.peer_keeps.as_deref_mut() {
                    Some(kept) if kept.contains(&id) => false,
                    Some(kept) => {
                        kept.push(id);
                        true
                    }
                    None => !placed.new_segments.iter().any(|s| s.id == id),
                };
                if announce {
                    placed.new_segments.push(NewSegment {
                        id,
                        len: segment.len() as u64,
                        single_use: shared.peer_keeps.is_none(),
                    });
                    placed.segments.push(segment);
                }
                placed.in_place.push((id, name.clone()));
                placed.descs.push(TensorDesc {
                    name: name.clone(),
                    dtype,
                    shape,
                    segment: id,
                    offset: offset as u64,
                    len: len as u64,
                });
                continue;
            }
        }
        let len = match tensor.numeric_bytes() {
            Some((_, len)) => len,
            None => serialized_len_tensor(tensor),
        };
        let region = arena.alloc(len).map_err(|e| {
            Error::OutOfMemory(format!("no shared memory for tensor '{name}': {e}"))
        })?;
        // SAFETY: the region is fresh and not yet sent.
        let bytes = unsafe { region.bytes_mut() };
        match tensor.data() {
            TensorData::Numeric(buffer) => bytes.copy_from_slice(buffer),
            TensorData::Foreign(buffer) => buffer.copy_to(bytes),
            TensorData::Strings(_) => write_tensor(tensor, bytes)?,
        }
        if !placed.lent.contains(&region.id) {
            placed.lent.push(region.id);
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
    Ok(())
}

/// Maps the segments that arrived with a message (descriptors in the order
/// the header lists them).
pub fn map_arrived(
    peer: &mut PeerSegments,
    header: &Header,
    fds: Vec<OwnedFd>,
) -> std::result::Result<HashMap<SegmentId, Arc<Segment>>, String> {
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
        arrived.insert(new.id, segment);
    }
    Ok(arrived)
}

/// Makes the tensors a message describes, as views of shared memory:
/// numeric ones are lent memory where `peer` maps segments writable (the
/// worker), frozen where it maps them read-only (the caller).
pub fn take(
    peer: &PeerSegments,
    arrived: &HashMap<SegmentId, Arc<Segment>>,
    descs: Vec<TensorDesc>,
) -> std::result::Result<TensorMap, String> {
    let mut leases: HashMap<SegmentId, Arc<Lease>> = HashMap::new();
    let mut tensors = TensorMap::new();
    for desc in descs {
        let lease = match leases.get(&desc.segment) {
            Some(lease) => lease.clone(),
            None => {
                let segment = arrived.get(&desc.segment).cloned();
                let lease = peer.lease(desc.segment, segment).ok_or_else(|| {
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
        let tensor = if desc.dtype == DType::String {
            // SAFETY: the lease keeps the mapping alive, and the sender
            // does not write a serialized string tensor until the lease is
            // given back, nor does anything here.
            let buffer = unsafe { Buffer::from_raw_parts(data, len, owner) };
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
        } else if peer.is_writable() {
            // The worker's side: inputs are lent memory. A model may work
            // in place on them, and an input the caller allocated in shared
            // memory is the caller's array, which it may write at any time.
            // SAFETY: the lease keeps the mapping alive.
            let lent = unsafe { ForeignBuffer::from_raw_parts(data.cast_mut(), len, owner) };
            Tensor::from_foreign(desc.dtype, desc.shape, lent)
                .map_err(|e| format!("tensor '{}': {e}", desc.name))?
        } else {
            // SAFETY: the lease keeps the mapping alive, and the bytes are
            // frozen while it does: the worker does not write its outputs
            // once sent, until the lease is given back, and this side maps
            // them read-only.
            let buffer = unsafe { Buffer::from_raw_parts(data, len, owner) };
            Tensor::from_buffer(desc.dtype, desc.shape, buffer)
                .map_err(|e| format!("tensor '{}': {e}", desc.name))?
        };
        tensors.insert(desc.name, tensor);
    }
    Ok(tensors)
}

//! The segments one side writes into and lends to the other.
//!
//! Small regions are carved one after another out of a pooled segment
//! (64-byte aligned), so a call with tiny tensors touches memory already
//! mapped on both sides and passes no descriptor. Each message that refers
//! to a segment is one loan; when the other side has given back every loan
//! (see [`crate::peer`]) the segment is empty again and reused from its
//! start. A region larger than [`SINGLE_USE_ABOVE`] gets a segment of its
//! own that this side forgets as soon as it is sent: the other side's
//! mapping keeps it alive exactly as long as it is used there.

use std::io;
use std::sync::Arc;

use crate::segment::Segment;

/// Names a segment between the two sides; the side that made it chose it.
pub type SegmentId = u64;

/// Regions start at multiples of this (any dtype, SIMD loads, and the
/// alignment numpy and the frameworks want).
pub const REGION_ALIGN: usize = 64;
/// Smallest pooled segment.
pub const MIN_SEGMENT: usize = 1 << 20;
/// Regions above this size get a single-use segment. Up to it, segments
/// are kept for reuse: a fresh segment costs a page fault per page on both
/// sides, more than copying into it (measured at 64 MB).
pub const SINGLE_USE_ABOVE: usize = 64 << 20;
/// Idle pooled segments beyond this many bytes are dropped.
pub const MAX_IDLE_BYTES: usize = 128 << 20;

/// Where a message's bytes were put.
#[derive(Clone, Debug)]
pub struct Region {
    /// The segment's id.
    pub id: SegmentId,
    /// The segment (this side's mapping).
    pub segment: Arc<Segment>,
    /// First byte of the region.
    pub offset: usize,
    /// Length asked for.
    pub len: usize,
    /// The segment holds only this region and is not kept here.
    pub single_use: bool,
}

impl Region {
    /// The region's bytes, to fill before the region is lent.
    ///
    /// # Safety
    /// Only before the region is sent: after that the other side reads it.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut(&self) -> &mut [u8] {
        // SAFETY: the arena made the region inside its own (writable)
        // segment, and the caller is its only user until it is sent.
        unsafe { self.segment.bytes_mut(self.offset, self.len) }.unwrap_or_default()
    }
}

struct Pooled {
    id: SegmentId,
    segment: Arc<Segment>,
    /// Next free byte.
    cursor: usize,
    /// Messages that refer to it and that the other side has not given back.
    loans: usize,
    /// The other side has its descriptor.
    shared: bool,
}

/// One side's own segments.
pub struct Arena {
    side_bit: SegmentId,
    next_id: SegmentId,
    pooled: Vec<Pooled>,
    /// Pooled segments dropped here; the other side should unmap them.
    forgotten: Vec<SegmentId>,
}

impl Arena {
    /// An empty arena. `side_bit` is or-ed into every id this side makes,
    /// so that the two sides' ids never collide.
    pub fn new(side_bit: SegmentId) -> Arena {
        Arena {
            side_bit,
            next_id: 1,
            pooled: Vec::new(),
            forgotten: Vec::new(),
        }
    }

    fn new_id(&mut self) -> SegmentId {
        let id = self.next_id | self.side_bit;
        self.next_id += 1;
        id
    }

    /// A region of `len` bytes (zero-filled if the segment is new; reused
    /// memory keeps what was last written there).
    pub fn alloc(&mut self, len: usize) -> io::Result<Region> {
        let size = len.max(1).div_ceil(REGION_ALIGN) * REGION_ALIGN;
        if size > SINGLE_USE_ABOVE {
            return Ok(Region {
                id: self.new_id(),
                segment: Arc::new(Segment::create(size)?),
                offset: 0,
                len,
                single_use: true,
            });
        }
        // First fit: a segment with room after its cursor.
        let found = self
            .pooled
            .iter()
            .position(|p| p.segment.len() - p.cursor >= size);
        let index = match found {
            Some(i) => i,
            None => {
                let capacity = size.next_power_of_two().max(MIN_SEGMENT);
                let id = self.new_id();
                self.pooled.push(Pooled {
                    id,
                    segment: Arc::new(Segment::create(capacity)?),
                    cursor: 0,
                    loans: 0,
                    shared: false,
                });
                self.pooled.len() - 1
            }
        };
        let Some(pooled) = self.pooled.get_mut(index) else {
            return Err(io::Error::other("arena index out of range"));
        };
        let offset = pooled.cursor;
        pooled.cursor += size;
        Ok(Region {
            id: pooled.id,
            segment: pooled.segment.clone(),
            offset,
            len,
            single_use: false,
        })
    }

    /// Records that one message about to be sent refers to segment `id`.
    /// Returns the segment if the other side does not have it yet (its
    /// descriptor must travel with the message).
    pub fn lend(&mut self, region: &Region) -> Option<Arc<Segment>> {
        if region.single_use {
            return Some(region.segment.clone());
        }
        let pooled = self.pooled.iter_mut().find(|p| p.id == region.id)?;
        pooled.loans += 1;
        if pooled.shared {
            None
        } else {
            pooled.shared = true;
            Some(pooled.segment.clone())
        }
    }

    /// The other side gave back one loan of segment `id` (unknown ids, such
    /// as single-use segments, are ignored).
    pub fn given_back(&mut self, id: SegmentId) {
        if let Some(pooled) = self.pooled.iter_mut().find(|p| p.id == id) {
            pooled.loans = pooled.loans.saturating_sub(1);
            if pooled.loans == 0 {
                pooled.cursor = 0;
            }
        }
        self.trim();
    }

    /// Ids of pooled segments dropped since the last call, which the other
    /// side should unmap.
    pub fn take_forgotten(&mut self) -> Vec<SegmentId> {
        std::mem::take(&mut self.forgotten)
    }

    /// Undoes a message that could not be sent: its loans (`lent`), the
    /// descriptors it would have shared (`announced`), and the ids taken by
    /// [`Arena::take_forgotten`] for it.
    pub fn not_sent(
        &mut self,
        lent: &[SegmentId],
        announced: &[SegmentId],
        forgotten: Vec<SegmentId>,
    ) {
        for pooled in &mut self.pooled {
            if announced.contains(&pooled.id) {
                pooled.shared = false;
            }
        }
        for &id in lent {
            self.given_back(id);
        }
        self.forgotten.extend(forgotten);
    }

    /// Bytes of pooled segments (lent or idle).
    pub fn pooled_bytes(&self) -> usize {
        self.pooled.iter().map(|p| p.segment.len()).sum()
    }

    fn trim(&mut self) {
        let mut idle: usize = 0;
        let mut forgotten = Vec::new();
        // Keeps the first idle segments up to the cap: the oldest, which
        // the other side most likely has mapped already.
        self.pooled.retain(|p| {
            if p.loans > 0 {
                return true;
            }
            idle += p.segment.len();
            let keep = idle <= MAX_IDLE_BYTES;
            if !keep && p.shared {
                forgotten.push(p.id);
            }
            keep
        });
        self.forgotten.extend(forgotten);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_regions_share_a_segment_until_it_is_given_back() {
        let mut arena = Arena::new(0);
        let a = arena.alloc(16).unwrap();
        assert!(arena.lend(&a).is_some(), "first use sends the descriptor");
        let b = arena.alloc(16).unwrap();
        assert!(arena.lend(&b).is_none(), "the other side has it already");
        assert_eq!((a.id, a.offset, b.offset), (b.id, 0, REGION_ALIGN));
        arena.given_back(a.id);
        let c = arena.alloc(16).unwrap();
        assert_eq!(c.offset, 2 * REGION_ALIGN, "one loan is still out");
        arena.given_back(a.id);
        arena.lend(&c);
        arena.given_back(a.id);
        assert_eq!(arena.alloc(16).unwrap().offset, 0, "all back: reused");
    }

    #[test]
    fn a_message_not_sent_takes_back_its_loan_and_its_descriptor() {
        let mut arena = Arena::new(0);
        let a = arena.alloc(16).unwrap();
        assert!(arena.lend(&a).is_some());
        arena.not_sent(&[a.id], &[a.id], vec![5]);
        assert_eq!(arena.take_forgotten(), vec![5]);
        let b = arena.alloc(16).unwrap();
        assert_eq!(b.offset, 0, "no loan is out");
        assert!(arena.lend(&b).is_some(), "the descriptor must travel again");
    }

    #[test]
    fn a_region_that_does_not_fit_opens_a_new_segment() {
        let mut arena = Arena::new(1 << 63);
        let a = arena.alloc(MIN_SEGMENT - 64).unwrap();
        arena.lend(&a);
        let b = arena.alloc(128).unwrap();
        assert_ne!(a.id, b.id);
        assert!(a.id & (1 << 63) != 0);
    }

    #[test]
    fn large_regions_are_single_use_and_not_kept() {
        let mut arena = Arena::new(0);
        let big = arena.alloc(SINGLE_USE_ABOVE + 1).unwrap();
        assert!(big.single_use);
        assert!(arena.lend(&big).is_some());
        assert_eq!(arena.pooled_bytes(), 0);
    }

    #[test]
    fn idle_segments_beyond_the_cap_are_forgotten() {
        let mut arena = Arena::new(0);
        let mut regions = Vec::new();
        for _ in 0..4 {
            let r = arena.alloc(SINGLE_USE_ABOVE).unwrap();
            arena.lend(&r);
            regions.push(r);
        }
        for r in &regions {
            arena.given_back(r.id);
        }
        assert!(arena.pooled_bytes() <= MAX_IDLE_BYTES);
        assert_eq!(arena.take_forgotten().len(), 2);
    }
}

//! Allocations in shared memory whose tensors are sent where they are,
//! without a copy: the caller's (`Neuropod::allocate`, inputs) and the
//! worker's heap (`super::heap`, a framework's large outputs).

use std::any::Any;
use std::sync::{Arc, Mutex, Weak};

use neuropods_ope::arena::SegmentId;
use neuropods_ope::Segment;

/// Ids of the caller's allocations: apart from its arena's (low ids), the
/// worker's arena (top bit) and the worker's heap (both bits).
const USER_SIDE: SegmentId = 1 << 62;

/// Writable memory for one tensor, from [`crate::Neuropod::allocate`]: in
/// shared memory for a model in a worker, on the heap otherwise.
pub struct Allocation {
    ptr: *mut u8,
    len: usize,
    owner: Arc<dyn Any + Send + Sync>,
}

// SAFETY: the memory is plain bytes owned by `owner`, which is Send + Sync.
unsafe impl Send for Allocation {}
// SAFETY: as for Send; `&Allocation` hands out only its raw pointer.
unsafe impl Sync for Allocation {}

impl Allocation {
    pub(crate) fn new(ptr: *mut u8, len: usize, owner: Arc<dyn Any + Send + Sync>) -> Allocation {
        Allocation { ptr, len, owner }
    }

    /// First byte (64-byte aligned).
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What keeps the memory alive (hand it to whoever views the memory,
    /// e.g. a numpy array's base).
    pub fn owner(&self) -> &Arc<dyn Any + Send + Sync> {
        &self.owner
    }
}

/// One allocation's segment; when the last view of it goes, the other side
/// is told to unmap it.
struct UserSegment {
    id: SegmentId,
    segment: Arc<Segment>,
    registry: Weak<UserSegments>,
}

impl Drop for UserSegment {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            let mut inner = registry.lock();
            inner.live.retain(|(id, _)| *id != self.id);
            inner.dropped.push(self.id);
        }
    }
}

struct Inner {
    side: SegmentId,
    next: SegmentId,
    live: Vec<(SegmentId, Weak<UserSegment>)>,
    dropped: Vec<SegmentId>,
}

/// One side's allocations: the caller's (`Neuropod::allocate`) or the
/// worker's heap (`super::heap`).
pub struct UserSegments {
    inner: Mutex<Inner>,
}

impl Default for UserSegments {
    fn default() -> Self {
        UserSegments::new(USER_SIDE)
    }
}

impl UserSegments {
    /// No allocations yet; ids get the `side` bits.
    pub fn new(side: SegmentId) -> UserSegments {
        UserSegments {
            inner: Mutex::new(Inner {
                side,
                next: 0,
                live: Vec::new(),
                dropped: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new zero-filled allocation of `len` bytes in its own segment.
    pub fn allocate(self: &Arc<Self>, len: usize) -> std::io::Result<Allocation> {
        let segment = Arc::new(Segment::create(len)?);
        let mut inner = self.lock();
        inner.next += 1;
        let id = inner.next | inner.side;
        let user = Arc::new(UserSegment {
            id,
            segment: segment.clone(),
            registry: Arc::downgrade(self),
        });
        inner.live.push((id, Arc::downgrade(&user)));
        Ok(Allocation::new(segment.as_ptr(), len, user))
    }

    /// The allocation holding `[ptr, ptr + len)`, if any: its id, segment
    /// and the offset of `ptr` in it.
    pub fn find(&self, ptr: *const u8, len: usize) -> Option<(SegmentId, Arc<Segment>, usize)> {
        // Upgraded outside the lock: dropping the last reference to an
        // allocation takes the lock.
        let candidates = self.lock().live.clone();
        candidates.iter().find_map(|(id, user)| {
            let user = user.upgrade()?;
            let offset = user.segment.offset_of(ptr, len)?;
            Some((*id, user.segment.clone(), offset))
        })
    }

    /// Allocations dropped since the last call.
    pub fn take_dropped(&self) -> Vec<SegmentId> {
        std::mem::take(&mut self.lock().dropped)
    }
}

//! The worker's shared heap: where a backend puts its large allocations
//! (see [`SharedAllocatorRef`]), so that an output the framework allocated
//! there is sent to the caller where it is, with no copy. The output is
//! kept alive in the worker until the caller gives its loan back.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

use super::shared::{Allocation, UserSegments};
use crate::backend::abi::SharedAllocatorRef;

/// Ids of the worker's heap segments: apart from the caller's (arena: low
/// ids; allocations: bit 62) and the worker's arena (bit 63).
const HEAP_SIDE: u64 = (1 << 63) | (1 << 62);
/// Allocations smaller than this stay with the framework's allocator: a
/// copy of them costs less than a segment of their own.
const MIN_BYTES: usize = 1 << 20;
/// Freed segments kept for reuse, at most this many bytes: a model's
/// outputs have the same sizes call after call, and reusing their segments
/// spares a page fault per page (measured: 64 MB outputs took 2x longer
/// on fresh segments than on reused ones).
const CACHED_BYTES: usize = 256 << 20;

/// The worker's heap segments, and the allocations the backend holds.
pub struct SharedHeap {
    segments: Arc<UserSegments>,
    held: Mutex<HashMap<usize, Allocation>>,
    /// Freed allocations, newest last; none is in use anywhere (an output
    /// is freed only after the caller gave it back and unmapped it).
    free: Mutex<Vec<Allocation>>,
}

impl SharedHeap {
    /// The process's heap (frameworks' allocators are process-wide).
    pub fn get() -> &'static SharedHeap {
        static HEAP: OnceLock<SharedHeap> = OnceLock::new();
        HEAP.get_or_init(|| SharedHeap {
            segments: Arc::new(UserSegments::new(HEAP_SIDE)),
            held: Mutex::default(),
            free: Mutex::default(),
        })
    }

    /// Its segments, to find outputs in.
    pub fn segments(&self) -> &UserSegments {
        &self.segments
    }

    /// What a backend is given.
    pub fn allocator(&'static self) -> SharedAllocatorRef {
        SharedAllocatorRef {
            ctx: self as *const SharedHeap as *mut c_void,
            allocate: Some(allocate),
            release: Some(release),
            min_bytes: MIN_BYTES,
        }
    }
}

unsafe extern "C" fn allocate(ctx: *mut c_void, len: usize) -> *mut u8 {
    // SAFETY: ctx is the static heap (see `allocator`).
    let heap = unsafe { &*(ctx as *const SharedHeap) };
    let reused = {
        let mut free = heap.free.lock().unwrap_or_else(|p| p.into_inner());
        free.iter()
            .rposition(|a| a.len() == len)
            .map(|i| free.swap_remove(i))
    };
    match reused
        .map(Ok)
        .unwrap_or_else(|| heap.segments.allocate(len))
    {
        Ok(allocation) => {
            let ptr = allocation.as_mut_ptr();
            heap.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(ptr as usize, allocation);
            ptr
        }
        // The backend falls back to its own allocator.
        Err(_) => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn release(ctx: *mut c_void, ptr: *mut u8) {
    // SAFETY: as in `allocate`.
    let heap = unsafe { &*(ctx as *const SharedHeap) };
    let allocation = heap
        .held
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&(ptr as usize));
    let Some(allocation) = allocation else {
        return;
    };
    let mut free = heap.free.lock().unwrap_or_else(|p| p.into_inner());
    free.push(allocation);
    // The oldest go first, dropped outside the lock (unmapping takes a while).
    let mut cached: usize = free.iter().map(Allocation::len).sum();
    let mut dropped = Vec::new();
    while cached > CACHED_BYTES && !free.is_empty() {
        let oldest = free.remove(0);
        cached -= oldest.len();
        dropped.push(oldest);
    }
    drop(free);
    drop(dropped);
}

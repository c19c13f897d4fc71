//! In an out-of-process worker, libtorch's large CPU allocations go to the
//! core's shared heap (cpp/shared_allocator.cpp), so outputs need no copy
//! on their way to the caller.

use std::ffi::c_void;

use neuropods_abi::abi::SharedAllocatorRef;

type Allocate = unsafe extern "C" fn(ctx: *mut c_void, len: usize) -> *mut u8;
type Release = unsafe extern "C" fn(ctx: *mut c_void, ptr: *mut u8);

extern "C" {
    fn npt_use_shared_allocator(
        ctx: *mut c_void,
        allocate: Allocate,
        release: Release,
        min_bytes: usize,
    );
}

/// Routes libtorch's CPU allocator to `shared` (process-wide, once).
pub fn install(shared: &SharedAllocatorRef) {
    if let (Some(allocate), Some(release)) = (shared.allocate, shared.release) {
        // SAFETY: the functions and ctx stay valid for the life of the
        // process (the core's heap is static), and may be called from any
        // thread.
        unsafe { npt_use_shared_allocator(shared.ctx, allocate, release, shared.min_bytes) };
    }
}

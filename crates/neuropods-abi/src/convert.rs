//! Tensors to and from their ABI form; used on both sides of the boundary.

use std::any::Any;
use std::ffi::c_void;
use std::sync::Arc;

use crate::abi::{OwnedTensor, StrRef, TensorRef, TENSOR_LENT};
use crate::error::{Error, Result};
use crate::tensor::{Buffer, DType, ForeignBuffer, Tensor, TensorData};

/// The parts a [`TensorRef`] points into; must outlive the reference.
#[derive(Default)]
pub struct RefParts {
    shape: Vec<u64>,
    strings: Vec<StrRef>,
}

/// Describes `tensor` as a [`TensorRef`] pointing into it and into `parts`.
pub fn tensor_ref(name: &str, tensor: &Tensor, parts: &mut RefParts) -> TensorRef {
    parts.shape = tensor.shape().iter().map(|&d| d as u64).collect();
    let (data, nbytes) = tensor.numeric_bytes().unwrap_or((std::ptr::null(), 0));
    let flags = match tensor.data() {
        TensorData::Foreign(_) => TENSOR_LENT,
        TensorData::Numeric(_) | TensorData::Strings(_) => 0,
    };
    parts.strings = match tensor.data() {
        TensorData::Strings(s) => s.iter().map(|s| StrRef::new(s)).collect(),
        TensorData::Numeric(_) | TensorData::Foreign(_) => Vec::new(),
    };
    TensorRef {
        name: StrRef::new(name),
        dtype: tensor.dtype().code(),
        shape: parts.shape.as_ptr(),
        rank: parts.shape.len(),
        data,
        nbytes,
        flags,
        strings: if parts.strings.is_empty() {
            std::ptr::null()
        } else {
            parts.strings.as_ptr()
        },
        nstrings: parts.strings.len(),
    }
}

/// Reads a [`TensorRef`] back. Numeric data is not copied: the tensor's
/// buffer points at `r.data` and holds `owner`, frozen or lent as
/// `r.flags` says. Strings are copied.
///
/// # Safety
/// Every pointer in `r` must be valid for its length while `owner` lives.
pub unsafe fn tensor_from_ref(
    r: &TensorRef,
    owner: Arc<dyn Any + Send + Sync>,
) -> Result<(String, Tensor)> {
    // SAFETY: the pointers in `r` are valid for their
    // lengths while `owner` lives, the caller's contract.
    let name = String::from_utf8(unsafe { r.name.as_bytes() }.to_vec())
        .map_err(|_| Error::InvalidInput("tensor name is not valid UTF-8".into()))?;
    let dtype = DType::from_code(r.dtype).ok_or_else(|| {
        Error::Internal(format!("tensor '{name}': unknown dtype code {}", r.dtype))
    })?;
    let shape: Vec<usize> = if r.rank == 0 {
        Vec::new()
    } else {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts(r.shape, r.rank) }
            .iter()
            .map(|&d| d as usize)
            .collect()
    };
    let tensor = if dtype == DType::String {
        let refs: &[StrRef] = if r.nstrings == 0 {
            &[]
        } else {
            // SAFETY: as above.
            unsafe { std::slice::from_raw_parts(r.strings, r.nstrings) }
        };
        let strings = refs
            .iter()
            .map(|s| {
                // SAFETY: as above; each string is copied at once.
                String::from_utf8(unsafe { s.as_bytes() }.to_vec()).map_err(|_| {
                    Error::InvalidInput(format!("string tensor '{name}' holds invalid UTF-8"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::from_strings(shape, strings)?
    } else if r.flags & TENSOR_LENT != 0 {
        // SAFETY: as above; the sender says the bytes are lent, so they
        // are never read here through a reference.
        let buffer = unsafe { ForeignBuffer::from_raw_parts(r.data.cast_mut(), r.nbytes, owner) };
        Tensor::from_foreign(dtype, shape, buffer)?
    } else {
        // SAFETY: as above; without TENSOR_LENT the sender promises that
        // nobody writes the bytes while the owner lives.
        let buffer = unsafe { Buffer::from_raw_parts(r.data, r.nbytes, owner) };
        Tensor::from_buffer(dtype, shape, buffer)?
    };
    Ok((name, tensor))
}

struct Exported {
    _data: TensorData,
    _parts: RefParts,
}

unsafe extern "C" fn release_exported(owner: *mut c_void) {
    // SAFETY: `owner` is the box `export_tensor` made, released once by the
    // receiver (the ABI's contract).
    drop(unsafe { Box::from_raw(owner as *mut Exported) });
}

/// Hands a tensor across the boundary; the receiver releases it. The name is
/// only borrowed: the receiver reads it during the call (the sink callback,
/// or `infer` for inputs).
pub fn export_tensor(name: &str, tensor: &Tensor) -> OwnedTensor {
    let mut parts = RefParts::default();
    let tensor_ref = tensor_ref(name, tensor, &mut parts);
    // The box holds a share of the data (an Arc clone: no bytes or strings
    // copied) and the parts; moving them into it moves no heap data, so the
    // pointers in `tensor_ref` stay valid until release.
    let owner = Box::new(Exported {
        _data: tensor.data().clone(),
        _parts: parts,
    });
    OwnedTensor {
        tensor: tensor_ref,
        owner: Box::into_raw(owner) as *mut c_void,
        release: release_exported,
    }
}

/// Calls an [`OwnedTensor`]'s release function when dropped.
struct ForeignOwner {
    owner: *mut c_void,
    release: unsafe extern "C" fn(*mut c_void),
}

// SAFETY: the ABI requires owners to be releasable from any thread.
unsafe impl Send for ForeignOwner {}
// SAFETY: shared references only reach `Drop`, which runs once.
unsafe impl Sync for ForeignOwner {}

impl Drop for ForeignOwner {
    fn drop(&mut self) {
        // SAFETY: released exactly once, here.
        unsafe { (self.release)(self.owner) }
    }
}

/// An [`OwnedTensor`] taken over: its owner is released when the last
/// tensor made from it (see [`import_tensor`]) is dropped, or when this is
/// dropped unread.
pub struct TakenTensor {
    tensor: TensorRef,
    owner: Arc<ForeignOwner>,
}

/// Takes over an [`OwnedTensor`]; from here on it is released exactly once,
/// whatever happens.
///
/// # Safety
/// `t` must come from the other side of the ABI and not have been released
/// or taken before.
pub unsafe fn take_ownership(t: &OwnedTensor) -> TakenTensor {
    TakenTensor {
        tensor: t.tensor,
        owner: Arc::new(ForeignOwner {
            owner: t.owner,
            release: t.release,
        }),
    }
}

/// Reads a taken tensor: numeric data stays where it is, kept alive through
/// the release function for as long as any buffer sharing it lives; strings
/// are copied, and the owner released at once.
///
/// # Safety
/// The pointers in the tensor must be valid until its owner is released.
pub unsafe fn import_tensor(t: TakenTensor) -> Result<(String, Tensor)> {
    // SAFETY: the caller's contract, and the owner goes with the tensor.
    unsafe { tensor_from_ref(&t.tensor, t.owner) }
}

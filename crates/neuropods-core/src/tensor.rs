//! Tensors: a dtype, a shape and storage. Numeric storage is a [`Buffer`]:
//! bytes that are either owned by Neuropods or borrowed from someone else
//! (numpy, libtorch, a serialized blob) and kept alive by an owner handle, so
//! data crosses layers without copies.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, Range};
use std::ptr::NonNull;
use std::sync::Arc;

pub use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::spec::Shaped;

/// Alignment of buffers that Neuropods allocates itself.
pub const BUFFER_ALIGN: usize = 64;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct AlignedChunk([u8; BUFFER_ALIGN]);

/// Immutable bytes plus whatever keeps them alive.
///
/// Cloning and slicing share the owner; the bytes are never written through a
/// `Buffer`, which is why it may be shared across threads.
#[derive(Clone)]
pub struct Buffer {
    ptr: NonNull<u8>,
    len: usize,
    owner: Arc<dyn Any + Send + Sync>,
}

// SAFETY: the bytes are immutable for the life of the buffer and the owner is
// itself Send + Sync.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

impl Buffer {
    /// Takes ownership of a vector without copying it.
    pub fn from_vec<T: Element>(data: Vec<T>) -> Buffer {
        let len = std::mem::size_of_val(data.as_slice());
        let ptr = NonNull::new(data.as_ptr() as *mut u8).unwrap_or(NonNull::dangling());
        Buffer {
            ptr,
            len,
            owner: Arc::new(data),
        }
    }

    /// Copies bytes into a new buffer aligned to [`BUFFER_ALIGN`].
    pub fn copy_from_slice(bytes: &[u8]) -> Buffer {
        let mut buffer = AlignedBufferWriter::new(bytes.len());
        buffer.as_mut_slice().copy_from_slice(bytes);
        buffer.finish()
    }

    /// Wraps memory owned by someone else.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that stay valid and unchanged
    /// for as long as `owner` is alive.
    pub unsafe fn from_raw_parts(
        ptr: *const u8,
        len: usize,
        owner: Arc<dyn Any + Send + Sync>,
    ) -> Buffer {
        Buffer {
            ptr: NonNull::new(ptr as *mut u8).unwrap_or(NonNull::dangling()),
            len,
            owner,
        }
    }

    /// A sub-range sharing this buffer's owner; `None` if out of bounds.
    pub fn slice(&self, range: Range<usize>) -> Option<Buffer> {
        if range.start > range.end || range.end > self.len {
            return None;
        }
        Some(Buffer {
            // SAFETY: in bounds, checked above.
            ptr: unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(range.start)) },
            len: range.end - range.start,
            owner: self.owner.clone(),
        })
    }

    /// Address of the first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Whether the data may be read as elements of `align` bytes in place.
    pub fn is_aligned_to(&self, align: usize) -> bool {
        align == 0 || (self.ptr.as_ptr() as usize).is_multiple_of(align)
    }

    /// Whether `ptr` points into this buffer's bytes (or is its address,
    /// for an empty one).
    pub fn contains(&self, ptr: *const u8) -> bool {
        let (ptr, start) = (ptr as usize, self.ptr.as_ptr() as usize);
        ptr >= start && ptr < start + self.len.max(1)
    }

    /// The owner handle (for layers that hand the memory on, e.g. to numpy).
    pub fn owner(&self) -> &Arc<dyn Any + Send + Sync> {
        &self.owner
    }
}

impl Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr/len describe live bytes kept alive by `owner`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buffer({} bytes)", self.len)
    }
}

/// A zero-filled, [`BUFFER_ALIGN`]-aligned allocation that is written once,
/// then frozen into a [`Buffer`].
pub struct AlignedBufferWriter {
    chunks: Vec<AlignedChunk>,
    len: usize,
}

impl AlignedBufferWriter {
    /// Allocates `len` zeroed bytes.
    pub fn new(len: usize) -> Self {
        let chunks = vec![AlignedChunk([0; BUFFER_ALIGN]); len.div_ceil(BUFFER_ALIGN)];
        AlignedBufferWriter { chunks, len }
    }

    /// The bytes to fill.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the chunks hold at least `len` contiguous bytes.
        unsafe { std::slice::from_raw_parts_mut(self.chunks.as_mut_ptr() as *mut u8, self.len) }
    }

    /// Freezes the bytes.
    pub fn finish(self) -> Buffer {
        let ptr = self.chunks.as_ptr() as *const u8;
        let len = self.len;
        // SAFETY: the Vec's heap block does not move when the Vec is moved
        // into the Arc, and it is never written again.
        unsafe { Buffer::from_raw_parts(ptr, len, Arc::new(self.chunks)) }
    }
}

/// The elements of a tensor.
#[derive(Clone, Debug)]
pub enum TensorData {
    /// Little-endian (native) numeric elements, row-major.
    Numeric(Buffer),
    /// Strings, row-major; shared, so that cloning a tensor (e.g. to hand it
    /// to a backend) copies no string.
    Strings(Arc<Vec<String>>),
}

/// A dense, row-major tensor on the CPU.
#[derive(Clone, Debug)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: TensorData,
}

/// Tensors by name; the form of model inputs and outputs.
pub type TensorMap = BTreeMap<String, Tensor>;

/// Number of elements of a shape, or `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Most dimensions a tensor may have (numpy's limit since 2.0).
pub const MAX_RANK: usize = 64;

/// The widest element any layer may store per element (numpy's
/// variable-width strings take 16 bytes), for [`check_shape`].
const WIDEST_ELEMENT: usize = 16;

/// Checks that a shape can describe memory in every layer it may reach: at
/// most [`MAX_RANK`] dims, and the product of its non-zero dims, at the
/// widest element size, within `isize::MAX` bytes. A zero dim makes a tensor
/// empty, but numpy and the frameworks still size strides from the other
/// dims, and refuse (or overflow on) shapes like `[0, 2^63]`.
pub fn check_shape(shape: &[usize]) -> Result<()> {
    if shape.len() > MAX_RANK {
        return Err(Error::InvalidInput(format!(
            "rank {} is more than the {MAX_RANK} dimensions a tensor may have",
            shape.len()
        )));
    }
    let extent = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(WIDEST_ELEMENT, |acc, &d| acc.checked_mul(d))
        .filter(|&bytes| isize::try_from(bytes).is_ok());
    if extent.is_none() {
        let shown = shape.get(..8).unwrap_or(shape);
        return Err(Error::InvalidInput(format!(
            "shape {shown:?}{} is too large to describe memory",
            if shape.len() > 8 { "..." } else { "" }
        )));
    }
    Ok(())
}

impl Tensor {
    /// A numeric tensor taking ownership of `data`.
    pub fn from_vec<T: Element>(shape: Vec<usize>, data: Vec<T>) -> Result<Tensor> {
        Tensor::from_buffer(T::DTYPE, shape, Buffer::from_vec(data))
    }

    /// A numeric tensor over a buffer; checks that sizes agree.
    pub fn from_buffer(dtype: DType, shape: Vec<usize>, buffer: Buffer) -> Result<Tensor> {
        let item = dtype.item_size().ok_or_else(|| {
            Error::InvalidInput("a string tensor cannot be made from a byte buffer".into())
        })?;
        check_shape(&shape)?;
        let expected = checked_numel(&shape)
            .and_then(|n| n.checked_mul(item))
            .ok_or_else(|| Error::InvalidInput(format!("shape {shape:?} is too large")))?;
        if expected != buffer.len() {
            return Err(Error::InvalidInput(format!(
                "{dtype} tensor of shape {shape:?} needs {expected} bytes, got {}",
                buffer.len()
            )));
        }
        // Reading any other byte as a Rust `bool` is undefined behaviour.
        if dtype == DType::Bool {
            if let Some((i, b)) = buffer.iter().enumerate().find(|(_, &b)| b > 1) {
                return Err(Error::InvalidInput(format!(
                    "bool element {i} is {b}, not 0 or 1"
                )));
            }
        }
        Ok(Tensor {
            dtype,
            shape,
            data: TensorData::Numeric(buffer),
        })
    }

    /// A string tensor.
    pub fn from_strings(shape: Vec<usize>, strings: Vec<String>) -> Result<Tensor> {
        check_shape(&shape)?;
        if checked_numel(&shape) != Some(strings.len()) {
            return Err(Error::InvalidInput(format!(
                "string tensor of shape {shape:?} needs {} elements, got {}",
                checked_numel(&shape).map_or("too many".to_string(), |n| n.to_string()),
                strings.len()
            )));
        }
        Ok(Tensor {
            dtype: DType::String,
            shape,
            data: TensorData::Strings(Arc::new(strings)),
        })
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        match &self.data {
            TensorData::Strings(s) => s.len(),
            TensorData::Numeric(b) => b.len() / self.dtype.item_size().unwrap_or(1),
        }
    }

    /// The storage.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The numeric storage, if numeric.
    pub fn buffer(&self) -> Option<&Buffer> {
        match &self.data {
            TensorData::Numeric(b) => Some(b),
            TensorData::Strings(_) => None,
        }
    }

    /// The strings, if a string tensor.
    pub fn strings(&self) -> Option<&[String]> {
        match &self.data {
            TensorData::Strings(s) => Some(s.as_slice()),
            TensorData::Numeric(_) => None,
        }
    }

    /// Rows `range` of the first dimension, sharing this tensor's memory
    /// (strings are copied). Fails on a rank-0 tensor or a range past the
    /// end.
    pub fn rows(&self, range: Range<usize>) -> Result<Tensor> {
        let (&count, rest) = self
            .shape
            .split_first()
            .ok_or_else(|| Error::InvalidInput("a scalar tensor has no rows".into()))?;
        if range.start > range.end || range.end > count {
            return Err(Error::InvalidInput(format!(
                "rows {range:?} of a tensor with {count} rows"
            )));
        }
        let row_elements = checked_numel(rest).unwrap_or(0);
        let mut shape = self.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = range.end - range.start;
        }
        let elements = range.start * row_elements..range.end * row_elements;
        let data = match &self.data {
            TensorData::Numeric(buffer) => {
                let item = self.dtype.item_size().unwrap_or(1);
                let bytes = elements.start * item..elements.end * item;
                TensorData::Numeric(buffer.slice(bytes).ok_or_else(|| {
                    Error::Internal("tensor buffer shorter than its shape".into())
                })?)
            }
            TensorData::Strings(strings) => TensorData::Strings(Arc::new(
                strings
                    .get(elements)
                    .ok_or_else(|| Error::Internal("fewer strings than the shape".into()))?
                    .to_vec(),
            )),
        };
        Ok(Tensor {
            dtype: self.dtype,
            shape,
            data,
        })
    }

    /// Stacks tensors of one dtype and one shape past the first dimension
    /// along the first dimension (what a batch of requests becomes).
    pub fn concat_rows(parts: &[&Tensor]) -> Result<Tensor> {
        let first = parts
            .first()
            .ok_or_else(|| Error::InvalidInput("nothing to concatenate".into()))?;
        let trailing = first.shape.get(1..).ok_or_else(|| {
            Error::InvalidInput("a scalar tensor has no rows to concatenate".into())
        })?;
        let mut rows = 0usize;
        for part in parts {
            if part.dtype != first.dtype || part.shape.get(1..) != Some(trailing) {
                return Err(Error::InvalidInput(format!(
                    "cannot concatenate a {} tensor of shape {:?} with a {} tensor of shape {:?}",
                    first.dtype, first.shape, part.dtype, part.shape
                )));
            }
            rows = rows.saturating_add(part.shape.first().copied().unwrap_or(0));
        }
        let mut shape = first.shape.clone();
        if let Some(first_dim) = shape.first_mut() {
            *first_dim = rows;
        }
        match first.dtype {
            DType::String => {
                let strings = parts
                    .iter()
                    .flat_map(|part| part.strings().unwrap_or_default().iter().cloned())
                    .collect();
                Tensor::from_strings(shape, strings)
            }
            dtype => {
                check_shape(&shape)?;
                let len = parts
                    .iter()
                    .map(|part| part.buffer().map_or(0, |b| b.len()))
                    .sum();
                let mut writer = AlignedBufferWriter::new(len);
                let mut at = 0;
                for part in parts {
                    let bytes = part.buffer().map_or(&[][..], |b| &b[..]);
                    if let Some(target) = writer.as_mut_slice().get_mut(at..at + bytes.len()) {
                        target.copy_from_slice(bytes);
                    }
                    at += bytes.len();
                }
                Tensor::from_buffer(dtype, shape, writer.finish())
            }
        }
    }

    /// The elements as a typed slice; fails on a dtype mismatch or on memory
    /// that is not aligned for `T` (borrowed memory can be unaligned).
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        if T::DTYPE != self.dtype {
            return Err(Error::InvalidInput(format!(
                "tensor is {}, not {}",
                self.dtype,
                T::DTYPE
            )));
        }
        let buffer = self
            .buffer()
            .ok_or_else(|| Error::InvalidInput("string tensors have no numeric elements".into()))?;
        if !buffer.is_aligned_to(std::mem::align_of::<T>()) {
            return Err(Error::InvalidInput(format!(
                "{} data is not aligned for reading in place",
                self.dtype
            )));
        }
        // SAFETY: dtype matches T, the length is a multiple of size_of::<T>
        // and bool bytes are 0 or 1 (both checked at construction), and
        // alignment was checked above.
        Ok(unsafe {
            std::slice::from_raw_parts(
                buffer.as_ptr() as *const T,
                buffer.len() / std::mem::size_of::<T>(),
            )
        })
    }
}

impl Shaped for Tensor {
    fn dtype(&self) -> DType {
        self.dtype()
    }

    fn shape(&self) -> &[usize] {
        self.shape()
    }
}

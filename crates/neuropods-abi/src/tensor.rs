//! Tensors: a dtype, a shape and storage. Numeric storage is bytes kept
//! alive by an owner handle, owned by Neuropods or borrowed from someone
//! else (numpy, libtorch, a serialized blob), so data crosses layers without
//! copies. Its type says who may write it: a [`Buffer`] is frozen (nobody
//! writes it; Rust reads it in place), a [`ForeignBuffer`] is lent by an
//! owner who may write it meanwhile (Rust reads it only through a copy).

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

/// Where some bytes are and what keeps them alive; the part that
/// [`Buffer`] and [`ForeignBuffer`] share (they differ in who may write).
#[derive(Clone)]
struct Region {
    ptr: NonNull<u8>,
    len: usize,
    owner: Arc<dyn Any + Send + Sync>,
}

impl Region {
    fn new(ptr: *const u8, len: usize, owner: Arc<dyn Any + Send + Sync>) -> Region {
        Region {
            ptr: NonNull::new(ptr.cast_mut()).unwrap_or(NonNull::dangling()),
            len,
            owner,
        }
    }

    fn slice(&self, range: Range<usize>) -> Option<Region> {
        if range.start > range.end || range.end > self.len {
            return None;
        }
        Some(Region {
            // SAFETY: in bounds, checked above.
            ptr: unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(range.start)) },
            len: range.end - range.start,
            owner: self.owner.clone(),
        })
    }

    fn is_aligned_to(&self, align: usize) -> bool {
        align == 0 || (self.ptr.as_ptr() as usize).is_multiple_of(align)
    }

    fn contains(&self, ptr: *const u8) -> bool {
        let (ptr, start) = (ptr as usize, self.ptr.as_ptr() as usize);
        ptr >= start && ptr < start + self.len.max(1)
    }
}

/// Frozen bytes plus whatever keeps them alive: nobody writes them while a
/// `Buffer` over them lives, which is why Rust may read them in place (it
/// derefs to `[u8]`) and why it may be shared across threads.
///
/// Cloning and slicing share the owner. Memory that someone else may write
/// meanwhile (a caller's numpy array) is a [`ForeignBuffer`] instead.
#[derive(Clone)]
pub struct Buffer(Region);

// SAFETY: the bytes are immutable for the life of the buffer and the owner is
// itself Send + Sync.
unsafe impl Send for Buffer {}
// SAFETY: as for Send: shared access only ever reads immutable bytes.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// Takes ownership of a vector without copying it.
    pub fn from_vec<T: Element>(data: Vec<T>) -> Buffer {
        let len = std::mem::size_of_val(data.as_slice());
        let ptr = data.as_ptr() as *const u8;
        // The Vec's heap block does not move when the Vec moves into the Arc.
        Buffer(Region::new(ptr, len, Arc::new(data)))
    }

    /// Copies bytes into a new buffer aligned to [`BUFFER_ALIGN`].
    pub fn copy_from_slice(bytes: &[u8]) -> Buffer {
        let mut buffer = AlignedBufferWriter::new(bytes.len());
        buffer.as_mut_slice().copy_from_slice(bytes);
        buffer.finish()
    }

    /// Copies `len` bytes at `ptr` into a new buffer aligned to
    /// [`BUFFER_ALIGN`], through raw pointers: the bytes may be lent memory
    /// (an output that aliases a caller's input), which Rust never reads
    /// through a reference.
    ///
    /// # Safety
    /// `ptr` must point to `len` bytes that stay valid during the call.
    pub unsafe fn copy_from_raw(ptr: *const u8, len: usize) -> Buffer {
        let mut buffer = AlignedBufferWriter::new(len);
        let target = buffer.as_mut_slice();
        // SAFETY: the caller's contract; `target` is a fresh allocation of
        // `len` bytes, so the two cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(ptr, target.as_mut_ptr(), len) };
        buffer.finish()
    }

    /// Wraps frozen memory owned by someone else.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that stay valid and unchanged
    /// for as long as `owner` is alive: nobody, in this process or another,
    /// may write them meanwhile. Memory that may be written is a
    /// [`ForeignBuffer`].
    pub unsafe fn from_raw_parts(
        ptr: *const u8,
        len: usize,
        owner: Arc<dyn Any + Send + Sync>,
    ) -> Buffer {
        Buffer(Region::new(ptr, len, owner))
    }

    /// A sub-range sharing this buffer's owner; `None` if out of bounds.
    pub fn slice(&self, range: Range<usize>) -> Option<Buffer> {
        self.0.slice(range).map(Buffer)
    }

    /// Address of the first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.0.ptr.as_ptr()
    }

    /// Whether the data may be read as elements of `align` bytes in place.
    pub fn is_aligned_to(&self, align: usize) -> bool {
        self.0.is_aligned_to(align)
    }

    /// Whether `ptr` points into this buffer's bytes (or is its address,
    /// for an empty one).
    pub fn contains(&self, ptr: *const u8) -> bool {
        self.0.contains(ptr)
    }

    /// The owner handle (for layers that hand the memory on, e.g. to numpy).
    pub fn owner(&self) -> &Arc<dyn Any + Send + Sync> {
        &self.0.owner
    }
}

impl Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr/len describe live bytes kept alive by `owner`, which
        // nobody writes while the buffer lives (the contract of every
        // constructor).
        unsafe { std::slice::from_raw_parts(self.0.ptr.as_ptr(), self.0.len) }
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buffer({} bytes)", self.0.len)
    }
}

/// Bytes lent by an owner who may write them while Neuropods holds them: a
/// caller's numpy array, memory a C caller lends. Rust never forms a
/// reference to them (reading memory that another party writes meanwhile
/// through `&[u8]` is undefined behaviour): they reach a framework as a
/// pointer, as the caller's memory would if the framework were called
/// directly, and Rust code that must read them reads one private copy
/// ([`ForeignBuffer::to_frozen`], [`ForeignBuffer::copy_to`]).
#[derive(Clone)]
pub struct ForeignBuffer(Region);

// SAFETY: a pointer that is only ever read by copying, and an owner that is
// itself Send + Sync.
unsafe impl Send for ForeignBuffer {}
// SAFETY: as for Send: no reference to the bytes is ever handed out.
unsafe impl Sync for ForeignBuffer {}

impl ForeignBuffer {
    /// Wraps memory that its owner may write while it is lent.
    ///
    /// # Safety
    /// `ptr` must point to `len` bytes that stay valid (mapped, not freed)
    /// for as long as `owner` is alive; they may change at any time.
    pub unsafe fn from_raw_parts(
        ptr: *mut u8,
        len: usize,
        owner: Arc<dyn Any + Send + Sync>,
    ) -> ForeignBuffer {
        ForeignBuffer(Region::new(ptr, len, owner))
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.0.len
    }

    /// Whether it holds no byte.
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    /// A sub-range sharing this buffer's owner; `None` if out of bounds.
    pub fn slice(&self, range: Range<usize>) -> Option<ForeignBuffer> {
        self.0.slice(range).map(ForeignBuffer)
    }

    /// Address of the first byte; a framework may read and write through it
    /// as it may through the owner's memory when called directly.
    pub fn as_ptr(&self) -> *mut u8 {
        self.0.ptr.as_ptr()
    }

    /// Whether the data is aligned for elements of `align` bytes.
    pub fn is_aligned_to(&self, align: usize) -> bool {
        self.0.is_aligned_to(align)
    }

    /// Whether `ptr` points into these bytes (or is their address, for an
    /// empty buffer).
    pub fn contains(&self, ptr: *const u8) -> bool {
        self.0.contains(ptr)
    }

    /// The owner handle (for layers that hand the memory on, e.g. to numpy).
    pub fn owner(&self) -> &Arc<dyn Any + Send + Sync> {
        &self.0.owner
    }

    /// One private copy of the bytes as they are now, frozen.
    pub fn to_frozen(&self) -> Buffer {
        // SAFETY: `ptr` is valid for `len` bytes while `owner` lives (the
        // constructor's contract), and `self` holds the owner.
        unsafe { Buffer::copy_from_raw(self.0.ptr.as_ptr(), self.0.len) }
    }

    /// Copies the bytes as they are now to the start of `target`, as many
    /// as both hold; through raw pointers, never a reference to them.
    pub fn copy_to(&self, target: &mut [u8]) {
        let len = self.0.len.min(target.len());
        // SAFETY: `ptr` is valid for `len` bytes while `owner` lives (the
        // constructor's contract), and so is `target`, which is Rust memory
        // and so cannot overlap memory lent from outside.
        unsafe { std::ptr::copy_nonoverlapping(self.0.ptr.as_ptr(), target.as_mut_ptr(), len) };
    }
}

impl fmt::Debug for ForeignBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ForeignBuffer({} bytes)", self.0.len)
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
    /// Little-endian (native) numeric elements, row-major, frozen.
    Numeric(Buffer),
    /// The same, in memory lent by an owner who may write it (a caller's
    /// numpy array): handed to frameworks as it is, read by Rust only
    /// through a copy. Never bool: bools are validated, on a private copy.
    Foreign(ForeignBuffer),
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

fn short_buffer() -> Error {
    Error::Internal("tensor buffer shorter than its shape".into())
}

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

/// Checks that `len` bytes are what a numeric tensor of `dtype` and
/// `shape` holds.
fn check_numeric_size(dtype: DType, shape: &[usize], len: usize) -> Result<()> {
    let item = dtype.item_size().ok_or_else(|| {
        Error::InvalidInput("a string tensor cannot be made from a byte buffer".into())
    })?;
    check_shape(shape)?;
    let expected = checked_numel(shape)
        .and_then(|n| n.checked_mul(item))
        .ok_or_else(|| Error::InvalidInput(format!("shape {shape:?} is too large")))?;
    if expected != len {
        return Err(Error::InvalidInput(format!(
            "{dtype} tensor of shape {shape:?} needs {expected} bytes, got {len}"
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
        check_numeric_size(dtype, &shape, buffer.len())?;
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

    /// A numeric tensor over memory its owner may write meanwhile; checks
    /// that sizes agree. Bool data is copied once and validated on the copy,
    /// so that what was checked is what the model reads.
    pub fn from_foreign(dtype: DType, shape: Vec<usize>, buffer: ForeignBuffer) -> Result<Tensor> {
        if dtype == DType::Bool {
            return Tensor::from_buffer(dtype, shape, buffer.to_frozen());
        }
        check_numeric_size(dtype, &shape, buffer.len())?;
        Ok(Tensor {
            dtype,
            shape,
            data: TensorData::Foreign(buffer),
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
            TensorData::Foreign(b) => b.len() / self.dtype.item_size().unwrap_or(1),
        }
    }

    /// The storage.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The numeric storage, if numeric and frozen.
    pub fn buffer(&self) -> Option<&Buffer> {
        match &self.data {
            TensorData::Numeric(b) => Some(b),
            TensorData::Foreign(_) | TensorData::Strings(_) => None,
        }
    }

    /// The strings, if a string tensor.
    pub fn strings(&self) -> Option<&[String]> {
        match &self.data {
            TensorData::Strings(s) => Some(s.as_slice()),
            TensorData::Numeric(_) | TensorData::Foreign(_) => None,
        }
    }

    /// Where a numeric tensor's bytes are, frozen or lent: their address and
    /// length, for handing to a framework or finding in shared memory.
    pub fn numeric_bytes(&self) -> Option<(*const u8, usize)> {
        match &self.data {
            TensorData::Numeric(b) => Some((b.as_ptr(), b.len())),
            TensorData::Foreign(b) => Some((b.as_ptr().cast_const(), b.len())),
            TensorData::Strings(_) => None,
        }
    }

    /// One aligned, frozen copy of a numeric tensor's bytes (frozen or
    /// lent); `None` for strings.
    pub fn copy_bytes(&self) -> Option<Buffer> {
        match &self.data {
            TensorData::Numeric(b) => Some(Buffer::copy_from_slice(b)),
            TensorData::Foreign(b) => Some(b.to_frozen()),
            TensorData::Strings(_) => None,
        }
    }

    /// Whether `ptr` points into this numeric tensor's bytes.
    pub fn contains(&self, ptr: *const u8) -> bool {
        match &self.data {
            TensorData::Numeric(b) => b.contains(ptr),
            TensorData::Foreign(b) => b.contains(ptr),
            TensorData::Strings(_) => false,
        }
    }

    /// This tensor with frozen storage: itself (sharing its memory) unless
    /// its bytes are lent, then one private copy of them.
    pub fn to_frozen(&self) -> Tensor {
        match &self.data {
            TensorData::Foreign(b) => Tensor {
                dtype: self.dtype,
                shape: self.shape.clone(),
                data: TensorData::Numeric(b.to_frozen()),
            },
            TensorData::Numeric(_) | TensorData::Strings(_) => self.clone(),
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
                TensorData::Numeric(buffer.slice(bytes).ok_or_else(short_buffer)?)
            }
            TensorData::Foreign(buffer) => {
                let item = self.dtype.item_size().unwrap_or(1);
                let bytes = elements.start * item..elements.end * item;
                TensorData::Foreign(buffer.slice(bytes).ok_or_else(short_buffer)?)
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
                    .map(|part| part.numeric_bytes().map_or(0, |(_, len)| len))
                    .sum();
                let mut writer = AlignedBufferWriter::new(len);
                let mut at = 0;
                for part in parts {
                    let Some(len) = part.numeric_bytes().map(|(_, len)| len) else {
                        continue;
                    };
                    let target = writer
                        .as_mut_slice()
                        .get_mut(at..at + len)
                        .ok_or_else(short_buffer)?;
                    match &part.data {
                        TensorData::Numeric(bytes) => target.copy_from_slice(bytes),
                        TensorData::Foreign(bytes) => bytes.copy_to(target),
                        TensorData::Strings(_) => {}
                    }
                    at += len;
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
        let buffer = match &self.data {
            TensorData::Numeric(buffer) => buffer,
            TensorData::Foreign(_) => {
                return Err(Error::InvalidInput(
                    "the tensor's memory is lent by an owner who may write it; \
                     read a copy (Tensor::to_frozen)"
                        .into(),
                ))
            }
            TensorData::Strings(_) => {
                return Err(Error::InvalidInput(
                    "string tensors have no numeric elements".into(),
                ))
            }
        };
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

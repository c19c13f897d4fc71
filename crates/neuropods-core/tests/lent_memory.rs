//! Lent memory ([`ForeignBuffer`]): bytes whose owner may write them while
//! a tensor holds them. Rust reads them only through copies, bools are
//! checked on the copy the model reads, and lent tensors behave like frozen
//! ones everywhere else (rows, batching, serialization).

use std::cell::UnsafeCell;
use std::sync::Arc;

use neuropods_core::serialize::serialize_tensor;
use neuropods_core::{DType, ForeignBuffer, Tensor, TensorData};

/// Memory its owner writes while it is lent, as a caller's array would be.
struct CallerMemory(UnsafeCell<Vec<u8>>);

// SAFETY: the tests write it only while no copy is being made.
unsafe impl Sync for CallerMemory {}
// SAFETY: a vector of bytes, which may move to any thread.
unsafe impl Send for CallerMemory {}

impl CallerMemory {
    fn new(bytes: &[u8]) -> Arc<CallerMemory> {
        Arc::new(CallerMemory(UnsafeCell::new(bytes.to_vec())))
    }

    fn lend(self: &Arc<Self>) -> ForeignBuffer {
        // SAFETY: the vector is never resized, so its block stays valid
        // while the owner (this memory) lives.
        let (ptr, len) = unsafe { ((*self.0.get()).as_mut_ptr(), (*self.0.get()).len()) };
        // SAFETY: as above: valid while `self`, the owner, lives.
        unsafe { ForeignBuffer::from_raw_parts(ptr, len, self.clone()) }
    }

    fn write(&self, at: usize, byte: u8) {
        // SAFETY: through the cell's raw pointer, never a reference that a
        // lent tensor could hold (it holds none).
        unsafe { (*self.0.get()).as_mut_ptr().add(at).write(byte) }
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn bools_are_checked_on_the_copy_the_model_reads() {
    let memory = CallerMemory::new(&[0, 1, 1]);
    let tensor = Tensor::from_foreign(DType::Bool, vec![3], memory.lend()).unwrap();
    assert!(
        matches!(tensor.data(), TensorData::Numeric(_)),
        "bools are copied"
    );
    // What was checked cannot change any more: a later write to the
    // caller's memory does not reach the tensor.
    memory.write(1, 7);
    assert_eq!(tensor.as_slice::<bool>().unwrap(), &[false, true, true]);

    let bad = CallerMemory::new(&[0, 2]);
    let err = Tensor::from_foreign(DType::Bool, vec![2], bad.lend()).unwrap_err();
    assert!(err.to_string().contains("bool element 1 is 2"), "{err}");
}

#[test]
fn lent_bytes_are_read_through_a_copy_only() {
    let memory = CallerMemory::new(&f32_bytes(&[1.0, 2.0]));
    let tensor = Tensor::from_foreign(DType::Float32, vec![2], memory.lend()).unwrap();
    let err = tensor.as_slice::<f32>().unwrap_err();
    assert!(err.to_string().contains("Tensor::to_frozen"), "{err}");
    assert!(tensor.buffer().is_none());

    let frozen = tensor.to_frozen();
    assert_eq!(frozen.as_slice::<f32>().unwrap(), &[1.0, 2.0]);
    // The copy is the bytes as they were; the lent tensor still views the
    // caller's memory, so it sees the change.
    memory.write(0, 0);
    memory.write(1, 0);
    memory.write(2, 0);
    memory.write(3, 0);
    assert_eq!(frozen.as_slice::<f32>().unwrap(), &[1.0, 2.0]);
    assert_eq!(tensor.to_frozen().as_slice::<f32>().unwrap(), &[0.0, 2.0]);
}

#[test]
fn sizes_are_checked_as_for_frozen_bytes() {
    let memory = CallerMemory::new(&[0; 12]);
    let err = Tensor::from_foreign(DType::Float32, vec![4], memory.lend()).unwrap_err();
    assert!(err.to_string().contains("needs 16 bytes, got 12"), "{err}");
    let err = Tensor::from_foreign(DType::String, vec![1], memory.lend()).unwrap_err();
    assert!(err.to_string().contains("string tensor"), "{err}");
}

#[test]
fn rows_of_lent_memory_stay_views_and_batches_are_frozen_copies() {
    let memory = CallerMemory::new(&f32_bytes(&[1.0, 2.0, 3.0, 4.0]));
    let lent = Tensor::from_foreign(DType::Float32, vec![2, 2], memory.lend()).unwrap();
    let second = lent.rows(1..2).unwrap();
    let (start, _) = lent.numeric_bytes().unwrap();
    assert_eq!(second.numeric_bytes().unwrap(), (start.wrapping_add(8), 8));
    assert!(matches!(second.data(), TensorData::Foreign(_)));

    let frozen = Tensor::from_vec(vec![1, 2], vec![5.0f32, 6.0]).unwrap();
    let batch = Tensor::concat_rows(&[&lent, &frozen, &second]).unwrap();
    assert_eq!(batch.shape(), &[4, 2]);
    assert_eq!(
        batch.as_slice::<f32>().unwrap(),
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 3.0, 4.0]
    );
}

#[test]
fn lent_tensors_serialize_as_their_bytes() {
    let values = [1.5f32, -2.0, 8.25];
    let memory = CallerMemory::new(&f32_bytes(&values));
    let lent = Tensor::from_foreign(DType::Float32, vec![3], memory.lend()).unwrap();
    let frozen = Tensor::from_vec(vec![3], values.to_vec()).unwrap();
    assert_eq!(serialize_tensor(&lent), serialize_tensor(&frozen));
}

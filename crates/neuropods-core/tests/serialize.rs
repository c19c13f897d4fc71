//! Round trips and robustness of the serialization format, through the public
//! API only. The per-error-kind tests live next to the code in
//! `src/serialize.rs`.

use neuropods_core::serialize::{
    deserialize, deserialize_bytes, serialize_map, serialize_tensor, serialized_len_map,
    serialized_len_tensor, write_map, write_tensor, Serialized,
};
use neuropods_core::tensor::{checked_numel, AlignedBufferWriter};
use neuropods_core::{Buffer, DType, Tensor, TensorData, TensorMap};
use proptest::prelude::*;

fn assert_same(a: &Tensor, b: &Tensor) {
    assert_eq!(a.dtype(), b.dtype());
    assert_eq!(a.shape(), b.shape());
    match (a.data(), b.data()) {
        (TensorData::Numeric(x), TensorData::Numeric(y)) => assert_eq!(&x[..], &y[..]),
        (TensorData::Strings(x), TensorData::Strings(y)) => assert_eq!(x, y),
        _ => panic!("storage kinds differ"),
    }
}

fn assert_same_map(a: &TensorMap, b: &TensorMap) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, t) in a {
        assert_same(t, &b[name]);
    }
}

fn string_elem() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-zé€😀\u{0}]{0,6}", any::<String>(),]
}

/// Any dtype, rank 0 to 4 with dims 0 to 3 (so zero-size tensors appear),
/// any bytes for numbers (NaN payloads included), 0/1 for bools.
fn tensor() -> impl Strategy<Value = Tensor> {
    let dtype = proptest::sample::select(DType::ALL.to_vec());
    let shape = proptest::collection::vec(0usize..4, 0..=4);
    (dtype, shape).prop_flat_map(|(dtype, shape)| {
        let numel = checked_numel(&shape).unwrap();
        match dtype.item_size() {
            None => proptest::collection::vec(string_elem(), numel)
                .prop_map(move |s| Tensor::from_strings(shape.clone(), s).unwrap())
                .boxed(),
            Some(item) => {
                let byte = if dtype == DType::Bool {
                    (0u8..=1).boxed()
                } else {
                    any::<u8>().boxed()
                };
                proptest::collection::vec(byte, numel * item)
                    .prop_map(move |b| {
                        Tensor::from_buffer(dtype, shape.clone(), Buffer::copy_from_slice(&b))
                            .unwrap()
                    })
                    .boxed()
            }
        }
    })
}

fn tensor_map() -> impl Strategy<Value = TensorMap> {
    proptest::collection::btree_map(string_elem(), tensor(), 0..5)
}

fn unwrap_tensor(s: Serialized) -> Tensor {
    match s {
        Serialized::Tensor(t) => t,
        Serialized::Map(_) => panic!("expected a tensor, got a map"),
    }
}

fn unwrap_map(s: Serialized) -> TensorMap {
    match s {
        Serialized::Map(m) => m,
        Serialized::Tensor(_) => panic!("expected a map, got a tensor"),
    }
}

/// `bytes` placed `shift` bytes into an aligned allocation, so payloads land
/// on addresses of every alignment.
fn shifted(bytes: &[u8], shift: usize) -> Buffer {
    let mut v = vec![0xEE; shift];
    v.extend_from_slice(bytes);
    Buffer::copy_from_slice(&v)
        .slice(shift..shift + bytes.len())
        .unwrap()
}

proptest! {
    #[test]
    fn tensor_round_trips(t in tensor(), shift in 0usize..9) {
        let bytes = serialize_tensor(&t);
        prop_assert_eq!(bytes.len(), serialized_len_tensor(&t));
        assert_same(&t, &unwrap_tensor(deserialize_bytes(&bytes).unwrap()));
        let back = unwrap_tensor(deserialize(&shifted(&bytes, shift)).unwrap());
        assert_same(&t, &back);
        // Whether shared or copied, numbers must be readable in place.
        if let Some(b) = back.buffer() {
            prop_assert!(b.is_aligned_to(t.dtype().item_size().unwrap()));
        }
    }

    #[test]
    fn map_round_trips(m in tensor_map(), shift in 0usize..9) {
        let bytes = serialize_map(&m);
        prop_assert_eq!(bytes.len(), serialized_len_map(&m));
        assert_same_map(&m, &unwrap_map(deserialize_bytes(&bytes).unwrap()));
        assert_same_map(&m, &unwrap_map(deserialize(&shifted(&bytes, shift)).unwrap()));
    }

    #[test]
    fn streaming_write_equals_serialize(m in tensor_map()) {
        let mut out = vec![0x55; serialized_len_map(&m)];
        write_map(&m, &mut out).unwrap();
        prop_assert_eq!(out, serialize_map(&m));
    }

    #[test]
    fn every_truncation_is_an_error(m in tensor_map()) {
        let bytes = serialize_map(&m);
        for cut in 0..bytes.len() {
            prop_assert!(deserialize_bytes(&bytes[..cut]).is_err(), "cut at {}", cut);
        }
    }

    #[test]
    fn corrupted_bytes_never_panic(
        m in tensor_map(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = serialize_map(&m);
        for (at, value) in flips {
            let len = bytes.len();
            bytes[at % len] = value;
        }
        // Either an error or a value that is valid in every respect, which
        // re-serializing and reading back exercises.
        if let Ok(Serialized::Map(back)) = deserialize_bytes(&bytes) {
            assert_same_map(&back, &unwrap_map(deserialize_bytes(&serialize_map(&back)).unwrap()));
        }
    }

    #[test]
    fn corrupted_single_tensor_never_panics(
        t in tensor(),
        flips in proptest::collection::vec((0usize..80, any::<u8>()), 1..4),
    ) {
        // Flips confined to the first 80 bytes hit the header and entry fields.
        let mut bytes = serialize_tensor(&t);
        for (at, value) in flips {
            let len = bytes.len();
            bytes[at % len] = value;
        }
        if let Ok(Serialized::Tensor(back)) = deserialize_bytes(&bytes) {
            assert_same(&back, &unwrap_tensor(deserialize_bytes(&serialize_tensor(&back)).unwrap()));
        }
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_never_panic(
        kind in 0u16..3,
        count in prop_oneof![0u32..4, any::<u32>()],
        rest in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = b"NEUROPOD\x01\x00".to_vec();
        bytes.extend(kind.to_le_bytes());
        bytes.extend(count.to_le_bytes());
        bytes.extend(rest);
        let _ = deserialize_bytes(&bytes);
    }
}

#[test]
fn large_tensor_is_not_copied() {
    let n = 16 * 1024 * 1024; // 64 MB of f32
    let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let t = Tensor::from_vec(vec![4096, n / 4096], data).unwrap();

    // The streaming form, writing straight into an aligned buffer.
    let mut w = AlignedBufferWriter::new(serialized_len_tensor(&t));
    write_tensor(&t, w.as_mut_slice()).unwrap();
    let blob = w.finish();

    let back = unwrap_tensor(deserialize(&blob).unwrap());
    let payload = back.buffer().unwrap();
    let start = blob.as_ptr() as usize;
    let p = payload.as_ptr() as usize;
    assert!(
        p >= start && p + payload.len() <= start + blob.len(),
        "payload was copied out of the input buffer"
    );
    let values = back.as_slice::<f32>().unwrap();
    assert_eq!(values.len(), n);
    assert_eq!(values[0], 0.0);
    assert_eq!(values[n - 1], (n - 1) as f32);
    assert_eq!(back.shape(), [4096, n / 4096]);
}

#[test]
fn deserialized_tensor_outlives_input_handle() {
    let t = Tensor::from_vec(vec![2], vec![1u64, u64::MAX]).unwrap();
    let blob = Buffer::copy_from_slice(&serialize_tensor(&t));
    let back = unwrap_tensor(deserialize(&blob).unwrap());
    drop(blob); // the tensor shares the owner, so the bytes stay alive
    assert_eq!(back.as_slice::<u64>().unwrap(), [1, u64::MAX]);
}

#[test]
fn single_tensor_and_map_are_distinguished() {
    let t = Tensor::from_vec(vec![1], vec![true]).unwrap();
    let mut m = TensorMap::new();
    m.insert(String::new(), t.clone());
    // Same entry, different kind.
    assert!(matches!(
        deserialize_bytes(&serialize_tensor(&t)).unwrap(),
        Serialized::Tensor(_)
    ));
    let back = unwrap_map(deserialize_bytes(&serialize_map(&m)).unwrap());
    assert_same(&t, &back[""]);
}

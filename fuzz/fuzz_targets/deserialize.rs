//! Any bytes given to `deserialize` are an error or tensors; and what it
//! accepts serializes to a blob that reads back to the same blob.
#![no_main]
use libfuzzer_sys::fuzz_target;
use neuropods_core::serialize::{deserialize_bytes, serialize_map, serialize_tensor, Serialized};

fn serialize(value: &Serialized) -> Vec<u8> {
    match value {
        Serialized::Tensor(t) => serialize_tensor(t),
        Serialized::Map(m) => serialize_map(m),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = deserialize_bytes(data) {
        let blob = serialize(&value);
        let again = deserialize_bytes(&blob).expect("a blob serialize wrote reads back");
        assert_eq!(
            serialize(&again),
            blob,
            "serialize is not stable across a round trip"
        );
    }
});

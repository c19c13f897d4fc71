//! The two protobuf messages this backend touches, by hand: writing a
//! `ConfigProto` (session threads and devices) and reading the signatures of
//! a SavedModel's `MetaGraphDef`. Both are a handful of fields of the stable
//! wire format, not worth a protobuf code generator.

use std::collections::HashMap;

use neuropods_abi::bytes::ByteReader;

/// Session settings, written as a `ConfigProto`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionConfig {
    /// `intra_op_parallelism_threads` (0: TF picks).
    pub intra_op_threads: Option<i32>,
    /// `inter_op_parallelism_threads` (0: TF picks; negative: ops run on the
    /// calling thread).
    pub inter_op_threads: Option<i32>,
    /// `None`: no GPU devices at all. `Some(i)`: only CUDA device `i` is
    /// visible (as `/device:GPU:0`) and its memory grows on demand. Either
    /// way ops are soft-placed: an op pinned to a device the session lacks
    /// (old graphs carry such pins) or without a kernel there runs on the
    /// CPU.
    pub gpu: Option<u32>,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_int(out: &mut Vec<u8>, field: u32, v: i64) {
    put_varint(out, u64::from(field << 3));
    // int32 fields carry negative values sign-extended to 64 bits.
    put_varint(out, v as u64);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, u64::from(field << 3 | 2));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

impl SessionConfig {
    /// The serialized `ConfigProto`.
    pub fn to_proto(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.gpu {
            None => {
                // device_count { key: "GPU" value: 0 }
                let mut entry = Vec::new();
                put_bytes(&mut entry, 1, b"GPU");
                put_int(&mut entry, 2, 0);
                put_bytes(&mut out, 1, &entry);
            }
            Some(index) => {
                // gpu_options { allow_growth: true visible_device_list: "i" }
                let mut gpu_options = Vec::new();
                put_int(&mut gpu_options, 4, 1);
                put_bytes(&mut gpu_options, 5, index.to_string().as_bytes());
                put_bytes(&mut out, 6, &gpu_options);
            }
        }
        // allow_soft_placement
        put_int(&mut out, 7, 1);
        if let Some(n) = self.intra_op_threads {
            put_int(&mut out, 2, n.into());
        }
        if let Some(n) = self.inter_op_threads {
            put_int(&mut out, 5, n.into());
        }
        out
    }
}

/// A field's payload: length-delimited bytes, or a number (not needed here).
enum Value<'a> {
    Bytes(&'a [u8]),
    Number,
}

/// Iterates over the fields of one message, refusing malformed input.
struct Fields<'a> {
    rest: ByteReader<'a>,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = &mut self.rest;
        let mut field = || {
            let key = r.varint("field key")?;
            let value = match key & 7 {
                0 => r.varint("varint field").map(|_| Value::Number)?,
                1 => r.take(8, "fixed64 field").map(|_| Value::Number)?,
                2 => {
                    let len = r.varint("field length")?;
                    let len = usize::try_from(len).map_err(|_| "field length overflows")?;
                    Value::Bytes(r.take(len, "length-delimited field")?)
                }
                5 => r.take(4, "fixed32 field").map(|_| Value::Number)?,
                wire => return Err(format!("unsupported wire type {wire}")),
            };
            Ok((key >> 3, value))
        };
        let item = field();
        if item.is_err() {
            self.rest = ByteReader::new(&[]);
        }
        Some(item)
    }
}

fn fields(message: &[u8]) -> Fields<'_> {
    Fields {
        rest: ByteReader::new(message),
    }
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "a name is not UTF-8".into())
}

/// The tensor a signature key stands for: `op:index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureTensor(pub String);

/// One `SignatureDef`: its input and output keys and their tensors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signature {
    pub inputs: HashMap<String, SignatureTensor>,
    pub outputs: HashMap<String, SignatureTensor>,
}

/// A `map<string, M>` entry: key (field 1) and value message (field 2).
fn map_entry(entry: &[u8]) -> Result<(String, &[u8]), String> {
    let (mut key, mut value) = (String::new(), &[][..]);
    for field in fields(entry) {
        match field? {
            (1, Value::Bytes(b)) => key = text(b)?,
            (2, Value::Bytes(b)) => value = b,
            _ => {}
        }
    }
    Ok((key, value))
}

/// `TensorInfo.name` (field 1); sparse and composite tensors have none.
fn tensor_name(info: &[u8]) -> Result<Option<String>, String> {
    for field in fields(info) {
        if let (1, Value::Bytes(b)) = field? {
            return text(b).map(Some);
        }
    }
    Ok(None)
}

fn signature(def: &[u8]) -> Result<Signature, String> {
    let mut signature = Signature::default();
    for field in fields(def) {
        let (number, value) = field?;
        let map = match number {
            1 => &mut signature.inputs,
            2 => &mut signature.outputs,
            _ => continue,
        };
        if let Value::Bytes(entry) = value {
            let (key, info) = map_entry(entry)?;
            let name = tensor_name(info)?.ok_or_else(|| {
                format!("'{key}' is a sparse or composite tensor, which is not supported")
            })?;
            map.insert(key, SignatureTensor(name));
        }
    }
    Ok(signature)
}

/// The signatures (`MetaGraphDef.signature_def`, field 5) of a serialized
/// `MetaGraphDef`.
pub fn signatures(meta_graph_def: &[u8]) -> Result<HashMap<String, Signature>, String> {
    let mut out = HashMap::new();
    for field in fields(meta_graph_def) {
        if let (5, Value::Bytes(entry)) = field? {
            let (name, def) = map_entry(entry)?;
            let parsed = signature(def).map_err(|e| format!("signature '{name}': {e}"))?;
            out.insert(name, parsed);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_and_cpu_only() {
        let config = SessionConfig {
            intra_op_threads: Some(2),
            inter_op_threads: Some(300),
            gpu: None,
        };
        assert_eq!(
            config.to_proto(),
            [
                &[0x0a, 7, 0x0a, 3][..],
                b"GPU",
                &[0x10, 0, 0x38, 1, 0x10, 2, 0x28, 0xac, 0x02]
            ]
            .concat()
        );
    }

    #[test]
    fn negative_counts_are_sign_extended() {
        let config = SessionConfig {
            inter_op_threads: Some(-1),
            gpu: Some(1),
            ..Default::default()
        };
        let proto = config.to_proto();
        assert!(
            proto.ends_with(&[0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
        );
        // gpu_options { allow_growth: true visible_device_list: "1" }, allow_soft_placement
        assert!(proto.starts_with(&[0x32, 5, 0x20, 1, 0x2a, 1, b'1', 0x38, 1]));
        assert_eq!(proto.len(), 9 + 11);
    }

    fn message(parts: &[(u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (field, bytes) in parts {
            put_bytes(&mut out, *field, bytes);
        }
        out
    }

    #[test]
    fn reads_signature_maps_and_skips_other_fields() {
        let info = message(&[(1, b"serving_default_x:0")]);
        let input = message(&[(1, b"x"), (2, &info)]);
        let out_info = message(&[(1, b"StatefulPartitionedCall:1")]);
        let output = message(&[(1, b"y"), (2, &out_info)]);
        let mut def = message(&[
            (1, &input),
            (2, &output),
            (3, b"tensorflow/serving/predict"),
        ]);
        put_int(&mut def, 9, 7);
        let entry = message(&[(1, b"serving_default"), (2, &def)]);
        let mut meta = message(&[(2, b"graph bytes are skipped"), (5, &entry)]);
        meta.extend_from_slice(&[0x0d, 1, 2, 3, 4]); // fixed32 field 1
        let found = signatures(&meta).unwrap();
        let sig = &found["serving_default"];
        assert_eq!(
            sig.inputs["x"],
            SignatureTensor("serving_default_x:0".into())
        );
        assert_eq!(
            sig.outputs["y"],
            SignatureTensor("StatefulPartitionedCall:1".into())
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(signatures(&[0x2a, 0x80]).is_err());
        assert!(signatures(&[0x2a, 50, 1]).unwrap_err().contains("50 bytes"));
        assert!(signatures(&[0x0b]).unwrap_err().contains("wire type 3"));
        assert!(signatures(&[0xff; 11]).is_err());
        assert!(signatures(&[]).unwrap().is_empty());
    }
}

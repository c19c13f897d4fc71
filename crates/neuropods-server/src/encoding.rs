//! The protocol's tensor encodings, both ways: datatype names, shapes, raw
//! little-endian bytes (the binary extension and gRPC's raw contents, BYTES
//! as a 4-byte length before each element), JSON `data` and gRPC's typed
//! `contents`. Only the encoding is checked here; whether a tensor fits the
//! model is the core's check, made once when the model runs.

use bytes::{BufMut, Bytes, BytesMut};
use half::f16;
use neuropods_core::bytes::ByteReader;
use neuropods_core::{Buffer, DType, Dim, Tensor, TensorData};
use serde_json::value::RawValue;

use crate::error::RequestError;
use crate::proto::InferTensorContents;

/// The protocol's name of a dtype.
pub fn datatype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::Bool => "BOOL",
        DType::Uint8 => "UINT8",
        DType::Uint16 => "UINT16",
        DType::Uint32 => "UINT32",
        DType::Uint64 => "UINT64",
        DType::Int8 => "INT8",
        DType::Int16 => "INT16",
        DType::Int32 => "INT32",
        DType::Int64 => "INT64",
        DType::Float16 => "FP16",
        DType::Float32 => "FP32",
        DType::Float64 => "FP64",
        DType::String => "BYTES",
    }
}

/// The dtype of input `tensor`'s protocol datatype.
pub fn parse_datatype(tensor: &str, datatype: &str) -> Result<DType, RequestError> {
    DType::ALL
        .into_iter()
        .find(|&d| datatype_name(d) == datatype)
        .ok_or_else(|| {
            let known: Vec<&str> = DType::ALL.into_iter().map(datatype_name).collect();
            RequestError::bad_request(format!(
                "input '{}': datatype '{}' is not one neuropods serves ({})",
                shorten(tensor),
                shorten(datatype),
                known.join(", ")
            ))
        })
}

/// A spec's shape as metadata shows it: -1 for a dim of any size.
pub fn metadata_shape(dims: &[Dim]) -> Vec<i64> {
    dims.iter()
        .map(|dim| match dim {
            Dim::Fixed(n) => i64::try_from(*n).unwrap_or(-1),
            Dim::Any | Dim::Symbol(_) => -1,
        })
        .collect()
}

/// A request's shape for input `tensor`. No dim may be negative, nor
/// larger than `max_dim`: a tensor can hold no more rows than its request
/// has bytes, and a huge dim beside a zero one (no elements, so no bytes)
/// would still size whatever the model builds from it.
pub fn parse_shape(
    tensor: &str,
    shape: &[i64],
    max_dim: usize,
) -> Result<Vec<usize>, RequestError> {
    let shown = || {
        let head: Vec<String> = shape.iter().take(8).map(i64::to_string).collect();
        format!(
            "[{}{}]",
            head.join(", "),
            if shape.len() > 8 { ", ..." } else { "" }
        )
    };
    shape
        .iter()
        .enumerate()
        .map(|(i, &d)| match usize::try_from(d) {
            Ok(d) if d <= max_dim => Ok(d),
            Ok(d) => Err(bad_tensor(
                tensor,
                format!(
                    "dim {i} of shape {} is {d}, more than the {max_dim} a request may have",
                    shown()
                ),
            )),
            Err(_) => Err(bad_tensor(
                tensor,
                format!("shape {} has a negative dim", shown()),
            )),
        })
        .collect()
}

/// A shape as the protocol sends it.
pub fn wire_shape(shape: &[usize]) -> Vec<i64> {
    shape
        .iter()
        .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
        .collect()
}

/// Wraps a core error about input `tensor` as the caller's fault.
fn bad_tensor(tensor: &str, error: impl std::fmt::Display) -> RequestError {
    RequestError::bad_request(format!("input '{}': {error}", shorten(tensor)))
}

fn element_count(tensor: &str, shape: &[usize]) -> Result<usize, RequestError> {
    neuropods_core::tensor::check_shape(shape).map_err(|e| bad_tensor(tensor, e))?;
    neuropods_core::tensor::checked_numel(shape)
        .ok_or_else(|| bad_tensor(tensor, format!("shape {shape:?} is too large")))
}

/// Input `tensor` from raw bytes.
pub fn tensor_from_raw(
    tensor: &str,
    dtype: DType,
    shape: Vec<usize>,
    raw: &[u8],
) -> Result<Tensor, RequestError> {
    let count = element_count(tensor, &shape)?;
    if dtype == DType::String {
        let strings = split_length_prefixed(tensor, raw, count)?;
        return Tensor::from_strings(shape, strings).map_err(|e| bad_tensor(tensor, e));
    }
    let item = dtype.item_size().unwrap_or(1);
    if Some(raw.len()) != count.checked_mul(item) {
        return Err(bad_tensor(
            tensor,
            format!(
                "{} of shape {shape:?} needs {} bytes of data, got {}",
                datatype_name(dtype),
                count.saturating_mul(item),
                raw.len()
            ),
        ));
    }
    Tensor::from_buffer(dtype, shape, Buffer::copy_from_slice(raw))
        .map_err(|e| bad_tensor(tensor, e))
}

/// BYTES elements: each a 4-byte little-endian length and that many bytes,
/// which must be UTF-8 (neuropods' string tensors are text).
fn split_length_prefixed(
    tensor: &str,
    raw: &[u8],
    count: usize,
) -> Result<Vec<String>, RequestError> {
    let mut strings = Vec::with_capacity(count.min(raw.len() / 4));
    let mut reader = ByteReader::new(raw);
    for index in 0..count {
        // The reader checks the bounds; the messages are the protocol's.
        let len = reader
            .u32("length")
            .map_err(|_| bad_tensor(tensor, format!("BYTES data ends before element {index}")))?
            as usize;
        let left = reader.remaining();
        let element = reader.take(len, "element").map_err(|_| {
            bad_tensor(
                tensor,
                format!("BYTES element {index} claims {len} bytes, {left} are left"),
            )
        })?;
        strings.push(utf8(tensor, index, element)?);
    }
    if !reader.is_empty() {
        return Err(bad_tensor(
            tensor,
            format!(
                "{} bytes of data after the {count} BYTES elements its shape holds",
                reader.remaining()
            ),
        ));
    }
    Ok(strings)
}

fn utf8(tensor: &str, index: usize, bytes: &[u8]) -> Result<String, RequestError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        bad_tensor(
            tensor,
            format!("BYTES element {index} is not UTF-8 text (neuropods string tensors are text)"),
        )
    })
}

/// Keeps an output's buffer alive inside a `Bytes`, so that it is sent
/// without a copy.
struct BufferBytes(Buffer);
impl AsRef<[u8]> for BufferBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// An output as raw bytes.
pub fn raw_from_tensor(tensor: &Tensor) -> Bytes {
    match tensor.data() {
        TensorData::Numeric(buffer) => Bytes::from_owner(BufferBytes(buffer.clone())),
        // Lent bytes may change: sent as they are now, copied.
        TensorData::Foreign(lent) => Bytes::from_owner(BufferBytes(lent.to_frozen())),
        TensorData::Strings(strings) => {
            let len = strings.iter().map(|s| 4 + s.len()).sum();
            let mut raw = BytesMut::with_capacity(len);
            for s in strings.iter() {
                raw.put_u32_le(s.len() as u32);
                raw.put_slice(s.as_bytes());
            }
            raw.freeze()
        }
    }
}

/// Input `tensor` from JSON `data`: a flat or nested array of numbers,
/// booleans (BOOL) or strings (BYTES), row-major. The elements are read
/// straight into the tensor's element type (never into a tree of JSON
/// values, which takes 32 bytes an element), and reading stops at the
/// first element past the shape's count.
pub fn tensor_from_json(
    tensor: &str,
    dtype: DType,
    shape: Vec<usize>,
    data: &RawValue,
) -> Result<Tensor, RequestError> {
    let count = element_count(tensor, &shape)?;
    macro_rules! read {
        ($t:ty, $convert:expr) => {{
            let values: Vec<$t> = read_elements(tensor, dtype, count, data, $convert)?;
            Tensor::from_vec(shape, values)
        }};
    }
    let result = match dtype {
        DType::Bool => read!(bool, |e| match e {
            Scalar::Bool(b) => Some(b),
            _ => None,
        }),
        DType::Int8 => read!(i8, |e| e.as_i64().and_then(|n| i8::try_from(n).ok())),
        DType::Int16 => read!(i16, |e| e.as_i64().and_then(|n| i16::try_from(n).ok())),
        DType::Int32 => read!(i32, |e| e.as_i64().and_then(|n| i32::try_from(n).ok())),
        DType::Int64 => read!(i64, |e| e.as_i64()),
        DType::Uint8 => read!(u8, |e| e.as_u64().and_then(|n| u8::try_from(n).ok())),
        DType::Uint16 => read!(u16, |e| e.as_u64().and_then(|n| u16::try_from(n).ok())),
        DType::Uint32 => read!(u32, |e| e.as_u64().and_then(|n| u32::try_from(n).ok())),
        DType::Uint64 => read!(u64, |e| e.as_u64()),
        DType::Float16 => read!(f16, |e| e.as_f64().map(f16::from_f64)),
        DType::Float32 => read!(f32, |e| e.as_f64().map(|x| x as f32)),
        DType::Float64 => read!(f64, |e| e.as_f64()),
        DType::String => {
            let strings = read_elements(tensor, dtype, count, data, |e| match e {
                Scalar::Str(s) => Some(s),
                _ => None,
            })?;
            Tensor::from_strings(shape, strings)
        }
    };
    result.map_err(|e| bad_tensor(tensor, e))
}

/// One JSON element.
enum Scalar {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    Null,
}

impl Scalar {
    fn as_i64(&self) -> Option<i64> {
        match *self {
            Scalar::Int(n) => Some(n),
            Scalar::Uint(n) => i64::try_from(n).ok(),
            _ => None,
        }
    }

    fn as_u64(&self) -> Option<u64> {
        match *self {
            Scalar::Int(n) => u64::try_from(n).ok(),
            Scalar::Uint(n) => Some(n),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match *self {
            Scalar::Int(n) => Some(n as f64),
            Scalar::Uint(n) => Some(n as f64),
            Scalar::Float(x) => Some(x),
            _ => None,
        }
    }
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(n) => write!(f, "{n}"),
            Scalar::Uint(n) => write!(f, "{n}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Str(s) => write!(f, "{:?}", shorten(s)),
            Scalar::Null => f.write_str("null"),
        }
    }
}

/// At most 40 characters of a value a client sent, for error messages.
pub fn shorten(text: &str) -> String {
    neuropods_core::shortened(text, 40)
}

/// Reads the elements of nested JSON arrays, in order, converting each.
fn read_elements<T>(
    tensor: &str,
    dtype: DType,
    count: usize,
    data: &RawValue,
    convert: impl Fn(Scalar) -> Option<T>,
) -> Result<Vec<T>, RequestError> {
    let mut values = Vec::with_capacity(count.min(data.get().len() / 2 + 1));
    let mut failure: Option<String> = None;
    let mut sink = |element: Scalar| -> bool {
        if values.len() == count {
            failure = Some(format!("shape holds {count} elements, data has more"));
            return false;
        }
        let shown = element.to_string();
        match convert(element) {
            Some(value) => {
                values.push(value);
                true
            }
            None => {
                failure = Some(format!(
                    "element {} is {shown}, not a {} value",
                    values.len(),
                    datatype_name(dtype)
                ));
                false
            }
        }
    };
    let mut reader = serde_json::Deserializer::from_str(data.get());
    let read = serde::de::DeserializeSeed::deserialize(Elements { sink: &mut sink }, &mut reader);
    if let Some(failure) = failure {
        return Err(bad_tensor(tensor, failure));
    }
    read.map_err(|e| bad_tensor(tensor, format!("data: {e}")))?;
    if values.len() != count {
        return Err(bad_tensor(
            tensor,
            format!("shape holds {count} elements, data has {}", values.len()),
        ));
    }
    Ok(values)
}

/// Walks nested arrays, handing each element to `sink` (false: stop).
struct Elements<'s, F: FnMut(Scalar) -> bool> {
    sink: &'s mut F,
}

impl<'de, F: FnMut(Scalar) -> bool> serde::de::DeserializeSeed<'de> for Elements<'_, F> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, reader: D) -> Result<(), D::Error> {
        reader.deserialize_any(self)
    }
}

impl<'de, F: FnMut(Scalar) -> bool> serde::de::Visitor<'de> for Elements<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of numbers, booleans or strings")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        while items
            .next_element_seed(Elements {
                sink: &mut *self.sink,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.push(Scalar::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.push(Scalar::Int(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.push(Scalar::Uint(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.push(Scalar::Float(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.push(Scalar::Str(v.to_string()))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.push(Scalar::Null)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(serde::de::Error::custom(
            "an object where an element was expected",
        ))
    }
}

impl<F: FnMut(Scalar) -> bool> Elements<'_, F> {
    fn push<E: serde::de::Error>(self, element: Scalar) -> Result<(), E> {
        if (self.sink)(element) {
            Ok(())
        } else {
            // The sink kept the reason; this only stops the reader.
            Err(E::custom("stopped"))
        }
    }
}

/// An output's elements as a flat JSON array, written straight from the
/// tensor's memory (aligned or not).
pub struct JsonElements<'a>(pub &'a Tensor);

impl serde::Serialize for JsonElements<'_> {
    fn serialize<S: serde::Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let tensor = self.0;
        let mut seq = out.serialize_seq(Some(tensor.numel()))?;
        // Lent bytes may change: read as they are now, from a copy.
        let copy;
        let frozen = match tensor.data() {
            TensorData::Foreign(lent) => {
                copy = TensorData::Numeric(lent.to_frozen());
                &copy
            }
            data => data,
        };
        match frozen {
            TensorData::Strings(strings) => {
                for s in strings.iter() {
                    seq.serialize_element(s)?;
                }
            }
            // Copied above.
            TensorData::Foreign(_) => {}
            TensorData::Numeric(buffer) => {
                macro_rules! each {
                    ($t:ty, $map:expr) => {
                        for chunk in buffer.chunks_exact(std::mem::size_of::<$t>()) {
                            let value = <$t>::from_le_bytes(chunk.try_into().unwrap_or_default());
                            seq.serialize_element(&$map(value))?;
                        }
                    };
                }
                match tensor.dtype() {
                    DType::Bool => {
                        for &byte in buffer.iter() {
                            seq.serialize_element(&(byte != 0))?;
                        }
                    }
                    DType::Int8 => each!(i8, |v| v),
                    DType::Int16 => each!(i16, |v| v),
                    DType::Int32 => each!(i32, |v| v),
                    DType::Int64 => each!(i64, |v| v),
                    DType::Uint8 => each!(u8, |v| v),
                    DType::Uint16 => each!(u16, |v| v),
                    DType::Uint32 => each!(u32, |v| v),
                    DType::Uint64 => each!(u64, |v| v),
                    DType::Float16 => each!(f16, f32::from),
                    DType::Float32 => each!(f32, |v| v),
                    DType::Float64 => each!(f64, |v| v),
                    DType::String => {}
                }
            }
        }
        seq.end()
    }
}

/// Input `tensor` from gRPC's typed contents. Each datatype reads the one
/// field the protocol gives it; 8- and 16-bit values arrive widened and are
/// range-checked.
pub fn tensor_from_contents(
    tensor: &str,
    dtype: DType,
    shape: Vec<usize>,
    contents: &InferTensorContents,
) -> Result<Tensor, RequestError> {
    let count = element_count(tensor, &shape)?;
    let check = |field: &str, len: usize| {
        if len == count {
            Ok(())
        } else {
            Err(bad_tensor(
                tensor,
                format!("shape {shape:?} holds {count} elements, {field} has {len}"),
            ))
        }
    };
    macro_rules! narrow {
        ($field:ident, $t:ty) => {{
            check(stringify!($field), contents.$field.len())?;
            let values: Vec<$t> = contents
                .$field
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    <$t>::try_from(v).map_err(|_| {
                        bad_tensor(
                            tensor,
                            format!(
                                "element {i} ({v}) is out of range for {}",
                                datatype_name(dtype)
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            Tensor::from_vec(shape, values)
        }};
    }
    macro_rules! same {
        ($field:ident) => {{
            check(stringify!($field), contents.$field.len())?;
            Tensor::from_vec(shape, contents.$field.clone())
        }};
    }
    let result = match dtype {
        DType::Bool => same!(bool_contents),
        DType::Int8 => narrow!(int_contents, i8),
        DType::Int16 => narrow!(int_contents, i16),
        DType::Int32 => same!(int_contents),
        DType::Int64 => same!(int64_contents),
        DType::Uint8 => narrow!(uint_contents, u8),
        DType::Uint16 => narrow!(uint_contents, u16),
        DType::Uint32 => same!(uint_contents),
        DType::Uint64 => same!(uint64_contents),
        DType::Float32 => same!(fp32_contents),
        DType::Float64 => same!(fp64_contents),
        DType::Float16 => {
            return Err(bad_tensor(
                tensor,
                "FP16 has no typed contents in the protocol; send it as raw_input_contents",
            ))
        }
        DType::String => {
            check("bytes_contents", contents.bytes_contents.len())?;
            let strings = contents
                .bytes_contents
                .iter()
                .enumerate()
                .map(|(i, b)| utf8(tensor, i, b))
                .collect::<Result<_, _>>()?;
            Tensor::from_strings(shape, strings)
        }
    };
    result.map_err(|e| bad_tensor(tensor, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn length_prefixed(items: &[&[u8]]) -> Vec<u8> {
        let mut raw = Vec::new();
        for item in items {
            raw.extend_from_slice(&(item.len() as u32).to_le_bytes());
            raw.extend_from_slice(item);
        }
        raw
    }

    #[test]
    fn bytes_round_trip_through_raw() {
        let raw = length_prefixed(&[b"ab", b"", "é".as_bytes()]);
        let tensor = tensor_from_raw("w", DType::String, vec![3], &raw).unwrap();
        assert_eq!(tensor.strings().unwrap(), &["ab", "", "é"]);
        assert_eq!(&raw_from_tensor(&tensor)[..], &raw[..]);
    }

    #[test]
    fn bytes_framing_errors_name_the_tensor_and_element() {
        let two = length_prefixed(&[b"ab", b"c"]);
        let cases: [(&[u8], usize, &str); 4] = [
            (&two, 3, "BYTES data ends before element 2"),
            (&two, 1, "5 bytes of data after the 1 BYTES elements"),
            (
                &[5, 0, 0, 0, b'a'],
                1,
                "element 0 claims 5 bytes, 1 are left",
            ),
            (&[1, 0, 0, 0, 0xff], 1, "element 0 is not UTF-8"),
        ];
        for (raw, count, words) in cases {
            let error = tensor_from_raw("w", DType::String, vec![count], raw).unwrap_err();
            assert!(
                error.message.starts_with("input 'w': "),
                "{}",
                error.message
            );
            assert!(error.message.contains(words), "{}", error.message);
        }
    }

    fn raw(value: serde_json::Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(&value).unwrap()
    }

    fn json_of(tensor: &Tensor) -> serde_json::Value {
        serde_json::to_value(JsonElements(tensor)).unwrap()
    }

    #[test]
    fn json_data_may_be_nested_or_flat() {
        for data in [json!([[1, 2], [3, 4]]), json!([1, 2, 3, 4])] {
            let tensor = tensor_from_json("x", DType::Int16, vec![2, 2], &raw(data)).unwrap();
            assert_eq!(tensor.as_slice::<i16>().unwrap(), &[1, 2, 3, 4]);
            assert_eq!(json_of(&tensor), json!([1, 2, 3, 4]));
        }
        let half = tensor_from_json("h", DType::Float16, vec![2], &raw(json!([1.5, -2]))).unwrap();
        assert_eq!(json_of(&half), json!([1.5, -2.0]));
        let flags =
            tensor_from_json("b", DType::Bool, vec![2], &raw(json!([true, false]))).unwrap();
        assert_eq!(json_of(&flags), json!([true, false]));
        let words = tensor_from_json("w", DType::String, vec![1], &raw(json!(["é"]))).unwrap();
        assert_eq!(json_of(&words), json!(["é"]));
    }

    #[test]
    fn json_outputs_are_read_from_unaligned_memory_too() {
        let bytes = [0u8, 1, 0, 0, 0, 2, 0, 0, 0];
        let buffer = Buffer::copy_from_slice(&bytes).slice(1..9).unwrap();
        let tensor = Tensor::from_buffer(DType::Int32, vec![2], buffer).unwrap();
        assert_eq!(json_of(&tensor), json!([1, 2]));
    }

    #[test]
    fn json_reading_stops_at_the_first_extra_element() {
        let error = tensor_from_json(
            "x",
            DType::Float32,
            vec![2],
            &raw(json!([1, 2, 3, "not read"])),
        )
        .unwrap_err();
        assert!(
            error
                .message
                .contains("shape holds 2 elements, data has more"),
            "{}",
            error.message
        );
        let error =
            tensor_from_json("x", DType::Float32, vec![2], &raw(json!({"a": 1}))).unwrap_err();
        assert!(
            error
                .message
                .contains("an object where an element was expected"),
            "{}",
            error.message
        );
    }

    #[test]
    fn shapes_are_bounded() {
        assert_eq!(parse_shape("x", &[2, 0], 10).unwrap(), vec![2, 0]);
        let error = parse_shape("x", &[4_000_000_000, 0], 1 << 20).unwrap_err();
        assert!(
            error
                .message
                .contains("dim 0 of shape [4000000000, 0] is 4000000000"),
            "{}",
            error.message
        );
        let long: Vec<i64> = (0..100).map(|i| -i).collect();
        let error = parse_shape("x", &long, 10).unwrap_err();
        assert!(
            error
                .message
                .contains("[0, -1, -2, -3, -4, -5, -6, -7, ...] has a negative dim"),
            "{}",
            error.message
        );
    }

    #[test]
    fn json_elements_of_the_wrong_kind_or_range_are_named() {
        let cases = [
            (
                DType::Uint8,
                json!([1, -1]),
                "element 1 is -1, not a UINT8 value",
            ),
            (
                DType::Int32,
                json!([1.5]),
                "element 0 is 1.5, not a INT32 value",
            ),
            (DType::Bool, json!([1]), "element 0 is 1, not a BOOL value"),
            (
                DType::String,
                json!([3]),
                "element 0 is 3, not a BYTES value",
            ),
        ];
        for (dtype, data, words) in cases {
            let count = data.as_array().map_or(0, Vec::len);
            let error = tensor_from_json("t", dtype, vec![count], &raw(data)).unwrap_err();
            assert!(error.message.contains(words), "{}", error.message);
        }
    }

    #[test]
    fn typed_contents_are_range_checked() {
        let contents = InferTensorContents {
            int_contents: vec![1, 200],
            ..Default::default()
        };
        let error = tensor_from_contents("c", DType::Int8, vec![2], &contents).unwrap_err();
        assert!(
            error
                .message
                .contains("element 1 (200) is out of range for INT8"),
            "{}",
            error.message
        );
        let tensor = tensor_from_contents("c", DType::Int16, vec![2], &contents).unwrap();
        assert_eq!(tensor.as_slice::<i16>().unwrap(), &[1, 200]);
    }

    #[test]
    fn every_dtype_has_a_datatype_that_parses_back() {
        for dtype in DType::ALL {
            assert_eq!(parse_datatype("t", datatype_name(dtype)).unwrap(), dtype);
        }
        assert!(parse_datatype("t", "BF16")
            .unwrap_err()
            .message
            .contains("'BF16'"));
    }
}

//! The protocol's tensor encodings, both ways: datatype names, shapes, raw
//! little-endian bytes (the binary extension and gRPC's raw contents, BYTES
//! as a 4-byte length before each element), JSON `data` and gRPC's typed
//! `contents`. Only the encoding is checked here; whether a tensor fits the
//! model is the core's check, made once when the model runs.

use bytes::{BufMut, Bytes, BytesMut};
use half::f16;
use neuropods_core::{Buffer, DType, Dim, Tensor, TensorData};
use serde_json::Value;

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
                "input '{tensor}': datatype '{datatype}' is not one neuropods serves ({})",
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

/// A request's shape for input `tensor`: no dim may be negative.
pub fn parse_shape(tensor: &str, shape: &[i64]) -> Result<Vec<usize>, RequestError> {
    shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| {
            RequestError::bad_request(format!(
                "input '{tensor}': shape {shape:?} has a negative dim"
            ))
        })
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
    RequestError::bad_request(format!("input '{tensor}': {error}"))
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
    mut raw: &[u8],
    count: usize,
) -> Result<Vec<String>, RequestError> {
    let mut strings = Vec::with_capacity(count.min(raw.len() / 4));
    for index in 0..count {
        let (len, rest) = raw
            .split_first_chunk::<4>()
            .ok_or_else(|| bad_tensor(tensor, format!("BYTES data ends before element {index}")))?;
        let len = u32::from_le_bytes(*len) as usize;
        let (element, rest) = rest.split_at_checked(len).ok_or_else(|| {
            bad_tensor(
                tensor,
                format!(
                    "BYTES element {index} claims {len} bytes, {} are left",
                    rest.len()
                ),
            )
        })?;
        strings.push(utf8(tensor, index, element)?);
        raw = rest;
    }
    if !raw.is_empty() {
        return Err(bad_tensor(
            tensor,
            format!(
                "{} bytes of data after the {count} BYTES elements its shape holds",
                raw.len()
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
/// booleans (BOOL) or strings (BYTES), row-major.
pub fn tensor_from_json(
    tensor: &str,
    dtype: DType,
    shape: Vec<usize>,
    data: &Value,
) -> Result<Tensor, RequestError> {
    let count = element_count(tensor, &shape)?;
    let mut elements = Vec::with_capacity(count.min(1 << 20));
    flatten(data, &mut elements);
    if elements.len() != count {
        return Err(bad_tensor(
            tensor,
            format!(
                "shape {shape:?} holds {count} elements, data has {}",
                elements.len()
            ),
        ));
    }
    let wrong = |index: usize, value: &Value| {
        bad_tensor(
            tensor,
            format!(
                "element {index} is {value}, not a {} value",
                datatype_name(dtype)
            ),
        )
    };
    macro_rules! numbers {
        ($t:ty, $get:expr) => {{
            let values: Vec<$t> = elements
                .iter()
                .enumerate()
                .map(|(i, v)| $get(v).ok_or_else(|| wrong(i, v)))
                .collect::<Result<_, _>>()?;
            Tensor::from_vec(shape, values)
        }};
    }
    let int = |v: &Value| v.as_i64();
    let uint = |v: &Value| v.as_u64();
    let result = match dtype {
        DType::Bool => numbers!(bool, |v: &Value| v.as_bool()),
        DType::Int8 => numbers!(i8, |v| int(v).and_then(|n| i8::try_from(n).ok())),
        DType::Int16 => numbers!(i16, |v| int(v).and_then(|n| i16::try_from(n).ok())),
        DType::Int32 => numbers!(i32, |v| int(v).and_then(|n| i32::try_from(n).ok())),
        DType::Int64 => numbers!(i64, int),
        DType::Uint8 => numbers!(u8, |v| uint(v).and_then(|n| u8::try_from(n).ok())),
        DType::Uint16 => numbers!(u16, |v| uint(v).and_then(|n| u16::try_from(n).ok())),
        DType::Uint32 => numbers!(u32, |v| uint(v).and_then(|n| u32::try_from(n).ok())),
        DType::Uint64 => numbers!(u64, uint),
        DType::Float16 => numbers!(f16, |v: &Value| v.as_f64().map(f16::from_f64)),
        DType::Float32 => numbers!(f32, |v: &Value| v.as_f64().map(|x| x as f32)),
        DType::Float64 => numbers!(f64, |v: &Value| v.as_f64()),
        DType::String => {
            let strings = elements
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_str().map(str::to_owned).ok_or_else(|| wrong(i, v)))
                .collect::<Result<_, _>>()?;
            Tensor::from_strings(shape, strings)
        }
    };
    result.map_err(|e| bad_tensor(tensor, e))
}

fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        other => out.push(other),
    }
}

/// An output as a flat JSON array.
pub fn json_from_tensor(tensor: &Tensor) -> Value {
    macro_rules! numbers {
        ($t:ty, $map:expr) => {
            tensor
                .as_slice::<$t>()
                .map(|s| s.iter().map($map).collect())
                .unwrap_or_default()
        };
    }
    let values: Vec<Value> = match tensor.dtype() {
        DType::Bool => numbers!(bool, |&b| Value::Bool(b)),
        DType::Int8 => numbers!(i8, |&n| Value::from(n)),
        DType::Int16 => numbers!(i16, |&n| Value::from(n)),
        DType::Int32 => numbers!(i32, |&n| Value::from(n)),
        DType::Int64 => numbers!(i64, |&n| Value::from(n)),
        DType::Uint8 => numbers!(u8, |&n| Value::from(n)),
        DType::Uint16 => numbers!(u16, |&n| Value::from(n)),
        DType::Uint32 => numbers!(u32, |&n| Value::from(n)),
        DType::Uint64 => numbers!(u64, |&n| Value::from(n)),
        DType::Float16 => numbers!(f16, |&x| Value::from(f64::from(x))),
        DType::Float32 => numbers!(f32, |&x| Value::from(f64::from(x))),
        DType::Float64 => numbers!(f64, |&x| Value::from(x)),
        DType::String => tensor
            .strings()
            .unwrap_or_default()
            .iter()
            .map(|s| Value::String(s.clone()))
            .collect(),
    };
    Value::Array(values)
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

    #[test]
    fn json_data_may_be_nested_or_flat() {
        for data in [json!([[1, 2], [3, 4]]), json!([1, 2, 3, 4])] {
            let tensor = tensor_from_json("x", DType::Int16, vec![2, 2], &data).unwrap();
            assert_eq!(tensor.as_slice::<i16>().unwrap(), &[1, 2, 3, 4]);
            assert_eq!(json_from_tensor(&tensor), json!([1, 2, 3, 4]));
        }
        let half = tensor_from_json("h", DType::Float16, vec![2], &json!([1.5, -2])).unwrap();
        assert_eq!(json_from_tensor(&half), json!([1.5, -2.0]));
        let flags = tensor_from_json("b", DType::Bool, vec![2], &json!([true, false])).unwrap();
        assert_eq!(json_from_tensor(&flags), json!([true, false]));
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
            let error = tensor_from_json("t", dtype, vec![count], &data).unwrap_err();
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

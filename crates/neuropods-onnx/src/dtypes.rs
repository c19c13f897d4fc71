//! Neuropods dtypes and ONNX Runtime's element types.

use neuropods_abi::DType;
use ort::value::TensorElementType;

/// ONNX Runtime's element type for a Neuropods dtype (ONNX has all of them).
pub fn to_ort(dtype: DType) -> TensorElementType {
    match dtype {
        DType::Float16 => TensorElementType::Float16,
        DType::Float32 => TensorElementType::Float32,
        DType::Float64 => TensorElementType::Float64,
        DType::Int8 => TensorElementType::Int8,
        DType::Int16 => TensorElementType::Int16,
        DType::Int32 => TensorElementType::Int32,
        DType::Int64 => TensorElementType::Int64,
        DType::Uint8 => TensorElementType::Uint8,
        DType::Uint16 => TensorElementType::Uint16,
        DType::Uint32 => TensorElementType::Uint32,
        DType::Uint64 => TensorElementType::Uint64,
        DType::Bool => TensorElementType::Bool,
        DType::String => TensorElementType::String,
    }
}

/// The Neuropods dtype of an element type; `None` for those Neuropods has
/// no equivalent of (bfloat16, complex, float8, 4-bit...).
pub fn from_ort(ty: TensorElementType) -> Option<DType> {
    DType::ALL.into_iter().find(|&dtype| to_ort(dtype) == ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_round_trips() {
        for dtype in DType::ALL {
            assert_eq!(from_ort(to_ort(dtype)), Some(dtype));
        }
        assert_eq!(from_ort(TensorElementType::Bfloat16), None);
        assert_eq!(from_ort(TensorElementType::Complex64), None);
    }
}

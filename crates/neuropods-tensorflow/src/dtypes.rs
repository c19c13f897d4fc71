//! Neuropods dtypes and TF's type codes (`TF_DataType`).

use std::ffi::c_int;

use neuropods_abi::DType;
use tensorflow_sys::TF_DataType;

/// TF's type for a Neuropods dtype (TF has all of them).
pub fn to_tf(dtype: DType) -> TF_DataType {
    match dtype {
        DType::Float16 => TF_DataType::TF_HALF,
        DType::Float32 => TF_DataType::TF_FLOAT,
        DType::Float64 => TF_DataType::TF_DOUBLE,
        DType::Int8 => TF_DataType::TF_INT8,
        DType::Int16 => TF_DataType::TF_INT16,
        DType::Int32 => TF_DataType::TF_INT32,
        DType::Int64 => TF_DataType::TF_INT64,
        DType::Uint8 => TF_DataType::TF_UINT8,
        DType::Uint16 => TF_DataType::TF_UINT16,
        DType::Uint32 => TF_DataType::TF_UINT32,
        DType::Uint64 => TF_DataType::TF_UINT64,
        DType::Bool => TF_DataType::TF_BOOL,
        DType::String => TF_DataType::TF_STRING,
    }
}

/// The Neuropods dtype of a TF type code; `None` for types Neuropods has no
/// equivalent of (complex, bfloat16, quantized, resources...).
pub fn from_tf(code: c_int) -> Option<DType> {
    DType::ALL
        .into_iter()
        .find(|&dtype| to_tf(dtype) as c_int == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_round_trips() {
        for dtype in DType::ALL {
            assert_eq!(from_tf(to_tf(dtype) as c_int), Some(dtype));
        }
        assert_eq!(from_tf(TF_DataType::TF_BFLOAT16 as c_int), None);
        assert_eq!(from_tf(101), None); // DT_FLOAT_REF
    }
}

//! Element types of tensors, and the Rust types that hold them.

use std::fmt;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DType {
    /// IEEE half precision.
    Float16 = 1,
    /// IEEE single precision.
    Float32 = 2,
    /// IEEE double precision.
    Float64 = 3,
    /// Signed 8-bit integer.
    Int8 = 4,
    /// Signed 16-bit integer.
    Int16 = 5,
    /// Signed 32-bit integer.
    Int32 = 6,
    /// Signed 64-bit integer.
    Int64 = 7,
    /// Unsigned 8-bit integer.
    Uint8 = 8,
    /// Unsigned 16-bit integer.
    Uint16 = 9,
    /// Unsigned 32-bit integer.
    Uint32 = 10,
    /// Unsigned 64-bit integer.
    Uint64 = 11,
    /// Boolean, one byte per element (0 or 1).
    Bool = 12,
    /// UTF-8 string.
    String = 13,
}

impl DType {
    /// Every dtype, in code order.
    pub const ALL: [DType; 13] = [
        DType::Float16,
        DType::Float32,
        DType::Float64,
        DType::Int8,
        DType::Int16,
        DType::Int32,
        DType::Int64,
        DType::Uint8,
        DType::Uint16,
        DType::Uint32,
        DType::Uint64,
        DType::Bool,
        DType::String,
    ];

    /// The name used in specs and by numpy (`"float32"`, `"string"`...).
    pub fn name(self) -> &'static str {
        match self {
            DType::Float16 => "float16",
            DType::Float32 => "float32",
            DType::Float64 => "float64",
            DType::Int8 => "int8",
            DType::Int16 => "int16",
            DType::Int32 => "int32",
            DType::Int64 => "int64",
            DType::Uint8 => "uint8",
            DType::Uint16 => "uint16",
            DType::Uint32 => "uint32",
            DType::Uint64 => "uint64",
            DType::Bool => "bool",
            DType::String => "string",
        }
    }

    /// Parses a spec dtype name.
    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Stable numeric code, used by the serializer and the backend ABI.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// Inverse of [`DType::code`].
    pub fn from_code(code: u32) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.code() == code)
    }

    /// Bytes per element; `None` for strings.
    pub fn item_size(self) -> Option<usize> {
        match self {
            DType::Int8 | DType::Uint8 | DType::Bool => Some(1),
            DType::Float16 | DType::Int16 | DType::Uint16 => Some(2),
            DType::Float32 | DType::Int32 | DType::Uint32 => Some(4),
            DType::Float64 | DType::Int64 | DType::Uint64 => Some(8),
            DType::String => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Rust element types that map to a numeric [`DType`].
pub trait Element: Copy + Send + Sync + 'static {
    /// The dtype of this element type.
    const DTYPE: DType;
}

macro_rules! element {
    ($($t:ty => $d:ident),* $(,)?) => {$(
        impl Element for $t { const DTYPE: DType = DType::$d; }
    )*};
}
element!(half::f16 => Float16, f32 => Float32, f64 => Float64, i8 => Int8, i16 => Int16,
         i32 => Int32, i64 => Int64, u8 => Uint8, u16 => Uint16, u32 => Uint32,
         u64 => Uint64, bool => Bool);

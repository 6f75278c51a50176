//! Tensors on the wire: a dtype, a shape and little-endian data. Every constructor and the decoder
//! check rank, element count and byte length against [`crate::limits`] before anything is allocated
//! from a declared size.

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_TENSOR_BYTES, MAX_TENSOR_ELEMENTS, MAX_TENSOR_RANK};

/// Element type of a tensor. Encoded on the wire as its lowercase name (`"f32"`, `"i64"`…), the
/// same names NumPy uses for the kind and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F16,
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
}

impl DType {
    /// Every dtype, for tests.
    pub const ALL: &'static [DType] = &[
        DType::F16,
        DType::F32,
        DType::F64,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::Bool,
    ];

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::F16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
        }
    }

    /// The lowercase name used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            DType::F16 => "f16",
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::U16 => "u16",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::Bool => "bool",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a tensor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("tensor rank {rank} exceeds the maximum {max}")]
    RankTooLarge { rank: usize, max: usize },
    #[error("tensor has more than {max} elements")]
    TooManyElements { max: u64 },
    #[error("tensor data exceeds {max} bytes")]
    TooManyBytes { max: u64 },
    #[error("tensor data is {actual} bytes but dtype and shape need {expected}")]
    DataLengthMismatch { expected: u64, actual: u64 },
    #[error("bool tensor holds a byte other than 0 or 1")]
    InvalidBool,
    #[error("tensor dtype is {actual}, expected {expected}")]
    WrongDType { expected: DType, actual: DType },
}

/// A validated tensor. Fields are private so that every value in the program has passed the limits.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawTensor", into = "RawTensor")]
pub struct Tensor {
    dtype: DType,
    shape: Vec<u64>,
    data: Vec<u8>,
}

// Tensors may hold client plaintext: Debug prints the dtype and shape, never the data.
impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// The serde shape of a tensor; converted into [`Tensor`] only through validation.
#[derive(Serialize, Deserialize)]
struct RawTensor {
    dtype: DType,
    shape: Vec<u64>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

impl TryFrom<RawTensor> for Tensor {
    type Error = TensorError;
    fn try_from(raw: RawTensor) -> Result<Self, TensorError> {
        Tensor::new(raw.dtype, raw.shape, raw.data)
    }
}

impl From<Tensor> for RawTensor {
    fn from(t: Tensor) -> Self {
        RawTensor {
            dtype: t.dtype,
            shape: t.shape,
            data: t.data,
        }
    }
}

/// Checks a shape against the rank and element limits and returns the byte length it needs.
pub fn checked_byte_len(dtype: DType, shape: &[u64]) -> Result<u64, TensorError> {
    if shape.len() > MAX_TENSOR_RANK {
        return Err(TensorError::RankTooLarge {
            rank: shape.len(),
            max: MAX_TENSOR_RANK,
        });
    }
    let mut elements: u64 = 1;
    for &dim in shape {
        elements = elements
            .checked_mul(dim)
            .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
            .ok_or(TensorError::TooManyElements {
                max: MAX_TENSOR_ELEMENTS,
            })?;
    }
    let bytes = elements
        .checked_mul(dtype.size() as u64)
        .filter(|&n| n <= MAX_TENSOR_BYTES)
        .ok_or(TensorError::TooManyBytes {
            max: MAX_TENSOR_BYTES,
        })?;
    Ok(bytes)
}

macro_rules! typed_access {
    ($from:ident, $to:ident, $ty:ty, $dt:expr) => {
        /// Builds a tensor from typed values (little-endian on the wire).
        pub fn $from(shape: Vec<u64>, values: &[$ty]) -> Result<Self, TensorError> {
            let mut data = Vec::with_capacity(values.len().saturating_mul(std::mem::size_of::<$ty>()));
            for v in values {
                data.extend_from_slice(&v.to_le_bytes());
            }
            Tensor::new($dt, shape, data)
        }

        /// Reads the values, if the dtype matches.
        pub fn $to(&self) -> Result<Vec<$ty>, TensorError> {
            if self.dtype != $dt {
                return Err(TensorError::WrongDType {
                    expected: $dt,
                    actual: self.dtype,
                });
            }
            const N: usize = std::mem::size_of::<$ty>();
            Ok(self
                .data
                .chunks_exact(N)
                .map(|c| {
                    let mut b = [0u8; N];
                    b.copy_from_slice(c);
                    <$ty>::from_le_bytes(b)
                })
                .collect())
        }
    };
}

impl Tensor {
    /// A tensor from raw little-endian bytes, checked against the limits and the shape.
    pub fn new(dtype: DType, shape: Vec<u64>, data: Vec<u8>) -> Result<Self, TensorError> {
        let expected = checked_byte_len(dtype, &shape)?;
        if data.len() as u64 != expected {
            return Err(TensorError::DataLengthMismatch {
                expected,
                actual: data.len() as u64,
            });
        }
        if dtype == DType::Bool && data.iter().any(|&b| b > 1) {
            return Err(TensorError::InvalidBool);
        }
        Ok(Tensor { dtype, shape, data })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// Raw little-endian element bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Number of elements (the product of the shape; 1 for a scalar).
    pub fn len(&self) -> u64 {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the parts apart.
    pub fn into_parts(self) -> (DType, Vec<u64>, Vec<u8>) {
        (self.dtype, self.shape, self.data)
    }

    typed_access!(from_f32, to_f32, f32, DType::F32);
    typed_access!(from_f64, to_f64, f64, DType::F64);
    typed_access!(from_i32, to_i32, i32, DType::I32);
    typed_access!(from_i64, to_i64, i64, DType::I64);
    typed_access!(from_u8, to_u8, u8, DType::U8);
}

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
#[derive(Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawTensor")]
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
#[derive(Deserialize)]
struct RawTensor {
    dtype: DType,
    #[serde(deserialize_with = "de_shape")]
    shape: Vec<u64>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

// The rank limit applies while decoding, before a long shape array is collected.
fn de_shape<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    crate::cbor::bounded_seq(d, MAX_TENSOR_RANK, "tensor dimensions")
}

impl TryFrom<RawTensor> for Tensor {
    type Error = TensorError;
    fn try_from(mut raw: RawTensor) -> Result<Self, TensorError> {
        let shape = std::mem::take(&mut raw.shape);
        let data = std::mem::take(&mut raw.data);
        Tensor::new(raw.dtype, shape, data)
    }
}

// Serialised by reference (no copy of the data), with the same shape as `RawTensor`.
impl Serialize for Tensor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct RawTensorRef<'a> {
            dtype: DType,
            shape: &'a [u64],
            #[serde(with = "serde_bytes")]
            data: &'a [u8],
        }
        RawTensorRef {
            dtype: self.dtype,
            shape: &self.shape,
            data: &self.data,
        }
        .serialize(s)
    }
}

// Tensor data may be client plaintext: wipe it when the tensor goes away.
impl Drop for Tensor {
    fn drop(&mut self) {
        crate::wipe::wipe(&mut self.data);
    }
}

impl Drop for RawTensor {
    fn drop(&mut self) {
        crate::wipe::wipe(&mut self.data);
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
        // Each dimension is bounded on its own, not only the product: a zero elsewhere in the shape
        // would otherwise let `[0, u64::MAX, u64::MAX]` through, and an engine computing strides
        // from it would overflow.
        if dim > MAX_TENSOR_ELEMENTS {
            return Err(TensorError::TooManyElements {
                max: MAX_TENSOR_ELEMENTS,
            });
        }
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
            // Shape and limits first, so that nothing is allocated for a tensor that is refused.
            let expected = checked_byte_len($dt, &shape)?;
            let actual = u64::try_from(values.len())
                .unwrap_or(u64::MAX)
                .saturating_mul(std::mem::size_of::<$ty>() as u64);
            if actual != expected {
                return Err(TensorError::DataLengthMismatch { expected, actual });
            }
            let mut data =
                Vec::with_capacity(values.len().saturating_mul(std::mem::size_of::<$ty>()));
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
            // The constructor checked that the data is a whole number of elements.
            let (elements, _) = self.data.as_chunks::<{ std::mem::size_of::<$ty>() }>();
            Ok(elements.iter().map(|b| <$ty>::from_le_bytes(*b)).collect())
        }
    };
}

impl Tensor {
    /// A tensor from raw little-endian bytes, checked against the limits and the shape.
    pub fn new(dtype: DType, shape: Vec<u64>, data: Vec<u8>) -> Result<Self, TensorError> {
        // From here on the data is wiped on drop, whether or not it passes the checks.
        let tensor = Tensor { dtype, shape, data };
        let expected = checked_byte_len(dtype, &tensor.shape)?;
        let actual = u64::try_from(tensor.data.len()).unwrap_or(u64::MAX);
        if actual != expected {
            return Err(TensorError::DataLengthMismatch { expected, actual });
        }
        if dtype == DType::Bool && tensor.data.iter().any(|&b| b > 1) {
            return Err(TensorError::InvalidBool);
        }
        Ok(tensor)
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
        // Bounded by construction; checked anyway, since `product` panics on overflow in debug.
        self.shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the parts apart.
    pub fn into_parts(mut self) -> (DType, Vec<u64>, Vec<u8>) {
        (
            self.dtype,
            std::mem::take(&mut self.shape),
            std::mem::take(&mut self.data),
        )
    }

    typed_access!(from_f32, to_f32, f32, DType::F32);
    typed_access!(from_f64, to_f64, f64, DType::F64);
    typed_access!(from_i32, to_i32, i32, DType::I32);
    typed_access!(from_i64, to_i64, i64, DType::I64);
    typed_access!(from_u8, to_u8, u8, DType::U8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cbor;

    #[test]
    fn every_dtype_has_its_element_size_and_wire_name() {
        let expected = [
            (DType::F16, 2, "f16"),
            (DType::F32, 4, "f32"),
            (DType::F64, 8, "f64"),
            (DType::I8, 1, "i8"),
            (DType::I16, 2, "i16"),
            (DType::I32, 4, "i32"),
            (DType::I64, 8, "i64"),
            (DType::U8, 1, "u8"),
            (DType::U16, 2, "u16"),
            (DType::U32, 4, "u32"),
            (DType::U64, 8, "u64"),
            (DType::Bool, 1, "bool"),
        ];
        assert_eq!(DType::ALL.len(), expected.len());
        for (dtype, size, name) in expected {
            assert!(DType::ALL.contains(&dtype));
            assert_eq!(dtype.size(), size, "{dtype}");
            assert_eq!(dtype.name(), name);
            assert_eq!(dtype.to_string(), name);
            // On the wire the dtype is its name as a CBOR text string.
            let enc = cbor::to_vec(&dtype).unwrap();
            let text: String = cbor::from_slice(&enc, 64).unwrap();
            assert_eq!(text, name);
            assert_eq!(cbor::from_slice::<DType>(&enc, 64).unwrap(), dtype);
        }
    }

    #[test]
    fn every_dtype_builds_a_tensor_of_the_right_byte_length() {
        for &dtype in DType::ALL {
            let t = Tensor::new(dtype, vec![2, 3], vec![0; 6 * dtype.size()]).unwrap();
            assert_eq!(t.len(), 6);
            assert_eq!(t.data().len(), 6 * dtype.size());
            assert!(Tensor::new(dtype, vec![2, 3], vec![0; 6 * dtype.size() + 1]).is_err());
        }
    }

    #[test]
    fn accepts_rank_up_to_max_and_rejects_rank_over_max() {
        assert!(Tensor::new(DType::U8, vec![1; MAX_TENSOR_RANK], vec![7]).is_ok());
        assert_eq!(
            Tensor::new(DType::U8, vec![1; MAX_TENSOR_RANK + 1], vec![7]),
            Err(TensorError::RankTooLarge {
                rank: MAX_TENSOR_RANK + 1,
                max: MAX_TENSOR_RANK
            })
        );
    }

    #[test]
    fn huge_dims_are_rejected_without_overflow_or_allocation() {
        let too_many = TensorError::TooManyElements {
            max: MAX_TENSOR_ELEMENTS,
        };
        for shape in [
            vec![u64::MAX, 2],
            vec![2, u64::MAX],
            vec![u64::MAX, u64::MAX],
            vec![1 << 32, 1 << 32],
            vec![MAX_TENSOR_ELEMENTS + 1],
            vec![2048, 2048, 2],
        ] {
            assert_eq!(checked_byte_len(DType::F64, &shape), Err(too_many.clone()));
            assert_eq!(
                Tensor::new(DType::F64, shape, Vec::new()),
                Err(too_many.clone())
            );
        }
    }

    #[test]
    fn huge_dim_is_rejected_even_when_another_dim_is_zero() {
        let too_many = Err(TensorError::TooManyElements {
            max: MAX_TENSOR_ELEMENTS,
        });
        for shape in [
            vec![0, u64::MAX],
            vec![u64::MAX, 0],
            vec![0, u64::MAX, u64::MAX],
        ] {
            assert_eq!(Tensor::new(DType::U8, shape, Vec::new()), too_many);
        }
        // A zero dimension with bounded neighbours is an empty tensor.
        let t = Tensor::new(DType::F32, vec![0, MAX_TENSOR_ELEMENTS], Vec::new()).unwrap();
        assert_eq!(t.len(), 0);
        assert!(t.is_empty());
    }

    #[test]
    fn element_limit_is_inclusive() {
        assert_eq!(
            checked_byte_len(DType::U8, &[MAX_TENSOR_ELEMENTS]),
            Ok(MAX_TENSOR_ELEMENTS)
        );
        assert_eq!(
            checked_byte_len(DType::U8, &[MAX_TENSOR_ELEMENTS / 4, 4]),
            Ok(MAX_TENSOR_ELEMENTS)
        );
    }

    #[test]
    fn rejects_tensor_over_the_byte_limit() {
        // 4 Mi elements of f32 is exactly the 16 MiB limit; f64 doubles it.
        assert_eq!(
            checked_byte_len(DType::F32, &[MAX_TENSOR_ELEMENTS]),
            Ok(MAX_TENSOR_BYTES)
        );
        assert_eq!(
            checked_byte_len(DType::F64, &[MAX_TENSOR_ELEMENTS]),
            Err(TensorError::TooManyBytes {
                max: MAX_TENSOR_BYTES
            })
        );
        assert_eq!(
            Tensor::new(DType::I64, vec![MAX_TENSOR_ELEMENTS], Vec::new()),
            Err(TensorError::TooManyBytes {
                max: MAX_TENSOR_BYTES
            })
        );
    }

    #[test]
    fn rejects_data_length_that_does_not_match_shape() {
        assert_eq!(
            Tensor::new(DType::F32, vec![2, 2], vec![0; 15]),
            Err(TensorError::DataLengthMismatch {
                expected: 16,
                actual: 15
            })
        );
        assert_eq!(
            Tensor::new(DType::F32, vec![], vec![0; 8]),
            Err(TensorError::DataLengthMismatch {
                expected: 4,
                actual: 8
            })
        );
        assert_eq!(
            Tensor::from_f32(vec![3], &[1.0, 2.0]),
            Err(TensorError::DataLengthMismatch {
                expected: 12,
                actual: 8
            })
        );
    }

    #[test]
    fn typed_constructor_checks_limits_before_copying() {
        assert_eq!(
            Tensor::from_i64(vec![u64::MAX, 2], &[1]),
            Err(TensorError::TooManyElements {
                max: MAX_TENSOR_ELEMENTS
            })
        );
    }

    #[test]
    fn scalar_has_one_element() {
        let t = Tensor::from_f32(vec![], &[2.5]).unwrap();
        assert_eq!(t.len(), 1);
        assert!(!t.is_empty());
        assert_eq!(t.to_f32().unwrap(), vec![2.5]);
    }

    #[test]
    fn bool_tensor_accepts_only_zero_and_one() {
        assert!(Tensor::new(DType::Bool, vec![2], vec![0, 1]).is_ok());
        for bad in [2u8, 0x80, 0xff] {
            assert_eq!(
                Tensor::new(DType::Bool, vec![2], vec![1, bad]),
                Err(TensorError::InvalidBool)
            );
        }
        // The same bytes are fine for u8.
        assert!(Tensor::new(DType::U8, vec![2], vec![1, 0xff]).is_ok());
    }

    #[test]
    fn typed_accessors_round_trip() {
        let f32s = [0.0f32, -1.5, f32::MAX, f32::MIN_POSITIVE, f32::INFINITY];
        let t = Tensor::from_f32(vec![5], &f32s).unwrap();
        assert_eq!((t.dtype(), t.shape()), (DType::F32, &[5u64][..]));
        assert_eq!(t.to_f32().unwrap(), f32s);
        assert_eq!(t.data()[4..8], (-1.5f32).to_le_bytes());

        let f64s = [1.0f64, -0.0, f64::EPSILON, 1e300];
        let t = Tensor::from_f64(vec![2, 2], &f64s).unwrap();
        assert_eq!(t.to_f64().unwrap(), f64s);

        let i32s = [i32::MIN, -1, 0, 1, i32::MAX, 7];
        let t = Tensor::from_i32(vec![3, 2], &i32s).unwrap();
        assert_eq!(t.to_i32().unwrap(), i32s);
        assert_eq!(t.data()[..4], i32::MIN.to_le_bytes());

        let i64s = [i64::MIN, i64::MAX];
        assert_eq!(
            Tensor::from_i64(vec![2], &i64s).unwrap().to_i64().unwrap(),
            i64s
        );

        let u8s = [0u8, 1, 254, 255];
        let t = Tensor::from_u8(vec![1, 4], &u8s).unwrap();
        assert_eq!(t.to_u8().unwrap(), u8s);
        assert_eq!(t.data(), u8s);
    }

    #[test]
    fn nan_survives_a_typed_round_trip_bit_for_bit() {
        let nan = f32::from_bits(0x7fc0_1234);
        let t = Tensor::from_f32(vec![1], &[nan]).unwrap();
        assert_eq!(t.to_f32().unwrap()[0].to_bits(), 0x7fc0_1234);
    }

    #[test]
    fn typed_accessor_refuses_another_dtype() {
        let t = Tensor::from_i32(vec![2], &[1, 2]).unwrap();
        assert_eq!(
            t.to_f32(),
            Err(TensorError::WrongDType {
                expected: DType::F32,
                actual: DType::I32
            })
        );
        assert!(t.to_i64().is_err());
        assert!(t.to_u8().is_err());
        let b = Tensor::new(DType::Bool, vec![1], vec![1]).unwrap();
        assert_eq!(
            b.to_u8(),
            Err(TensorError::WrongDType {
                expected: DType::U8,
                actual: DType::Bool
            })
        );
    }

    #[test]
    fn into_parts_returns_what_was_given() {
        let t = Tensor::new(DType::U16, vec![2], vec![1, 2, 3, 4]).unwrap();
        assert_eq!(t.into_parts(), (DType::U16, vec![2], vec![1, 2, 3, 4]));
    }

    #[test]
    fn debug_shows_shape_but_never_data() {
        let pattern = b"PLAINTEXT-PATTERN-0123456789abcd";
        let t = Tensor::new(DType::U8, vec![4, 8], pattern.to_vec()).unwrap();
        let s = format!("{t:?}");
        assert!(s.contains("[4, 8]") && s.contains("bytes: 32"), "{s}");
        assert!(!s.contains("PLAINTEXT"), "{s}");
        // Nor as a list of numbers ("80, 76, 65" is "PLA").
        assert!(!s.contains("80, 76, 65"), "{s}");
        let s = format!("{t:#?}");
        assert!(!s.contains("PLAINTEXT") && !s.contains("80,\n"), "{s}");
    }

    #[test]
    fn cbor_round_trip_keeps_every_field() {
        let t = Tensor::from_i64(vec![1, 3], &[-1, 0, 1]).unwrap();
        let enc = cbor::to_vec(&t).unwrap();
        assert_eq!(cbor::from_slice::<Tensor>(&enc, 1024).unwrap(), t);
    }

    #[test]
    fn decode_validates_like_the_constructor() {
        #[derive(Serialize)]
        struct Raw<'a> {
            dtype: &'a str,
            shape: Vec<u64>,
            #[serde(with = "serde_bytes")]
            data: Vec<u8>,
        }
        let decode = |dtype, shape, data| {
            let enc = cbor::to_vec(&Raw { dtype, shape, data }).unwrap();
            cbor::from_slice::<Tensor>(&enc, 1 << 20)
        };
        assert!(decode("u8", vec![2], vec![1, 2]).is_ok());
        for (dtype, shape, data) in [
            ("u8", vec![u64::MAX, 2], vec![]),
            ("u8", vec![1; 9], vec![0]),
            ("f32", vec![2], vec![0; 7]),
            ("bool", vec![1], vec![3]),
        ] {
            let err = decode(dtype, shape, data).unwrap_err();
            assert!(
                matches!(&err, cbor::CborError::Malformed(m) if m.contains("tensor")),
                "{err:?}"
            );
        }
        assert!(decode("f128", vec![1], vec![0; 16]).is_err());
    }
}

//! Tensor conversion between the wire ([`sealed_wire::Tensor`], little-endian bytes) and tract.
//!
//! Values are decoded element by element with `from_le_bytes` into a tensor that tract allocated
//! (so its alignment is tract's business, and no `unsafe` reinterpretation of bytes is needed), and
//! encoded back the same way. Output sizes are checked against the wire limits before the output
//! bytes are allocated.

use sealed_wire::limits::{MAX_SEALED_MESSAGE_LEN, MAX_TENSOR_RANK};
use sealed_wire::tensor::checked_byte_len;
use sealed_wire::{DType, Tensor};
use tract_onnx::prelude::{Datum, DatumType, TValue, Tensor as TractTensor, f16};

use super::EngineError;

/// The tract element type for a wire dtype (every wire dtype has one).
pub(super) fn tract_dtype(dtype: DType) -> DatumType {
    match dtype {
        DType::F16 => DatumType::F16,
        DType::F32 => DatumType::F32,
        DType::F64 => DatumType::F64,
        DType::I8 => DatumType::I8,
        DType::I16 => DatumType::I16,
        DType::I32 => DatumType::I32,
        DType::I64 => DatumType::I64,
        DType::U8 => DatumType::U8,
        DType::U16 => DatumType::U16,
        DType::U32 => DatumType::U32,
        DType::U64 => DatumType::U64,
        DType::Bool => DatumType::Bool,
    }
}

/// The wire dtype for a tract element type, if the wire can carry it (strings, symbolic
/// dimensions, quantized and complex types cannot).
pub(super) fn wire_dtype(dt: DatumType) -> Option<DType> {
    Some(match dt {
        DatumType::F16 => DType::F16,
        DatumType::F32 => DType::F32,
        DatumType::F64 => DType::F64,
        DatumType::I8 => DType::I8,
        DatumType::I16 => DType::I16,
        DatumType::I32 => DType::I32,
        DatumType::I64 => DType::I64,
        DatumType::U8 => DType::U8,
        DatumType::U16 => DType::U16,
        DatumType::U32 => DType::U32,
        DatumType::U64 => DType::U64,
        DatumType::Bool => DType::Bool,
        _ => return None,
    })
}

/// Fills a zeroed tract tensor of `T` from little-endian chunks of `N` bytes.
fn fill<T: Datum, const N: usize>(
    tensor: &mut TractTensor,
    data: &[u8],
    // Generic rather than a `fn` pointer, so that the per-element call inlines and the loop
    // vectorises (a pointer call per element cost ~10% of a 16 MB echo request).
    decode: impl Fn([u8; N]) -> T,
) -> Result<(), EngineError> {
    let mut view = tensor
        .try_as_plain_ram_mut()
        .map_err(|_| EngineError::Internal("input tensor is not plain memory"))?;
    let slots = view
        .as_slice_mut::<T>()
        .map_err(|_| EngineError::Internal("input tensor has an unexpected element type"))?;
    if slots.len().checked_mul(N) != Some(data.len()) {
        return Err(EngineError::Internal(
            "input tensor length disagrees with its shape",
        ));
    }
    // The length check above makes `data` a whole number of `N`-byte chunks.
    let (chunks, _) = data.as_chunks::<N>();
    for (slot, chunk) in slots.iter_mut().zip(chunks) {
        *slot = decode(*chunk);
    }
    Ok(())
}

/// A wire tensor (already validated by `sealed-wire`) as a tract input value.
pub(super) fn to_tract(tensor: &Tensor) -> Result<TValue, EngineError> {
    let shape = tensor
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| EngineError::InvalidTensor("dimension does not fit in memory".into()))?;
    let mut out = TractTensor::zero_dt(tract_dtype(tensor.dtype()), &shape)
        .map_err(|_| EngineError::Internal("could not allocate an input tensor"))?;
    let data = tensor.data();
    match tensor.dtype() {
        DType::F16 => fill::<f16, 2>(&mut out, data, |b| f16::from_bits(u16::from_le_bytes(b)))?,
        DType::F32 => fill::<f32, 4>(&mut out, data, f32::from_le_bytes)?,
        DType::F64 => fill::<f64, 8>(&mut out, data, f64::from_le_bytes)?,
        DType::I8 => fill::<i8, 1>(&mut out, data, i8::from_le_bytes)?,
        DType::I16 => fill::<i16, 2>(&mut out, data, i16::from_le_bytes)?,
        DType::I32 => fill::<i32, 4>(&mut out, data, i32::from_le_bytes)?,
        DType::I64 => fill::<i64, 8>(&mut out, data, i64::from_le_bytes)?,
        DType::U8 => fill::<u8, 1>(&mut out, data, u8::from_le_bytes)?,
        DType::U16 => fill::<u16, 2>(&mut out, data, u16::from_le_bytes)?,
        DType::U32 => fill::<u32, 4>(&mut out, data, u32::from_le_bytes)?,
        DType::U64 => fill::<u64, 8>(&mut out, data, u64::from_le_bytes)?,
        // sealed-wire guarantees 0 or 1.
        DType::Bool => fill::<bool, 1>(&mut out, data, |[b]| b != 0)?,
    }
    Ok(out.into())
}

/// Several wire tensors of one dtype, equal outside axis 0, joined along axis 0 (row-major, so
/// their bytes simply follow one another) as one tract input value. The joined bytes live in a
/// wire tensor, which wipes them when dropped.
pub(super) fn join_rows(parts: &[&Tensor]) -> Result<TValue, EngineError> {
    let first = parts
        .first()
        .ok_or(EngineError::Internal("nothing to join"))?;
    let mut rows = 0u64;
    let mut len = 0usize;
    for part in parts {
        if part.dtype() != first.dtype() || part.shape().get(1..) != first.shape().get(1..) {
            return Err(EngineError::Internal(
                "joined tensors differ outside axis 0",
            ));
        }
        let n = part
            .shape()
            .first()
            .ok_or(EngineError::Internal("a joined tensor has no axis 0"))?;
        rows = rows
            .checked_add(*n)
            .ok_or(EngineError::Internal("joined rows overflow"))?;
        len = len
            .checked_add(part.data().len())
            .ok_or(EngineError::Internal("joined bytes overflow"))?;
    }
    let mut shape = first.shape().to_vec();
    if let Some(axis0) = shape.first_mut() {
        *axis0 = rows;
    }
    let mut data = Vec::with_capacity(len);
    for part in parts {
        data.extend_from_slice(part.data());
    }
    let joined = Tensor::new(first.dtype(), shape, data).map_err(|_| {
        EngineError::InvalidTensor("the joined batch is over the tensor limits".into())
    })?;
    to_tract(&joined)
}

/// Appends the little-endian encoding of every `T` in `tensor` to `out`.
fn encode<T: Datum, const N: usize>(
    tensor: &TractTensor,
    out: &mut Vec<u8>,
    to_le: impl Fn(&T) -> [u8; N],
) -> Result<(), EngineError> {
    let view = tensor
        .try_as_plain_ram()
        .map_err(|_| EngineError::InferenceFailed("output is not plain memory"))?;
    let values = view
        .as_slice::<T>()
        .map_err(|_| EngineError::Internal("output has an unexpected element type"))?;
    let total = values
        .len()
        .checked_mul(N)
        .and_then(|n| n.checked_add(out.len()))
        .ok_or(EngineError::OutputTooLarge)?;
    out.reserve_exact(total - out.len());
    // Converted through a small stack block that stays in L1 and appended block by block: one
    // pass over the output that the compiler vectorises, without first zero-filling it (as
    // `resize` would) and without a capacity check per element.
    let mut block = [0u8; ENCODE_BLOCK];
    for values in values.chunks(ENCODE_BLOCK / N) {
        let n = values.len() * N;
        for (slot, v) in block.as_chunks_mut::<N>().0.iter_mut().zip(values) {
            *slot = to_le(v);
        }
        out.extend_from_slice(block.get(..n).ok_or(EngineError::Internal(
            "encode block is shorter than its chunk",
        ))?);
    }
    Ok(())
}

/// Bytes converted at a time by [`encode`]: a multiple of every element size.
const ENCODE_BLOCK: usize = 4096;

/// Room kept in a sealed response for everything but tensor data: CBOR framing, up to
/// `MAX_TENSORS` names of `MAX_NAME_LEN` bytes with their shapes, and the 48-byte seal overhead.
const RESPONSE_FRAMING_MARGIN: usize = 64 * 1024;

/// The most tensor data, all outputs together, that one response may carry: one sealed message
/// less the framing margin.
pub(super) const MAX_RESPONSE_DATA_LEN: usize = MAX_SEALED_MESSAGE_LEN - RESPONSE_FRAMING_MARGIN;

/// Running total of output bytes, so that a response stays within one sealed message.
#[derive(Debug, Default)]
pub(super) struct OutputBudget {
    used: u64,
}

/// A tract output value as a wire tensor. Limits (rank, elements, bytes, and the total over all
/// outputs) are checked before the output bytes are allocated.
pub(super) fn from_tract(value: &TValue, budget: &mut OutputBudget) -> Result<Tensor, EngineError> {
    let tensor: &TractTensor = value;
    let dtype = wire_dtype(tensor.datum_type()).ok_or(EngineError::InferenceFailed(
        "output has an element type the wire cannot carry",
    ))?;
    if tensor.rank() > MAX_TENSOR_RANK {
        return Err(EngineError::OutputTooLarge);
    }
    let shape: Vec<u64> = tensor.shape().iter().map(|&d| d as u64).collect();
    let len = checked_byte_len(dtype, &shape).map_err(|_| EngineError::OutputTooLarge)?;
    budget.used = budget
        .used
        .checked_add(len)
        .filter(|&n| n <= MAX_RESPONSE_DATA_LEN as u64)
        .ok_or(EngineError::OutputTooLarge)?;
    let capacity = usize::try_from(len).map_err(|_| EngineError::OutputTooLarge)?;
    let mut data = Vec::with_capacity(capacity);
    match dtype {
        DType::F16 => encode::<f16, 2>(tensor, &mut data, |v| v.to_bits().to_le_bytes())?,
        DType::F32 => encode::<f32, 4>(tensor, &mut data, |v| v.to_le_bytes())?,
        DType::F64 => encode::<f64, 8>(tensor, &mut data, |v| v.to_le_bytes())?,
        DType::I8 => encode::<i8, 1>(tensor, &mut data, |v| v.to_le_bytes())?,
        DType::I16 => encode::<i16, 2>(tensor, &mut data, |v| v.to_le_bytes())?,
        DType::I32 => encode::<i32, 4>(tensor, &mut data, |v| v.to_le_bytes())?,
        DType::I64 => encode::<i64, 8>(tensor, &mut data, |v| v.to_le_bytes())?,
        DType::U8 => encode::<u8, 1>(tensor, &mut data, |v| v.to_le_bytes())?,
        DType::U16 => encode::<u16, 2>(tensor, &mut data, |v| v.to_le_bytes())?,
        DType::U32 => encode::<u32, 4>(tensor, &mut data, |v| v.to_le_bytes())?,
        DType::U64 => encode::<u64, 8>(tensor, &mut data, |v| v.to_le_bytes())?,
        DType::Bool => encode::<bool, 1>(tensor, &mut data, |v| [u8::from(*v)])?,
    }
    Tensor::new(dtype, shape, data).map_err(|_| EngineError::OutputTooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(t: &Tensor) -> Tensor {
        let v = to_tract(t).unwrap();
        assert_eq!(v.datum_type(), tract_dtype(t.dtype()));
        from_tract(&v, &mut OutputBudget::default()).unwrap()
    }

    #[test]
    fn every_dtype_round_trips_through_tract_little_endian() {
        for &dtype in DType::ALL {
            // Bytes 0/1 are valid for every dtype, bool included; distinct per element.
            let n = 6usize;
            let data: Vec<u8> = (0..n * dtype.size())
                .map(|i| u8::from(i % 3 == 0))
                .collect();
            let t = Tensor::new(dtype, vec![2, 3], data).unwrap();
            assert_eq!(round_trip(&t), t, "{dtype}");
        }
    }

    #[test]
    fn values_are_read_little_endian() {
        let t = Tensor::from_i64(vec![3], &[1, -2, i64::MAX]).unwrap();
        let v = to_tract(&t).unwrap();
        assert_eq!(
            v.try_as_plain_ram().unwrap().as_slice::<i64>().unwrap(),
            &[1, -2, i64::MAX]
        );
        let f = Tensor::new(DType::F16, vec![1], vec![0x00, 0x3c]).unwrap(); // 1.0 in binary16
        let v = to_tract(&f).unwrap();
        assert_eq!(
            v.try_as_plain_ram().unwrap().as_slice::<f16>().unwrap(),
            &[f16::ONE]
        );
    }

    #[test]
    fn scalar_and_empty_tensors_convert() {
        let s = Tensor::from_f32(vec![], &[2.5]).unwrap();
        assert_eq!(round_trip(&s), s);
        let e = Tensor::from_f32(vec![0, 4], &[]).unwrap();
        assert_eq!(round_trip(&e), e);
    }

    #[test]
    fn output_over_the_element_limit_is_an_error() {
        let big =
            TractTensor::zero::<u8>(&[(sealed_wire::limits::MAX_TENSOR_ELEMENTS + 1) as usize])
                .unwrap();
        let err = from_tract(&big.into(), &mut OutputBudget::default()).unwrap_err();
        assert!(matches!(err, EngineError::OutputTooLarge));
    }

    #[test]
    fn outputs_together_over_one_sealed_message_are_an_error() {
        // Each output (half a message) is within the limits; together, with the room kept for
        // framing, they exceed one sealed message.
        let each = sealed_wire::limits::MAX_SEALED_MESSAGE_LEN / 2 / 4;
        let t: TValue = TractTensor::zero::<f32>(&[each]).unwrap().into();
        let mut budget = OutputBudget::default();
        assert!(from_tract(&t, &mut budget).is_ok());
        assert!(matches!(
            from_tract(&t, &mut budget),
            Err(EngineError::OutputTooLarge)
        ));
    }

    #[test]
    fn output_of_unsupported_dtype_is_an_error() {
        let t: TValue = tract_onnx::prelude::tensor0(String::from("x")).into();
        assert!(matches!(
            from_tract(&t, &mut OutputBudget::default()),
            Err(EngineError::InferenceFailed(_))
        ));
    }
}

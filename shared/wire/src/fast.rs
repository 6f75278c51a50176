//! A fast path for decoding the sealed-channel messages that carry tensors.
//!
//! ciborium copies a byte string through a 4 KiB scratch buffer into a `Vec` that doubles as it
//! grows: for a 16 MB tensor that is two copies plus the reallocations, and every reallocation
//! leaves a copy of the (plaintext) tensor in freed memory. This module reads exactly the layout
//! our encoder writes (RFC 8949 definite lengths, fields in declaration order, the serde layout of
//! [`InferRequest`] and [`InferResponse::Ok`]) and copies each tensor's data once into a buffer of
//! its exact size.
//!
//! It answers `None` for anything else (other field orders, tags, indefinite lengths, unknown
//! fields, an error response, a value that fails validation), and the caller then decodes with
//! ciborium, which accepts every valid encoding and gives the usual errors. So it never accepts
//! an input the full decoder would refuse, nor decodes one differently (tested against ciborium).
//! Every length is checked against the bytes that remain before anything is allocated.

use crate::limits::{MAX_SEALED_MESSAGE_LEN, MAX_TENSOR_RANK, MAX_TENSORS};
use crate::message::{InferRequest, InferResponse, NamedTensor, REQUEST_ID_LEN};
use crate::tensor::{DType, Tensor};

const UINT: u8 = 0;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;

/// A cursor over CBOR input (also `message::sealed_chunk_range`'s and
/// `message::infer_envelope_range`'s).
pub(crate) struct Reader<'a> {
    pub(crate) rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// One data item head (RFC 8949 §3): major type and argument. Indefinite lengths, reserved
    /// values and simple values with a payload are `None`.
    fn head(&mut self) -> Option<(u8, u64)> {
        let (&initial, rest) = self.rest.split_first()?;
        let major = initial >> 5;
        let (arg, rest) = match initial & 0x1f {
            ai @ 0..=23 => (u64::from(ai), rest),
            24 => {
                let (b, rest) = rest.split_first_chunk::<1>()?;
                (u64::from(b[0]), rest)
            }
            25 => {
                let (b, rest) = rest.split_first_chunk::<2>()?;
                (u64::from(u16::from_be_bytes(*b)), rest)
            }
            26 => {
                let (b, rest) = rest.split_first_chunk::<4>()?;
                (u64::from(u32::from_be_bytes(*b)), rest)
            }
            27 => {
                let (b, rest) = rest.split_first_chunk::<8>()?;
                (u64::from_be_bytes(*b), rest)
            }
            _ => return None,
        };
        self.rest = rest;
        Some((major, arg))
    }

    /// The argument of a head of major type `major`.
    pub(crate) fn expect(&mut self, major: u8) -> Option<u64> {
        match self.head()? {
            (m, arg) if m == major => Some(arg),
            _ => None,
        }
    }

    /// The payload of a byte or text string, bounded by the input that remains.
    fn string(&mut self, major: u8) -> Option<&'a [u8]> {
        let len = usize::try_from(self.expect(major)?).ok()?;
        let (s, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        Some(s)
    }

    fn text(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.string(TEXT)?).ok()
    }

    /// A text string that must equal `key` (a field name).
    fn key(&mut self, key: &str) -> Option<()> {
        (self.text()? == key).then_some(())
    }

    /// A map or array header with exactly `len` entries.
    fn exact(&mut self, major: u8, len: u64) -> Option<()> {
        (self.expect(major)? == len).then_some(())
    }

    /// A tensor list: `[{ "name": text, "tensor": {"dtype", "shape", "data"} }, …]`.
    fn tensors(&mut self) -> Option<Vec<NamedTensor>> {
        let count = usize::try_from(self.expect(ARRAY)?).ok()?;
        if count > MAX_TENSORS {
            return None;
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            self.exact(MAP, 2)?;
            self.key("name")?;
            let name = self.text()?.to_string();
            self.key("tensor")?;
            self.exact(MAP, 3)?;
            self.key("dtype")?;
            let dtype = self.text()?;
            let dtype = *DType::ALL.iter().find(|d| d.name() == dtype)?;
            self.key("shape")?;
            let rank = usize::try_from(self.expect(ARRAY)?).ok()?;
            if rank > MAX_TENSOR_RANK {
                return None;
            }
            let mut shape = Vec::with_capacity(rank);
            for _ in 0..rank {
                shape.push(self.expect(UINT)?);
            }
            self.key("data")?;
            // The one copy of the tensor's bytes, into a buffer of exactly their size.
            let data = self.string(BYTES)?.to_vec();
            // Validation failures go to the full decoder, which reports them.
            let tensor = Tensor::new(dtype, shape, data).ok()?;
            out.push(NamedTensor { name, tensor });
        }
        Some(out)
    }
}

/// [`InferRequest`] in the layout its encoder writes, or `None` (decode in full instead).
pub(crate) fn infer_request(bytes: &[u8]) -> Option<InferRequest> {
    if bytes.len() > MAX_SEALED_MESSAGE_LEN {
        return None;
    }
    let mut r = Reader { rest: bytes };
    r.exact(MAP, 4)?;
    r.key("request_id")?;
    let request_id: [u8; REQUEST_ID_LEN] = r.string(BYTES)?.try_into().ok()?;
    r.key("sent_at_ms")?;
    let sent_at_ms = r.expect(UINT)?;
    r.key("model_id")?;
    let model_id = r.text()?.to_string();
    r.key("inputs")?;
    let inputs = r.tensors()?;
    r.rest.is_empty().then_some(InferRequest {
        request_id,
        sent_at_ms,
        model_id,
        inputs,
    })
}

/// [`InferResponse::Ok`] in the layout its encoder writes, or `None` (decode in full instead,
/// which also covers every [`InferResponse::Error`]).
pub(crate) fn infer_response(bytes: &[u8]) -> Option<InferResponse> {
    if bytes.len() > MAX_SEALED_MESSAGE_LEN {
        return None;
    }
    let mut r = Reader { rest: bytes };
    r.exact(MAP, 1)?;
    r.key("ok")?;
    r.exact(MAP, 1)?;
    r.key("outputs")?;
    let outputs = r.tensors()?;
    r.rest.is_empty().then_some(InferResponse::Ok { outputs })
}

/// Length of the head of a data item with argument `arg` (RFC 8949 §3: the shortest form, as
/// ciborium writes it).
fn head_len(arg: u64) -> usize {
    match arg {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

fn put_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    // Each arm writes exactly the bytes `head_len` counts.
    match arg {
        0..=23 => out.push(m | arg as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, arg as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(arg as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(arg as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&arg.to_be_bytes());
        }
    }
}

fn string_len(len: usize) -> usize {
    head_len(len as u64) + len
}

fn put_string(out: &mut Vec<u8>, major: u8, bytes: &[u8]) {
    put_head(out, major, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Encoded length of a tensor list, the layout [`Reader::tensors`] reads.
fn tensors_len(tensors: &[NamedTensor]) -> usize {
    let mut n = head_len(tensors.len() as u64);
    for t in tensors {
        n += 1 + string_len(4) + string_len(t.name.len()) + string_len(6) + 1;
        n += string_len(5) + string_len(t.tensor.dtype().name().len());
        n += string_len(5) + head_len(t.tensor.shape().len() as u64);
        n += t.tensor.shape().iter().map(|&d| head_len(d)).sum::<usize>();
        n += string_len(4) + string_len(t.tensor.data().len());
    }
    n
}

fn put_tensors(out: &mut Vec<u8>, tensors: &[NamedTensor]) {
    put_head(out, ARRAY, tensors.len() as u64);
    for t in tensors {
        put_head(out, MAP, 2);
        put_string(out, TEXT, b"name");
        put_string(out, TEXT, t.name.as_bytes());
        put_string(out, TEXT, b"tensor");
        put_head(out, MAP, 3);
        put_string(out, TEXT, b"dtype");
        put_string(out, TEXT, t.tensor.dtype().name().as_bytes());
        put_string(out, TEXT, b"shape");
        put_head(out, ARRAY, t.tensor.shape().len() as u64);
        for &d in t.tensor.shape() {
            put_head(out, UINT, d);
        }
        put_string(out, TEXT, b"data");
        put_string(out, BYTES, t.tensor.data());
    }
}

/// `front` zero bytes, then `len` bytes written by `write`, in one allocation of exactly
/// `front + len + back` bytes: the buffer never grows, so no copy of the (plaintext) encoding is
/// left in freed memory, and a sealer can use the room on either side in place.
fn with_room(front: usize, len: usize, back: usize, write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(front.saturating_add(len).saturating_add(back));
    out.resize(front, 0);
    write(&mut out);
    debug_assert_eq!(
        out.len(),
        front + len,
        "encoded length disagrees with its count"
    );
    out
}

/// [`InferRequest`] encoded exactly as ciborium encodes it (tested below), after `front` bytes of
/// room and with `back` bytes of spare capacity.
pub(crate) fn encode_infer_request(req: &InferRequest, front: usize, back: usize) -> Vec<u8> {
    let len = 1
        + string_len(10)
        + string_len(REQUEST_ID_LEN)
        + string_len(10)
        + head_len(req.sent_at_ms)
        + string_len(8)
        + string_len(req.model_id.len())
        + string_len(6)
        + tensors_len(&req.inputs);
    with_room(front, len, back, |out| {
        put_head(out, MAP, 4);
        put_string(out, TEXT, b"request_id");
        put_string(out, BYTES, &req.request_id);
        put_string(out, TEXT, b"sent_at_ms");
        put_head(out, UINT, req.sent_at_ms);
        put_string(out, TEXT, b"model_id");
        put_string(out, TEXT, req.model_id.as_bytes());
        put_string(out, TEXT, b"inputs");
        put_tensors(out, &req.inputs);
    })
}

/// `InferResponse::Ok { outputs }` encoded exactly as ciborium encodes it, with room as in
/// [`encode_infer_request`].
pub(crate) fn encode_infer_response_ok(
    outputs: &[NamedTensor],
    front: usize,
    back: usize,
) -> Vec<u8> {
    let len = 1 + string_len(2) + 1 + string_len(7) + tensors_len(outputs);
    with_room(front, len, back, |out| {
        put_head(out, MAP, 1);
        put_string(out, TEXT, b"ok");
        put_head(out, MAP, 1);
        put_string(out, TEXT, b"outputs");
        put_tensors(out, outputs);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cbor;
    use crate::error::ErrorCode;

    fn named(name: &str, tensor: Tensor) -> NamedTensor {
        NamedTensor {
            name: name.into(),
            tensor,
        }
    }

    fn sample_tensors() -> Vec<NamedTensor> {
        vec![
            named("x", Tensor::from_f32(vec![2, 3], &[1.0; 6]).unwrap()),
            named("ids", Tensor::from_i64(vec![], &[7]).unwrap()),
            named(
                "big",
                Tensor::new(DType::U8, vec![70_000], vec![3; 70_000]).unwrap(),
            ),
            named(
                "mask",
                Tensor::new(DType::Bool, vec![2], vec![0, 1]).unwrap(),
            ),
        ]
    }

    #[test]
    fn decodes_what_the_encoder_writes_like_ciborium() {
        for inputs in [vec![], sample_tensors()] {
            let request = InferRequest {
                request_id: [9; REQUEST_ID_LEN],
                sent_at_ms: u64::MAX - 1,
                model_id: "model-1".into(),
                inputs: inputs.clone(),
            };
            let bytes = request.encode().unwrap();
            let full: InferRequest = cbor::from_slice(&bytes, MAX_SEALED_MESSAGE_LEN).unwrap();
            assert_eq!(infer_request(&bytes), Some(full));
            assert_eq!(infer_request(&bytes), Some(request));

            let response = InferResponse::Ok { outputs: inputs };
            let bytes = response.encode().unwrap();
            assert_eq!(infer_response(&bytes), Some(response));
        }
    }

    #[test]
    fn encodes_byte_for_byte_like_ciborium_with_room_on_both_sides() {
        let mut big_dims = sample_tensors();
        big_dims.push(named(
            "dims",
            Tensor::new(DType::U8, vec![0, 30, 300, 70_000, 5], vec![]).unwrap(),
        ));
        for sent_at_ms in [
            0,
            23,
            24,
            255,
            256,
            65_535,
            65_536,
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ] {
            for inputs in [vec![], sample_tensors(), big_dims.clone()] {
                let request = InferRequest {
                    request_id: [9; REQUEST_ID_LEN],
                    sent_at_ms,
                    model_id: "m".repeat(1 + (sent_at_ms % 200) as usize),
                    inputs: inputs.clone(),
                };
                let expected = cbor::to_vec(&request).unwrap();
                let ours = encode_infer_request(&request, 0, 0);
                assert_eq!(ours, expected);
                assert_eq!(ours.capacity(), expected.len());
                let roomy = encode_infer_request(&request, 39, 16);
                assert_eq!(&roomy[..39], &[0; 39]);
                assert_eq!(&roomy[39..], expected.as_slice());
                assert_eq!(roomy.capacity(), 39 + expected.len() + 16);

                let response = InferResponse::Ok { outputs: inputs };
                let expected = cbor::to_vec(&response).unwrap();
                let InferResponse::Ok { outputs } = &response else {
                    unreachable!()
                };
                assert_eq!(encode_infer_response_ok(outputs, 0, 0), expected);
                let roomy = encode_infer_response_ok(outputs, 32, 16);
                assert_eq!(&roomy[32..], expected.as_slice());
                assert_eq!(roomy.capacity(), 32 + expected.len() + 16);
            }
        }
    }

    #[test]
    fn leaves_other_layouts_and_invalid_values_to_the_full_decoder() {
        let error = InferResponse::Error {
            code: ErrorCode::UnknownModel,
            message: "m".into(),
        }
        .encode()
        .unwrap();
        assert_eq!(infer_response(&error), None);

        let request = InferRequest {
            request_id: [1; REQUEST_ID_LEN],
            sent_at_ms: 5,
            model_id: "m".into(),
            inputs: sample_tensors(),
        };
        let bytes = request.encode().unwrap();
        // Trailing bytes, truncation.
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(infer_request(&trailing), None);
        assert_eq!(infer_request(&bytes[..bytes.len() - 1]), None);
        // Every single-byte change is either refused here or decoded exactly as ciborium does.
        for i in 0..bytes.len().min(400) {
            for delta in [1u8, 0x20, 0x80] {
                let mut m = bytes.clone();
                m[i] = m[i].wrapping_add(delta);
                if let Some(fast) = infer_request(&m) {
                    let full: InferRequest = cbor::from_slice(&m, MAX_SEALED_MESSAGE_LEN).unwrap();
                    assert_eq!(fast, full, "byte {i} + {delta}");
                }
            }
        }
        // A bool tensor holding 2 is invalid: left to the full decoder's error.
        let bad_bool = {
            let mut b = InferResponse::Ok {
                outputs: vec![named(
                    "b",
                    Tensor::new(DType::Bool, vec![1], vec![1]).unwrap(),
                )],
            }
            .encode()
            .unwrap();
            let last = b.len() - 1;
            b[last] = 2;
            b
        };
        assert_eq!(infer_response(&bad_bool), None);
        assert!(InferResponse::decode(&bad_bool).is_err());
    }
}

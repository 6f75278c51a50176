//! Host↔enclave framing: `len: u32 BE | request_id: u64 BE | body`, where `len` counts the request
//! id and the body. `len` is checked against a hard maximum before any buffer is sized from it.
//! The same frames run over vsock on Nitro and over a Unix socket in simulation.

use crate::limits::MAX_FRAME_LEN;

/// Bytes before the body: the length and the request id.
pub const HEADER_LEN: usize = 12;
/// Bytes counted by `len` that are not body.
const ID_LEN: u32 = 8;

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {len} exceeds the maximum {max}")]
    TooLarge { len: u64, max: u32 },
    #[error("frame length {len} is shorter than its request id")]
    TooShort { len: u32 },
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub request_id: u64,
    /// Length of the body that follows the header.
    pub body_len: usize,
}

/// A whole frame.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub request_id: u64,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("request_id", &self.request_id)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Decodes and checks a frame header against `max` (at most [`MAX_FRAME_LEN`]).
pub fn decode_header(header: &[u8; HEADER_LEN], max: u32) -> Result<FrameHeader, FrameError> {
    let [l0, l1, l2, l3, i @ ..] = *header;
    let len = u32::from_be_bytes([l0, l1, l2, l3]);
    let max = max.min(MAX_FRAME_LEN);
    if len > max {
        return Err(FrameError::TooLarge {
            len: u64::from(len),
            max,
        });
    }
    if len < ID_LEN {
        return Err(FrameError::TooShort { len });
    }
    Ok(FrameHeader {
        request_id: u64::from_be_bytes(i),
        body_len: (len - ID_LEN) as usize,
    })
}

/// Encodes the header for a body of `body_len` bytes.
pub fn encode_header(request_id: u64, body_len: usize) -> Result<[u8; HEADER_LEN], FrameError> {
    let len = (body_len as u64).saturating_add(u64::from(ID_LEN));
    if len > u64::from(MAX_FRAME_LEN) {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let mut out = [0u8; HEADER_LEN];
    let (l, i) = out.split_at_mut(4);
    l.copy_from_slice(&(len as u32).to_be_bytes());
    i.copy_from_slice(&request_id.to_be_bytes());
    Ok(out)
}

/// Encodes a whole frame.
pub fn encode_frame(request_id: u64, body: &[u8]) -> Result<Vec<u8>, FrameError> {
    let header = encode_header(request_id, body.len())?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    Ok(out)
}

/// Incremental decoder for a byte stream: push what arrived, pop whole frames.
pub struct FrameDecoder {
    buf: Vec<u8>,
    max: u32,
}

impl FrameDecoder {
    pub fn new(max: u32) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            max: max.min(MAX_FRAME_LEN),
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Returns the next whole frame, `None` if more bytes are needed, or an error if the stream
    /// announced a frame that is too large or too short (the stream cannot be resynchronised then).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(header) = self.buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = decode_header(header, self.max)?;
        let total = HEADER_LEN + header.body_len;
        if self.buf.len() < total {
            return Ok(None);
        }
        let rest = self.buf.split_off(total);
        let mut whole = std::mem::replace(&mut self.buf, rest);
        let body = whole.split_off(HEADER_LEN);
        Ok(Some(Frame {
            request_id: header.request_id,
            body,
        }))
    }

    /// Bytes buffered but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

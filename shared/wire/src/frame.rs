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
    let body_len = len
        .checked_sub(ID_LEN)
        .ok_or(FrameError::TooShort { len })?;
    // u32 → usize cannot fail on the 32/64-bit targets we build for; checked anyway so that a
    // 16-bit build would refuse the frame instead of truncating its length.
    let body_len = usize::try_from(body_len).map_err(|_| FrameError::TooLarge {
        len: u64::from(len),
        max,
    })?;
    Ok(FrameHeader {
        request_id: u64::from_be_bytes(i),
        body_len,
    })
}

/// Encodes the header for a body of `body_len` bytes.
pub fn encode_header(request_id: u64, body_len: usize) -> Result<[u8; HEADER_LEN], FrameError> {
    let len = u64::try_from(body_len)
        .unwrap_or(u64::MAX)
        .saturating_add(u64::from(ID_LEN));
    let too_large = FrameError::TooLarge {
        len,
        max: MAX_FRAME_LEN,
    };
    if len > u64::from(MAX_FRAME_LEN) {
        return Err(too_large);
    }
    let len = u32::try_from(len).map_err(|_| too_large)?;
    let mut out = [0u8; HEADER_LEN];
    let (l, i) = out.split_at_mut(4);
    l.copy_from_slice(&len.to_be_bytes());
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
///
/// It buffers what it is given; a frame is held only until its last byte arrives, and no buffer
/// is sized from a declared length.
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the bytes not yet returned. Popping a frame advances it instead of moving the rest
    /// of the buffer, so that many small frames in one push cost linear, not quadratic, time.
    pos: usize,
    max: u32,
}

impl FrameDecoder {
    pub fn new(max: u32) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            pos: 0,
            max: max.min(MAX_FRAME_LEN),
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        // Drop what was already returned before growing the buffer (at most one move per push).
        if self.pos > 0 {
            self.buf.drain(..self.pos.min(self.buf.len()));
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Returns the next whole frame, `None` if more bytes are needed, or an error if the stream
    /// announced a frame that is too large or too short (the stream cannot be resynchronised then).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let pending = self.buf.get(self.pos..).unwrap_or_default();
        let Some(header) = pending.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = decode_header(header, self.max)?;
        // Cannot overflow: body_len is at most MAX_FRAME_LEN; checked to keep that local.
        let Some(total) = HEADER_LEN.checked_add(header.body_len) else {
            return Err(FrameError::TooLarge {
                len: u64::MAX,
                max: self.max,
            });
        };
        let Some(body) = pending.get(HEADER_LEN..total) else {
            return Ok(None);
        };
        let body = body.to_vec();
        self.pos = self.pos.saturating_add(total);
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        Ok(Some(Frame {
            request_id: header.request_id,
            body,
        }))
    }

    /// Bytes buffered but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(len: u32, request_id: u64) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&len.to_be_bytes());
        h[4..].copy_from_slice(&request_id.to_be_bytes());
        h
    }

    #[test]
    fn header_is_big_endian_length_then_request_id() {
        let h = encode_header(0x0102_0304_0506_0708, 5).unwrap();
        assert_eq!(h, [0, 0, 0, 13, 1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn header_round_trips() {
        for (id, body_len) in [
            (0, 0),
            (1, 1),
            (u64::MAX, 4096),
            (42, MAX_FRAME_LEN as usize - 8),
        ] {
            let h = encode_header(id, body_len).unwrap();
            let d = decode_header(&h, MAX_FRAME_LEN).unwrap();
            assert_eq!(
                d,
                FrameHeader {
                    request_id: id,
                    body_len
                }
            );
        }
    }

    #[test]
    fn rejects_frame_longer_than_max() {
        let h = header_bytes(1009, 3);
        assert_eq!(
            decode_header(&h, 1008),
            Err(FrameError::TooLarge {
                len: 1009,
                max: 1008
            })
        );
        assert!(decode_header(&h, 1009).is_ok());
    }

    #[test]
    fn caller_max_cannot_exceed_the_hard_maximum() {
        let h = header_bytes(MAX_FRAME_LEN + 1, 0);
        assert_eq!(
            decode_header(&h, u32::MAX),
            Err(FrameError::TooLarge {
                len: u64::from(MAX_FRAME_LEN) + 1,
                max: MAX_FRAME_LEN
            })
        );
        let h = header_bytes(u32::MAX, 0);
        assert!(matches!(
            decode_header(&h, u32::MAX),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn rejects_frame_shorter_than_its_request_id() {
        for len in 0..8 {
            assert_eq!(
                decode_header(&header_bytes(len, 9), 1024),
                Err(FrameError::TooShort { len })
            );
        }
        let ok = decode_header(&header_bytes(8, 9), 1024).unwrap();
        assert_eq!(ok.body_len, 0);
    }

    #[test]
    fn encode_refuses_body_over_the_hard_maximum() {
        let max_body = MAX_FRAME_LEN as usize - 8;
        assert!(encode_header(1, max_body).is_ok());
        assert_eq!(
            encode_header(1, max_body + 1),
            Err(FrameError::TooLarge {
                len: u64::from(MAX_FRAME_LEN) + 1,
                max: MAX_FRAME_LEN
            })
        );
        assert!(matches!(
            encode_header(1, usize::MAX),
            Err(FrameError::TooLarge { len: u64::MAX, .. })
        ));
    }

    #[test]
    fn encode_frame_is_header_then_body() {
        let f = encode_frame(7, b"abc").unwrap();
        assert_eq!(f, [0, 0, 0, 11, 0, 0, 0, 0, 0, 0, 0, 7, b'a', b'b', b'c']);
    }

    #[test]
    fn decoder_waits_for_a_whole_header() {
        let mut d = FrameDecoder::new(1024);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&[0, 0, 0]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.buffered(), 3);
    }

    #[test]
    fn decoder_assembles_a_frame_arriving_byte_by_byte() {
        let wire = encode_frame(77, b"hello frame").unwrap();
        let mut d = FrameDecoder::new(1024);
        let (last, init) = wire.split_last().unwrap();
        for b in init {
            d.push(std::slice::from_ref(b));
            assert_eq!(d.next_frame(), Ok(None));
        }
        d.push(std::slice::from_ref(last));
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(f.request_id, 77);
        assert_eq!(f.body, b"hello frame");
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.next_frame(), Ok(None));
    }

    #[test]
    fn decoder_returns_several_frames_from_one_push() {
        let mut wire = Vec::new();
        for (id, body) in [(1u64, &b"one"[..]), (2, b""), (3, b"three")] {
            wire.extend(encode_frame(id, body).unwrap());
        }
        wire.extend(&encode_frame(4, b"four").unwrap()[..5]);
        let mut d = FrameDecoder::new(1024);
        d.push(&wire);
        let got: Vec<_> = std::iter::from_fn(|| d.next_frame().unwrap()).collect();
        assert_eq!(
            got,
            vec![
                Frame {
                    request_id: 1,
                    body: b"one".to_vec()
                },
                Frame {
                    request_id: 2,
                    body: vec![]
                },
                Frame {
                    request_id: 3,
                    body: b"three".to_vec()
                },
            ]
        );
        assert_eq!(d.buffered(), 5);
    }

    #[test]
    fn decoder_joins_a_frame_split_across_pushes() {
        let a = encode_frame(10, b"first body").unwrap();
        let b = encode_frame(11, b"second").unwrap();
        let wire = [a, b].concat();
        // Split inside the first body, then inside the second header.
        let mut d = FrameDecoder::new(1024);
        d.push(&wire[..15]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&wire[15..25]);
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!((f.request_id, f.body.as_slice()), (10, &b"first body"[..]));
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.buffered(), 3);
        d.push(&wire[25..]);
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!((f.request_id, f.body.as_slice()), (11, &b"second"[..]));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn decoder_rejects_oversized_frame_before_its_body_arrives() {
        let mut d = FrameDecoder::new(100);
        d.push(&header_bytes(101, 1));
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge { len: 101, max: 100 })
        );
        // The stream cannot be resynchronised: the error sticks.
        d.push(&[0; 200]);
        assert!(d.next_frame().is_err());
    }

    #[test]
    fn decoder_pops_many_small_frames_from_one_push_in_linear_time() {
        // 200 000 empty frames in 2.4 MB: moving the rest of the buffer after every frame would
        // copy about 240 GB; advancing an offset copies nothing.
        let n = 200_000u64;
        let mut wire = Vec::new();
        for id in 0..n {
            wire.extend_from_slice(&encode_header(id, 0).unwrap());
        }
        let start = std::time::Instant::now();
        let mut d = FrameDecoder::new(1024);
        d.push(&wire);
        let mut next_id = 0;
        while let Some(f) = d.next_frame().unwrap() {
            assert_eq!(f.request_id, next_id);
            next_id += 1;
        }
        assert_eq!(next_id, n);
        assert_eq!(d.buffered(), 0);
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn decoder_keeps_the_unread_tail_across_pushes() {
        let mut d = FrameDecoder::new(1024);
        let a = encode_frame(1, b"aa").unwrap();
        let b = encode_frame(2, b"bbbb").unwrap();
        d.push(&[&a[..], &b[..3]].concat());
        assert_eq!(d.next_frame().unwrap().unwrap().body, b"aa");
        assert_eq!(d.buffered(), 3);
        // The next push compacts the buffer; the partial header must survive it.
        d.push(&b[3..]);
        assert_eq!(d.buffered(), b.len());
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!((f.request_id, f.body.as_slice()), (2, &b"bbbb"[..]));
    }

    #[test]
    fn decoder_rejects_too_short_frame() {
        let mut d = FrameDecoder::new(100);
        d.push(&header_bytes(3, 1));
        assert_eq!(d.next_frame(), Err(FrameError::TooShort { len: 3 }));
    }

    #[test]
    fn debug_of_frame_shows_length_not_body() {
        let f = Frame {
            request_id: 5,
            body: b"SECRET-PAYLOAD-BYTES".to_vec(),
        };
        let s = format!("{f:?}");
        assert!(s.contains("body_len: 20"), "{s}");
        assert!(!s.contains("SECRET"), "{s}");
        assert!(!s.contains("83, 69, 67"), "{s}");
    }
}

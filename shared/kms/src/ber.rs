//! A small, bounded BER reader and writer (ITU-T X.690 §8) for the one CMS structure KMS returns.
//!
//! Why hand-written: KMS `CiphertextForRecipient` is BER with indefinite lengths and, at times,
//! constructed OCTET STRINGs (nitro-facts.md §9). RustCrypto `der`/`cms` decode DER only, and real
//! KMS responses fail to parse there (RustCrypto/formats issue #779). We need only a handful of
//! universal and context tags, so a reader over byte slices is smaller than a BER-to-DER shim.
//!
//! What it does: splits TLVs with definite (short and long form, at most 4 length octets) and
//! indefinite lengths, checks every length against the bytes that remain, and bounds nesting depth
//! and total input size. What it does not do: high tag numbers (≥ 31), which KMS never emits, or any
//! interpretation of contents — that is `cms`'s job.

use thiserror::Error;

/// Largest input we look at. KMS caps `CiphertextForRecipient` at 6144 bytes; 64 KiB leaves room.
pub const MAX_INPUT: usize = 64 * 1024;
/// Deepest nesting we follow. The KMS structure is 7 levels deep.
pub const MAX_DEPTH: usize = 16;

/// Why a BER encoding was rejected. Offsets are not reported: the input is short and the kind of
/// fault is what a caller can act on.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum BerError {
    #[error("BER input of {len} bytes exceeds the {max}-byte limit")]
    InputTooLarge { len: usize, max: usize },
    #[error("BER nesting deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("BER element truncated")]
    Truncated,
    #[error("BER high tag number form is not supported")]
    HighTagNumber,
    #[error("BER length form is invalid or too long")]
    BadLength,
    #[error("BER indefinite length on a primitive element")]
    IndefinitePrimitive,
    #[error("BER end-of-contents marker where none is allowed")]
    UnexpectedEndOfContents,
    #[error("BER unexpected tag 0x{found:02x}, expected 0x{expected:02x}")]
    UnexpectedTag { found: u8, expected: u8 },
    #[error("BER trailing data after the last element")]
    TrailingData,
}

/// Bit 6 of the identifier octet: constructed encoding (X.690 §8.1.2.5).
pub const CONSTRUCTED: u8 = 0x20;

/// One decoded element. `content` excludes the header and, for indefinite lengths, the
/// end-of-contents octets.
#[derive(Debug, Clone, Copy)]
pub struct Element<'a> {
    pub tag: u8,
    pub content: &'a [u8],
    depth: usize,
}

impl<'a> Element<'a> {
    pub fn is_constructed(&self) -> bool {
        self.tag & CONSTRUCTED != 0
    }

    /// A reader over the children of a constructed element.
    pub fn children(&self) -> Result<Reader<'a>, BerError> {
        if !self.is_constructed() {
            return Err(BerError::UnexpectedTag {
                found: self.tag,
                expected: self.tag | CONSTRUCTED,
            });
        }
        Reader::nested(self.content, self.depth + 1)
    }

    /// The bytes of an OCTET STRING-like element (tag number `tag`, with either encoding): a
    /// primitive element's content, or the concatenation of a constructed one's segments
    /// (X.690 §8.7.3). Appends to `out`, which never grows past `max`.
    pub fn octets_into(&self, out: &mut Vec<u8>, max: usize) -> Result<(), BerError> {
        if !self.is_constructed() {
            if out.len().saturating_add(self.content.len()) > max {
                return Err(BerError::InputTooLarge {
                    len: out.len().saturating_add(self.content.len()),
                    max,
                });
            }
            out.extend_from_slice(self.content);
            return Ok(());
        }
        // Segments of a constructed string are themselves OCTET STRINGs (X.690 §8.7.3.2),
        // primitive or constructed; depth is bounded by `Reader::nested`.
        let mut segments = self.children()?;
        while let Some(segment) = segments.next()? {
            if segment.tag & !CONSTRUCTED != TAG_OCTET_STRING {
                return Err(BerError::UnexpectedTag {
                    found: segment.tag,
                    expected: TAG_OCTET_STRING,
                });
            }
            segment.octets_into(out, max)?;
        }
        Ok(())
    }
}

pub const TAG_INTEGER: u8 = 0x02;
pub const TAG_OCTET_STRING: u8 = 0x04;
pub const TAG_NULL: u8 = 0x05;
pub const TAG_OID: u8 = 0x06;
pub const TAG_SEQUENCE: u8 = 0x30;
pub const TAG_SET: u8 = 0x31;

/// Iterates over consecutive elements in a byte slice.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    depth: usize,
}

impl<'a> Reader<'a> {
    /// A reader over a whole top-level input.
    pub fn new(buf: &'a [u8]) -> Result<Self, BerError> {
        if buf.len() > MAX_INPUT {
            return Err(BerError::InputTooLarge {
                len: buf.len(),
                max: MAX_INPUT,
            });
        }
        Ok(Self { buf, depth: 0 })
    }

    fn nested(buf: &'a [u8], depth: usize) -> Result<Self, BerError> {
        if depth > MAX_DEPTH {
            return Err(BerError::TooDeep { max: MAX_DEPTH });
        }
        Ok(Self { buf, depth })
    }

    /// The next element, or `None` at the end of the slice.
    pub fn next(&mut self) -> Result<Option<Element<'a>>, BerError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let (element, rest) = read_element(self.buf, self.depth)?;
        self.buf = rest;
        Ok(Some(element))
    }

    /// The next element, which must exist and carry `tag`.
    pub fn expect(&mut self, tag: u8) -> Result<Element<'a>, BerError> {
        let element = self.next()?.ok_or(BerError::Truncated)?;
        if element.tag != tag {
            return Err(BerError::UnexpectedTag {
                found: element.tag,
                expected: tag,
            });
        }
        Ok(element)
    }

    /// The next element if it carries `tag`; otherwise nothing is consumed.
    pub fn optional(&mut self, tag: u8) -> Result<Option<Element<'a>>, BerError> {
        match self.buf.first() {
            Some(&t) if t == tag => self.expect(tag).map(Some),
            _ => Ok(None),
        }
    }

    /// Fails unless every element has been read.
    pub fn finish(self) -> Result<(), BerError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(BerError::TrailingData)
        }
    }
}

/// Length octets (X.690 §8.1.3).
enum Length {
    Definite(usize),
    Indefinite,
}

/// Splits a header into (tag, length, rest).
fn read_header(buf: &[u8]) -> Result<(u8, Length, &[u8]), BerError> {
    let (&tag, rest) = buf.split_first().ok_or(BerError::Truncated)?;
    if tag & 0x1f == 0x1f {
        return Err(BerError::HighTagNumber);
    }
    let (&first, mut rest) = rest.split_first().ok_or(BerError::Truncated)?;
    let length = match first {
        0x00..=0x7f => Length::Definite(usize::from(first)),
        0x80 => Length::Indefinite,
        // 0xff is reserved (X.690 §8.1.3.5 c); more than 4 octets would exceed MAX_INPUT anyway.
        0x81..=0x84 => {
            let n = usize::from(first & 0x7f);
            let (octets, after) = rest.split_at_checked(n).ok_or(BerError::Truncated)?;
            rest = after;
            Length::Definite(
                octets
                    .iter()
                    .fold(0usize, |acc, &b| (acc << 8) | usize::from(b)),
            )
        }
        _ => return Err(BerError::BadLength),
    };
    Ok((tag, length, rest))
}

/// Reads one element at `depth` from the front of `buf`; returns it and what follows.
fn read_element(buf: &[u8], depth: usize) -> Result<(Element<'_>, &[u8]), BerError> {
    if depth > MAX_DEPTH {
        return Err(BerError::TooDeep { max: MAX_DEPTH });
    }
    let (tag, length, rest) = read_header(buf)?;
    if tag == 0 {
        // End-of-contents only closes an indefinite element; `skip_indefinite` consumes those.
        return Err(BerError::UnexpectedEndOfContents);
    }
    match length {
        Length::Definite(len) => {
            let (content, after) = rest.split_at_checked(len).ok_or(BerError::Truncated)?;
            Ok((
                Element {
                    tag,
                    content,
                    depth,
                },
                after,
            ))
        }
        Length::Indefinite => {
            // X.690 §8.1.3.2 a: indefinite form only for constructed encodings.
            if tag & CONSTRUCTED == 0 {
                return Err(BerError::IndefinitePrimitive);
            }
            let content_len = indefinite_content_len(rest, depth + 1)?;
            let content = rest.get(..content_len).ok_or(BerError::Truncated)?;
            // Skip the two end-of-contents octets.
            let after = rest.get(content_len + 2..).ok_or(BerError::Truncated)?;
            Ok((
                Element {
                    tag,
                    content,
                    depth,
                },
                after,
            ))
        }
    }
}

/// Length of the contents of an indefinite element that starts at `buf`, up to (not including)
/// its end-of-contents octets. Recursion is bounded by `MAX_DEPTH`.
fn indefinite_content_len(buf: &[u8], depth: usize) -> Result<usize, BerError> {
    if depth > MAX_DEPTH {
        return Err(BerError::TooDeep { max: MAX_DEPTH });
    }
    let mut pos = 0usize;
    loop {
        let here = buf.get(pos..).ok_or(BerError::Truncated)?;
        let (tag, length, rest) = read_header(here)?;
        let header_len = here.len() - rest.len();
        match (tag, length) {
            (0, Length::Definite(0)) => return Ok(pos),
            (0, _) => return Err(BerError::UnexpectedEndOfContents),
            (_, Length::Definite(len)) => {
                if len > rest.len() {
                    return Err(BerError::Truncated);
                }
                pos += header_len + len;
            }
            (tag, Length::Indefinite) => {
                if tag & CONSTRUCTED == 0 {
                    return Err(BerError::IndefinitePrimitive);
                }
                let inner = indefinite_content_len(rest, depth + 1)?;
                // inner + 2 ≤ rest.len() holds: the inner end-of-contents was read from `rest`.
                pos += header_len + inner + 2;
            }
        }
    }
}

/// Appends a definite-length header (X.690 §8.1.3.4/§8.1.3.5, minimal form).
pub fn write_header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    if len < 0x80 {
        // Fits in 7 bits.
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
}

/// Appends a definite-length element.
pub fn write_definite(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    write_header(out, tag, content.len());
    out.extend_from_slice(content);
}

/// Appends an indefinite-length constructed element whose contents `f` writes.
pub fn write_indefinite(out: &mut Vec<u8>, tag: u8, f: impl FnOnce(&mut Vec<u8>)) {
    out.push(tag | CONSTRUCTED);
    out.push(0x80);
    f(out);
    out.extend_from_slice(&[0, 0]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_definite_and_indefinite_lengths() {
        // SEQUENCE (indefinite) { INTEGER 5, OCTET STRING (long form) "ab" } EOC
        let buf = [
            0x30, 0x80, 0x02, 0x01, 0x05, 0x04, 0x81, 0x02, b'a', b'b', 0, 0,
        ];
        let mut r = Reader::new(&buf).unwrap();
        let seq = r.expect(TAG_SEQUENCE).unwrap();
        r.finish().unwrap();
        let mut c = seq.children().unwrap();
        assert_eq!(c.expect(TAG_INTEGER).unwrap().content, [5]);
        assert_eq!(c.expect(TAG_OCTET_STRING).unwrap().content, b"ab");
        c.finish().unwrap();
    }

    #[test]
    fn concatenates_constructed_octet_string_segments() {
        let buf = [
            0x24, 0x80, 0x04, 0x01, 1, 0x24, 0x80, 0x04, 0x01, 2, 0, 0, 0, 0,
        ];
        let mut r = Reader::new(&buf).unwrap();
        let s = r.expect(0x24).unwrap();
        let mut out = Vec::new();
        s.octets_into(&mut out, 16).unwrap();
        assert_eq!(out, [1, 2]);
        let mut small = Vec::new();
        assert!(s.octets_into(&mut small, 1).is_err());
    }

    #[test]
    fn rejects_indefinite_primitive() {
        let buf = [0x04, 0x80, 1, 0, 0];
        let mut r = Reader::new(&buf).unwrap();
        assert_eq!(r.next().unwrap_err(), BerError::IndefinitePrimitive);
    }

    #[test]
    fn rejects_length_past_end() {
        let buf = [0x04, 0x82, 0x01, 0x00, 1, 2];
        let mut r = Reader::new(&buf).unwrap();
        assert_eq!(r.next().unwrap_err(), BerError::Truncated);
    }

    #[test]
    fn rejects_missing_end_of_contents() {
        let buf = [0x30, 0x80, 0x02, 0x01, 0x05];
        let mut r = Reader::new(&buf).unwrap();
        assert_eq!(r.next().unwrap_err(), BerError::Truncated);
    }

    #[test]
    fn rejects_nesting_deeper_than_limit() {
        let mut buf = Vec::new();
        for _ in 0..(MAX_DEPTH + 2) {
            buf.extend_from_slice(&[0x30, 0x80]);
        }
        for _ in 0..(MAX_DEPTH + 2) {
            buf.extend_from_slice(&[0, 0]);
        }
        let mut r = Reader::new(&buf).unwrap();
        assert_eq!(r.next().unwrap_err(), BerError::TooDeep { max: MAX_DEPTH });
    }

    #[test]
    fn rejects_input_over_limit() {
        let buf = vec![0u8; MAX_INPUT + 1];
        assert!(matches!(
            Reader::new(&buf),
            Err(BerError::InputTooLarge { .. })
        ));
    }

    #[test]
    fn writes_minimal_long_form_lengths() {
        let mut out = Vec::new();
        write_header(&mut out, TAG_OCTET_STRING, 0x100);
        assert_eq!(out, [0x04, 0x82, 0x01, 0x00]);
        out.clear();
        write_header(&mut out, TAG_OCTET_STRING, 0x7f);
        assert_eq!(out, [0x04, 0x7f]);
        out.clear();
        write_header(&mut out, TAG_OCTET_STRING, 0x80);
        assert_eq!(out, [0x04, 0x81, 0x80]);
    }
}

//! NumPy `.npy` files ↔ [`sealed_wire::Tensor`].
//!
//! What it does: reads and writes the `.npy` format (NumPy NEP 1, "A Simple File Format for NumPy
//! Arrays"; versions 1.0, 2.0 and 3.0) for the dtypes the wire carries: `f2 f4 f8 i1 i2 i4 i8 u1
//! u2 u4 u8 b1`, little-endian (`<`) or byte-order-free (`|`, one-byte types only), C order. The
//! writer produces the same bytes as `numpy.save` for these arrays (version 1.0, header padded to a
//! multiple of 64 bytes).
//!
//! What it does not do: big-endian or native-order (`=`) data, Fortran order, object, string or
//! structured dtypes, pickles, `.npz` archives, memory mapping. All of these are refused with a
//! typed error rather than converted.
//!
//! Hand-written rather than a crate: the format is a 10-byte preamble and a one-line Python dict
//! literal, and we need strict bounds that the crates we looked at do not give (header length and
//! data length checked against `sealed-wire`'s tensor limits *before* anything is allocated, and a
//! strict dict parser instead of a Python-literal evaluator).

use std::io::Read;
use std::path::Path;

use sealed_wire::limits::MAX_TENSOR_BYTES;
use sealed_wire::tensor::checked_byte_len;
use sealed_wire::{DType, Tensor, TensorError};

/// `\x93NUMPY`, the first six bytes of every `.npy` file (NEP 1, "Format Specification").
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Longest header accepted. NumPy itself refuses headers over 10 000 bytes by default
/// (`max_header_size`); ours hold at most rank 8 shapes and are about 120 bytes.
pub const MAX_HEADER_LEN: usize = 4096;
/// Largest `.npy` file read: the longest header plus the largest tensor the wire carries.
pub const MAX_FILE_LEN: u64 = 12 + MAX_HEADER_LEN as u64 + MAX_TENSOR_BYTES;
/// NumPy aligns the data to 64 bytes (NEP 1, since NumPy 1.14: "padded ... divisible by 64").
const ALIGN: usize = 64;

/// Why a `.npy` file was refused.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("not a .npy file (bad magic)")]
    BadMagic,
    #[error("unsupported .npy format version {major}.{minor} (supported: 1.0, 2.0, 3.0)")]
    UnsupportedVersion { major: u8, minor: u8 },
    #[error("file ends before the end of the header")]
    TruncatedHeader,
    #[error(".npy header of {len} bytes exceeds the maximum of {max}")]
    HeaderTooLong { len: usize, max: usize },
    #[error("malformed .npy header: {0}")]
    MalformedHeader(&'static str),
    #[error("unsupported dtype {0:?} (supported: f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1)")]
    UnsupportedDType(String),
    #[error("big-endian or native-order data ({0:?}) is not supported; save little-endian")]
    ByteOrder(String),
    #[error("Fortran-order arrays are not supported; save with C order")]
    FortranOrder,
    #[error("array does not fit the tensor limits: {0}")]
    Tensor(#[from] TensorError),
    #[error("array data is {actual} bytes but dtype and shape need {expected}")]
    DataLength { expected: u64, actual: u64 },
    #[error(".npy file exceeds the maximum of {max} bytes")]
    FileTooLarge { max: u64 },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads a whole `.npy` file from memory. The bytes after the header must be exactly the data.
pub fn read(bytes: &[u8]) -> Result<Tensor, NpyError> {
    let (header, data) = split_header(bytes)?;
    let parsed = parse_header(header)?;
    if parsed.fortran_order {
        return Err(NpyError::FortranOrder);
    }
    // Limits first: `checked_byte_len` bounds rank, element count and byte count, so a header
    // that declares a huge shape is refused here, before any copy of the data is made.
    let expected = checked_byte_len(parsed.dtype, &parsed.shape)?;
    let actual = data.len() as u64;
    if actual != expected {
        return Err(NpyError::DataLength { expected, actual });
    }
    Ok(Tensor::new(parsed.dtype, parsed.shape, data.to_vec())?)
}

/// Reads a `.npy` file from disk, refusing files over [`MAX_FILE_LEN`] without reading them whole.
pub fn read_file(path: &Path) -> Result<Tensor, NpyError> {
    let file = std::fs::File::open(path)?;
    // `take` caps the read even if the file grows or is a pipe: the metadata length is a hint.
    let mut limited = file.take(MAX_FILE_LEN + 1);
    let mut bytes = Vec::new();
    limited.read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(NpyError::FileTooLarge { max: MAX_FILE_LEN });
    }
    read(&bytes)
}

/// Encodes a tensor as a version 1.0 `.npy` file, byte for byte as `numpy.save` writes it.
pub fn write(tensor: &Tensor) -> Vec<u8> {
    let descr = descr_of(tensor.dtype());
    let shape = match tensor.shape() {
        [] => "()".to_string(),
        [one] => format!("({one},)"),
        dims => {
            let parts: Vec<String> = dims.iter().map(u64::to_string).collect();
            format!("({})", parts.join(", "))
        }
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Rank ≤ 8 keeps the header far below the 65 535 bytes that version 1.0 can describe.
    let preamble = MAGIC.len() + 2 + 2;
    let unpadded = preamble + header.len() + 1;
    let padding = (ALIGN - unpadded % ALIGN) % ALIGN;
    header.extend(std::iter::repeat_n(' ', padding));
    header.push('\n');

    let mut out = Vec::with_capacity(preamble + header.len() + tensor.data().len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    // Lossless: rank ≤ 8 bounds the header to a few hundred bytes.
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(tensor.data());
    out
}

/// Writes a tensor to a `.npy` file (see [`write()`]).
pub fn write_file(path: &Path, tensor: &Tensor) -> Result<(), NpyError> {
    std::fs::write(path, write(tensor))?;
    Ok(())
}

/// The NumPy `descr` string of a dtype, as `numpy.save` writes it on a little-endian machine.
pub fn descr_of(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "<f2",
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::I8 => "|i1",
        DType::I16 => "<i2",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::U8 => "|u1",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::Bool => "|b1",
    }
}

/// Splits a file into its header text and its data, checking magic, version and header length.
fn split_header(bytes: &[u8]) -> Result<(&[u8], &[u8]), NpyError> {
    let Some((magic, rest)) = bytes.split_first_chunk::<6>() else {
        return Err(NpyError::BadMagic);
    };
    if magic != MAGIC {
        return Err(NpyError::BadMagic);
    }
    let Some(([major, minor], rest)) = rest.split_first_chunk::<2>() else {
        return Err(NpyError::TruncatedHeader);
    };
    // NEP 1: version 1.0 has a u16 little-endian header length; 2.0 widens it to u32; 3.0 is 2.0
    // with a UTF-8 header. We accept only ASCII headers, which are valid in all three.
    let (header_len, rest) = match (*major, *minor) {
        (1, 0) => {
            let Some((len, rest)) = rest.split_first_chunk::<2>() else {
                return Err(NpyError::TruncatedHeader);
            };
            (usize::from(u16::from_le_bytes(*len)), rest)
        }
        (2, 0) | (3, 0) => {
            let Some((len, rest)) = rest.split_first_chunk::<4>() else {
                return Err(NpyError::TruncatedHeader);
            };
            let len = u32::from_le_bytes(*len);
            (usize::try_from(len).unwrap_or(usize::MAX), rest)
        }
        (major, minor) => return Err(NpyError::UnsupportedVersion { major, minor }),
    };
    if header_len > MAX_HEADER_LEN {
        return Err(NpyError::HeaderTooLong {
            len: header_len,
            max: MAX_HEADER_LEN,
        });
    }
    if rest.len() < header_len {
        return Err(NpyError::TruncatedHeader);
    }
    Ok(rest.split_at(header_len))
}

struct Header {
    dtype: DType,
    fortran_order: bool,
    shape: Vec<u64>,
}

/// Parses the header dict strictly: exactly the keys `descr`, `fortran_order` and `shape`, once
/// each, in any order; Python literal syntax limited to what `numpy.save` writes (quoted string,
/// `True`/`False`, a tuple of decimal integers); then only spaces and one final newline.
fn parse_header(header: &[u8]) -> Result<Header, NpyError> {
    if !header.is_ascii() {
        return Err(NpyError::MalformedHeader("header is not ASCII"));
    }
    let mut p = Parser {
        input: header,
        pos: 0,
    };
    let mut descr: Option<String> = None;
    let mut fortran_order: Option<bool> = None;
    let mut shape: Option<Vec<u64>> = None;

    p.skip_ws();
    p.expect(b'{')?;
    loop {
        p.skip_ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.skip_ws();
        p.expect(b':')?;
        p.skip_ws();
        let duplicate = match key.as_str() {
            "descr" => descr.replace(p.string()?).is_some(),
            "fortran_order" => fortran_order.replace(p.boolean()?).is_some(),
            "shape" => shape.replace(p.tuple()?).is_some(),
            _ => return Err(NpyError::MalformedHeader("unexpected key")),
        };
        if duplicate {
            return Err(NpyError::MalformedHeader("duplicate key"));
        }
        p.skip_ws();
        if p.eat(b',') {
            continue;
        }
        p.expect(b'}')?;
        break;
    }
    // NEP 1: "terminated by a newline (\n) and padded with spaces (\x20)".
    match p.rest().split_last() {
        Some((b'\n', padding)) if padding.iter().all(|&b| b == b' ') => {}
        _ => {
            return Err(NpyError::MalformedHeader(
                "header must end with spaces and a newline",
            ));
        }
    }

    let descr = descr.ok_or(NpyError::MalformedHeader("missing key 'descr'"))?;
    let fortran_order =
        fortran_order.ok_or(NpyError::MalformedHeader("missing key 'fortran_order'"))?;
    let shape = shape.ok_or(NpyError::MalformedHeader("missing key 'shape'"))?;
    Ok(Header {
        dtype: dtype_of(&descr)?,
        fortran_order,
        shape,
    })
}

/// Maps a `descr` to a dtype: `<` for any supported type, `|` for one-byte types only.
fn dtype_of(descr: &str) -> Result<DType, NpyError> {
    let unsupported = || {
        let mut shown = descr.to_string();
        shown.truncate(32);
        NpyError::UnsupportedDType(shown)
    };
    let Some((order, kind)) = descr.split_at_checked(1) else {
        return Err(unsupported());
    };
    let dtype = match kind {
        "f2" => DType::F16,
        "f4" => DType::F32,
        "f8" => DType::F64,
        "i1" => DType::I8,
        "i2" => DType::I16,
        "i4" => DType::I32,
        "i8" => DType::I64,
        "u1" => DType::U8,
        "u2" => DType::U16,
        "u4" => DType::U32,
        "u8" => DType::U64,
        "b1" => DType::Bool,
        _ => return Err(unsupported()),
    };
    match order {
        "<" => Ok(dtype),
        "|" if dtype.size() == 1 => Ok(dtype),
        // `=` is the writer's native order, which the file does not record: refuse, as for `>`.
        ">" | "=" => Err(NpyError::ByteOrder(descr.to_string())),
        _ => Err(unsupported()),
    }
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn rest(&self) -> &[u8] {
        self.input.get(self.pos..).unwrap_or_default()
    }

    fn skip_ws(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), NpyError> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(NpyError::MalformedHeader("unexpected character"))
        }
    }

    /// A Python string literal in single or double quotes, without escapes (NumPy never writes
    /// any for the keys and dtypes we accept).
    fn string(&mut self) -> Result<String, NpyError> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(NpyError::MalformedHeader("expected a quoted string")),
        };
        self.pos += 1;
        let start = self.pos;
        loop {
            match self.peek() {
                Some(b) if b == quote => break,
                Some(b'\\') | Some(b'\n') | None => {
                    return Err(NpyError::MalformedHeader("unterminated or escaped string"));
                }
                Some(_) => self.pos += 1,
            }
        }
        let text = self.input.get(start..self.pos).unwrap_or_default();
        self.pos += 1;
        // ASCII was checked for the whole header.
        Ok(String::from_utf8_lossy(text).into_owned())
    }

    fn boolean(&mut self) -> Result<bool, NpyError> {
        for (word, value) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.rest().starts_with(word) {
                self.pos += word.len();
                return Ok(value);
            }
        }
        Err(NpyError::MalformedHeader("expected True or False"))
    }

    /// A tuple of non-negative decimal integers: `()`, `(n,)`, `(n, m)`, `(n, m,)`.
    fn tuple(&mut self) -> Result<Vec<u64>, NpyError> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(b')') {
                // `(5)` is the integer 5 in Python, not a tuple: one element needs its comma,
                // which the loop below has then consumed.
                return Ok(dims);
            }
            // Bounded before growth: a header is at most MAX_HEADER_LEN bytes anyway, but the
            // rank limit is much tighter and gives a clearer error.
            if dims.len() >= sealed_wire::limits::MAX_TENSOR_RANK {
                return Err(NpyError::Tensor(TensorError::RankTooLarge {
                    rank: dims.len() + 1,
                    max: sealed_wire::limits::MAX_TENSOR_RANK,
                }));
            }
            dims.push(self.integer()?);
            self.skip_ws();
            if self.eat(b',') {
                continue;
            }
            if dims.len() == 1 {
                return Err(NpyError::MalformedHeader("one-element shape needs a comma"));
            }
            self.expect(b')')?;
            return Ok(dims);
        }
    }

    fn integer(&mut self) -> Result<u64, NpyError> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = self.input.get(start..self.pos).unwrap_or_default();
        // Python 3 rejects leading zeros in decimal literals (`01`).
        if digits.is_empty() || (digits.len() > 1 && digits.first() == Some(&b'0')) {
            return Err(NpyError::MalformedHeader("expected a decimal integer"));
        }
        std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(NpyError::MalformedHeader(
                "dimension does not fit in 64 bits",
            ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with the given header text (padding and newline added like NumPy does).
    fn file_with_header(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn header_error(header: &str, data: &[u8]) -> NpyError {
        read(&file_with_header(header, data)).unwrap_err()
    }

    #[test]
    fn every_dtype_round_trips_through_write_and_read() {
        for &dtype in DType::ALL {
            for shape in [vec![], vec![3], vec![2, 3], vec![1, 2, 1, 2], vec![0, 4]] {
                let n: u64 = shape.iter().product();
                let data: Vec<u8> = (0..n as usize * dtype.size())
                    .map(|i| {
                        if dtype == DType::Bool {
                            (i % 2) as u8
                        } else {
                            i as u8
                        }
                    })
                    .collect();
                let t = Tensor::new(dtype, shape.clone(), data).unwrap();
                let bytes = write(&t);
                assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
                let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
                assert_eq!((10 + header_len) % 64, 0, "data is 64-byte aligned");
                assert_eq!(read(&bytes).unwrap(), t, "{dtype} {shape:?}");
            }
        }
    }

    #[test]
    fn writes_shapes_as_python_tuples() {
        let header = |shape: Vec<u64>| {
            let n: u64 = shape.iter().product();
            let t = Tensor::new(DType::U8, shape, vec![0; n as usize]).unwrap();
            let bytes = write(&t);
            String::from_utf8(bytes[10..].to_vec()).unwrap()
        };
        assert!(header(vec![]).contains("'shape': (), }"));
        assert!(header(vec![5]).contains("'shape': (5,), }"));
        assert!(header(vec![2, 3]).contains("'shape': (2, 3), }"));
        assert!(header(vec![2]).starts_with("{'descr': '|u1', 'fortran_order': False,"));
    }

    #[test]
    fn accepts_keys_in_any_order_double_quotes_and_trailing_commas() {
        let t = read(&file_with_header(
            "{\"shape\": (2, 1,), 'fortran_order': False, 'descr': '<i2'}",
            &[1, 0, 2, 0],
        ))
        .unwrap();
        assert_eq!((t.dtype(), t.shape()), (DType::I16, &[2u64, 1][..]));
    }

    #[test]
    fn accepts_little_endian_marker_on_one_byte_types() {
        let t = read(&file_with_header(
            "{'descr': '<u1', 'fortran_order': False, 'shape': (1,), }",
            &[9],
        ))
        .unwrap();
        assert_eq!(t.to_u8().unwrap(), vec![9]);
    }

    #[test]
    fn reads_versions_two_and_three() {
        let t = Tensor::from_i32(vec![2], &[-1, 7]).unwrap();
        let v1 = write(&t);
        let header_len = u16::from_le_bytes([v1[8], v1[9]]) as usize;
        let header = &v1[10..10 + header_len];
        for major in [2u8, 3] {
            let mut f = MAGIC.to_vec();
            f.extend_from_slice(&[major, 0]);
            f.extend_from_slice(&(header.len() as u32).to_le_bytes());
            f.extend_from_slice(header);
            f.extend_from_slice(t.data());
            assert_eq!(read(&f).unwrap(), t);
        }
    }

    #[test]
    fn rejects_bad_magic_and_unknown_versions() {
        assert!(matches!(
            read(b"\x93NUMPZ\x01\x00"),
            Err(NpyError::BadMagic)
        ));
        assert!(matches!(read(b"\x93NUM"), Err(NpyError::BadMagic)));
        assert!(matches!(read(b""), Err(NpyError::BadMagic)));
        assert!(matches!(
            read(b"\x93NUMPY\x04\x00\x00\x00"),
            Err(NpyError::UnsupportedVersion { major: 4, minor: 0 })
        ));
        assert!(matches!(
            read(b"\x93NUMPY\x01\x01\x00\x00"),
            Err(NpyError::UnsupportedVersion { major: 1, minor: 1 })
        ));
    }

    #[test]
    fn rejects_header_longer_than_max_before_reading_it() {
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&[2, 0]);
        f.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read(&f),
            Err(NpyError::HeaderTooLong { len, max: MAX_HEADER_LEN }) if len == u32::MAX as usize
        ));
    }

    #[test]
    fn rejects_truncated_header() {
        let mut f = write(&Tensor::from_u8(vec![1], &[1]).unwrap());
        f.truncate(40);
        assert!(matches!(read(&f), Err(NpyError::TruncatedHeader)));
        assert!(matches!(
            read(b"\x93NUMPY\x01\x00\x05"),
            Err(NpyError::TruncatedHeader)
        ));
    }

    #[test]
    fn rejects_malformed_header_dicts() {
        let ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }";
        assert!(read(&file_with_header(ok, &[0; 4])).is_ok());
        for bad in [
            "",
            "'descr': '<f4'",
            "{'descr': '<f4', 'fortran_order': False, }",
            "{'descr': '<f4', 'shape': (1,), }",
            "{'fortran_order': False, 'shape': (1,), }",
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,), }",
            "{'descr': '<f4', 'fortran_order': false, 'shape': (1,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': [1], }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (01,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1.0,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }",
            "{'descr': '<f\\4', 'fortran_order': False, 'shape': (1,), }",
            "{'descr': <f4, 'fortran_order': False, 'shape': (1,), }",
            "{'descr': '<f4' 'fortran_order': False, 'shape': (1,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } x",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)",
        ] {
            let err = header_error(bad, &[0; 4]);
            assert!(
                matches!(err, NpyError::MalformedHeader(_)),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn rejects_header_without_final_newline_or_with_other_padding() {
        let header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (1,), }\t\t\n";
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&[1, 0]);
        f.extend_from_slice(&(header.len() as u16).to_le_bytes());
        f.extend_from_slice(header);
        f.push(1);
        assert!(matches!(read(&f), Err(NpyError::MalformedHeader(_))));
        let header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (1,), }   ";
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&[1, 0]);
        f.extend_from_slice(&(header.len() as u16).to_le_bytes());
        f.extend_from_slice(header);
        f.push(1);
        assert!(matches!(read(&f), Err(NpyError::MalformedHeader(_))));
    }

    #[test]
    fn rejects_non_ascii_header() {
        let err = header_error(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'é': 1}",
            &[0; 4],
        );
        assert!(matches!(
            err,
            NpyError::MalformedHeader("header is not ASCII")
        ));
    }

    #[test]
    fn rejects_fortran_order() {
        let err = header_error(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
            &[0; 16],
        );
        assert!(matches!(err, NpyError::FortranOrder));
    }

    #[test]
    fn rejects_big_endian_and_native_order() {
        for descr in [">f4", "=f4", ">i8"] {
            let h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (1,), }}");
            assert!(
                matches!(header_error(&h, &[0; 8]), NpyError::ByteOrder(_)),
                "{descr}"
            );
        }
    }

    #[test]
    fn rejects_object_string_structured_and_odd_dtypes() {
        for descr in [
            "|O", "<U4", "|S4", "<c8", "<f16", "|f4", "|i2", "f4", "", "<V8", "<M8[s]",
        ] {
            let h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (1,), }}");
            assert!(
                matches!(header_error(&h, &[0; 4]), NpyError::UnsupportedDType(_)),
                "{descr}"
            );
        }
        // A structured dtype is a list, not a string.
        let err = header_error(
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
            &[0; 4],
        );
        assert!(matches!(err, NpyError::MalformedHeader(_)));
    }

    #[test]
    fn rejects_data_length_that_does_not_match_shape() {
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
        assert!(matches!(
            header_error(h, &[0; 7]),
            NpyError::DataLength {
                expected: 8,
                actual: 7
            }
        ));
        assert!(matches!(
            header_error(h, &[0; 9]),
            NpyError::DataLength {
                expected: 8,
                actual: 9
            }
        ));
    }

    #[test]
    fn rejects_huge_shapes_before_allocating() {
        for h in [
            "{'descr': '<f8', 'fortran_order': False, 'shape': (18446744073709551615, 2), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4194304, 4194304), }",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (4194304,), }",
            "{'descr': '|u1', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }",
        ] {
            assert!(matches!(header_error(h, &[]), NpyError::Tensor(_)), "{h}");
        }
    }

    #[test]
    fn rejects_bool_bytes_other_than_zero_and_one() {
        let h = "{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }";
        assert!(matches!(
            header_error(h, &[1, 2]),
            NpyError::Tensor(TensorError::InvalidBool)
        ));
    }

    #[test]
    fn read_file_refuses_missing_file_and_reads_written_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.npy");
        assert!(matches!(read_file(&path), Err(NpyError::Io(_))));
        let t = Tensor::from_f64(vec![2], &[1.5, -2.0]).unwrap();
        write_file(&path, &t).unwrap();
        assert_eq!(read_file(&path).unwrap(), t);
    }
}

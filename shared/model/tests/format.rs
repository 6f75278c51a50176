//! Behaviour of the sealed-model format through its public API: round trips at chunk boundaries,
//! and rejection of bit flips, truncation, reordering, header edits, wrong keys, relabelled last
//! chunks and wrong digests.

use proptest::prelude::*;
use sealed_model::{
    MIN_CHUNK_SIZE, ModelFormatError, Opener, SealParams, SealedModelHeader, Sealer, TAG_LEN, open,
    parse_header, seal,
};
use sha2::{Digest, Sha384};

const KEY: [u8; 32] = [0x42; 32];
const PREFIX: [u8; 7] = [9, 8, 7, 6, 5, 4, 3];
const CS: usize = MIN_CHUNK_SIZE as usize;

fn params() -> SealParams {
    SealParams {
        model_id: "mnist-12".to_string(),
        kms_key_id: "arn:aws:kms:eu-west-1:111122223333:key/abcd".to_string(),
        encrypted_data_key: vec![0xC1; 200],
        chunk_size: MIN_CHUNK_SIZE,
    }
}

fn model(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

fn sealed(len: usize) -> (Vec<u8>, Vec<u8>) {
    let pt = model(len);
    (seal(params(), &KEY, &pt, PREFIX).unwrap(), pt)
}

/// Header prefix length and chunk byte ranges of a sealed file.
fn chunks(file: &[u8]) -> (usize, Vec<std::ops::Range<usize>>) {
    let (header, start) = parse_header(file).unwrap();
    let n = header.chunk_count().unwrap() as usize;
    let mut ranges = Vec::new();
    let mut at = start;
    for i in 0..n {
        let pt = if i + 1 == n {
            header.plaintext_len as usize - i * CS
        } else {
            CS
        };
        ranges.push(at..at + pt + TAG_LEN);
        at += pt + TAG_LEN;
    }
    assert_eq!(at, file.len());
    (start, ranges)
}

/// Re-encodes the header with `edit` applied, keeping the chunks.
fn with_header_edit(file: &[u8], edit: impl FnOnce(&mut SealedModelHeader)) -> Vec<u8> {
    let (mut header, start) = parse_header(file).unwrap();
    edit(&mut header);
    let mut out = header.encode().unwrap();
    out.extend_from_slice(&file[start..]);
    out
}

#[test]
fn round_trips_at_chunk_boundaries() {
    for len in [0, 1, CS - 1, CS, CS + 1, 2 * CS, 5 * CS + 123] {
        let (file, pt) = sealed(len);
        let opened = open(&file, &KEY).unwrap();
        assert_eq!(opened.as_slice(), pt.as_slice(), "len {len}");
        let (header, _) = parse_header(&file).unwrap();
        assert_eq!(header.plaintext_len, len as u64);
        assert_eq!(
            header.plaintext_sha384.as_slice(),
            Sha384::digest(&pt).as_slice()
        );
        let n = header.chunk_count().unwrap() as usize;
        assert_eq!(n, len.div_ceil(CS).max(1));
        assert_eq!(chunks(&file).1.len(), n);
    }
}

#[test]
fn ciphertext_does_not_contain_the_plaintext() {
    let (file, pt) = sealed(3 * CS);
    let (start, _) = chunks(&file);
    assert!(!file[start..].windows(64).any(|w| w == &pt[..64]));
}

#[test]
fn streaming_sealer_and_opener_match_one_shot() {
    let pt = model(3 * CS + 10);
    let file = seal(params(), &KEY, &pt, PREFIX).unwrap();
    let (header, start) = parse_header(&file).unwrap();

    let mut sealer = Sealer::new(&header, &KEY).unwrap();
    let mut streamed = sealer.header_bytes().to_vec();
    let pieces: Vec<&[u8]> = pt.chunks(CS).collect();
    for (i, piece) in pieces.iter().enumerate() {
        streamed.extend(sealer.seal_chunk(piece, i + 1 == pieces.len()).unwrap());
    }
    sealer.finish().unwrap();
    assert_eq!(streamed, file);

    let mut opener = Opener::new(&header, &file[..start], &KEY).unwrap();
    let mut out = opener.output_buffer().unwrap();
    let capacity = out.capacity();
    let mut rest = &file[start..];
    while let Some(len) = opener.next_chunk_len() {
        let (chunk, tail) = rest.split_at(len);
        opener.open_chunk(chunk, &mut out).unwrap();
        rest = tail;
    }
    assert!(rest.is_empty());
    opener.finish().unwrap();
    assert_eq!(out.as_slice(), pt.as_slice());
    // Decrypted in place into the one preallocated buffer.
    assert_eq!(out.capacity(), capacity);
}

#[test]
fn sealer_rejects_misordered_or_mis_sized_chunks() {
    let pt = model(2 * CS + 1);
    let file = seal(params(), &KEY, &pt, PREFIX).unwrap();
    let (header, _) = parse_header(&file).unwrap();

    let mut s = Sealer::new(&header, &KEY).unwrap();
    assert!(matches!(
        s.seal_chunk(&pt[..CS - 1], false),
        Err(ModelFormatError::Misuse { .. })
    ));
    let mut s = Sealer::new(&header, &KEY).unwrap();
    assert!(matches!(
        s.seal_chunk(&pt[..CS], true),
        Err(ModelFormatError::Misuse { .. })
    ));
    let mut s = Sealer::new(&header, &KEY).unwrap();
    s.seal_chunk(&pt[..CS], false).unwrap();
    assert!(matches!(s.finish(), Err(ModelFormatError::Misuse { .. })));
}

#[test]
fn every_flipped_bit_position_is_rejected() {
    let (file, _) = sealed(CS + 100);
    for pos in 0..file.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = file.clone();
            bad[pos] ^= bit;
            assert!(open(&bad, &KEY).is_err(), "flip {bit:#x} at {pos} accepted");
        }
    }
}

#[test]
fn every_truncation_and_any_extension_is_rejected() {
    let (file, _) = sealed(2 * CS + 7);
    for cut in 0..file.len() {
        assert!(open(&file[..cut], &KEY).is_err(), "cut at {cut} accepted");
    }
    let mut longer = file.clone();
    longer.push(0);
    assert_eq!(open(&longer, &KEY), Err(ModelFormatError::TrailingData));
}

#[test]
fn swapped_chunks_are_rejected() {
    let (file, _) = sealed(3 * CS);
    let (start, r) = chunks(&file);
    let mut bad = file[..start].to_vec();
    bad.extend_from_slice(&file[r[1].clone()]);
    bad.extend_from_slice(&file[r[0].clone()]);
    bad.extend_from_slice(&file[r[2].clone()]);
    assert_eq!(
        open(&bad, &KEY),
        Err(ModelFormatError::ChunkAuthFailed { index: 0 })
    );
}

#[test]
fn duplicated_chunk_is_rejected() {
    let (file, _) = sealed(3 * CS);
    let (start, r) = chunks(&file);
    let mut bad = file[..start].to_vec();
    bad.extend_from_slice(&file[r[0].clone()]);
    bad.extend_from_slice(&file[r[0].clone()]);
    bad.extend_from_slice(&file[r[2].clone()]);
    assert_eq!(
        open(&bad, &KEY),
        Err(ModelFormatError::ChunkAuthFailed { index: 1 })
    );
}

#[test]
fn header_edits_fail_authentication() {
    let (file, _) = sealed(2 * CS + 50);
    let edits: Vec<fn(&mut SealedModelHeader)> = vec![
        |h| h.model_id = "mnist-13".into(),
        |h| h.kms_key_id.push('x'),
        |h| h.encrypted_data_key[0] ^= 1,
        |h| h.plaintext_sha384[0] ^= 1,
        |h| h.nonce_prefix[6] ^= 1,
    ];
    for (i, edit) in edits.into_iter().enumerate() {
        let bad = with_header_edit(&file, edit);
        assert_eq!(
            open(&bad, &KEY),
            Err(ModelFormatError::ChunkAuthFailed { index: 0 }),
            "edit {i}"
        );
    }
}

#[test]
fn header_length_edits_are_rejected() {
    // Shortening the declared plaintext to end on a chunk boundary, with the chunks cut to match:
    // the AAD still differs, so the first tag fails.
    let (file, _) = sealed(3 * CS);
    let (_, r) = chunks(&file);
    let mut bad = with_header_edit(&file, |h| h.plaintext_len = 2 * CS as u64);
    bad.truncate(bad.len() - (file.len() - r[1].end));
    assert_eq!(
        open(&bad, &KEY),
        Err(ModelFormatError::ChunkAuthFailed { index: 0 })
    );

    // Changing the chunk size moves every boundary: rejected (length or tag).
    let (file, _) = sealed(4 * CS);
    // Two chunks of 2·CS instead of four: two tags fewer expected, so the file is too long.
    let bad = with_header_edit(&file, |h| h.chunk_size = 2 * MIN_CHUNK_SIZE);
    assert_eq!(open(&bad, &KEY), Err(ModelFormatError::TrailingData));
    let bad = with_header_edit(&file, |h| h.plaintext_len -= 1);
    assert_eq!(open(&bad, &KEY), Err(ModelFormatError::TrailingData));
    // Lengths made consistent by dropping the byte: the AAD still fails.
    let mut bad = with_header_edit(&file, |h| h.plaintext_len -= 1);
    bad.pop();
    assert_eq!(
        open(&bad, &KEY),
        Err(ModelFormatError::ChunkAuthFailed { index: 0 })
    );
}

#[test]
fn wrong_key_is_rejected() {
    let (file, _) = sealed(CS + 1);
    let mut key = KEY;
    key[31] ^= 1;
    assert_eq!(
        open(&file, &key),
        Err(ModelFormatError::ChunkAuthFailed { index: 0 })
    );
}

#[test]
fn dropping_the_last_chunk_is_rejected_with_or_without_a_header_rewrite() {
    let pt = model(3 * CS);
    let file = seal(params(), &KEY, &pt, PREFIX).unwrap();
    let (_, r) = chunks(&file);

    // Header untouched: the header's length says a chunk is missing.
    assert_eq!(
        open(&file[..r[1].end], &KEY),
        Err(ModelFormatError::Truncated)
    );

    // Header rewritten to a consistent two-chunk model (length and digest): the AAD changed, so
    // the first tag fails. (That chunk 1's last flag alone also fails is checked in
    // `stream::tests::chunk_sealed_as_not_last_fails_in_last_position`.)
    let mut bad = with_header_edit(&file, |h| {
        h.plaintext_len = 2 * CS as u64;
        h.plaintext_sha384 = Sha384::digest(&pt[..2 * CS]).into();
    });
    bad.truncate(bad.len() - (file.len() - r[1].end));
    assert_eq!(
        open(&bad, &KEY),
        Err(ModelFormatError::ChunkAuthFailed { index: 0 })
    );
}

#[test]
fn wrong_digest_in_header_is_reported_as_digest_mismatch() {
    let pt = model(CS + 9);
    let mut header = parse_header(&seal(params(), &KEY, &pt, PREFIX).unwrap())
        .unwrap()
        .0;
    header.plaintext_sha384 = [0u8; 48];
    let mut sealer = Sealer::new(&header, &KEY).unwrap();
    let mut file = sealer.header_bytes().to_vec();
    file.extend(sealer.seal_chunk(&pt[..CS], false).unwrap());
    file.extend(sealer.seal_chunk(&pt[CS..], true).unwrap());
    assert_eq!(sealer.finish(), Err(ModelFormatError::DigestMismatch));
    let err = open(&file, &KEY).unwrap_err();
    assert_eq!(err, ModelFormatError::DigestMismatch);
    assert_eq!(err.code(), "digest_mismatch");
}

#[test]
fn opener_refuses_mismatched_header_bytes_and_stops_after_a_failure() {
    let (file, _) = sealed(2 * CS);
    let (header, start) = parse_header(&file).unwrap();
    let other = with_header_edit(&file, |h| h.model_id = "other".into());
    let (_, other_start) = parse_header(&other).unwrap();
    assert!(matches!(
        Opener::new(&header, &other[..other_start], &KEY),
        Err(ModelFormatError::Misuse { .. })
    ));

    let mut opener = Opener::new(&header, &file[..start], &KEY).unwrap();
    let mut out = opener.output_buffer().unwrap();
    let len = opener.next_chunk_len().unwrap();
    let mut bad = file[start..start + len].to_vec();
    bad[0] ^= 1;
    assert_eq!(
        opener.open_chunk(&bad, &mut out),
        Err(ModelFormatError::ChunkAuthFailed { index: 0 })
    );
    assert!(out.is_empty());
    assert!(
        opener
            .open_chunk(&file[start..start + len], &mut out)
            .is_err()
    );
    assert!(opener.finish().is_err());
}

#[test]
fn finish_before_the_last_chunk_is_truncation() {
    let (file, _) = sealed(2 * CS);
    let (header, start) = parse_header(&file).unwrap();
    let mut opener = Opener::new(&header, &file[..start], &KEY).unwrap();
    let mut out = opener.output_buffer().unwrap();
    let len = opener.next_chunk_len().unwrap();
    opener
        .open_chunk(&file[start..start + len], &mut out)
        .unwrap();
    assert_eq!(opener.finish(), Err(ModelFormatError::Truncated));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_header(&bytes);
        let _ = sealed_model::header_total_len(&bytes);
        prop_assert!(open(&bytes, &KEY).is_err());
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_magic_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut file = sealed_model::MAGIC.to_vec();
        file.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        file.extend_from_slice(&bytes);
        prop_assert!(open(&file, &KEY).is_err());
    }

    #[test]
    fn mutated_sealed_files_are_rejected(
        len in 0usize..(3 * CS),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let (file, _) = sealed(len);
        let mut bad = file.clone();
        for (at, x) in edits {
            let i = at.index(bad.len());
            bad[i] ^= x;
        }
        prop_assume!(bad != file);
        prop_assert!(open(&bad, &KEY).is_err());
    }

    #[test]
    fn round_trip_any_length(len in 0usize..(3 * CS)) {
        let (file, pt) = sealed(len);
        let opened = open(&file, &KEY).unwrap();
        prop_assert_eq!(opened.as_slice(), pt.as_slice());
    }
}

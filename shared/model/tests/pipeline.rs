//! The pipelined opener (SHA-384 on its own thread) against the one-shot `open`: same plaintext,
//! same error for every corruption, and the digest check still catches a wrong header digest.

use proptest::prelude::*;
use sealed_model::{
    MIN_CHUNK_SIZE, ModelFormatError, PipelinedOpener, SealParams, SealedModelHeader, Sealer,
    TAG_LEN, open, parse_header, seal,
};
use sha2::{Digest, Sha384};

const KEY: [u8; 32] = [0x42; 32];
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
    (seal(params(), &KEY, &pt, [9; 7]).unwrap(), pt)
}

/// What `open` does, through the pipelined opener: the plaintext once the digest is confirmed.
fn open_pipelined(file: &[u8], key: &[u8; 32]) -> Result<Vec<u8>, ModelFormatError> {
    let (header, header_len) = parse_header(file)?;
    let expected = header.sealed_len(header_len)?;
    if (file.len() as u64) < expected {
        return Err(ModelFormatError::Truncated);
    }
    if (file.len() as u64) > expected {
        return Err(ModelFormatError::TrailingData);
    }
    let mut opener = PipelinedOpener::new(&header, &file[..header_len], key)?;
    assert_eq!(opener.expected_digest(), &header.plaintext_sha384);
    let mut rest = &file[header_len..];
    while let Some(len) = opener.next_chunk_len() {
        let (chunk, tail) = rest.split_at(len.min(rest.len()));
        let n = opener.open_chunk(chunk)?;
        assert_eq!(n + TAG_LEN, len);
        rest = tail;
    }
    let unverified = opener.finish()?;
    assert_eq!(unverified.plaintext().len() as u64, header.plaintext_len);
    unverified.verify()?;
    Ok(unverified.plaintext().to_vec())
}

#[test]
fn opens_every_length_like_open_and_confirms_the_digest() {
    for len in [0, 1, CS - 1, CS, CS + 1, 2 * CS, 5 * CS + 123, 40 * CS + 7] {
        let (file, pt) = sealed(len);
        assert_eq!(open_pipelined(&file, &KEY).unwrap(), pt, "len {len}");
        assert_eq!(open(&file, &KEY).unwrap().as_slice(), pt.as_slice());
    }
}

#[test]
fn every_flipped_bit_fails_the_same_way_as_open() {
    let (file, _) = sealed(2 * CS + 100);
    // Every header byte, then a stride through the chunks and every byte of the last tag.
    let (_, start) = parse_header(&file).unwrap();
    let positions = (0..start)
        .chain((start..file.len()).step_by(61))
        .chain(file.len() - TAG_LEN..file.len());
    for pos in positions {
        let mut bad = file.clone();
        bad[pos] ^= 0x80;
        let expected = open(&bad, &KEY).map(|pt| pt.to_vec());
        assert!(expected.is_err(), "pos {pos}");
        assert_eq!(open_pipelined(&bad, &KEY), expected, "pos {pos}");
    }
}

#[test]
fn wrong_key_truncation_and_extension_fail_like_open() {
    let (file, _) = sealed(3 * CS + 5);
    let other = [0x43; 32];
    assert_eq!(
        open_pipelined(&file, &other),
        Err(ModelFormatError::ChunkAuthFailed { index: 0 })
    );
    for cut in [1, TAG_LEN, CS, file.len() / 2] {
        let short = &file[..file.len() - cut];
        let expected = open(short, &KEY).map(|pt| pt.to_vec());
        assert!(expected.is_err());
        assert_eq!(open_pipelined(short, &KEY), expected, "cut {cut}");
    }
    let mut long = file.clone();
    long.push(0);
    assert_eq!(
        open_pipelined(&long, &KEY),
        Err(ModelFormatError::TrailingData)
    );
}

/// Every chunk sealed honestly under a header whose digest is wrong.
fn sealed_with_digest(pt: &[u8], digest: [u8; 48]) -> Vec<u8> {
    let header = SealedModelHeader {
        model_id: "m".into(),
        kms_key_id: "k".into(),
        encrypted_data_key: vec![1],
        plaintext_len: pt.len() as u64,
        plaintext_sha384: digest,
        chunk_size: MIN_CHUNK_SIZE,
        nonce_prefix: [3; 7],
    };
    let mut sealer = Sealer::new(&header, &KEY).unwrap();
    let mut file = sealer.header_bytes().to_vec();
    let pieces: Vec<&[u8]> = pt.chunks(CS).collect();
    for (i, piece) in pieces.iter().enumerate() {
        file.extend(sealer.seal_chunk(piece, i + 1 == pieces.len()).unwrap());
    }
    file
}

#[test]
fn a_wrong_header_digest_is_caught_after_the_plaintext_is_shared() {
    let pt = model(7 * CS + 3);
    let file = sealed_with_digest(&pt, [0; 48]);
    let (header, start) = parse_header(&file).unwrap();
    let mut opener = PipelinedOpener::new(&header, &file[..start], &KEY).unwrap();
    let mut rest = &file[start..];
    while let Some(len) = opener.next_chunk_len() {
        let (chunk, tail) = rest.split_at(len);
        opener.open_chunk(chunk).unwrap();
        rest = tail;
    }
    let unverified = opener.finish().unwrap();
    // Every tag passed, so the bytes are there; only the digest is wrong.
    assert_eq!(unverified.plaintext(), pt.as_slice());
    assert_eq!(unverified.verify(), Err(ModelFormatError::DigestMismatch));
    assert_eq!(unverified.verify(), Err(ModelFormatError::DigestMismatch));

    let right = sealed_with_digest(&pt, Sha384::digest(&pt).into());
    assert_eq!(open_pipelined(&right, &KEY).unwrap(), pt);
}

#[test]
fn stops_after_a_failure_and_refuses_an_early_finish() {
    let (file, _) = sealed(3 * CS);
    let (header, start) = parse_header(&file).unwrap();
    let first = start..start + CS + TAG_LEN;

    let mut opener = PipelinedOpener::new(&header, &file[..start], &KEY).unwrap();
    opener.open_chunk(&file[first.clone()]).unwrap();
    assert!(matches!(opener.finish(), Err(ModelFormatError::Truncated)));

    let mut opener = PipelinedOpener::new(&header, &file[..start], &KEY).unwrap();
    let mut bad = file[first.clone()].to_vec();
    bad[3] ^= 1;
    assert_eq!(
        opener.open_chunk(&bad),
        Err(ModelFormatError::ChunkAuthFailed { index: 0 })
    );
    assert_eq!(opener.next_chunk_len(), None);
    assert!(matches!(
        opener.open_chunk(&file[first]),
        Err(ModelFormatError::Misuse { .. })
    ));
    assert!(matches!(
        opener.finish(),
        Err(ModelFormatError::Misuse { .. })
    ));

    // Header bytes that are not the header's.
    let (other, other_start) = parse_header(&sealed(10).0).unwrap();
    assert!(other_start > 0);
    assert!(matches!(
        PipelinedOpener::new(&other, &file[..start], &KEY),
        Err(ModelFormatError::Misuse { .. })
    ));
}

#[test]
fn abandoned_openers_and_unverified_models_release_their_thread() {
    // Dropped mid-stream, and dropped before the digest is read: neither may hang or leak a
    // thread that keeps the plaintext (each drop closes the channel the thread waits on).
    for _ in 0..32 {
        let (file, _) = sealed(4 * CS);
        let (header, start) = parse_header(&file).unwrap();
        let mut opener = PipelinedOpener::new(&header, &file[..start], &KEY).unwrap();
        opener
            .open_chunk(&file[start..start + CS + TAG_LEN])
            .unwrap();
        drop(opener);

        let (header, start) = parse_header(&file).unwrap();
        let mut opener = PipelinedOpener::new(&header, &file[..start], &KEY).unwrap();
        let mut rest = &file[start..];
        while let Some(len) = opener.next_chunk_len() {
            let (chunk, tail) = rest.split_at(len);
            opener.open_chunk(chunk).unwrap();
            rest = tail;
        }
        drop(opener.finish().unwrap());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn agrees_with_open_on_mutated_files(
        len in 0usize..(3 * CS),
        pos in any::<prop::sample::Index>(),
        mask in 1u8..,
    ) {
        let (file, pt) = sealed(len);
        prop_assert_eq!(open_pipelined(&file, &KEY).unwrap(), pt);
        let mut bad = file.clone();
        let i = pos.index(bad.len());
        bad[i] ^= mask;
        let expected = open(&bad, &KEY).map(|pt| pt.to_vec());
        prop_assert!(expected.is_err());
        prop_assert_eq!(open_pipelined(&bad, &KEY), expected);
    }
}

//! Sealing a model file for the enclave: read the ONNX file chunk by chunk, encrypt it with a
//! fresh KMS data key in the `sealed-model` format, write it through a temporary file.
//!
//! What it does: [`seal_model_file`] asks KMS for a data key ([`crate::kms::generate_data_key`]),
//! then [`seal_file_with_key`] makes two passes over the model: one to hash it (the header
//! carries the length and SHA-384 before the first chunk), one to seal it with
//! [`sealed_model::Sealer`]. Memory stays at about two chunks (the plaintext chunk and its
//! ciphertext) whatever the model's size. The output is written to a temporary file in the
//! destination directory, flushed to disk, and renamed over `--out` only once the whole file is
//! sealed, so a failure never leaves a partial `.sealed` file behind. The data key lives in a
//! [`DataKey`] that wipes itself on drop and has no `Debug` of its contents.
//!
//! What it does not do: keep the model's bytes secret from the machine that seals it (the model
//! owner's), or detect a model edited *between* the hashing and sealing passes other than by the
//! digest check at the end (which then fails the seal: nothing is written).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use sealed_model::{
    DATA_KEY_LEN, DIGEST_LEN, MAX_CHUNK_SIZE, MAX_MODEL_LEN, MIN_CHUNK_SIZE, ModelFormatError,
    NONCE_PREFIX_LEN, SealedModelHeader, Sealer,
};
use sha2::{Digest, Sha384};
use zeroize::Zeroizing;

use crate::kms::{self, KmsError};

/// A KMS data key: the plaintext AES-256 key (wiped on drop), its `CiphertextBlob`, and the ARN
/// of the KMS key that wraps it. One data key seals one file.
pub struct DataKey {
    key: Zeroizing<[u8; DATA_KEY_LEN]>,
    ciphertext_blob: Vec<u8>,
    key_arn: String,
}

impl DataKey {
    pub fn new(
        key: Zeroizing<[u8; DATA_KEY_LEN]>,
        ciphertext_blob: Vec<u8>,
        key_arn: String,
    ) -> DataKey {
        DataKey {
            key,
            ciphertext_blob,
            key_arn,
        }
    }

    /// The plaintext key. Do not copy it out of its zeroizing home.
    pub fn key(&self) -> &[u8; DATA_KEY_LEN] {
        &self.key
    }

    /// The KMS `CiphertextBlob` that unwraps to [`Self::key`].
    pub fn ciphertext_blob(&self) -> &[u8] {
        &self.ciphertext_blob
    }

    /// The KMS key ARN (as reported by KMS).
    pub fn key_arn(&self) -> &str {
        &self.key_arn
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("key", &"<redacted>")
            .field("ciphertext_blob_len", &self.ciphertext_blob.len())
            .field("key_arn", &self.key_arn)
            .finish()
    }
}

/// What was sealed. Printed by `sealed seal-model`; nothing in it is secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealSummary {
    pub model_id: String,
    pub kms_key_id: String,
    pub plaintext_len: u64,
    pub sealed_len: u64,
    pub sha384: [u8; DIGEST_LEN],
    pub chunk_size: u32,
}

/// What to seal and how.
#[derive(Debug, Clone)]
pub struct SealRequest<'a> {
    /// The plaintext ONNX file.
    pub model: &'a Path,
    /// The sealed file to write.
    pub out: &'a Path,
    /// Model id recorded in the header ([`sealed_wire::message::valid_model_id`]).
    pub model_id: &'a str,
    /// KMS key id, key ARN, alias name or alias ARN for `GenerateDataKey`.
    pub key_id: &'a str,
    /// Plaintext bytes per chunk ([`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`]).
    pub chunk_size: u32,
    /// Replace an existing `out`.
    pub overwrite: bool,
}

/// Why sealing failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "invalid model id {0:?}: 1-128 characters from A-Z a-z 0-9 . _ - (see `sealed seal-model --help`)"
    )]
    InvalidModelId(String),
    #[error("invalid KMS key id: {0}")]
    InvalidKeyId(&'static str),
    #[error("chunk size {size} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE} bytes")]
    InvalidChunkSize { size: u32 },
    #[error("cannot read model {path}: {source}")]
    ReadModel {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("model {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("model of {len} bytes exceeds the maximum of {max} bytes")]
    ModelTooLarge { len: u64, max: u64 },
    #[error("the model file changed while it was being sealed; nothing was written")]
    ModelChanged,
    #[error("{path} already exists (pass --force to replace it)")]
    OutputExists { path: PathBuf },
    #[error("--out {path} is the model file itself")]
    OutputIsInput { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    WriteOutput {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("sealed-model format: {0}")]
    Format(#[from] ModelFormatError),
    #[error("OS random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Kms(#[from] KmsError),
    #[error("sealing task failed: {0}")]
    Task(String),
}

/// Checks everything that does not need KMS, so that a typo fails before a key is generated.
pub fn check_request(req: &SealRequest<'_>) -> Result<u64, SealError> {
    if !sealed_wire::message::valid_model_id(req.model_id) {
        return Err(SealError::InvalidModelId(crate::error::sanitize(
            req.model_id,
            200,
        )));
    }
    if req.key_id.is_empty() {
        return Err(SealError::InvalidKeyId("empty"));
    }
    if req.key_id.len() > sealed_model::MAX_KMS_KEY_ID_LEN {
        return Err(SealError::InvalidKeyId("longer than 2048 bytes"));
    }
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&req.chunk_size) {
        return Err(SealError::InvalidChunkSize {
            size: req.chunk_size,
        });
    }
    let read_err = |source| SealError::ReadModel {
        path: req.model.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(req.model).map_err(read_err)?;
    if !meta.is_file() {
        return Err(SealError::NotAFile {
            path: req.model.to_path_buf(),
        });
    }
    if meta.len() > MAX_MODEL_LEN {
        return Err(SealError::ModelTooLarge {
            len: meta.len(),
            max: MAX_MODEL_LEN,
        });
    }
    // Readable, not just present.
    File::open(req.model).map_err(read_err)?;
    if let Ok(out_meta) = std::fs::metadata(req.out) {
        if same_file(&meta, &out_meta) {
            return Err(SealError::OutputIsInput {
                path: req.out.to_path_buf(),
            });
        }
        if !req.overwrite {
            return Err(SealError::OutputExists {
                path: req.out.to_path_buf(),
            });
        }
    }
    Ok(meta.len())
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_a: &std::fs::Metadata, _b: &std::fs::Metadata) -> bool {
    false
}

/// Seals `req.model` into `req.out` with a fresh data key from KMS. The CPU and file work runs on
/// the blocking thread pool; `progress` runs from 0 to the model length once per pass (use
/// [`ProgressBar::hidden`] for none).
pub async fn seal_model_file(
    client: &aws_sdk_kms::Client,
    req: &SealRequest<'_>,
    progress: ProgressBar,
) -> Result<SealSummary, SealError> {
    check_request(req)?;
    let data_key = kms::generate_data_key(client, req.key_id, req.model_id).await?;
    let model = req.model.to_path_buf();
    let out = req.out.to_path_buf();
    let model_id = req.model_id.to_string();
    let chunk_size = req.chunk_size;
    let overwrite = req.overwrite;
    tokio::task::spawn_blocking(move || {
        // `data_key` moves here and is wiped when this closure returns.
        seal_file_with_key(
            &model, &out, &model_id, chunk_size, overwrite, &data_key, &progress,
        )
    })
    .await
    .map_err(|e| SealError::Task(e.to_string()))?
}

/// Seals a file with a given data key: temporary file in `out`'s directory, then rename.
pub fn seal_file_with_key(
    model: &Path,
    out: &Path,
    model_id: &str,
    chunk_size: u32,
    overwrite: bool,
    data_key: &DataKey,
    progress: &ProgressBar,
) -> Result<SealSummary, SealError> {
    let read_err = |source| SealError::ReadModel {
        path: model.to_path_buf(),
        source,
    };
    let write_err = |source| SealError::WriteOutput {
        path: out.to_path_buf(),
        source,
    };
    let mut input = File::open(model).map_err(read_err)?;
    let len = input.metadata().map_err(read_err)?.len();
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Removed on drop unless persisted: an error anywhere below leaves nothing behind.
    let mut temp = tempfile::Builder::new()
        .prefix(".sealed-model-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(write_err)?;
    let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
    getrandom::fill(&mut nonce_prefix).map_err(SealError::Random)?;
    let summary = {
        let mut writer = io::BufWriter::with_capacity(64 * 1024, temp.as_file_mut());
        let summary = seal_stream(
            &mut input,
            len,
            &mut writer,
            model_id,
            chunk_size,
            data_key,
            nonce_prefix,
            progress,
        )
        .map_err(|e| match e {
            StreamError::Read(source) => read_err(source),
            StreamError::Write(source) => write_err(source),
            StreamError::Seal(e) => e,
        })?;
        writer.flush().map_err(write_err)?;
        summary
    };
    temp.as_file().sync_all().map_err(write_err)?;
    // Ciphertext only: readable by the host user that loads it, like any other model file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(write_err)?;
    }
    if overwrite {
        temp.persist(out).map_err(|e| write_err(e.error))?;
    } else {
        // Lost a race with another writer: refuse rather than clobber.
        temp.persist_noclobber(out).map_err(|e| {
            if e.error.kind() == io::ErrorKind::AlreadyExists {
                SealError::OutputExists {
                    path: out.to_path_buf(),
                }
            } else {
                write_err(e.error)
            }
        })?;
    }
    Ok(summary)
}

/// Where a streaming seal failed: the input, the output, or the format.
#[derive(Debug)]
pub enum StreamError {
    Read(io::Error),
    Write(io::Error),
    Seal(SealError),
}

impl From<ModelFormatError> for StreamError {
    fn from(e: ModelFormatError) -> Self {
        StreamError::Seal(SealError::Format(e))
    }
}

/// Seals the first `len` bytes of `input` (read twice: hash, then seal) into `output`. The
/// plaintext buffer is one chunk, wiped on drop. `input` must hold exactly `len` bytes; a file
/// that changes in between fails with [`SealError::ModelChanged`].
#[allow(clippy::too_many_arguments)]
pub fn seal_stream<R: Read + Seek, W: Write>(
    input: &mut R,
    len: u64,
    output: &mut W,
    model_id: &str,
    chunk_size: u32,
    data_key: &DataKey,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    progress: &ProgressBar,
) -> Result<SealSummary, StreamError> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(StreamError::Seal(SealError::InvalidChunkSize {
            size: chunk_size,
        }));
    }
    if len > MAX_MODEL_LEN {
        return Err(StreamError::Seal(SealError::ModelTooLarge {
            len,
            max: MAX_MODEL_LEN,
        }));
    }
    let chunk = chunk_size as usize;
    let mut buf = Zeroizing::new(vec![0u8; chunk]);
    progress.set_length(len);

    // Pass 1: length and digest for the header.
    progress.set_position(0);
    progress.set_message("hashing");
    input.seek(SeekFrom::Start(0)).map_err(StreamError::Read)?;
    let mut hasher = Sha384::new();
    let mut remaining = len;
    while remaining > 0 {
        let n = next_len(remaining, chunk);
        let piece = buf.get_mut(..n).ok_or(ModelFormatError::Misuse {
            reason: "chunk buffer",
        })?;
        read_exact_or_changed(input, piece)?;
        hasher.update(&*piece);
        remaining -= n as u64;
        progress.inc(n as u64);
    }
    ensure_at_end(input, &mut buf)?;
    let sha384: [u8; DIGEST_LEN] = hasher.finalize().into();

    let header = SealedModelHeader {
        model_id: model_id.to_string(),
        kms_key_id: data_key.key_arn().to_string(),
        encrypted_data_key: data_key.ciphertext_blob().to_vec(),
        plaintext_len: len,
        plaintext_sha384: sha384,
        chunk_size,
        nonce_prefix,
    };
    let mut sealer = Sealer::new(&header, data_key.key()).map_err(|e| match e {
        ModelFormatError::InvalidField { field: "model_id" } => StreamError::Seal(
            SealError::InvalidModelId(crate::error::sanitize(model_id, 200)),
        ),
        other => StreamError::from(other),
    })?;
    let prefix_len = sealer.header_bytes().len();
    output
        .write_all(sealer.header_bytes())
        .map_err(StreamError::Write)?;

    // Pass 2: seal chunk by chunk. The chunk count follows from the header (an empty model is
    // one empty last chunk).
    progress.set_position(0);
    progress.set_message("sealing");
    input.seek(SeekFrom::Start(0)).map_err(StreamError::Read)?;
    let count = header.chunk_count()?;
    let mut remaining = len;
    for index in 0..count {
        let n = next_len(remaining, chunk);
        let piece = buf.get_mut(..n).ok_or(ModelFormatError::Misuse {
            reason: "chunk buffer",
        })?;
        read_exact_or_changed(input, piece)?;
        let sealed = sealer.seal_chunk(piece, index + 1 == count)?;
        output.write_all(&sealed).map_err(StreamError::Write)?;
        remaining -= n as u64;
        progress.inc(n as u64);
    }
    ensure_at_end(input, &mut buf)?;
    // Digest of what was sealed against the header's: catches an edit between the passes.
    sealer.finish().map_err(|e| match e {
        ModelFormatError::DigestMismatch => StreamError::Seal(SealError::ModelChanged),
        other => StreamError::from(other),
    })?;
    progress.set_message("sealed");
    Ok(SealSummary {
        model_id: header.model_id.clone(),
        kms_key_id: header.kms_key_id.clone(),
        plaintext_len: len,
        sealed_len: header.sealed_len(prefix_len)?,
        sha384,
        chunk_size,
    })
}

fn next_len(remaining: u64, chunk: usize) -> usize {
    usize::try_from(remaining).map_or(chunk, |r| r.min(chunk))
}

fn read_exact_or_changed<R: Read>(input: &mut R, buf: &mut [u8]) -> Result<(), StreamError> {
    input.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            StreamError::Seal(SealError::ModelChanged)
        } else {
            StreamError::Read(e)
        }
    })
}

/// The input must end at `len`: a file that grew since it was measured is refused.
fn ensure_at_end<R: Read>(input: &mut R, buf: &mut [u8]) -> Result<(), StreamError> {
    let probe = buf.get_mut(..1).unwrap_or_default();
    loop {
        match input.read(probe) {
            Ok(0) => return Ok(()),
            Ok(_) => return Err(StreamError::Seal(SealError::ModelChanged)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StreamError::Read(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9";

    fn key(byte: u8) -> DataKey {
        DataKey::new(
            Zeroizing::new([byte; DATA_KEY_LEN]),
            vec![0xc1; 184],
            ARN.to_string(),
        )
    }

    /// Deterministic, non-repeating test bytes.
    fn model_bytes(len: usize) -> Vec<u8> {
        let mut x: u32 = 0x9e37_79b9;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    fn seal_bytes(plaintext: &[u8], chunk_size: u32, key: &DataKey) -> (Vec<u8>, SealSummary) {
        let mut out = Vec::new();
        let summary = seal_stream(
            &mut Cursor::new(plaintext),
            plaintext.len() as u64,
            &mut out,
            "digits",
            chunk_size,
            key,
            [7; NONCE_PREFIX_LEN],
            &ProgressBar::hidden(),
        )
        .unwrap();
        (out, summary)
    }

    #[test]
    fn sealed_stream_opens_to_the_model_at_every_chunk_boundary() {
        let chunk = MIN_CHUNK_SIZE as usize;
        let k = key(0x42);
        for len in [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk, 3 * chunk + 17] {
            let model = model_bytes(len);
            let (sealed, summary) = seal_bytes(&model, MIN_CHUNK_SIZE, &k);
            let opened = sealed_model::open(&sealed, k.key()).unwrap();
            assert_eq!(&opened[..], &model[..], "len {len}");
            assert_eq!(summary.plaintext_len, len as u64);
            assert_eq!(summary.sealed_len, sealed.len() as u64);
            assert_eq!(summary.sha384, <[u8; 48]>::from(Sha384::digest(&model)));
            let (header, _) = sealed_model::parse_header(&sealed).unwrap();
            assert_eq!(header.kms_key_id, ARN);
            assert_eq!(header.encrypted_data_key, k.ciphertext_blob());
            assert_eq!(header.model_id, "digits");
            assert_eq!(header.plaintext_len, len as u64);
            let chunks = len.div_ceil(chunk).max(1);
            assert_eq!(
                sealed.len(),
                header_len(&sealed) + len + chunks * sealed_model::TAG_LEN,
                "len {len}"
            );
        }
    }

    fn header_len(sealed: &[u8]) -> usize {
        sealed_model::header_total_len(sealed).unwrap()
    }

    #[test]
    fn matches_the_one_shot_sealer_byte_for_byte() {
        let k = key(3);
        let model = model_bytes(10_000);
        let (streamed, _) = seal_bytes(&model, MIN_CHUNK_SIZE, &k);
        let one_shot = sealed_model::seal(
            sealed_model::SealParams {
                model_id: "digits".into(),
                kms_key_id: ARN.into(),
                encrypted_data_key: k.ciphertext_blob().to_vec(),
                chunk_size: MIN_CHUNK_SIZE,
            },
            k.key(),
            &model,
            [7; NONCE_PREFIX_LEN],
        )
        .unwrap();
        assert_eq!(streamed, one_shot);
    }

    #[test]
    fn another_key_does_not_open_it() {
        let model = model_bytes(5000);
        let (sealed, _) = seal_bytes(&model, MIN_CHUNK_SIZE, &key(1));
        assert!(matches!(
            sealed_model::open(&sealed, key(2).key()),
            Err(ModelFormatError::ChunkAuthFailed { index: 0 })
        ));
    }

    #[test]
    fn input_shorter_or_longer_than_measured_is_refused() {
        let model = model_bytes(9000);
        let k = key(1);
        for claimed in [9001u64, 8999] {
            let mut out = Vec::new();
            let err = seal_stream(
                &mut Cursor::new(&model),
                claimed,
                &mut out,
                "digits",
                MIN_CHUNK_SIZE,
                &k,
                [0; NONCE_PREFIX_LEN],
                &ProgressBar::hidden(),
            )
            .unwrap_err();
            assert!(
                matches!(err, StreamError::Seal(SealError::ModelChanged)),
                "{claimed}: {err:?}"
            );
        }
    }

    /// Serves `a` on the first pass and `b` on the second: an edit between the passes.
    struct Changing {
        a: Cursor<Vec<u8>>,
        b: Cursor<Vec<u8>>,
        seeks: u32,
    }
    impl Read for Changing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.seeks <= 1 {
                self.a.read(buf)
            } else {
                self.b.read(buf)
            }
        }
    }
    impl Seek for Changing {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.seeks += 1;
            self.a.seek(pos)?;
            self.b.seek(pos)
        }
    }

    #[test]
    fn model_edited_between_passes_is_refused() {
        let a = model_bytes(6000);
        let mut b = a.clone();
        b[5000] ^= 1;
        let mut input = Changing {
            a: Cursor::new(a),
            b: Cursor::new(b),
            seeks: 0,
        };
        let err = seal_stream(
            &mut input,
            6000,
            &mut Vec::new(),
            "digits",
            MIN_CHUNK_SIZE,
            &key(1),
            [0; NONCE_PREFIX_LEN],
            &ProgressBar::hidden(),
        )
        .unwrap_err();
        assert!(
            matches!(err, StreamError::Seal(SealError::ModelChanged)),
            "{err:?}"
        );
    }

    #[test]
    fn rejects_bad_model_id_and_chunk_size() {
        let k = key(1);
        let run = |id: &str, chunk: u32| {
            seal_stream(
                &mut Cursor::new(vec![1u8; 10]),
                10,
                &mut Vec::new(),
                id,
                chunk,
                &k,
                [0; NONCE_PREFIX_LEN],
                &ProgressBar::hidden(),
            )
        };
        assert!(matches!(
            run("bad id/..", MIN_CHUNK_SIZE),
            Err(StreamError::Seal(SealError::InvalidModelId(_)))
        ));
        assert!(matches!(
            run("ok", MIN_CHUNK_SIZE - 1),
            Err(StreamError::Seal(SealError::InvalidChunkSize { .. }))
        ));
        assert!(matches!(
            run("ok", MAX_CHUNK_SIZE + 1),
            Err(StreamError::Seal(SealError::InvalidChunkSize { .. }))
        ));
    }

    /// Counts what was written without keeping it: a large model seals through a writer that
    /// holds nothing, while the sealer's own buffers stay one chunk.
    struct CountingSink {
        bytes: u64,
        largest_write: usize,
    }
    impl Write for CountingSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.bytes += buf.len() as u64;
            self.largest_write = self.largest_write.max(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A reader of `len` generated bytes that never exist in memory all at once.
    struct Generated {
        len: u64,
        pos: u64,
    }
    impl Read for Generated {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = usize::try_from(self.len - self.pos).map_or(buf.len(), |r| r.min(buf.len()));
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = ((self.pos + i as u64) % 251) as u8;
            }
            self.pos += n as u64;
            Ok(n)
        }
    }
    impl Seek for Generated {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            match pos {
                SeekFrom::Start(p) => self.pos = p,
                _ => return Err(io::Error::other("only SeekFrom::Start")),
            }
            Ok(self.pos)
        }
    }

    #[test]
    fn large_model_streams_through_one_chunk_at_a_time() {
        let len: u64 = 8 * 1024 * 1024 + 5;
        let chunk = 1024 * 1024;
        let mut sink = CountingSink {
            bytes: 0,
            largest_write: 0,
        };
        let summary = seal_stream(
            &mut Generated { len, pos: 0 },
            len,
            &mut sink,
            "big",
            chunk,
            &key(9),
            [0; NONCE_PREFIX_LEN],
            &ProgressBar::hidden(),
        )
        .unwrap();
        assert_eq!(summary.sealed_len, sink.bytes);
        assert_eq!(summary.plaintext_len, len);
        // Every write is the header or one sealed chunk, never more.
        assert_eq!(sink.largest_write, chunk as usize + sealed_model::TAG_LEN);
    }

    #[test]
    fn file_seal_writes_atomically_and_refuses_to_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.onnx");
        let out = dir.path().join("m.sealed");
        let bytes = model_bytes(20_000);
        std::fs::write(&model, &bytes).unwrap();
        let k = key(5);
        let summary = seal_file_with_key(
            &model,
            &out,
            "m",
            MIN_CHUNK_SIZE,
            false,
            &k,
            &ProgressBar::hidden(),
        )
        .unwrap();
        let sealed = std::fs::read(&out).unwrap();
        assert_eq!(summary.sealed_len, sealed.len() as u64);
        assert_eq!(
            &sealed_model::open(&sealed, k.key()).unwrap()[..],
            &bytes[..]
        );
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        let err = seal_file_with_key(
            &model,
            &out,
            "m",
            MIN_CHUNK_SIZE,
            false,
            &k,
            &ProgressBar::hidden(),
        )
        .unwrap_err();
        assert!(matches!(err, SealError::OutputExists { .. }), "{err}");
        // The existing file is untouched by the refused attempt.
        assert_eq!(std::fs::read(&out).unwrap(), sealed);
        seal_file_with_key(
            &model,
            &out,
            "m",
            MIN_CHUNK_SIZE,
            true,
            &k,
            &ProgressBar::hidden(),
        )
        .unwrap();
    }

    #[test]
    fn failed_seal_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.onnx");
        let out = dir.path().join("m.sealed");
        std::fs::write(&model, b"x").unwrap();
        let err = seal_file_with_key(
            &model,
            &out,
            "not a valid id",
            MIN_CHUNK_SIZE,
            false,
            &key(1),
            &ProgressBar::hidden(),
        )
        .unwrap_err();
        assert!(matches!(err, SealError::InvalidModelId(_)), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn request_checks_run_before_any_kms_call() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.onnx");
        std::fs::write(&model, b"onnx").unwrap();
        let out = dir.path().join("m.sealed");
        let ok = SealRequest {
            model: &model,
            out: &out,
            model_id: "m",
            key_id: ARN,
            chunk_size: MIN_CHUNK_SIZE,
            overwrite: false,
        };
        assert_eq!(check_request(&ok).unwrap(), 4);
        let missing = dir.path().join("nope.onnx");
        let e = check_request(&SealRequest {
            model: &missing,
            ..ok.clone()
        })
        .unwrap_err();
        assert!(matches!(e, SealError::ReadModel { .. }), "{e}");
        let e = check_request(&SealRequest {
            model: dir.path(),
            ..ok.clone()
        })
        .unwrap_err();
        assert!(matches!(e, SealError::NotAFile { .. }), "{e}");
        let e = check_request(&SealRequest {
            out: &model,
            overwrite: true,
            ..ok.clone()
        })
        .unwrap_err();
        assert!(matches!(e, SealError::OutputIsInput { .. }), "{e}");
        let e = check_request(&SealRequest {
            model_id: "../x",
            ..ok.clone()
        })
        .unwrap_err();
        assert!(matches!(e, SealError::InvalidModelId(_)), "{e}");
        let e = check_request(&SealRequest {
            key_id: "",
            ..ok.clone()
        })
        .unwrap_err();
        assert!(matches!(e, SealError::InvalidKeyId(_)), "{e}");
        std::fs::write(&out, b"old").unwrap();
        let e = check_request(&ok).unwrap_err();
        assert!(matches!(e, SealError::OutputExists { .. }), "{e}");
    }

    #[test]
    fn data_key_debug_redacts_the_key() {
        let text = format!("{:?}", key(0xab));
        assert!(text.contains("<redacted>"));
        assert!(
            !text.contains("171") && !text.to_lowercase().contains("abab"),
            "{text}"
        );
    }
}

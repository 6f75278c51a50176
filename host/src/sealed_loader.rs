//! Sealed-model loading: relays a sealed model file to the enclave in bounded pieces
//! (DESIGN.md flow 2). The host only ever handles sealed bytes; the enclave gets the data key from
//! KMS (released to its attested key only), authenticates every chunk and checks the digest.
//!
//! The exchange, one request at a time on the enclave pool:
//! 1. read the file prefix (magic ‖ u32 header length ‖ CBOR header, at most
//!    [`MAX_SEALED_MODEL_HEADER_LEN`]) and send it with the AWS credentials as
//!    `LoadSealedModelBegin`; the enclave answers `SealedModelReady { upload_id, sealed_len }`;
//! 2. stream exactly `sealed_len` further bytes as `LoadSealedModelChunk`s of at most
//!    [`UPLOAD_CHUNK_LEN`] (4 MiB, under the wire's [`MAX_UPLOAD_CHUNK_LEN`]), one at a time,
//!    checking that each answer acknowledges the running byte count, and reading the next piece
//!    from the source while the enclave works on the one it has;
//! 3. check that the file ends there, and send `LoadSealedModelEnd`; the enclave answers
//!    `ModelLoaded`.
//!
//! Memory is bounded by one header and two chunk buffers (one with the enclave, the next being
//! read from the source meanwhile), whatever the model's size. Each read from the source and each
//! enclave call has its own timeout.
//!
//! What it does not do: parse the CBOR header (only the 12-byte prefix, to know how much to read),
//! decrypt or check anything cryptographic, or log bytes. A failed load leaves an upload that the
//! enclave expires on its own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sealed_wire::limits::{MAX_SEALED_MODEL_HEADER_LEN, MAX_UPLOAD_CHUNK_LEN};
use sealed_wire::{AwsCredentials, EnclaveRequest, EnclaveResponse, ErrorCode, ModelInfo};
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::{info, warn};

use crate::credentials::{CredentialProvider, CredentialsError, unix_now};
use crate::enclave_pool::{EnclavePool, PoolError};

/// The sealed-model magic (`sealed_model::MAGIC`; the host does not link that crate).
pub const SEALED_MAGIC: [u8; 8] = *b"SIMODEL1";
/// Magic plus the u32 big-endian header length (`sealed_model::PREFIX_LEN`).
pub const PREFIX_LEN: usize = SEALED_MAGIC.len() + 4;
/// Bytes of sealed body sent per `LoadSealedModelChunk`.
pub const UPLOAD_CHUNK_LEN: usize = 4 * 1024 * 1024;
const _: () = assert!(UPLOAD_CHUNK_LEN <= MAX_UPLOAD_CHUNK_LEN);
/// File name suffix loaded from `--models-dir`.
pub const SEALED_EXTENSION: &str = "sealed";

/// Timeouts and piece size of a sealed load.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Bytes per chunk (1..=[`MAX_UPLOAD_CHUNK_LEN`]; clamped).
    pub chunk_len: usize,
    /// Time the enclave has for `Begin` (a KMS round trip) and each chunk.
    pub call_timeout: Duration,
    /// Time the enclave has for `End` (digest check and building the plan).
    pub finish_timeout: Duration,
    /// Time one read from the source may take (an admin upload that stalls).
    pub read_timeout: Duration,
}

impl Default for LoaderConfig {
    fn default() -> LoaderConfig {
        LoaderConfig {
            chunk_len: UPLOAD_CHUNK_LEN,
            call_timeout: crate::config::DEFAULT_REQUEST_TIMEOUT,
            finish_timeout: crate::config::DEFAULT_MODEL_LOAD_TIMEOUT,
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// Why a sealed load failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading the sealed model failed")]
    Read(#[source] std::io::Error),
    #[error("reading the sealed model stalled for {0:?}")]
    ReadTimeout(Duration),
    #[error("not a sealed model (bad magic)")]
    BadMagic,
    #[error("sealed-model header of {len} bytes exceeds the maximum {max}")]
    HeaderTooLarge { len: u64, max: usize },
    #[error("sealed model is truncated: {got} of {expected} bytes after the header")]
    Truncated { expected: u64, got: u64 },
    #[error("sealed model has data after its last chunk")]
    TrailingData,
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("enclave exchange failed")]
    Pool(#[from] PoolError),
    /// The enclave refused; its message is operator-facing and free of payload details.
    #[error("the enclave refused the model: {code}: {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("the enclave answered out of protocol: {0}")]
    Protocol(&'static str),
}

impl LoadError {
    /// The stable code for this error (the admin API answers with it).
    pub fn code(&self) -> ErrorCode {
        match self {
            LoadError::Read(_) => ErrorCode::MalformedMessage,
            LoadError::ReadTimeout(_) => ErrorCode::Timeout,
            LoadError::BadMagic
            | LoadError::HeaderTooLarge { .. }
            | LoadError::Truncated { .. }
            | LoadError::TrailingData => ErrorCode::ModelCorrupt,
            LoadError::Credentials(e) => e.code(),
            LoadError::Pool(e) => e.code(),
            LoadError::Refused { code, .. } => *code,
            LoadError::Protocol(_) => ErrorCode::Internal,
        }
    }
}

/// Loads one sealed model from `reader` into the enclave and returns what the enclave reports.
pub async fn load_sealed<R>(
    pool: &EnclavePool,
    mut reader: R,
    credentials: AwsCredentials,
    config: &LoaderConfig,
) -> Result<ModelInfo, LoadError>
where
    R: AsyncRead + Unpin,
{
    let started = Instant::now();
    let chunk_len = config.chunk_len.clamp(1, MAX_UPLOAD_CHUNK_LEN);

    // 1. The prefix: magic, declared header length (bounded before allocating), header.
    let mut prefix = [0u8; PREFIX_LEN];
    let got = read_full(&mut reader, &mut prefix, config.read_timeout).await?;
    if got < PREFIX_LEN {
        let seen = prefix
            .get(..got.min(SEALED_MAGIC.len()))
            .unwrap_or_default();
        return Err(if SEALED_MAGIC.starts_with(seen) {
            LoadError::Truncated {
                expected: PREFIX_LEN as u64,
                got: got as u64,
            }
        } else {
            LoadError::BadMagic
        });
    }
    let (magic, len) = prefix.split_at(SEALED_MAGIC.len());
    if magic != SEALED_MAGIC {
        return Err(LoadError::BadMagic);
    }
    let header_len = u32::from_be_bytes(len.try_into().map_err(|_| LoadError::BadMagic)?);
    let total = PREFIX_LEN as u64 + u64::from(header_len);
    if total > MAX_SEALED_MODEL_HEADER_LEN as u64 {
        return Err(LoadError::HeaderTooLarge {
            len: u64::from(header_len),
            max: MAX_SEALED_MODEL_HEADER_LEN - PREFIX_LEN,
        });
    }
    let mut header = vec![0u8; total as usize];
    header
        .get_mut(..PREFIX_LEN)
        .ok_or(LoadError::Protocol("prefix"))?
        .copy_from_slice(&prefix);
    let rest = header
        .get_mut(PREFIX_LEN..)
        .ok_or(LoadError::Protocol("prefix"))?;
    let got = read_full(&mut reader, rest, config.read_timeout).await?;
    if got < rest.len() {
        return Err(LoadError::Truncated {
            expected: u64::from(header_len),
            got: got as u64,
        });
    }

    // 2. Begin: the enclave fetches the data key from KMS.
    let header_len = header.len();
    let begin = EnclaveRequest::LoadSealedModelBegin {
        header,
        credentials,
        host_time: unix_now(),
    };
    let (upload_id, sealed_len) = match pool.call_with_timeout(&begin, config.call_timeout).await? {
        EnclaveResponse::SealedModelReady {
            upload_id,
            sealed_len,
        } => (upload_id, sealed_len),
        EnclaveResponse::Error(e) => return Err(refused(e)),
        _ => return Err(LoadError::Protocol("expected SealedModelReady")),
    };
    drop(begin);
    info!(
        upload_id,
        header_len, sealed_len, "sealed model upload started"
    );

    // 3–4. The body; on any failure the enclave is told to drop the upload at once, so the
    // model id is free for a retry instead of waiting for the enclave's idle expiry.
    if let Err(e) = send_body(pool, &mut reader, upload_id, sealed_len, chunk_len, config).await {
        abort(pool, upload_id, config).await;
        return Err(e);
    }

    let end = EnclaveRequest::LoadSealedModelEnd { upload_id };
    match pool.call_with_timeout(&end, config.finish_timeout).await? {
        EnclaveResponse::ModelLoaded(model) => {
            info!(
                upload_id,
                model_id = %model.model_id,
                sha384 = %hex::encode(&model.sha384),
                sealed_len,
                duration_ms = started.elapsed().as_millis() as u64,
                "sealed model loaded"
            );
            Ok(model)
        }
        EnclaveResponse::Error(e) => Err(refused(e)),
        _ => Err(LoadError::Protocol("expected ModelLoaded")),
    }
}

/// Streams exactly `sealed_len` bytes after the header and checks that the file ends there.
async fn send_body<R>(
    pool: &EnclavePool,
    reader: &mut R,
    upload_id: u64,
    sealed_len: u64,
    chunk_len: usize,
    config: &LoaderConfig,
) -> Result<(), LoadError>
where
    R: AsyncRead + Unpin,
{
    // 3. Exactly `sealed_len` bytes, in pieces, each acknowledged with the running count. Two
    // buffers: while the enclave authenticates and decrypts one piece, the next is read from the
    // source, so that the source's transfer and the enclave's work overlap instead of taking
    // turns (a few percent of a 105 MB body over local sockets, where the client's TCP buffers
    // already hid most of the read; more from a slow source). Each buffer is moved into its
    // request and taken back after the call.
    let piece =
        |from: u64| usize::try_from(sealed_len - from).map_or(chunk_len, |r| r.min(chunk_len));
    let capacity = chunk_len.min(usize::try_from(sealed_len).unwrap_or(chunk_len));
    let mut buf = Vec::with_capacity(capacity);
    let mut ahead = Vec::with_capacity(capacity);
    let mut sent: u64 = 0;
    let mut want = if sealed_len > 0 { piece(0) } else { 0 };
    buf.resize(want, 0);
    let got = read_full(reader, &mut buf, config.read_timeout).await?;
    if got < want {
        return Err(LoadError::Truncated {
            expected: sealed_len,
            got: got as u64,
        });
    }
    while sent < sealed_len {
        let next_from = sent + want as u64;
        let next_want = if next_from < sealed_len {
            piece(next_from)
        } else {
            0
        };
        ahead.resize(next_want, 0);
        let request = EnclaveRequest::LoadSealedModelChunk {
            upload_id,
            data: std::mem::take(&mut buf),
        };
        let (response, read) = tokio::join!(
            pool.call_with_timeout(&request, config.call_timeout),
            read_full(reader, &mut ahead, config.read_timeout),
        );
        if let EnclaveRequest::LoadSealedModelChunk { data, .. } = request {
            buf = data;
        }
        sent = next_from;
        // The enclave's answer first: a refused piece is the reason, whatever the read did.
        match response? {
            EnclaveResponse::SealedChunkAccepted {
                upload_id: id,
                received,
            } if id == upload_id && received == sent => {}
            EnclaveResponse::SealedChunkAccepted { .. } => {
                return Err(LoadError::Protocol(
                    "chunk acknowledgement does not match the upload or byte count",
                ));
            }
            EnclaveResponse::Error(e) => return Err(refused(e)),
            _ => return Err(LoadError::Protocol("expected SealedChunkAccepted")),
        }
        let got = read?;
        if got < next_want {
            return Err(LoadError::Truncated {
                expected: sealed_len,
                got: sent + got as u64,
            });
        }
        std::mem::swap(&mut buf, &mut ahead);
        want = next_want;
    }
    drop((buf, ahead));

    // 4. The file must end exactly here: trailing bytes mean a corrupt or concatenated file.
    let mut probe = [0u8; 1];
    if read_full(reader, &mut probe, config.read_timeout).await? != 0 {
        return Err(LoadError::TrailingData);
    }

    Ok(())
}

/// Best effort: the upload may already be gone (a chunk the enclave refused ends it there).
async fn abort(pool: &EnclavePool, upload_id: u64, config: &LoaderConfig) {
    let request = EnclaveRequest::LoadSealedModelAbort { upload_id };
    if let Ok(EnclaveResponse::SealedUploadAborted { .. }) =
        pool.call_with_timeout(&request, config.call_timeout).await
    {
        info!(upload_id, "sealed model upload aborted");
    }
}

fn refused(e: sealed_wire::WireError) -> LoadError {
    warn!(code = %e.code, "the enclave refused a sealed model");
    LoadError::Refused {
        code: e.code,
        message: e.message,
    }
}

/// Reads until `buf` is full or the source ends; returns the bytes read. Each read has
/// `timeout`.
async fn read_full<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
    timeout: Duration,
) -> Result<usize, LoadError> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        let n = tokio::time::timeout(timeout, reader.read(rest))
            .await
            .map_err(|_| LoadError::ReadTimeout(timeout))?
            .map_err(LoadError::Read)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Why loading `--models-dir` failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelsDirError {
    #[error("cannot read the models directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open sealed model {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the enclave at {endpoint} was not reachable within {waited:?}")]
    EnclaveUnreachable { endpoint: String, waited: Duration },
    #[error("loading sealed model {path}")]
    Load {
        path: PathBuf,
        #[source]
        source: LoadError,
    },
}

impl ModelsDirError {
    /// The stable code of a failed load (the metrics' `outcome`).
    pub fn code(&self) -> ErrorCode {
        match self {
            ModelsDirError::ReadDir { .. } | ModelsDirError::Open { .. } => ErrorCode::Internal,
            ModelsDirError::EnclaveUnreachable { .. } => ErrorCode::EnclaveUnavailable,
            ModelsDirError::Load { source, .. } => source.code(),
        }
    }
}

/// The `*.sealed` files directly in `dir`, sorted by name (so that start-up order is stable).
pub async fn sealed_files(dir: &Path) -> Result<Vec<PathBuf>, ModelsDirError> {
    let read_dir_err = |source| ModelsDirError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = tokio::fs::read_dir(dir).await.map_err(read_dir_err)?;
    let mut files = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(read_dir_err)? {
        let path = entry.path();
        let is_sealed = path.extension().is_some_and(|e| e == SEALED_EXTENSION);
        // Follows symlinks: an operator may link models in from elsewhere.
        if is_sealed && tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads every `*.sealed` file in `dir`, in name order, after waiting up to `connect_timeout` for
/// the enclave; returns each file with the model it loaded. Stops at the first failure, so that an
/// operator never believes a model is served when it is not.
pub async fn load_dir(
    pool: &EnclavePool,
    endpoint: &str,
    dir: &Path,
    credentials: &CredentialProvider,
    connect_timeout: Duration,
    config: &LoaderConfig,
) -> Result<Vec<(PathBuf, ModelInfo)>, ModelsDirError> {
    let files = sealed_files(dir).await?;
    if files.is_empty() {
        warn!(dir = %dir.display(), "no *.sealed files in the models directory");
        return Ok(Vec::new());
    }
    if !pool.wait_connected(connect_timeout).await {
        return Err(ModelsDirError::EnclaveUnreachable {
            endpoint: endpoint.to_string(),
            waited: connect_timeout,
        });
    }
    let mut loaded = Vec::with_capacity(files.len());
    for path in files {
        let model = load_file(pool, &path, credentials, config).await?;
        loaded.push((path, model));
    }
    Ok(loaded)
}

/// Loads one sealed model file, with fresh credentials.
pub async fn load_file(
    pool: &EnclavePool,
    path: &Path,
    credentials: &CredentialProvider,
    config: &LoaderConfig,
) -> Result<ModelInfo, ModelsDirError> {
    let load_err = |source| ModelsDirError::Load {
        path: path.to_path_buf(),
        source,
    };
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|source| ModelsDirError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let creds = credentials
        .get()
        .await
        .map_err(|e| load_err(LoadError::Credentials(e)))?;
    let reader = tokio::io::BufReader::with_capacity(256 * 1024, file);
    load_sealed(pool, reader, creds, config)
        .await
        .map_err(load_err)
}

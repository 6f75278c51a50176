//! [`PipelinedOpener`]: opens a sealed model with the SHA-384 of the plaintext computed on a
//! thread of its own, so that the caller's thread only authenticates and decrypts.
//!
//! Why: on CPUs without SHA-512 instructions SHA-384 runs at about a third of the speed of
//! AES-256-GCM (~0.5 against ~1.7 GB/s on one core), and it cannot be split across cores (it is a
//! chain). Hashing in series with decryption made opening hash-bound. Here decryption runs at
//! AES-GCM speed, the hash follows as chunks arrive (also while the caller waits for more input),
//! and whatever hash work is left when the last chunk is in overlaps with the caller's own work on
//! the plaintext (the enclave's tract load) through [`UnverifiedModel`]. The digest is still
//! recomputed in full over the exact bytes returned; only its place on the critical path changes.
//!
//! Memory: the hash thread owns the one plaintext buffer, preallocated to the model length, and
//! appends each chunk to it before hashing; chunks travel in at most [`PIPELINE_BUFFERS`] chunk
//! buffers that go back and forth, so the peak is one model plus two chunks. Every buffer is
//! `Zeroizing`: wiped when dropped, on success, failure or abandonment alike.
//!
//! Safe Rust only: the buffer the hash thread reads is never written by another thread (it is the
//! only writer while chunks arrive, then the buffer is shared read-only behind an `Arc`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, OnceLock};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{AeadInOut, KeyInit};
use sha2::{Digest, Sha384};
use zeroize::Zeroizing;

use crate::header::{DIGEST_LEN, SealedModelHeader, chunk_aad};
use crate::stream::{DATA_KEY_LEN, Tag, chunk_nonce};
use crate::{ModelFormatError, TAG_LEN};

/// Chunk buffers in circulation between the opener and its hash thread: two, so that one is
/// decrypted into while the other is appended.
pub const PIPELINE_BUFFERS: usize = 2;

/// Plaintext hashed between two looks at the channel: small enough that an arriving chunk waits
/// well under a millisecond, large enough that the look costs nothing.
const HASH_SLICE: usize = 64 * 1024;

type Buffer = Zeroizing<Vec<u8>>;
type Plaintext = Arc<Zeroizing<Vec<u8>>>;

enum Msg {
    /// A decrypted chunk: the first `len` bytes of the buffer.
    Chunk(Buffer, usize),
    /// Every chunk is in: share the plaintext, then hash the rest.
    Finish(SyncSender<Plaintext>),
}

/// The hash thread's handles. Dropping it (or a clone of `cancel` being set) stops the thread,
/// which drops, and so wipes, what it holds.
struct Worker {
    to_hasher: Option<SyncSender<Msg>>,
    returned: Receiver<Buffer>,
    digest: Receiver<[u8; DIGEST_LEN]>,
    cancel: Arc<AtomicBool>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Release);
        // Closing the channel wakes a thread waiting for chunks. Not joined: it stops within one
        // hash slice, and a drop must not block an async caller or a lock holder.
        self.to_hasher = None;
    }
}

/// Streaming opener with SHA-384 on its own thread. Feed each chunk in order with
/// [`Self::open_chunk`], then [`Self::finish`], then check the digest with
/// [`UnverifiedModel::verify`]. Same checks and errors as [`crate::Opener`]; the plaintext lives
/// inside the opener instead of a caller's buffer.
///
/// Holds the data key schedule: wiped on drop, no `Debug`.
pub struct PipelinedOpener {
    header: SealedModelHeader,
    aad: [u8; DIGEST_LEN],
    cipher: Aes256Gcm,
    next: u32,
    count: u32,
    failed: bool,
    /// Chunk buffers allocated so far (at most [`PIPELINE_BUFFERS`]).
    allocated: usize,
    buffer_len: usize,
    worker: Worker,
}

impl PipelinedOpener {
    /// `header_bytes` is the exact file prefix `header` was parsed from. Allocates the
    /// plaintext buffer (`plaintext_len`, at most [`crate::MAX_MODEL_LEN`], from a header no tag
    /// has vouched for yet: check it against your memory budget first, as for
    /// [`crate::Opener::output_buffer`]) and starts the hash thread.
    pub fn new(
        header: &SealedModelHeader,
        header_bytes: &[u8],
        data_key: &[u8; DATA_KEY_LEN],
    ) -> Result<PipelinedOpener, ModelFormatError> {
        let parsed = crate::stream::check_header_bytes(header, header_bytes)?;
        let too_large = || ModelFormatError::TooLarge {
            len: parsed.plaintext_len,
            max: crate::MAX_MODEL_LEN,
        };
        let model_len = usize::try_from(parsed.plaintext_len).map_err(|_| too_large())?;
        let buffer_len = model_len.min(parsed.chunk_size as usize);
        let count = parsed.chunk_count()?;
        let worker = spawn_hasher(Zeroizing::new(Vec::with_capacity(model_len)))?;
        Ok(PipelinedOpener {
            aad: chunk_aad(header_bytes),
            cipher: Aes256Gcm::new(data_key.into()),
            header: parsed,
            next: 0,
            count,
            failed: false,
            allocated: 0,
            buffer_len,
            worker,
        })
    }

    /// Ciphertext length (plaintext and tag) of the next expected chunk; `None` once all are in.
    pub fn next_chunk_len(&self) -> Option<usize> {
        if self.next >= self.count || self.failed {
            return None;
        }
        self.header
            .chunk_plaintext_len(self.next)
            .ok()
            .map(|n| n + TAG_LEN)
    }

    /// The SHA-384 the header promises for the plaintext.
    pub fn expected_digest(&self) -> &[u8; DIGEST_LEN] {
        &self.header.plaintext_sha384
    }

    /// Authenticates and decrypts the next chunk and hands it to the hash thread; returns its
    /// plaintext length. After an error the opener refuses further chunks.
    pub fn open_chunk(&mut self, ciphertext: &[u8]) -> Result<usize, ModelFormatError> {
        if self.failed {
            return Err(ModelFormatError::Misuse {
                reason: "opener used after a failure",
            });
        }
        let result = self.open_chunk_inner(ciphertext);
        self.failed = result.is_err();
        result
    }

    fn open_chunk_inner(&mut self, ciphertext: &[u8]) -> Result<usize, ModelFormatError> {
        if self.next >= self.count {
            return Err(ModelFormatError::TrailingData);
        }
        let index = self.next;
        let expected = self.header.chunk_plaintext_len(index)?;
        let (body, tag) = ciphertext
            .split_last_chunk::<TAG_LEN>()
            .ok_or(ModelFormatError::Truncated)?;
        if body.len() < expected {
            return Err(ModelFormatError::Truncated);
        }
        if body.len() > expected {
            return Err(ModelFormatError::TrailingData);
        }
        let mut buffer = self.take_buffer()?;
        let last = index + 1 == self.count;
        let nonce = chunk_nonce(&self.header.nonce_prefix, index, last);
        // Decrypted straight from the caller's ciphertext into the chunk buffer: the tag is
        // checked over the ciphertext first and the buffer is written only if it matches.
        let opened = buffer
            .get_mut(..expected)
            .and_then(|out| InOutBuf::new(body, out).ok())
            .map(|inout| {
                self.cipher
                    .decrypt_inout_detached(&nonce, &self.aad, inout, &Tag::from(*tag))
                    .is_ok()
            });
        match opened {
            Some(true) => {}
            Some(false) => return Err(ModelFormatError::ChunkAuthFailed { index }),
            None => {
                return Err(ModelFormatError::Misuse {
                    reason: "chunk larger than the pipeline buffer",
                });
            }
        }
        self.send(Msg::Chunk(buffer, expected))?;
        self.next = index + 1;
        Ok(expected)
    }

    /// A free chunk buffer: a new one while fewer than [`PIPELINE_BUFFERS`] exist, else the next
    /// one the hash thread gives back (waiting for it to append that chunk).
    fn take_buffer(&mut self) -> Result<Buffer, ModelFormatError> {
        if self.allocated < PIPELINE_BUFFERS {
            self.allocated += 1;
            return Ok(Zeroizing::new(vec![0; self.buffer_len]));
        }
        self.worker.returned.recv().map_err(|_| stopped())
    }

    fn send(&self, msg: Msg) -> Result<(), ModelFormatError> {
        self.worker
            .to_hasher
            .as_ref()
            .ok_or_else(stopped)?
            .send(msg)
            .map_err(|_| stopped())
    }

    /// Checks that every chunk arrived and returns the whole plaintext with its digest still being
    /// computed. The tags have authenticated every byte; the SHA-384 check is
    /// [`UnverifiedModel::verify`].
    pub fn finish(self) -> Result<UnverifiedModel, ModelFormatError> {
        if self.failed {
            return Err(ModelFormatError::Misuse {
                reason: "opener used after a failure",
            });
        }
        if self.next != self.count {
            return Err(ModelFormatError::Truncated);
        }
        let (reply, plaintext) = sync_channel(1);
        self.send(Msg::Finish(reply))?;
        let plaintext = plaintext.recv().map_err(|_| stopped())?;
        // The hash thread handles messages in order and gives every chunk buffer back before it
        // reads the next message, so by the time the plaintext arrives every buffer is in
        // `returned`: free (and wipe) them now, before the caller's load of the model peaks,
        // rather than when the model is dropped.
        while self.worker.returned.try_recv().is_ok() {}
        Ok(UnverifiedModel {
            plaintext,
            expected: self.header.plaintext_sha384,
            outcome: OnceLock::new(),
            worker: self.worker,
        })
    }
}

/// A model whose every chunk authenticated, with its SHA-384 still being computed on the hash
/// thread. [`Self::plaintext`] may be read at once, to overlap work with the hash, but nothing
/// built from it may be used or published before [`Self::verify`] returns `Ok`.
///
/// Wiped when dropped (the hash thread drops its share within one hash slice); no `Debug`.
pub struct UnverifiedModel {
    plaintext: Plaintext,
    expected: [u8; DIGEST_LEN],
    outcome: OnceLock<Result<(), ModelFormatError>>,
    worker: Worker,
}

impl UnverifiedModel {
    /// The plaintext: authenticated chunk by chunk, digest not yet confirmed.
    pub fn plaintext(&self) -> &[u8] {
        &self.plaintext
    }

    /// The SHA-384 the header promises; [`Self::verify`] checks the plaintext against it.
    pub fn expected_digest(&self) -> &[u8; DIGEST_LEN] {
        &self.expected
    }

    /// Waits for the hash thread and compares its digest with the header's. The same answer on
    /// every call.
    pub fn verify(&self) -> Result<(), ModelFormatError> {
        self.outcome
            .get_or_init(|| {
                let digest = self.worker.digest.recv().map_err(|_| stopped())?;
                // Not secret (the digest is in the header), so a plain comparison is fine.
                if digest == self.expected {
                    Ok(())
                } else {
                    Err(ModelFormatError::DigestMismatch)
                }
            })
            .clone()
    }
}

fn stopped() -> ModelFormatError {
    ModelFormatError::Resources {
        reason: "the hash thread stopped",
    }
}

fn spawn_hasher(out: Buffer) -> Result<Worker, ModelFormatError> {
    let (to_hasher, inbox) = sync_channel(PIPELINE_BUFFERS + 1);
    let (give_back, returned) = sync_channel(PIPELINE_BUFFERS);
    let (digest_tx, digest) = sync_channel(1);
    let cancel = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&cancel);
    std::thread::Builder::new()
        .name("model-sha384".into())
        .spawn(move || hash_thread(out, &inbox, &give_back, &digest_tx, &stop))
        .map_err(|_| ModelFormatError::Resources {
            reason: "could not start the hash thread",
        })?;
    Ok(Worker {
        to_hasher: Some(to_hasher),
        returned,
        digest,
        cancel,
    })
}

/// Appends chunks to `out` as they come and hashes `out` in slices in between; on `Finish`,
/// shares `out` and hashes the rest. Returns (dropping and so wiping everything it holds) when
/// cancelled, when the opener goes away, or after sending the digest.
fn hash_thread(
    mut out: Buffer,
    inbox: &Receiver<Msg>,
    give_back: &SyncSender<Buffer>,
    digest_tx: &SyncSender<[u8; DIGEST_LEN]>,
    cancel: &AtomicBool,
) {
    let mut sha = Sha384::new();
    let mut hashed = 0;
    loop {
        if cancel.load(Ordering::Acquire) {
            return;
        }
        let msg = if hashed < out.len() {
            match inbox.try_recv() {
                Ok(msg) => Some(msg),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            }
        } else {
            match inbox.recv() {
                Ok(msg) => Some(msg),
                Err(_) => return,
            }
        };
        match msg {
            None => hashed = hash_slice(&mut sha, &out, hashed),
            Some(Msg::Chunk(buffer, len)) => {
                // The opener checks every length against the header, whose length sized `out`:
                // a chunk that does not fit is a bug, and growing `out` would leave an unwiped
                // copy behind, so the thread stops instead (the opener then reports it).
                let Some(chunk) = buffer.get(..len) else {
                    return;
                };
                if out.capacity() - out.len() < len {
                    return;
                }
                out.extend_from_slice(chunk);
                if give_back.send(buffer).is_err() {
                    return;
                }
            }
            Some(Msg::Finish(reply)) => {
                let shared = Arc::new(out);
                if reply.send(Arc::clone(&shared)).is_err() {
                    return;
                }
                while hashed < shared.len() {
                    if cancel.load(Ordering::Acquire) {
                        return;
                    }
                    hashed = hash_slice(&mut sha, &shared, hashed);
                }
                let _ = digest_tx.send(sha.finalize().into());
                return;
            }
        }
    }
}

/// Hashes up to [`HASH_SLICE`] bytes of `data` from `from`; returns the new position.
fn hash_slice(sha: &mut Sha384, data: &[u8], from: usize) -> usize {
    let to = from.saturating_add(HASH_SLICE).min(data.len());
    if let Some(slice) = data.get(from..to) {
        sha.update(slice);
    }
    to
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MIN_CHUNK_SIZE, SealParams, parse_header, seal};

    #[test]
    fn finish_frees_every_chunk_buffer_before_the_model_is_loaded() {
        let key = [7u8; DATA_KEY_LEN];
        let plaintext: Vec<u8> = (0..5 * MIN_CHUNK_SIZE as usize + 11)
            .map(|i| (i % 241) as u8)
            .collect();
        let params = SealParams {
            model_id: "m".into(),
            kms_key_id: "k".into(),
            encrypted_data_key: vec![1],
            chunk_size: MIN_CHUNK_SIZE,
        };
        let file = seal(params, &key, &plaintext, [5; 7]).unwrap();
        let (header, start) = parse_header(&file).unwrap();
        let mut opener = PipelinedOpener::new(&header, &file[..start], &key).unwrap();
        let mut rest = &file[start..];
        while let Some(len) = opener.next_chunk_len() {
            let (chunk, tail) = rest.split_at(len);
            opener.open_chunk(chunk).unwrap();
            rest = tail;
        }
        assert_eq!(
            opener.allocated, PIPELINE_BUFFERS,
            "both buffers were in use"
        );
        let unverified = opener.finish().unwrap();
        // Nothing is left parked in the give-back channel for the model's lifetime.
        // (Empty, or Disconnected once the hash thread has finished: either way, no buffer.)
        assert!(unverified.worker.returned.try_recv().is_err());
        unverified.verify().unwrap();
        assert_eq!(unverified.plaintext(), plaintext.as_slice());
    }
}

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
//! Memory: one buffer, allocated to the model length, and nothing else. Each chunk is decrypted
//! straight into its own place in it: the opener splits the next `len` bytes off the buffer's
//! unused tail as a handle of its own (`bytes::BytesMut::split_to`), decrypts into them and hands
//! the handle to the hash thread, which joins it back onto the part it holds without a copy
//! (`try_unsplit`: the two are contiguous views of the one allocation) and hashes it from there.
//! So the plaintext is written once, by the decrypting thread, and the hash thread only reads it
//! (until round 9 of docs/performance.md chunks went through two recycled chunk buffers and the
//! hash thread copied each into the model buffer: ~45 ms of a 105 MB model's hash path here, most
//! of it the page faults of the fresh buffer, which the decrypting thread now takes while the
//! hash thread, the longer path, does not). Every handle wipes its bytes when dropped, on
//! success, failure or abandonment alike.
//!
//! Safe Rust only: no two handles ever cover the same bytes, and `bytes` keeps the allocation
//! alive until the last handle drops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError, channel, sync_channel};
use std::sync::{Arc, OnceLock};

use aead::inout::InOutBuf;
use aead::{AeadInOut, KeyInit};
use bytes::BytesMut;
use sealed_crypto::aes256gcm::Aes256Gcm;
use sha2::{Digest, Sha384};
use zeroize::Zeroize;

use crate::header::{DIGEST_LEN, SealedModelHeader, chunk_aad};
use crate::stream::{DATA_KEY_LEN, Tag, chunk_nonce};
use crate::{ModelFormatError, TAG_LEN};

/// Plaintext hashed between two looks at the channel: small enough that an arriving chunk waits
/// well under a millisecond, large enough that the look costs nothing.
const HASH_SLICE: usize = 64 * 1024;

/// A view of (part of) the model buffer, wiped when dropped. `bytes` frees the allocation with
/// its last view, after every view has wiped its own bytes.
struct Wiped(BytesMut);

impl Drop for Wiped {
    fn drop(&mut self) {
        self.0.as_mut().zeroize();
    }
}

impl Wiped {
    /// Appends `next`, which must be the view that directly follows this one in the same
    /// allocation, without copying. Anything else is refused (and wiped on drop) rather than
    /// copied: `BytesMut::unsplit` would copy it, and could move this view to a new allocation
    /// and free the old one unwiped.
    fn join(&mut self, mut next: Wiped) -> Result<(), ()> {
        let next = std::mem::take(&mut next.0);
        if self.0.is_empty() && self.0.capacity() == 0 {
            self.0 = next;
            return Ok(());
        }
        self.0
            .try_unsplit(next)
            .map_err(|refused| drop(Wiped(refused)))
    }
}

type Plaintext = Arc<Wiped>;

enum Msg {
    /// A decrypted chunk: the next bytes of the model buffer.
    Chunk(Wiped),
    /// Every chunk is in: share the plaintext, then hash the rest.
    Finish(SyncSender<Plaintext>),
}

/// The hash thread's handles. Dropping it (or a clone of `cancel` being set) stops the thread,
/// which drops, and so wipes, what it holds.
struct Worker {
    to_hasher: Option<Sender<Msg>>,
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
    /// The model buffer's part not yet decrypted into: empty, with the capacity still to fill.
    rest: Wiped,
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
        let count = parsed.chunk_count()?;
        let worker = spawn_hasher()?;
        Ok(PipelinedOpener {
            aad: chunk_aad(header_bytes),
            cipher: Aes256Gcm::new(data_key.into()),
            header: parsed,
            next: 0,
            count,
            failed: false,
            rest: Wiped(BytesMut::with_capacity(model_len)),
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
        // The header's chunk lengths add up to the length the buffer was sized to; checked
        // anyway, since growing the buffer would move it (and leave no contiguous model).
        if self.rest.0.capacity() < expected {
            return Err(ModelFormatError::Misuse {
                reason: "chunk beyond the model buffer",
            });
        }
        // The chunk's place in the model buffer, as a view of its own (zeroed first: the
        // decryption writes only once the tag has matched).
        self.rest.0.resize(expected, 0);
        let mut chunk = Wiped(self.rest.0.split_to(expected));
        let last = index + 1 == self.count;
        let nonce = chunk_nonce(&self.header.nonce_prefix, index, last);
        // Decrypted from the caller's ciphertext into the model buffer (copied there, then
        // decrypted in place: ring's AES-GCM works within one buffer). On a tag mismatch ring
        // zeroes what it wrote before returning the error, so no unauthenticated plaintext stays.
        let opened = InOutBuf::new(body, chunk.0.as_mut()).ok().map(|inout| {
            self.cipher
                .decrypt_inout_detached(&nonce, &self.aad, inout, &Tag::from(*tag))
                .is_ok()
        });
        match opened {
            Some(true) => {}
            Some(false) => return Err(ModelFormatError::ChunkAuthFailed { index }),
            None => {
                return Err(ModelFormatError::Misuse {
                    reason: "chunk length disagrees with its place in the model buffer",
                });
            }
        }
        self.send(Msg::Chunk(chunk))?;
        self.next = index + 1;
        Ok(expected)
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
        &self.plaintext.0
    }

    /// A share of the plaintext that owns its bytes, for a consumer that needs them `'static`
    /// (`bytes::Bytes::from_owner`: the enclave's protobuf decoder). Same rule as
    /// [`Self::plaintext`]: nothing built from it counts before [`Self::verify`].
    pub fn shared_plaintext(&self) -> SharedPlaintext {
        SharedPlaintext(Arc::clone(&self.plaintext))
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

/// A share of an [`UnverifiedModel`]'s plaintext ([`UnverifiedModel::shared_plaintext`]). The
/// plaintext is wiped when the model and every share have dropped. No `Debug`.
#[derive(Clone)]
pub struct SharedPlaintext(Plaintext);

impl AsRef<[u8]> for SharedPlaintext {
    fn as_ref(&self) -> &[u8] {
        &self.0.0
    }
}

fn stopped() -> ModelFormatError {
    ModelFormatError::Resources {
        reason: "the hash thread stopped",
    }
}

fn spawn_hasher() -> Result<Worker, ModelFormatError> {
    // Unbounded: a message is a view of the one model buffer, not a buffer of its own, so
    // chunks waiting for the hash hold no extra memory (and their number is the header's chunk
    // count, bounded by the model length).
    let (to_hasher, inbox) = channel();
    let (digest_tx, digest) = sync_channel(1);
    let cancel = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&cancel);
    std::thread::Builder::new()
        .name("model-sha384".into())
        .spawn(move || hash_thread(&inbox, &digest_tx, &stop))
        .map_err(|_| ModelFormatError::Resources {
            reason: "could not start the hash thread",
        })?;
    Ok(Worker {
        to_hasher: Some(to_hasher),
        digest,
        cancel,
    })
}

/// Joins chunks onto the model as they come and hashes it in slices in between; on `Finish`,
/// shares the model and hashes the rest. Returns (dropping and so wiping everything it holds)
/// when cancelled, when the opener goes away, or after sending the digest.
fn hash_thread(
    inbox: &Receiver<Msg>,
    digest_tx: &SyncSender<[u8; DIGEST_LEN]>,
    cancel: &AtomicBool,
) {
    let mut sha = Sha384::new();
    let mut model = Wiped(BytesMut::new());
    let mut hashed = 0;
    loop {
        if cancel.load(Ordering::Acquire) {
            return;
        }
        let msg = if hashed < model.0.len() {
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
            None => hashed = hash_slice(&mut sha, &model.0, hashed),
            Some(Msg::Chunk(chunk)) => {
                // The opener splits each chunk off the buffer right after the one before, so
                // this never fails; were it to, the thread stops (the opener then reports it)
                // rather than copy.
                if model.join(chunk).is_err() {
                    return;
                }
            }
            Some(Msg::Finish(reply)) => {
                let shared = Arc::new(model);
                if reply.send(Arc::clone(&shared)).is_err() {
                    return;
                }
                while hashed < shared.0.len() {
                    if cancel.load(Ordering::Acquire) {
                        return;
                    }
                    hashed = hash_slice(&mut sha, &shared.0, hashed);
                }
                // Let go of the plaintext before reporting: the opener's side, which waits for
                // the digest, then always frees it last, on its own thread (where the enclave
                // makes sure its allocator does not keep the buffer for reuse).
                drop(shared);
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
    fn the_model_is_one_buffer_written_in_place() {
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
        // The buffer's address before any chunk: the model must end up there, whole.
        let buffer = opener.rest.0.as_ptr();
        assert_eq!(opener.rest.0.capacity(), plaintext.len());
        let mut rest = &file[start..];
        while let Some(len) = opener.next_chunk_len() {
            let (chunk, tail) = rest.split_at(len);
            opener.open_chunk(chunk).unwrap();
            rest = tail;
        }
        assert_eq!(opener.rest.0.capacity(), 0, "every byte of the buffer used");
        let unverified = opener.finish().unwrap();
        assert_eq!(
            unverified.plaintext().as_ptr(),
            buffer,
            "no copy of the model"
        );
        unverified.verify().unwrap();
        assert_eq!(unverified.plaintext(), plaintext.as_slice());
    }

    #[test]
    fn a_view_from_elsewhere_is_refused_rather_than_copied() {
        let mut buffer = BytesMut::with_capacity(64);
        buffer.resize(64, 1);
        let mut first = Wiped(buffer.split_to(16));
        let second = buffer.split_to(16);
        let third = buffer.split_to(16);
        let start = first.0.as_ptr();
        // Out of order: not the view that follows, so refused.
        assert!(first.join(Wiped(third)).is_err());
        // A view of another allocation: refused, even though `unsplit` would copy it.
        let mut other = BytesMut::with_capacity(16);
        other.resize(16, 2);
        assert!(first.join(Wiped(other)).is_err());
        assert_eq!(first.0.len(), 16);
        // The next view joins in place.
        first.join(Wiped(second)).unwrap();
        assert_eq!(first.0.len(), 32);
        assert_eq!(first.0.as_ptr(), start);
        // An empty model takes the first view as it is.
        let mut empty = Wiped(BytesMut::new());
        let mut fresh = BytesMut::with_capacity(8);
        fresh.resize(8, 3);
        let at = fresh.as_ptr();
        empty.join(Wiped(fresh)).unwrap();
        assert_eq!(empty.0.as_ptr(), at);
    }
}

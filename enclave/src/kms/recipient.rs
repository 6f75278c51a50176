//! The enclave's KMS recipient key: an RSA-2048 key pair whose DER SubjectPublicKeyInfo goes into
//! the attestation document's `public_key`, so that KMS wraps the data key to it
//! (nitro-facts.md §3.1: "must include a RSA2048 key encoded as a DER SubjectPublicKeyInfo";
//! aws-nitro-enclaves-sdk-c `aws_attestation_rsa_keypair_new`, RSA_F4).
//!
//! One key per request, not per boot: each key is used to unwrap one `CiphertextForRecipient`
//! and is wiped when that request is done (`rsa::PrivateKey` is `ZeroizeOnDrop`; the big-integer
//! temporaries of its making and use are wiped by the allocator), so a key that leaked later could
//! open nothing the host recorded but that one answer.
//!
//! Made one ahead ([`KeyMaker`]): RSA-2048 generation takes 8–130 ms in a release build here (p50
//! 53 ms; a search for random primes, so it varies), and a model load used to wait for all of it
//! before it could ask KMS. The next key is started at boot and after each load takes one, so a
//! load finds it made, or at least begun. A key made ahead has unwrapped nothing until the load
//! that takes it, and no two loads ever get the same key.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sealed_kms::cms;
use sealed_kms::rsa::PrivateKey;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

/// RSA modulus size KMS requires of a recipient key.
pub const RECIPIENT_KEY_BITS: usize = cms::RECIPIENT_KEY_BYTES * 8;

/// Why the recipient key could not be made.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum RecipientKeyError {
    #[error("RSA key generation failed")]
    Generate,
    #[error("RSA public key encoding failed")]
    Encode,
    #[error("RSA key generation task failed")]
    Task,
}

/// A generated key pair and its SPKI. No `Debug`: it holds the private key.
pub struct KeyPair {
    private: PrivateKey,
    spki_der: Vec<u8>,
}

impl KeyPair {
    /// Generates an RSA-2048 key (e = 65537) from the OS RNG. Blocks for a while: call it off the
    /// async reactor.
    pub fn generate() -> Result<KeyPair, RecipientKeyError> {
        // The search for the primes and the private exponent's derivation free big-integer
        // temporaries that the `rsa` crate does not wipe (some hold the key's own values): the
        // allocator zeroes them as they are freed (enclave/alloc).
        let _wiping = sealed_alloc::wiping();
        let mut rng = crate::rng::os_rng();
        let private = PrivateKey::new(&mut rng, RECIPIENT_KEY_BITS)
            .map_err(|_| RecipientKeyError::Generate)?;
        let spki_der = cms::recipient_public_key_spki(private.as_public_key())
            .map_err(|_| RecipientKeyError::Encode)?;
        Ok(KeyPair { private, spki_der })
    }

    /// Unwraps the `CiphertextForRecipient` KMS made for this key: RSAES-OAEP, then AES-256-CBC
    /// ([`cms::decrypt`]), to the data key's bytes. CPU work: call it off the async reactor.
    pub fn open(
        &self,
        enveloped: &cms::EnvelopedRecipient,
    ) -> Result<Zeroizing<Vec<u8>>, cms::DecryptError> {
        // The private-key operation's temporaries (the blinded ciphertext, its CRT halves, the
        // padded message) are freed unwiped by the `rsa` crate: zeroed by the allocator instead.
        let _wiping = sealed_alloc::wiping();
        let mut rng = crate::rng::os_rng();
        cms::decrypt(enveloped, &self.private, &mut rng)
    }

    /// DER SubjectPublicKeyInfo: the attestation document's `public_key`.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
}

/// Generates a fresh key pair on a blocking thread, off the async reactor.
pub async fn generate() -> Result<KeyPair, RecipientKeyError> {
    tokio::task::spawn_blocking(KeyPair::generate)
        .await
        .map_err(|_| RecipientKeyError::Task)?
}

/// Hands out recipient keys, each to one caller, with the next one made in advance. Cheap to
/// share (`Clone` shares the one key in the making).
#[derive(Clone)]
pub struct KeyMaker {
    shared: Arc<Shared>,
}

struct Shared {
    /// The next key, being made or made, on a blocking thread; `None` while a caller waits for
    /// it, or when there was no runtime to make it on.
    next: Mutex<Option<JoinHandle<Result<KeyPair, RecipientKeyError>>>>,
    /// Keys made for a caller that found none in the making: diagnostics and tests.
    made_on_demand: AtomicUsize,
}

impl KeyMaker {
    /// Starts making the first key, when called inside a tokio runtime (the enclave's boot is);
    /// otherwise the first [`Self::take`] makes its own.
    pub fn new() -> KeyMaker {
        let maker = KeyMaker {
            shared: Arc::new(Shared {
                next: Mutex::new(None),
                made_on_demand: AtomicUsize::new(0),
            }),
        };
        maker.start_next();
        maker
    }

    /// A key that no other caller has had or will have: the one made in advance (waiting for it
    /// if it is not finished: it started earlier than a new one would), else a new one. Then the
    /// next one is started, once this caller's is made, so that two never compete for the CPU.
    pub async fn take(&self) -> Result<KeyPair, RecipientKeyError> {
        // A poisoned lock (a thread panicked holding it; nothing here panics) counts as none.
        let in_advance = self
            .shared
            .next
            .lock()
            .ok()
            .and_then(|mut next| next.take());
        let pair = match in_advance {
            Some(making) => match making.await {
                Ok(Ok(pair)) => Ok(pair),
                // It failed: try once more, now.
                _ => generate().await,
            },
            None => {
                self.shared.made_on_demand.fetch_add(1, Ordering::Relaxed);
                generate().await
            }
        };
        self.start_next();
        pair
    }

    /// Whether the key made in advance is finished and waiting (for tests and diagnostics).
    pub fn has_spare(&self) -> bool {
        self.shared
            .next
            .lock()
            .map(|next| next.as_ref().is_some_and(JoinHandle::is_finished))
            .unwrap_or(false)
    }

    /// How many keys were made for a caller that found none in the making.
    pub fn made_on_demand(&self) -> usize {
        self.shared.made_on_demand.load(Ordering::Relaxed)
    }

    /// Starts making the next key unless one is in the making, on the runtime's blocking pool
    /// (its frees are wiped: [`KeyPair::generate`]). Dropped unfinished, the task still ends and
    /// its key is wiped on drop.
    fn start_next(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let Ok(mut next) = self.shared.next.lock()
            && next.is_none()
        {
            *next = Some(runtime.spawn_blocking(KeyPair::generate));
        }
    }
}

impl Default for KeyMaker {
    fn default() -> Self {
        KeyMaker::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_key_is_a_fresh_rsa_2048_pair() {
        let (a, b) = tokio::join!(generate(), generate());
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_ne!(a.spki_der(), b.spki_der());
        // KMS's own check: the SPKI must be an RSA-2048 key, and it is this private key's.
        let public = cms::recipient_public_key_from_spki(a.spki_der()).unwrap();
        assert_eq!(&public, a.private.as_public_key());
    }

    /// Waits (up to a minute: key generation in a debug build under a loaded test run) until
    /// `maker` has a key made ahead.
    fn wait_for_spare(maker: &KeyMaker) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !maker.has_spare() {
            assert!(
                std::time::Instant::now() < deadline,
                "no key was made ahead within a minute"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[tokio::test]
    async fn keys_are_made_ahead_and_each_is_handed_out_once() {
        let maker = KeyMaker::new();
        wait_for_spare(&maker);
        let first = maker.take().await.unwrap();
        assert_eq!(maker.made_on_demand(), 0, "the key made ahead was not used");

        // The next one was started as the first was handed out: it is another key.
        wait_for_spare(&maker);
        let second = maker.clone().take().await.unwrap();
        assert_eq!(maker.made_on_demand(), 0);
        assert_ne!(first.spki_der(), second.spki_der());

        // Two callers at once: one gets the key made ahead, the other the next one (started
        // when the first was handed out) or one made for it; never the same key.
        wait_for_spare(&maker);
        let (a, b) = tokio::join!(maker.take(), maker.take());
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_ne!(a.spki_der(), b.spki_der());
        let on_demand = maker.made_on_demand();
        assert!(
            on_demand <= 1,
            "{on_demand} keys made on demand for two callers"
        );
        for pair in [&first, &second, &a, &b] {
            let public = cms::recipient_public_key_from_spki(pair.spki_der()).unwrap();
            assert_eq!(&public, pair.private.as_public_key());
        }
        wait_for_spare(&maker);
        let c = maker.take().await.unwrap();
        assert_eq!(maker.made_on_demand(), on_demand);
        assert!(
            [&first, &second, &a, &b]
                .iter()
                .all(|p| p.spki_der() != c.spki_der())
        );
    }

    #[test]
    fn without_a_runtime_the_first_key_is_made_on_demand() {
        let maker = KeyMaker::new();
        assert!(!maker.has_spare());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let pair = runtime.block_on(maker.take()).unwrap();
        assert_eq!(maker.made_on_demand(), 1);
        assert_eq!(pair.spki_der().len(), 294);
        // Taking it started the next one, on the runtime it was taken on.
        wait_for_spare(&maker);
    }

    /// Benchmark figure, not an assertion: what one key costs to make, and why it is made ahead
    /// (see the module docs).
    #[test]
    fn prints_rsa_keygen_time() {
        let started = std::time::Instant::now();
        let pair = KeyPair::generate().unwrap();
        println!(
            "RSA-2048 keygen: {} ms (spki {} bytes)",
            started.elapsed().as_millis(),
            pair.spki_der().len()
        );
        assert_eq!(pair.spki_der().len(), 294);
    }
}

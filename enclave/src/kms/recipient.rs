//! The enclave's KMS recipient key: an RSA-2048 key pair whose DER SubjectPublicKeyInfo goes into
//! the attestation document's `public_key`, so that KMS wraps the data key to it
//! (nitro-facts.md §3.1: "must include a RSA2048 key encoded as a DER SubjectPublicKeyInfo";
//! aws-nitro-enclaves-sdk-c `aws_attestation_rsa_keypair_new`, RSA_F4).
//!
//! One key per request, not per boot: RSA-2048 generation with the `rsa` crate measured 75–230 ms
//! even with this workspace's debug profile (deps at opt-level 1; the `prints_rsa_keygen_time`
//! test prints it), small beside a KMS round trip and a tract optimisation, and it happens once
//! per model load. So no private key outlives the load that needed it: it is made on a blocking
//! thread ([`generate`]), used to unwrap one `CiphertextForRecipient`, and wiped on drop
//! (`rsa::PrivateKey` is `ZeroizeOnDrop`).

use sealed_kms::cms;
use sealed_kms::rsa::PrivateKey;
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

    pub fn private_key(&self) -> &PrivateKey {
        &self.private
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
        assert_eq!(&public, a.private_key().as_public_key());
    }

    /// Benchmark figure, not an assertion: why the key is per boot (see the module docs).
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

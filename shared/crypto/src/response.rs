//! Sealed responses (RFC 9458 §4.4): [`ResponseSealer`] in the enclave, [`ResponseOpener`] on the
//! client. Both hold the secret exported from the request's HPKE context, so only the client that
//! sealed that request can open its response, and a response cannot be moved to another request.
//!
//! ```text
//! secret         = context.Export(RESPONSE_LABEL, Nk = 32)
//! response_nonce = random(max(Nn, Nk) = 32)
//! prk            = HKDF-Extract(salt = enc | response_nonce, IKM = secret)
//! key            = HKDF-Expand(prk, "key", 32);  nonce = HKDF-Expand(prk, "nonce", 12)
//! response       = response_nonce | AES-256-GCM-Seal(key, nonce, aad = "", plaintext)
//! ```
//!
//! The random response nonce keeps (key, nonce) pairs distinct even if the enclave answers a
//! replayed request twice.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit};
use hkdf::Hkdf;
use rand_core::CryptoRng;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{OpenError, SealError};
use crate::request::{ReceiverContext, SenderContext};
use crate::{
    MAX_ENCAPSULATED_RESPONSE_LEN, MAX_PLAINTEXT_LEN, PUBLIC_KEY_LEN, RESPONSE_LABEL,
    RESPONSE_NONCE_LEN, RESPONSE_OVERHEAD, TAG_LEN,
};

/// `Nk` of AES-256-GCM (RFC 9180 §7.3 table 5): the exported secret and the response key.
const KEY_LEN: usize = 32;
/// `Nn` of AES-256-GCM.
const NONCE_LEN: usize = 12;

type Nonce = aes_gcm::aead::Nonce<Aes256Gcm>;
type Tag = aes_gcm::aead::Tag<Aes256Gcm>;

/// The two HPKE contexts both export (RFC 9180 §5.3).
pub(crate) trait Exporter {
    fn export_secret(&self, context: &[u8], out: &mut [u8]) -> Result<(), hpke::HpkeError>;
}

impl Exporter for SenderContext {
    fn export_secret(&self, context: &[u8], out: &mut [u8]) -> Result<(), hpke::HpkeError> {
        self.export(context, out)
    }
}

impl Exporter for ReceiverContext {
    fn export_secret(&self, context: &[u8], out: &mut [u8]) -> Result<(), hpke::HpkeError> {
        self.export(context, out)
    }
}

/// What both ends keep from the request: its `enc` and the exported secret.
pub(crate) struct ResponseSecret {
    enc: [u8; PUBLIC_KEY_LEN],
    secret: Zeroizing<[u8; KEY_LEN]>,
}

impl ResponseSecret {
    /// `secret = context.Export(RESPONSE_LABEL, Nk)`.
    pub(crate) fn export(
        ctx: &impl Exporter,
        enc: [u8; PUBLIC_KEY_LEN],
    ) -> Result<ResponseSecret, hpke::HpkeError> {
        let mut secret = Zeroizing::new([0u8; KEY_LEN]);
        ctx.export_secret(RESPONSE_LABEL, secret.as_mut_slice())?;
        Ok(ResponseSecret { enc, secret })
    }

    /// The response cipher and nonce for one `response_nonce`.
    fn cipher(&self, response_nonce: &[u8; RESPONSE_NONCE_LEN]) -> Option<(Aes256Gcm, Nonce)> {
        let mut salt = [0u8; PUBLIC_KEY_LEN + RESPONSE_NONCE_LEN];
        let (salt_enc, salt_nonce) = salt.split_at_mut(PUBLIC_KEY_LEN);
        salt_enc.copy_from_slice(&self.enc);
        salt_nonce.copy_from_slice(response_nonce);

        let prk = Hkdf::<Sha256>::new(Some(&salt), self.secret.as_slice());
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        prk.expand(b"key", key.as_mut_slice()).ok()?;
        let mut nonce = [0u8; NONCE_LEN];
        prk.expand(b"nonce", &mut nonce).ok()?;
        let cipher = Aes256Gcm::new_from_slice(key.as_slice()).ok()?;
        Some((cipher, Nonce::from(nonce)))
    }
}

/// Seals the one response to an opened request. Enclave side; consumed by [`Self::seal`].
///
/// Holds the exported secret: wiped on drop, no `Debug`.
pub struct ResponseSealer {
    secret: ResponseSecret,
}

// The only secret field is a `Zeroizing` buffer.
impl ZeroizeOnDrop for ResponseSealer {}

impl ResponseSealer {
    pub(crate) fn new(secret: ResponseSecret) -> ResponseSealer {
        ResponseSealer { secret }
    }

    /// Seals `plaintext` as the response (RFC 9458 §4.4). `rng` supplies the 32-byte response
    /// nonce; it must be a CSPRNG.
    pub fn seal<R: CryptoRng + ?Sized>(
        self,
        plaintext: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>, SealError> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(SealError::PlaintextTooLarge {
                len: plaintext.len(),
                max: MAX_PLAINTEXT_LEN,
            });
        }
        let mut response_nonce = [0u8; RESPONSE_NONCE_LEN];
        rng.fill_bytes(&mut response_nonce);
        let (cipher, nonce) = self
            .secret
            .cipher(&response_nonce)
            .ok_or(SealError::Internal)?;

        // Exact capacity: the plaintext is encrypted in place and never reallocated.
        let mut out = Vec::with_capacity(RESPONSE_OVERHEAD + plaintext.len());
        out.extend_from_slice(&response_nonce);
        out.extend_from_slice(plaintext);
        let sealed = match out.get_mut(RESPONSE_NONCE_LEN..) {
            Some(body) => cipher.encrypt_inout_detached(&nonce, b"", body.into()).ok(),
            None => None,
        };
        match sealed {
            Some(tag) => out.extend_from_slice(&tag),
            None => {
                out.zeroize();
                return Err(SealError::Internal);
            }
        }
        Ok(out)
    }
}

/// Opens the one response to a sealed request. Client side; consumed by [`Self::open`].
///
/// Holds the exported secret: wiped on drop, no `Debug`.
pub struct ResponseOpener {
    secret: ResponseSecret,
}

// The only secret field is a `Zeroizing` buffer.
impl ZeroizeOnDrop for ResponseOpener {}

impl ResponseOpener {
    pub(crate) fn new(secret: ResponseSecret) -> ResponseOpener {
        ResponseOpener { secret }
    }

    /// Opens an encapsulated response (RFC 9458 §4.4, client side). Every failure is the same
    /// opaque [`OpenError`].
    pub fn open(self, enc_response: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        // Bounded before any allocation; the one allocation below is smaller than the input.
        if enc_response.len() > MAX_ENCAPSULATED_RESPONSE_LEN {
            return Err(OpenError);
        }
        let (response_nonce, rest) = enc_response
            .split_first_chunk::<RESPONSE_NONCE_LEN>()
            .ok_or(OpenError)?;
        let (ciphertext, tag) = rest.split_last_chunk::<TAG_LEN>().ok_or(OpenError)?;
        let (cipher, nonce) = self.secret.cipher(response_nonce).ok_or(OpenError)?;

        let mut plaintext = Zeroizing::new(ciphertext.to_vec());
        cipher
            .decrypt_inout_detached(
                &nonce,
                b"",
                plaintext.as_mut_slice().into(),
                &Tag::from(*tag),
            )
            .map_err(|_| OpenError)?;
        Ok(plaintext)
    }
}

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

use std::ops::Range;

use crate::aes256gcm::Aes256Gcm;
use aead::{AeadInOut, KeyInit};
use hkdf::Hkdf;
use rand_core::CryptoRng;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{OpenError, SealError};
use crate::request::{
    ReceiverContext, SenderContext, check_plaintext_len, take_headroom, wipe_vec,
};
use crate::{
    MAX_ENCAPSULATED_RESPONSE_LEN, PUBLIC_KEY_LEN, RESPONSE_LABEL, RESPONSE_NONCE_LEN,
    RESPONSE_OVERHEAD, TAG_LEN,
};

/// `Nk` of AES-256-GCM (RFC 9180 §7.3 table 5): the exported secret and the response key.
const KEY_LEN: usize = 32;
/// `Nn` of AES-256-GCM.
const NONCE_LEN: usize = 12;

type Nonce = aead::Nonce<Aes256Gcm>;
type Tag = aead::Tag<Aes256Gcm>;

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
        check_plaintext_len(plaintext.len())?;
        // Exact capacity: the plaintext is encrypted in place and never reallocated.
        let mut out = Vec::with_capacity(RESPONSE_OVERHEAD + plaintext.len());
        out.resize(RESPONSE_NONCE_LEN, 0);
        out.extend_from_slice(plaintext);
        self.seal_in_place(&mut out, rng)?;
        Ok(out)
    }

    /// [`Self::seal`] without a copy: `buf` holds [`RESPONSE_NONCE_LEN`] bytes of room (their
    /// value does not matter) followed by the plaintext, and becomes the encapsulated response
    /// `response_nonce | ciphertext | tag` (the same bytes [`Self::seal`] returns for the same
    /// `rng`). Give `buf` [`TAG_LEN`] bytes of spare capacity so that nothing moves (otherwise the
    /// plaintext is moved once and the old buffer wiped). On error `buf` is wiped (left empty).
    pub fn seal_in_place<R: CryptoRng + ?Sized>(
        self,
        buf: &mut Vec<u8>,
        rng: &mut R,
    ) -> Result<(), SealError> {
        let sealed = self.seal_into(buf, rng);
        if sealed.is_err() {
            wipe_vec(buf);
        }
        sealed
    }

    fn seal_into<R: CryptoRng + ?Sized>(
        &self,
        buf: &mut Vec<u8>,
        rng: &mut R,
    ) -> Result<(), SealError> {
        take_headroom(buf, RESPONSE_NONCE_LEN)?;
        let mut response_nonce = [0u8; RESPONSE_NONCE_LEN];
        rng.fill_bytes(&mut response_nonce);
        let (cipher, nonce) = self
            .secret
            .cipher(&response_nonce)
            .ok_or(SealError::Internal)?;
        let (nonce_out, body) = buf.split_at_mut(RESPONSE_NONCE_LEN);
        nonce_out.copy_from_slice(&response_nonce);
        let tag = cipher
            .encrypt_inout_detached(&nonce, b"", body.into())
            .map_err(|_| SealError::Internal)?;
        // Within the capacity reserved above: no reallocation.
        buf.extend_from_slice(&tag);
        Ok(())
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
        let tag = response_tag(enc_response)?;
        let body = enc_response
            .get(RESPONSE_NONCE_LEN..enc_response.len() - TAG_LEN)
            .ok_or(OpenError)?;
        let mut plaintext = Zeroizing::new(body.to_vec());
        self.open_body(response_nonce(enc_response)?, &tag, &mut plaintext)?;
        Ok(plaintext)
    }

    /// [`Self::open`] without a copy: decrypts the ciphertext where it lies in `enc_response`
    /// and returns where the plaintext now is (`RESPONSE_NONCE_LEN..len - TAG_LEN`). The
    /// plaintext is the caller's to wipe. On failure the ciphertext region is zeroed, so that no
    /// unauthenticated output is ever left behind.
    pub fn open_in_place(self, enc_response: &mut [u8]) -> Result<Range<usize>, OpenError> {
        let tag = response_tag(enc_response)?;
        let response_nonce = *response_nonce(enc_response)?;
        let range = RESPONSE_NONCE_LEN..enc_response.len() - TAG_LEN;
        let body = enc_response.get_mut(range.clone()).ok_or(OpenError)?;
        self.open_body(&response_nonce, &tag, body)?;
        Ok(range)
    }

    /// AES-256-GCM open of `body` in place; `body` is zeroed if it does not open.
    fn open_body(
        &self,
        response_nonce: &[u8; RESPONSE_NONCE_LEN],
        tag: &[u8; TAG_LEN],
        body: &mut [u8],
    ) -> Result<(), OpenError> {
        let opened = match self.secret.cipher(response_nonce) {
            Some((cipher, nonce)) => cipher
                .decrypt_inout_detached(&nonce, b"", (&mut *body).into(), &Tag::from(*tag))
                .map_err(|_| OpenError),
            None => Err(OpenError),
        };
        if opened.is_err() {
            body.zeroize();
        }
        opened
    }
}

/// The tag of an encapsulated response, after checking its length bounds. Afterwards
/// `len >= RESPONSE_OVERHEAD`.
fn response_tag(enc_response: &[u8]) -> Result<[u8; TAG_LEN], OpenError> {
    if enc_response.len() > MAX_ENCAPSULATED_RESPONSE_LEN || enc_response.len() < RESPONSE_OVERHEAD
    {
        return Err(OpenError);
    }
    let (_, tag) = enc_response
        .split_last_chunk::<TAG_LEN>()
        .ok_or(OpenError)?;
    Ok(*tag)
}

fn response_nonce(enc_response: &[u8]) -> Result<&[u8; RESPONSE_NONCE_LEN], OpenError> {
    let (nonce, _) = enc_response
        .split_first_chunk::<RESPONSE_NONCE_LEN>()
        .ok_or(OpenError)?;
    Ok(nonce)
}

//! Sealed requests: [`seal_request`] on the client, [`ServerKey::open_request`] in the enclave.
//!
//! The encapsulated request is RFC 9458 §4.1 with this project's label (§4.3 steps):
//! `hdr = key_id | kem_id | kdf_id | aead_id`, `info = REQUEST_LABEL | 0x00 | hdr`,
//! `(enc, ctx) = SetupBaseS(pkR, info)` (RFC 9180 §5.1.1), `ct = ctx.Seal("", plaintext)`,
//! request `= hdr | enc | ct`. Both sides then export the response secret from `ctx`
//! (see [`crate::response`]).

use hpke::inout::InOutBuf;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use rand_core::CryptoRng;
use std::ops::Range;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{HeaderError, OpenError, SealError};
use crate::key_config::KeyConfig;
use crate::response::{ResponseOpener, ResponseSealer, ResponseSecret};
use crate::{
    AEAD_ID, Aead, KDF_ID, KEM_ID, Kdf, Kem, MAX_ENCAPSULATED_REQUEST_LEN, MAX_PLAINTEXT_LEN,
    PUBLIC_KEY_LEN, REQUEST_HEADER_LEN, REQUEST_LABEL, REQUEST_OVERHEAD, REQUEST_PREFIX_LEN,
    TAG_LEN,
};

pub(crate) type PrivateKey = <Kem as hpke::Kem>::PrivateKey;
pub(crate) type PublicKey = <Kem as hpke::Kem>::PublicKey;
pub(crate) type EncappedKey = <Kem as hpke::Kem>::EncappedKey;
pub(crate) type SenderContext = hpke::aead::AeadCtxS<Aead, Kdf, Kem>;
pub(crate) type ReceiverContext = hpke::aead::AeadCtxR<Aead, Kdf, Kem>;
type Tag = hpke::aead::AeadTag<Aead>;

/// The request header for `key_id` under the one suite (RFC 9458 §4.1).
pub(crate) fn header(key_id: u8) -> [u8; REQUEST_HEADER_LEN] {
    let [kem0, kem1] = KEM_ID.to_be_bytes();
    let [kdf0, kdf1] = KDF_ID.to_be_bytes();
    let [aead0, aead1] = AEAD_ID.to_be_bytes();
    [key_id, kem0, kem1, kdf0, kdf1, aead0, aead1]
}

/// HPKE `info` for a request header (RFC 9458 §4.3: label, a zero byte, the header).
fn info(hdr: &[u8; REQUEST_HEADER_LEN]) -> Vec<u8> {
    let mut info = Vec::with_capacity(REQUEST_LABEL.len() + 1 + REQUEST_HEADER_LEN);
    info.extend_from_slice(REQUEST_LABEL);
    info.push(0);
    info.extend_from_slice(hdr);
    info
}

/// `SetupBaseS(pkR, info)` (RFC 9180 §5.1.1). The ephemeral key is `DeriveKeyPair(random(32))`,
/// with the 32 bytes drawn from `rng`.
pub(crate) fn setup_sender<R: CryptoRng + ?Sized>(
    public_key: &[u8; PUBLIC_KEY_LEN],
    info: &[u8],
    mut rng: &mut R,
) -> Result<([u8; PUBLIC_KEY_LEN], SenderContext), SealError> {
    // Any 32 bytes are an X25519 public key (RFC 7748 §5); low-order points fail below.
    let pk = PublicKey::from_bytes(public_key).map_err(|_| SealError::InvalidPublicKey)?;
    let (encapped, ctx) =
        hpke::setup_sender_with_rng::<Aead, Kdf, Kem>(&OpModeS::Base, &pk, info, &mut rng)
            // The only error is EncapError: an all-zero DH output (RFC 9180 §7.1.4).
            .map_err(|_| SealError::InvalidPublicKey)?;
    Ok((encapped.to_bytes().into(), ctx))
}

/// `SetupBaseR(enc, skR, info)` (RFC 9180 §5.1.1).
pub(crate) fn setup_receiver(
    secret: &PrivateKey,
    enc: &[u8; PUBLIC_KEY_LEN],
    info: &[u8],
) -> Result<ReceiverContext, OpenError> {
    let encapped = EncappedKey::from_bytes(enc).map_err(|_| OpenError)?;
    hpke::setup_receiver::<Aead, Kdf, Kem>(&OpModeR::Base, secret, &encapped, info)
        .map_err(|_| OpenError)
}

/// Seals `plaintext` to the server described by `config`. Returns the encapsulated request and
/// the opener for its response (RFC 9458 §4.3).
///
/// `rng` supplies the 32 bytes of the ephemeral key; it must be a CSPRNG.
pub fn seal_request<R: CryptoRng + ?Sized>(
    config: &KeyConfig,
    plaintext: &[u8],
    rng: &mut R,
) -> Result<(Vec<u8>, ResponseOpener), SealError> {
    check_plaintext_len(plaintext.len())?;
    // Exact capacity: the plaintext copied in below is encrypted in place and never reallocated,
    // so no stray plaintext copy is left in freed memory.
    let mut out = Vec::with_capacity(REQUEST_OVERHEAD + plaintext.len());
    out.resize(REQUEST_PREFIX_LEN, 0);
    out.extend_from_slice(plaintext);
    let opener = seal_request_in_place(config, &mut out, rng)?;
    Ok((out, opener))
}

/// [`seal_request`] without a copy: `buf` holds [`REQUEST_PREFIX_LEN`] bytes of room (their
/// value does not matter) followed by the plaintext, and becomes the encapsulated request
/// `hdr | enc | ciphertext | tag` (the same bytes [`seal_request`] returns for the same `rng`).
///
/// Give `buf` [`crate::TAG_LEN`] bytes of spare capacity: the plaintext is then encrypted where
/// it lies and the tag appended without moving it. Without that room it is moved once into an
/// exact-size buffer first and the old one wiped. On error `buf` is wiped (left empty).
pub fn seal_request_in_place<R: CryptoRng + ?Sized>(
    config: &KeyConfig,
    buf: &mut Vec<u8>,
    rng: &mut R,
) -> Result<ResponseOpener, SealError> {
    let sealed = seal_into(config, buf, rng);
    if sealed.is_err() {
        wipe_vec(buf);
    }
    sealed
}

fn seal_into<R: CryptoRng + ?Sized>(
    config: &KeyConfig,
    buf: &mut Vec<u8>,
    rng: &mut R,
) -> Result<ResponseOpener, SealError> {
    PreparedRequest::new(config, rng)?.seal_into(buf)
}

/// One request's `SetupBaseS(pkR, info)` (RFC 9180 §5.1.1), made before the request exists.
///
/// The setup needs only the server's key configuration (`info` is the label and the header,
/// RFC 9458 §4.3), so a client can make the next request's while the current one is on the wire
/// and take its X25519 work (an ephemeral key pair and one Diffie-Hellman, ~55 µs of the ~65 µs a
/// seal takes here) off the next request's path. [`seal_request_in_place`] is `new` then
/// [`PreparedRequest::seal_in_place`], byte for byte.
///
/// Single use: sealing consumes it, so no two requests share an ephemeral key or a context. It
/// holds the context's AEAD key, base nonce and exporter secret, wiped when it is dropped (hpke's
/// `AeadCtxS`, and [`crate::aes256gcm::Aes256Gcm`]'s raw key); no `Debug`.
pub struct PreparedRequest {
    key_id: u8,
    public_key: [u8; PUBLIC_KEY_LEN],
    enc: [u8; PUBLIC_KEY_LEN],
    ctx: SenderContext,
}

impl PreparedRequest {
    /// Sets up a request to the server described by `config`. `rng` supplies the 32 bytes of the
    /// ephemeral key; it must be a CSPRNG.
    pub fn new<R: CryptoRng + ?Sized>(
        config: &KeyConfig,
        rng: &mut R,
    ) -> Result<PreparedRequest, SealError> {
        let hdr = header(config.key_id);
        let (enc, ctx) = setup_sender(&config.public_key, &info(&hdr), rng)?;
        Ok(PreparedRequest {
            key_id: config.key_id,
            public_key: config.public_key,
            enc,
            ctx,
        })
    }

    /// Whether this was set up for `config`: the same key id and public key. One made for a key
    /// that has since rotated out must not be used (the enclave would refuse the request).
    pub fn is_for(&self, config: &KeyConfig) -> bool {
        self.key_id == config.key_id && self.public_key == config.public_key
    }

    /// [`seal_request_in_place`] with this setup: `buf` holds [`REQUEST_PREFIX_LEN`] bytes of
    /// room followed by the plaintext and becomes the encapsulated request. On error `buf` is
    /// wiped (left empty).
    pub fn seal_in_place(self, buf: &mut Vec<u8>) -> Result<ResponseOpener, SealError> {
        let sealed = self.seal_into(buf);
        if sealed.is_err() {
            wipe_vec(buf);
        }
        sealed
    }

    fn seal_into(mut self, buf: &mut Vec<u8>) -> Result<ResponseOpener, SealError> {
        take_headroom(buf, REQUEST_PREFIX_LEN)?;
        let hdr = header(self.key_id);
        let (prefix, body) = buf.split_at_mut(REQUEST_PREFIX_LEN);
        let (hdr_out, enc_out) = prefix.split_at_mut(REQUEST_HEADER_LEN);
        hdr_out.copy_from_slice(&hdr);
        enc_out.copy_from_slice(&self.enc);
        let tag = self
            .ctx
            .seal_inout_detached(InOutBuf::from(body), b"")
            .map_err(|_| SealError::Internal)?;
        // Within the capacity reserved above: no reallocation.
        buf.extend_from_slice(&tag.to_bytes());
        let secret =
            ResponseSecret::export(&self.ctx, self.enc).map_err(|_| SealError::Internal)?;
        Ok(ResponseOpener::new(secret))
    }
}

pub(crate) fn check_plaintext_len(len: usize) -> Result<(), SealError> {
    if len > MAX_PLAINTEXT_LEN {
        return Err(SealError::PlaintextTooLarge {
            len,
            max: MAX_PLAINTEXT_LEN,
        });
    }
    Ok(())
}

/// Checks a buffer handed to an in-place seal: `headroom` bytes of room, then a plaintext of at
/// most [`MAX_PLAINTEXT_LEN`] bytes; then makes room for the [`TAG_LEN`]-byte tag behind it (see
/// [`reserve_without_trace`]).
pub(crate) fn take_headroom(buf: &mut Vec<u8>, headroom: usize) -> Result<(), SealError> {
    let len = buf
        .len()
        .checked_sub(headroom)
        .ok_or(SealError::MissingHeadroom {
            len: buf.len(),
            min: headroom,
        })?;
    check_plaintext_len(len)?;
    reserve_without_trace(buf, TAG_LEN);
    Ok(())
}

/// Makes room for `extra` more bytes in `buf` without leaving a copy of its contents in freed
/// memory: if it must grow, the contents move into an exact-size buffer and the old one is wiped.
pub(crate) fn reserve_without_trace(buf: &mut Vec<u8>, extra: usize) {
    if buf.capacity() - buf.len() >= extra {
        return;
    }
    let mut grown = Vec::with_capacity(buf.len().saturating_add(extra));
    grown.extend_from_slice(buf);
    wipe_vec(buf);
    *buf = grown;
}

/// Zeroes every byte of `buf`'s allocation (elements and spare capacity) and empties it. A bulk
/// fill behind `zeroize`'s barrier, not `Vec::zeroize`'s byte-at-a-time loop.
pub(crate) fn wipe_vec(buf: &mut Vec<u8>) {
    buf.as_mut_slice().zeroize();
    buf.spare_capacity_mut().zeroize();
    buf.clear();
}

/// Reads the key id from the cleartext header of an encapsulated request (RFC 9458 §4.1) after
/// checking its length bounds and that it names the one suite. A server holding several keys (a
/// rotation overlap) uses it to pick the key, then [`ServerKey::open_request`] checks the rest.
pub fn request_key_id(encapsulated: &[u8]) -> Result<u8, HeaderError> {
    let len = encapsulated.len();
    if len > MAX_ENCAPSULATED_REQUEST_LEN {
        return Err(HeaderError::TooLarge {
            len,
            max: MAX_ENCAPSULATED_REQUEST_LEN,
        });
    }
    let truncated = HeaderError::Truncated {
        len,
        min: REQUEST_OVERHEAD,
    };
    if len < REQUEST_OVERHEAD {
        return Err(truncated);
    }
    let Some((&[key_id, kem0, kem1, kdf0, kdf1, aead0, aead1], _)) =
        encapsulated.split_first_chunk::<REQUEST_HEADER_LEN>()
    else {
        return Err(truncated);
    };
    let (kem_id, kdf_id, aead_id) = (
        u16::from_be_bytes([kem0, kem1]),
        u16::from_be_bytes([kdf0, kdf1]),
        u16::from_be_bytes([aead0, aead1]),
    );
    if (kem_id, kdf_id, aead_id) != (KEM_ID, KDF_ID, AEAD_ID) {
        return Err(HeaderError::UnsupportedSuite {
            kem_id,
            kdf_id,
            aead_id,
        });
    }
    Ok(key_id)
}

/// The enclave's HPKE key pair and key id.
///
/// The private key is wiped on drop (`x25519-dalek`'s `StaticSecret` zeroizes itself). There is
/// deliberately no `Debug`, `Clone` or accessor for the private key.
pub struct ServerKey {
    key_id: u8,
    pub(crate) secret: PrivateKey,
    public: [u8; PUBLIC_KEY_LEN],
}

// The only secret field zeroizes itself on drop.
impl ZeroizeOnDrop for ServerKey {}

impl ServerKey {
    /// A fresh key pair: `DeriveKeyPair(random(32))`, the 32 bytes drawn from `rng`
    /// (RFC 9180 §7.1.3). `rng` must be a CSPRNG (in the enclave: seeded from the NSM).
    pub fn generate<R: CryptoRng + ?Sized>(key_id: u8, mut rng: &mut R) -> ServerKey {
        let (secret, public) = Kem::gen_keypair_with_rng(&mut rng);
        ServerKey::from_pair(key_id, secret, &public)
    }

    /// The key pair `DeriveKeyPair(ikm)` (RFC 9180 §7.1.3). `ikm` must be 32 secret, uniformly
    /// random bytes; this exists for known-answer tests and for keys derived from a sealed seed.
    pub fn derive(key_id: u8, ikm: &[u8; 32]) -> ServerKey {
        let (secret, public) = Kem::derive_keypair(ikm);
        ServerKey::from_pair(key_id, secret, &public)
    }

    fn from_pair(key_id: u8, secret: PrivateKey, public: &PublicKey) -> ServerKey {
        ServerKey {
            key_id,
            secret,
            public: public.to_bytes().into(),
        }
    }

    /// This key's id.
    pub fn key_id(&self) -> u8 {
        self.key_id
    }

    /// The public configuration that clients seal to (and that the attestation carries).
    pub fn config(&self) -> KeyConfig {
        KeyConfig {
            key_id: self.key_id,
            public_key: self.public,
        }
    }

    /// Checks only the cleartext parts of an encapsulated request: its length bounds, key id and
    /// suite. Lets the server answer `unsupported_key_config` rather than an opaque failure; the
    /// header is public, so this reveals nothing an observer could not read.
    pub fn check_header(&self, encapsulated: &[u8]) -> Result<(), HeaderError> {
        let key_id = request_key_id(encapsulated)?;
        if key_id != self.key_id {
            return Err(HeaderError::UnknownKeyId {
                key_id,
                expected: self.key_id,
            });
        }
        Ok(())
    }

    /// Opens an encapsulated request (RFC 9458 §4.3, server side). Returns the plaintext and the
    /// sealer for the response. Every failure is the same opaque [`OpenError`].
    pub fn open_request(
        &self,
        encapsulated: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, ResponseSealer), OpenError> {
        // Bounded before any allocation; the one allocation below is smaller than the input.
        let (enc, tag) = self.parts(encapsulated)?;
        let body = encapsulated
            .get(REQUEST_PREFIX_LEN..encapsulated.len() - TAG_LEN)
            .ok_or(OpenError)?;
        let mut plaintext = Zeroizing::new(body.to_vec());
        let sealer = self.open_body(&enc, &tag, &info_of(encapsulated)?, &mut plaintext)?;
        Ok((plaintext, sealer))
    }

    /// [`Self::open_request`] without a copy: decrypts the ciphertext where it lies in
    /// `encapsulated` and returns where the plaintext now is (`REQUEST_PREFIX_LEN..len - TAG_LEN`)
    /// with the sealer for the response. The plaintext is the caller's to wipe. On failure the
    /// ciphertext region is zeroed, so that no unauthenticated output is ever left behind.
    pub fn open_request_in_place(
        &self,
        encapsulated: &mut [u8],
    ) -> Result<(Range<usize>, ResponseSealer), OpenError> {
        let (enc, tag) = self.parts(encapsulated)?;
        let info = info_of(encapsulated)?;
        let range = REQUEST_PREFIX_LEN..encapsulated.len() - TAG_LEN;
        let body = encapsulated.get_mut(range.clone()).ok_or(OpenError)?;
        let sealer = self.open_body(&enc, &tag, &info, body)?;
        Ok((range, sealer))
    }

    /// Checks the bounds and the header of an encapsulated request and returns its `enc` and
    /// tag. Afterwards `len >= REQUEST_OVERHEAD`.
    fn parts(
        &self,
        encapsulated: &[u8],
    ) -> Result<([u8; PUBLIC_KEY_LEN], [u8; TAG_LEN]), OpenError> {
        if encapsulated.len() > MAX_ENCAPSULATED_REQUEST_LEN
            || encapsulated.len() < REQUEST_OVERHEAD
        {
            return Err(OpenError);
        }
        let (hdr, rest) = encapsulated
            .split_first_chunk::<REQUEST_HEADER_LEN>()
            .ok_or(OpenError)?;
        // Key id and suite must be exactly ours; `info` then uses the header as received.
        if *hdr != header(self.key_id) {
            return Err(OpenError);
        }
        let (enc, rest) = rest
            .split_first_chunk::<PUBLIC_KEY_LEN>()
            .ok_or(OpenError)?;
        let (_, tag) = rest.split_last_chunk::<TAG_LEN>().ok_or(OpenError)?;
        Ok((*enc, *tag))
    }

    /// `SetupBaseR`, then `Open` of `body` in place; `body` is zeroed if it does not open.
    fn open_body(
        &self,
        enc: &[u8; PUBLIC_KEY_LEN],
        tag: &[u8; TAG_LEN],
        info: &[u8],
        body: &mut [u8],
    ) -> Result<ResponseSealer, OpenError> {
        let opened = (|| {
            let tag = Tag::from_bytes(tag).map_err(|_| OpenError)?;
            let mut ctx = setup_receiver(&self.secret, enc, info)?;
            ctx.open_inout_detached(InOutBuf::from(&mut *body), b"", &tag)
                .map_err(|_| OpenError)?;
            ResponseSecret::export(&ctx, *enc).map_err(|_| OpenError)
        })();
        match opened {
            Ok(secret) => Ok(ResponseSealer::new(secret)),
            Err(e) => {
                body.zeroize();
                Err(e)
            }
        }
    }
}

/// The HPKE `info` of an encapsulated request whose header has been checked.
fn info_of(encapsulated: &[u8]) -> Result<Vec<u8>, OpenError> {
    let (hdr, _) = encapsulated
        .split_first_chunk::<REQUEST_HEADER_LEN>()
        .ok_or(OpenError)?;
    Ok(info(hdr))
}

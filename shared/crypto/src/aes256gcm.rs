//! AES-256-GCM (NIST SP 800-38D) for the sealed channel and the sealed-model chunks: `ring`'s
//! implementation behind RustCrypto's `aead` traits, so that `hpke` (RFC 9180 §5.2, AEAD id
//! 0x0002) and our own callers use it exactly as they used the `aes-gcm` crate.
//!
//! Why `ring` and not `aes-gcm`: both are constant-time and both use the AES instructions, but
//! `aes-gcm` computes GHASH with one 128-bit carry-less multiply at a time (`polyval` has no
//! VAES/VPCLMULQDQ backend), while `ring` (BoringSSL's assembly) interleaves AES and GHASH over
//! 256-bit registers where the CPU has VAES and VPCLMULQDQ: on the Zen 5 VM of
//! docs/performance.md round 15, 3.3 GB/s against 9.9 GB/s, so a 16 MB tensor's four AES-GCM
//! passes (client seal, enclave open, enclave seal, client open) drop from ~19 to ~6 ms. `ring`
//! is already in every binary (rustls' provider). On CPUs without those instructions it falls back
//! to its AES-NI/CLMUL or constant-time software code.
//!
//! Secrets: [`Aes256Gcm`] keeps only the raw key, wiped on drop; the expanded key exists only in
//! the stack frames of one call, which are overwritten after it (`scrub_stack`). `aes-gcm` wiped
//! its key schedule on drop instead; both leave whatever copies moves make. A failed open leaves
//! no unauthenticated plaintext: `ring` zeroes the buffer before it returns the error (tested).
use aead::consts::{U12, U16, U32};
use aead::inout::InOutBuf;
use aead::{AeadCore, AeadInOut, Key, KeyInit, KeySizeUser, Nonce, Tag, TagPosition};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, UnboundKey};
use zeroize::Zeroizing;

/// AES-256-GCM with a 96-bit nonce and a 128-bit tag, as `aes_gcm::Aes256Gcm`. Holds the raw key
/// (wiped on drop) and expands it for each call: `ring` does not wipe an expanded key when it is
/// dropped, and wiping a foreign type in place would take `unsafe`; the expansion costs well
/// under a microsecond, against an X25519 operation (~17 µs) per request or a 1 MiB model chunk.
/// No `Debug`.
#[derive(Clone)]
pub struct Aes256Gcm {
    key: Zeroizing<[u8; 32]>,
}

impl KeySizeUser for Aes256Gcm {
    type KeySize = U32;
}

impl KeyInit for Aes256Gcm {
    fn new(key: &Key<Self>) -> Self {
        let mut raw = Zeroizing::new([0u8; 32]);
        raw.copy_from_slice(key.as_slice());
        Aes256Gcm { key: raw }
    }
}

impl AeadCore for Aes256Gcm {
    type NonceSize = U12;
    type TagSize = U16;
    const TAG_POSITION: TagPosition = TagPosition::Postfix;
}

fn ring_nonce(nonce: &Nonce<Aes256Gcm>) -> ring::aead::Nonce {
    let mut bytes = [0u8; ring::aead::NONCE_LEN];
    bytes.copy_from_slice(nonce.as_slice());
    ring::aead::Nonce::assume_unique_for_key(bytes)
}

impl AeadInOut for Aes256Gcm {
    fn encrypt_inout_detached(
        &self,
        nonce: &Nonce<Self>,
        associated_data: &[u8],
        buffer: InOutBuf<'_, '_, u8>,
    ) -> aead::Result<Tag<Self>> {
        let sealed = seal(
            &self.key,
            nonce,
            associated_data,
            buffer.into_out_with_copied_in(),
        );
        scrub_stack();
        let tag = sealed?;
        let mut out = Tag::<Self>::default();
        out.copy_from_slice(&tag);
        Ok(out)
    }

    fn decrypt_inout_detached(
        &self,
        nonce: &Nonce<Self>,
        associated_data: &[u8],
        buffer: InOutBuf<'_, '_, u8>,
        tag: &Tag<Self>,
    ) -> aead::Result<()> {
        let mut received = [0u8; 16];
        received.copy_from_slice(tag.as_slice());
        let opened = open(
            &self.key,
            nonce,
            associated_data,
            buffer.into_out_with_copied_in(),
            received,
        );
        scrub_stack();
        opened
    }
}

/// The key expanded for one call. `ring` refuses only a key whose length is not 32 bytes, which
/// the type rules out; the error still fails the call rather than panicking.
fn expanded(key: &[u8; 32]) -> aead::Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| aead::Error)
}

// `seal` and `open` are never inlined, so that the expanded key lives in their frames (and
// ring's below them), which `scrub_stack` then overwrites from the same stack depth.
#[inline(never)]
fn seal(
    key: &[u8; 32],
    nonce: &Nonce<Aes256Gcm>,
    associated_data: &[u8],
    in_out: &mut [u8],
) -> aead::Result<[u8; 16]> {
    let tag = expanded(key)?
        .seal_in_place_separate_tag(ring_nonce(nonce), Aad::from(associated_data), in_out)
        .map_err(|_| aead::Error)?;
    let mut out = [0u8; 16];
    out.copy_from_slice(tag.as_ref());
    Ok(out)
}

#[inline(never)]
fn open(
    key: &[u8; 32],
    nonce: &Nonce<Aes256Gcm>,
    associated_data: &[u8],
    in_out: &mut [u8],
    tag: [u8; 16],
) -> aead::Result<()> {
    expanded(key)?
        .open_in_place_separate_tag(
            ring_nonce(nonce),
            Aad::from(associated_data),
            ring::aead::Tag::from(tag),
            in_out,
            0..,
        )
        .map(|_| ())
        .map_err(|_| aead::Error)
}

/// Bytes of stack [`scrub_stack`] overwrites: well above what `seal`/`open` and ring's code below
/// them use (the expanded key is ~0.5 KiB; ring's AES-GCM keeps its working state in registers).
const SCRUB_LEN: usize = 16 * 1024;

/// Overwrites the stack just below the caller's frame with zeroes, where the frames of the
/// `seal`/`open` call that just returned (with the expanded key in them) were. Best effort, as
/// any stack wiping in Rust: it relies on `seal`/`open` and this function starting at the same
/// depth, which `#[inline(never)]` on all three gives in practice. With the key expansion it adds
/// ~0.16 µs per call (a 64-byte message: 0.31 µs against `aes-gcm`'s 0.15; equal at 1 KiB).
#[inline(never)]
fn scrub_stack() {
    let mut area = [0u8; SCRUB_LEN];
    // A plain fill runs at memset speed (zeroize's volatile byte stores took ~2 µs here); the
    // opaque read that follows keeps the optimiser from dropping stores to a dead local.
    area.fill(0);
    std::hint::black_box(&area);
}

/// The HPKE AEAD of this crate's suite: AES-256-GCM (RFC 9180 §7.3, id 0x0002) computed by
/// [`Aes256Gcm`]. `hpke` derives the key and nonces (RFC 9180 §5.1, §5.2); this only encrypts.
pub struct HpkeAes256Gcm;

impl hpke::aead::Aead for HpkeAes256Gcm {
    type AeadImpl = Aes256Gcm;
    const AEAD_ID: u16 = crate::AEAD_ID;
}

#[cfg(test)]
mod tests {
    use aead::{AeadInOut, KeyInit};
    use proptest::prelude::*;

    use super::Aes256Gcm;

    type Reference = aes_gcm::Aes256Gcm;

    // NIST GCM test vector (McGrew & Viega, "The Galois/Counter Mode of Operation", test case 16:
    // AES-256, 60-byte plaintext, 20-byte AAD).
    const KEY: &str = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
    const IV: &str = "cafebabefacedbaddecaf888";
    const PT: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39";
    const AAD: &str = "feedfacedeadbeeffeedfacedeadbeefabaddad2";
    const CT: &str = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662";
    const TAG: &str = "76fc6ece0f4e1768cddf8853bb2d551b";

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn the_published_vector_seals_and_opens() {
        let cipher = Aes256Gcm::new_from_slice(&hex(KEY)).unwrap();
        let nonce = hex(IV);
        let mut buf = hex(PT);
        let tag = cipher
            .encrypt_inout_detached(
                nonce.as_slice().try_into().unwrap(),
                &hex(AAD),
                (&mut buf[..]).into(),
            )
            .unwrap();
        assert_eq!(buf, hex(CT));
        assert_eq!(tag.as_slice(), hex(TAG));
        cipher
            .decrypt_inout_detached(
                nonce.as_slice().try_into().unwrap(),
                &hex(AAD),
                (&mut buf[..]).into(),
                &tag,
            )
            .unwrap();
        assert_eq!(buf, hex(PT));
    }

    #[test]
    fn a_failed_open_leaves_no_plaintext() {
        let cipher = Aes256Gcm::new_from_slice(&hex(KEY)).unwrap();
        let nonce = hex(IV);
        let mut buf = hex(CT);
        let mut tag = hex(TAG);
        tag[0] ^= 1;
        let err = cipher.decrypt_inout_detached(
            nonce.as_slice().try_into().unwrap(),
            &hex(AAD),
            (&mut buf[..]).into(),
            tag.as_slice().try_into().unwrap(),
        );
        assert!(err.is_err());
        assert!(
            buf.iter().all(|&b| b == 0),
            "unauthenticated plaintext was left in the buffer"
        );
        // A wrong AAD fails too.
        let mut buf = hex(CT);
        assert!(
            cipher
                .decrypt_inout_detached(
                    nonce.as_slice().try_into().unwrap(),
                    b"other",
                    (&mut buf[..]).into(),
                    hex(TAG).as_slice().try_into().unwrap(),
                )
                .is_err()
        );
    }

    #[test]
    fn separate_input_and_output_buffers_work() {
        let cipher = Aes256Gcm::new_from_slice(&hex(KEY)).unwrap();
        let nonce = hex(IV);
        let pt = hex(PT);
        let mut out = vec![0u8; pt.len()];
        let tag = cipher
            .encrypt_inout_detached(
                nonce.as_slice().try_into().unwrap(),
                &hex(AAD),
                aead::inout::InOutBuf::new(&pt, &mut out).unwrap(),
            )
            .unwrap();
        assert_eq!(out, hex(CT));
        assert_eq!(tag.as_slice(), hex(TAG));
    }

    proptest! {
        // Every length across the 16-byte block and the 256-byte stride of the wide code paths,
        // against RustCrypto's implementation, both ways.
        #[test]
        fn matches_the_rustcrypto_implementation(
            key in any::<[u8; 32]>(),
            nonce in any::<[u8; 12]>(),
            aad in proptest::collection::vec(any::<u8>(), 0..70),
            pt in proptest::collection::vec(any::<u8>(), 0..1100),
        ) {
            let ours = Aes256Gcm::new_from_slice(&key).unwrap();
            let reference = Reference::new_from_slice(&key).unwrap();
            let mut a = pt.clone();
            let mut b = pt.clone();
            let tag_a = ours.encrypt_inout_detached(&nonce.into(), &aad, (&mut a[..]).into()).unwrap();
            let tag_b = reference.encrypt_inout_detached(&nonce.into(), &aad, (&mut b[..]).into()).unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(tag_a.as_slice(), tag_b.as_slice());
            ours.decrypt_inout_detached(&nonce.into(), &aad, (&mut a[..]).into(), &tag_a).unwrap();
            prop_assert_eq!(a, pt);
        }
    }
}

//! The public key configuration (RFC 9458 §3), restricted to this crate's one suite.
//!
//! ```text
//! key_id(1) | kem_id(2) = 0x0020 | public_key(32) | suites_len(2) = 4 | kdf_id(2) = 0x0001 | aead_id(2) = 0x0002
//! ```
//!
//! The enclave puts exactly this encoding in its attestation document's `public_key`, so the
//! attestation binds the key id and suite as well as the key. Decoding is strict: one encoding
//! per configuration, anything else is an error.

use crate::error::KeyConfigError;
use crate::{AEAD_ID, KDF_ID, KEM_ID, KEY_CONFIG_LEN, PUBLIC_KEY_LEN};

/// Length of the one-entry symmetric suite list (`kdf_id | aead_id`).
const SUITES_LEN: u16 = 4;

/// A server's HPKE key configuration: which key, which suite (RFC 9458 §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyConfig {
    /// Identifies the key; echoed in every request header.
    pub key_id: u8,
    /// The X25519 public key `pkR`, serialized as in RFC 9180 §7.1.1.
    pub public_key: [u8; PUBLIC_KEY_LEN],
}

impl KeyConfig {
    /// Encodes to the [`KEY_CONFIG_LEN`]-byte layout above.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(KEY_CONFIG_LEN);
        out.push(self.key_id);
        out.extend_from_slice(&KEM_ID.to_be_bytes());
        out.extend_from_slice(&self.public_key);
        out.extend_from_slice(&SUITES_LEN.to_be_bytes());
        out.extend_from_slice(&KDF_ID.to_be_bytes());
        out.extend_from_slice(&AEAD_ID.to_be_bytes());
        out
    }

    /// Decodes the layout above, refusing any other length, KEM or suite.
    pub fn decode(bytes: &[u8]) -> Result<KeyConfig, KeyConfigError> {
        let wrong_length = || KeyConfigError::WrongLength {
            len: bytes.len(),
            expected: KEY_CONFIG_LEN,
        };
        // Exact length first: every later read is then in bounds.
        let bytes: &[u8; KEY_CONFIG_LEN] = bytes.try_into().map_err(|_| wrong_length())?;
        let (&[key_id], rest) = bytes.split_first_chunk::<1>().ok_or_else(wrong_length)?;
        let (kem_id, rest) = rest.split_first_chunk::<2>().ok_or_else(wrong_length)?;
        let (public_key, rest) = rest
            .split_first_chunk::<PUBLIC_KEY_LEN>()
            .ok_or_else(wrong_length)?;
        let (suites_len, rest) = rest.split_first_chunk::<2>().ok_or_else(wrong_length)?;
        let (kdf_id, rest) = rest.split_first_chunk::<2>().ok_or_else(wrong_length)?;
        let aead_id: &[u8; 2] = rest.try_into().map_err(|_| wrong_length())?;

        let kem_id = u16::from_be_bytes(*kem_id);
        if kem_id != KEM_ID {
            return Err(KeyConfigError::UnsupportedKem { kem_id });
        }
        let suites_len = u16::from_be_bytes(*suites_len);
        if suites_len != SUITES_LEN {
            return Err(KeyConfigError::UnexpectedSuitesLength { len: suites_len });
        }
        let kdf_id = u16::from_be_bytes(*kdf_id);
        let aead_id = u16::from_be_bytes(*aead_id);
        if kdf_id != KDF_ID || aead_id != AEAD_ID {
            return Err(KeyConfigError::UnsupportedSuite { kdf_id, aead_id });
        }
        Ok(KeyConfig {
            key_id,
            public_key: *public_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeyConfig {
        KeyConfig {
            key_id: 7,
            public_key: core::array::from_fn(|i| i as u8),
        }
    }

    #[test]
    fn encodes_rfc9458_layout() {
        let bytes = sample().encode();
        assert_eq!(bytes.len(), KEY_CONFIG_LEN);
        assert_eq!(KEY_CONFIG_LEN, 41);
        assert_eq!(bytes[0], 7);
        assert_eq!(&bytes[1..3], &[0x00, 0x20]);
        assert_eq!(&bytes[3..35], &sample().public_key);
        assert_eq!(&bytes[35..], &[0x00, 0x04, 0x00, 0x01, 0x00, 0x02]);
    }

    #[test]
    fn decode_inverts_encode() {
        assert_eq!(KeyConfig::decode(&sample().encode()), Ok(sample()));
    }

    #[test]
    fn rejects_every_other_length() {
        let bytes = sample().encode();
        for len in 0..KEY_CONFIG_LEN {
            assert_eq!(
                KeyConfig::decode(&bytes[..len]),
                Err(KeyConfigError::WrongLength {
                    len,
                    expected: KEY_CONFIG_LEN
                })
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            KeyConfig::decode(&longer),
            Err(KeyConfigError::WrongLength {
                len: KEY_CONFIG_LEN + 1,
                expected: KEY_CONFIG_LEN
            })
        );
    }

    #[test]
    fn rejects_other_kem() {
        let mut bytes = sample().encode();
        bytes[1..3].copy_from_slice(&0x0010u16.to_be_bytes()); // DHKEM(P-256)
        assert_eq!(
            KeyConfig::decode(&bytes),
            Err(KeyConfigError::UnsupportedKem { kem_id: 0x0010 })
        );
    }

    #[test]
    fn rejects_suite_list_of_other_length() {
        let mut bytes = sample().encode();
        bytes[35..37].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(
            KeyConfig::decode(&bytes),
            Err(KeyConfigError::UnexpectedSuitesLength { len: 8 })
        );
    }

    #[test]
    fn rejects_other_kdf_or_aead() {
        let mut bytes = sample().encode();
        bytes[37..39].copy_from_slice(&0x0002u16.to_be_bytes()); // HKDF-SHA384
        assert_eq!(
            KeyConfig::decode(&bytes),
            Err(KeyConfigError::UnsupportedSuite {
                kdf_id: 0x0002,
                aead_id: AEAD_ID
            })
        );
        let mut bytes = sample().encode();
        bytes[39..41].copy_from_slice(&0x0001u16.to_be_bytes()); // AES-128-GCM
        assert_eq!(
            KeyConfig::decode(&bytes),
            Err(KeyConfigError::UnsupportedSuite {
                kdf_id: KDF_ID,
                aead_id: 0x0001
            })
        );
    }
}

//! Keys and their persistence: one JSON file (mode 0600), rewritten atomically on every change, so
//! data keys sealed earlier still decrypt after a restart.
//!
//! `CiphertextBlob` format (ours; AWS's is opaque and undocumented too):
//! `"SMK1" ‖ key id (36 ASCII, UUID) ‖ nonce (12) ‖ AES-256-GCM(ciphertext ‖ tag)`, with associated
//! data = the first 40 bytes ‖ the encryption context as canonical JSON (keys sorted). Like AWS,
//! the blob names its key, so `Decrypt` needs no `KeyId`, and a different encryption context
//! fails as `InvalidCiphertextException`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::policy::Policy;

const BLOB_MAGIC: &[u8; 4] = b"SMK1";
const KEY_ID_LEN: usize = 36;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = BLOB_MAGIC.len() + KEY_ID_LEN;
/// Largest state file we read back (keys are ~1-33 KiB each with their policies).
const MAX_STATE_FILE: u64 = 64 * 1024 * 1024;
const STATE_VERSION: u32 = 1;

/// Why the state could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not a valid mock KMS state: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("operating system random number generator failed")]
    Random,
}

/// One symmetric KMS key.
pub struct Key {
    pub key_id: String,
    pub arn: String,
    /// Unix seconds (fractional, as KMS's `CreationDate`).
    pub creation_date: f64,
    pub description: String,
    pub policy_text: String,
    pub policy: Policy,
    pub enabled: bool,
    material: Zeroizing<[u8; 32]>,
}

#[derive(Serialize, Deserialize)]
struct StoredState {
    version: u32,
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    key_id: String,
    arn: String,
    creation_date: f64,
    description: String,
    policy: String,
    enabled: bool,
    /// Base64 key material. The file is 0600; this is a simulation tool, not an HSM.
    material: Zeroizing<String>,
}

/// All keys, keyed by key id, and where they are saved.
pub struct KeyStore {
    path: PathBuf,
    keys: BTreeMap<String, Key>,
}

/// Why a `CiphertextBlob` did not decrypt. Deliberately no detail (`InvalidCiphertextException`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobError {
    /// Not one of ours, or the tag/context did not verify.
    Invalid,
    /// Names a key that does not exist.
    UnknownKey,
}

impl KeyStore {
    /// Loads `path`, or starts empty when it does not exist.
    pub fn open(path: &Path) -> Result<KeyStore, StateError> {
        let io = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        let corrupt = |reason: String| StateError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let mut store = KeyStore {
            path: path.to_owned(),
            keys: BTreeMap::new(),
        };
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(store),
            Err(e) => return Err(io(e)),
        };
        let len = file.metadata().map_err(io)?.len();
        if len > MAX_STATE_FILE {
            return Err(corrupt(format!("{len} bytes is too large")));
        }
        let stored: StoredState =
            serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| {
                // serde_json's message quotes no input, only positions.
                corrupt(e.to_string())
            })?;
        if stored.version != STATE_VERSION {
            return Err(corrupt(format!("unsupported version {}", stored.version)));
        }
        for k in stored.keys {
            let raw = Zeroizing::new(
                STANDARD
                    .decode(k.material.as_bytes())
                    .map_err(|_| corrupt(format!("key {}: bad material", k.key_id)))?,
            );
            let mut material = Zeroizing::new([0u8; 32]);
            if raw.len() != 32 || k.key_id.len() != KEY_ID_LEN {
                return Err(corrupt(format!("key {}: bad material or id", k.key_id)));
            }
            material.copy_from_slice(&raw);
            let policy =
                Policy::parse(&k.policy).map_err(|e| corrupt(format!("key {}: {e}", k.key_id)))?;
            store.keys.insert(
                k.key_id.clone(),
                Key {
                    key_id: k.key_id,
                    arn: k.arn,
                    creation_date: k.creation_date,
                    description: k.description,
                    policy_text: k.policy,
                    policy,
                    enabled: k.enabled,
                    material,
                },
            );
        }
        Ok(store)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Writes the state to a temporary file (0600) next to the target, then renames it over.
    pub fn save(&self) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        let stored = StoredState {
            version: STATE_VERSION,
            keys: self
                .keys
                .values()
                .map(|k| StoredKey {
                    key_id: k.key_id.clone(),
                    arn: k.arn.clone(),
                    creation_date: k.creation_date,
                    description: k.description.clone(),
                    policy: k.policy_text.clone(),
                    enabled: k.enabled,
                    material: Zeroizing::new(STANDARD.encode(k.material.as_slice())),
                })
                .collect(),
        };
        let bytes = Zeroizing::new(serde_json::to_vec_pretty(&stored).map_err(|e| {
            StateError::Corrupt {
                path: self.path.clone(),
                reason: e.to_string(),
            }
        })?);
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "state".into());
        let tmp = dir.join(format!(".{file_name}.tmp"));
        // A stale temporary file may have other permissions; `mode` applies only on creation.
        let _ = fs::remove_file(&tmp);
        {
            let mut f = open_private(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        fs::rename(&tmp, &self.path).map_err(io)
    }

    /// Creates a key with fresh material and the given policy.
    pub fn create(
        &mut self,
        region: &str,
        account_id: &str,
        description: String,
        policy_text: String,
        policy: Policy,
        now: SystemTime,
    ) -> Result<&Key, StateError> {
        let key_id = uuid_v4()?;
        let mut material = Zeroizing::new([0u8; 32]);
        getrandom::fill(material.as_mut_slice()).map_err(|_| StateError::Random)?;
        let creation_date = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as f64 / 1000.0)
            .unwrap_or(0.0);
        let key = Key {
            arn: format!("arn:aws:kms:{region}:{account_id}:key/{key_id}"),
            key_id: key_id.clone(),
            creation_date,
            description,
            policy_text,
            policy,
            enabled: true,
            material,
        };
        Ok(self.keys.entry(key_id).or_insert(key))
    }

    /// Finds a key by key id or key ARN (aliases are not supported).
    pub fn find(&self, key_id: &str) -> Option<&Key> {
        let id = key_id.rsplit_once(":key/").map_or(key_id, |(_, id)| id);
        let key = self.keys.get(id)?;
        (key_id == key.key_id || key_id == key.arn).then_some(key)
    }

    pub fn find_mut(&mut self, key_id: &str) -> Option<&mut Key> {
        let id = self.find(key_id)?.key_id.clone();
        self.keys.get_mut(&id)
    }

    /// The key a blob made by [`Key::encrypt`] names, before any decryption (so a caller is
    /// authorised against that key first, as KMS does).
    pub fn blob_key(&self, blob: &[u8]) -> Result<&Key, BlobError> {
        if blob.len() < HEADER_LEN + NONCE_LEN + TAG_LEN || !blob.starts_with(BLOB_MAGIC) {
            return Err(BlobError::Invalid);
        }
        let key_id = blob
            .get(BLOB_MAGIC.len()..HEADER_LEN)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or(BlobError::Invalid)?;
        self.keys.get(key_id).ok_or(BlobError::UnknownKey)
    }
}

impl Key {
    /// Decrypts a blob made by [`Key::encrypt`] with this key and `context`.
    pub fn decrypt(
        &self,
        blob: &[u8],
        context: &BTreeMap<String, String>,
    ) -> Result<Zeroizing<Vec<u8>>, BlobError> {
        let header = blob.get(..HEADER_LEN).ok_or(BlobError::Invalid)?;
        if header.get(BLOB_MAGIC.len()..) != Some(self.key_id.as_bytes()) {
            return Err(BlobError::Invalid);
        }
        let nonce: [u8; NONCE_LEN] = blob
            .get(HEADER_LEN..HEADER_LEN + NONCE_LEN)
            .and_then(|n| n.try_into().ok())
            .ok_or(BlobError::Invalid)?;
        let ciphertext = blob
            .get(HEADER_LEN + NONCE_LEN..)
            .ok_or(BlobError::Invalid)?;
        let aad = aad(header, context);
        Aes256Gcm::new((&*self.material).into())
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| BlobError::Invalid)
    }

    /// Encrypts `plaintext` under this key, bound to `context`.
    pub fn encrypt(
        &self,
        plaintext: &[u8],
        context: &BTreeMap<String, String>,
    ) -> Result<Vec<u8>, StateError> {
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(BLOB_MAGIC);
        header.extend_from_slice(self.key_id.as_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| StateError::Random)?;
        let aad = aad(&header, context);
        let ciphertext = Aes256Gcm::new((&*self.material).into())
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| StateError::Random)?;
        let mut blob = header;
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        Ok(blob)
    }
}

fn aad(header: &[u8], context: &BTreeMap<String, String>) -> Vec<u8> {
    let mut aad = header.to_vec();
    // BTreeMap serialises with sorted keys: canonical for equal maps.
    aad.extend_from_slice(&serde_json::to_vec(context).unwrap_or_default());
    aad
}

/// A random (version 4) UUID, lowercase hyphenated (RFC 9562 §5.4).
fn uuid_v4() -> Result<String, StateError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|_| StateError::Random)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<fs::File> {
    fs::File::create(path)
}

//! SIMULATION ONLY: an in-process NSM that answers every request the real one does, with the same
//! types, size limits and error codes, and signs attestation documents with a leaf certificate
//! under the mock CA (`sealed-mock-ca`). Compiled only with the `simulation` feature.
//!
//! What it does not do: it proves nothing. Its documents chain to the mock root, which no verifier
//! trusts unless told to explicitly; the measurements below are stand-ins.
//!
//! # Measurements
//! 32 SHA-384 registers, like the device (documents list PCR0..15, as real ones do):
//! - PCR0 = SHA-384 of the enclave image file's bytes (the real PCR0 measures the EIF; here the
//!   file is the enclave binary), so rebuilding the binary changes PCR0 as it would on Nitro.
//! - PCR1 = SHA-384 of [`PCR1_LABEL`] (stands in for the kernel and boot ramfs).
//! - PCR2 = SHA-384 of [`PCR2_LABEL`] (stands in for the application measurement).
//! - PCR3 and PCR4 are zero: they measure the parent instance's IAM role and instance id, and a
//!   simulation has no parent instance. PCR5..31 start at zero.
//! - PCR0–4 and PCR8 are locked at boot (`nitro-facts.md` §4); the rest can be extended and locked.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_nitro_enclaves_nsm_api::api::{AttestationDoc, Digest, ErrorCode, Request, Response};
use sealed_mock_ca::{MockCa, MockCaError, MockLeaf};
use serde_bytes::ByteBuf;
use sha2::{Digest as _, Sha384};
use tracing::warn;

use super::{Nsm, PCR_LEN, check_request_limits};

/// Module id in the real format `i-<17 chars>-enc<16 hex>`, visibly a mock.
pub const MODULE_ID: &str = "i-mock0000000000000-enc0000000000000000";
/// Texts hashed into PCR1 and PCR2 (defined with the rest of the mock measurements in
/// `sealed_mock_ca::measure`, which `sealed-sim measure` uses too).
pub use sealed_mock_ca::measure::{PCR1_LABEL, PCR2_LABEL};
/// Number of PCRs (`max_pcrs` in DescribeNSM).
pub const PCR_COUNT: u16 = 32;
/// PCRs listed in each attestation document: 0..15, as in every real document.
const DOCUMENT_PCRS: u16 = 16;
/// PCRs locked when the enclave boots.
const BOOT_LOCKED: [u16; 6] = [0, 1, 2, 3, 4, 8];
/// Bytes returned per GetRandom, as the device returns.
const RANDOM_LEN: usize = 256;
/// Leaf lifetime: AWS leaves live about 3 hours (`nitro-facts.md` §1.3).
const LEAF_VALIDITY_SECS: u64 = 3 * 3600;
/// A new leaf is issued when less than this remains, so no document is signed by a leaf that
/// expires soon after the verifier receives it.
const LEAF_MIN_REMAINING_SECS: u64 = 3600;

/// Why the mock NSM could not start.
#[derive(Debug, thiserror::Error)]
pub enum MockNsmError {
    #[error("enclave image {}: {source}", path.display())]
    Image {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mock CA: {0}")]
    Ca(#[from] MockCaError),
    #[error("system clock is before 1970")]
    Clock,
}

/// SHA-384 of a file, read in bounded chunks (the image can be large; it is never held whole).
pub fn measure_image(path: &Path) -> Result<[u8; PCR_LEN], MockNsmError> {
    sealed_mock_ca::measure::image_digest(path).map_err(|source| MockNsmError::Image {
        path: path.to_path_buf(),
        source,
    })
}

/// The PCR bank: values and lock bits.
struct PcrBank {
    values: [[u8; PCR_LEN]; PCR_COUNT as usize],
    locked: [bool; PCR_COUNT as usize],
}

impl PcrBank {
    fn boot(image_digest: [u8; PCR_LEN]) -> PcrBank {
        let mut bank = PcrBank {
            values: [[0; PCR_LEN]; PCR_COUNT as usize],
            locked: [false; PCR_COUNT as usize],
        };
        let boot_values = [
            (0, image_digest),
            (1, sealed_mock_ca::measure::pcr1()),
            (2, sealed_mock_ca::measure::pcr2()),
        ];
        for (index, value) in boot_values {
            if let Some(slot) = bank.values.get_mut(index) {
                *slot = value;
            }
        }
        for index in BOOT_LOCKED {
            if let Some(lock) = bank.locked.get_mut(usize::from(index)) {
                *lock = true;
            }
        }
        bank
    }

    fn describe(&self, index: u16) -> Response {
        let i = usize::from(index);
        match (self.values.get(i), self.locked.get(i)) {
            (Some(value), Some(&lock)) => Response::DescribePCR {
                lock,
                data: value.to_vec(),
            },
            _ => Response::Error(ErrorCode::InvalidIndex),
        }
    }

    /// `new = SHA-384(old || data)`, the TPM-style extend the NSM uses.
    fn extend(&mut self, index: u16, data: &[u8]) -> Response {
        let i = usize::from(index);
        match (self.values.get_mut(i), self.locked.get(i)) {
            (Some(_), Some(true)) => Response::Error(ErrorCode::ReadOnlyIndex),
            (Some(value), Some(false)) => {
                let mut hasher = Sha384::new();
                hasher.update(*value);
                hasher.update(data);
                *value = hasher.finalize().into();
                Response::ExtendPCR {
                    data: value.to_vec(),
                }
            }
            _ => Response::Error(ErrorCode::InvalidIndex),
        }
    }

    fn lock(&mut self, index: u16) -> Response {
        match self.locked.get_mut(usize::from(index)) {
            // Locking a locked PCR is harmless; the state is the one asked for.
            Some(lock) => {
                *lock = true;
                Response::LockPCR
            }
            None => Response::Error(ErrorCode::InvalidIndex),
        }
    }

    fn lock_range(&mut self, range: u16) -> Response {
        match self.locked.get_mut(..usize::from(range)) {
            Some(locks) => {
                locks.iter_mut().for_each(|lock| *lock = true);
                Response::LockPCRs
            }
            None => Response::Error(ErrorCode::InvalidIndex),
        }
    }

    fn locked_set(&self) -> BTreeSet<u16> {
        (0..PCR_COUNT)
            .zip(self.locked.iter())
            .filter(|(_, locked)| **locked)
            .map(|(index, _)| index)
            .collect()
    }

    fn document_pcrs(&self) -> BTreeMap<usize, Vec<u8>> {
        self.values
            .iter()
            .take(usize::from(DOCUMENT_PCRS))
            .enumerate()
            .map(|(index, value)| (index, value.to_vec()))
            .collect()
    }
}

/// The simulation NSM. Thread-safe: PCRs and the current leaf each sit behind a mutex.
pub struct MockNsm {
    ca: MockCa,
    leaf: Mutex<MockLeaf>,
    pcrs: Mutex<PcrBank>,
}

// Manual Debug: the CA and leaf hold private keys, and their own Debug shows none, but there is
// nothing useful to print here anyway.
impl std::fmt::Debug for MockNsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockNsm").finish_non_exhaustive()
    }
}

impl MockNsm {
    /// Boots the mock: measures `enclave_image` into PCR0 and issues a 3-hour leaf under `ca`.
    pub fn new(ca: MockCa, enclave_image: &Path) -> Result<MockNsm, MockNsmError> {
        let image_digest = measure_image(enclave_image)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| MockNsmError::Clock)?;
        let leaf = ca.issue_leaf(now.as_secs(), LEAF_VALIDITY_SECS)?;
        Ok(MockNsm {
            ca,
            leaf: Mutex::new(leaf),
            pcrs: Mutex::new(PcrBank::boot(image_digest)),
        })
    }

    /// [`Nsm::process`] at a given time (the time only matters for attestation).
    fn process_at(&self, request: Request, now: SystemTime) -> Response {
        if let Err(code) = check_request_limits(&request) {
            return Response::Error(code);
        }
        match request {
            Request::DescribePCR { index } => self.with_pcrs(|bank| bank.describe(index)),
            Request::ExtendPCR { index, data } => self.with_pcrs(|bank| bank.extend(index, &data)),
            Request::LockPCR { index } => self.with_pcrs(|bank| bank.lock(index)),
            Request::LockPCRs { range } => self.with_pcrs(|bank| bank.lock_range(range)),
            Request::DescribeNSM => self.with_pcrs(|bank| Response::DescribeNSM {
                version_major: 1,
                version_minor: 0,
                version_patch: 0,
                module_id: MODULE_ID.to_string(),
                max_pcrs: PCR_COUNT,
                locked_pcrs: bank.locked_set(),
                digest: Digest::SHA384,
            }),
            Request::Attestation {
                user_data,
                nonce,
                public_key,
            } => self.attestation(now, public_key, user_data, nonce),
            Request::GetRandom => {
                let mut random = vec![0u8; RANDOM_LEN];
                match getrandom::fill(&mut random) {
                    Ok(()) => Response::GetRandom { random },
                    Err(_) => Response::Error(ErrorCode::InternalError),
                }
            }
            // `Request` is non-exhaustive: a variant added upstream is not supported here.
            _ => Response::Error(ErrorCode::InvalidOperation),
        }
    }

    /// Runs `f` on the PCR bank. A poisoned lock means a panic in the middle of an update, so the
    /// measurements can no longer be trusted: fail closed with `InternalError`.
    fn with_pcrs(&self, f: impl FnOnce(&mut PcrBank) -> Response) -> Response {
        match self.pcrs.lock() {
            Ok(mut bank) => f(&mut bank),
            Err(_) => {
                warn!("mock NSM PCR state is poisoned");
                Response::Error(ErrorCode::InternalError)
            }
        }
    }

    /// The current leaf, re-issued first if it has less than an hour left (or is not valid yet,
    /// should the clock have gone back). A poisoned lock is recovered: the leaf is replaced whole
    /// or not at all, so whatever it holds is a complete, valid leaf.
    fn current_leaf(&self, now_secs: u64) -> Result<MutexGuard<'_, MockLeaf>, MockCaError> {
        let mut leaf = self.leaf.lock().unwrap_or_else(|poisoned| {
            self.leaf.clear_poison();
            poisoned.into_inner()
        });
        if leaf.not_after() < now_secs.saturating_add(LEAF_MIN_REMAINING_SECS)
            || leaf.not_before() > now_secs
        {
            *leaf = self.ca.issue_leaf(now_secs, LEAF_VALIDITY_SECS)?;
        }
        Ok(leaf)
    }

    fn attestation(
        &self,
        now: SystemTime,
        public_key: Option<ByteBuf>,
        user_data: Option<ByteBuf>,
        nonce: Option<ByteBuf>,
    ) -> Response {
        let Ok(since_epoch) = now.duration_since(UNIX_EPOCH) else {
            return Response::Error(ErrorCode::InternalError);
        };
        let Ok(timestamp_ms) = u64::try_from(since_epoch.as_millis()) else {
            return Response::Error(ErrorCode::InternalError);
        };
        let pcrs = match self.pcrs.lock() {
            Ok(bank) => bank.document_pcrs(),
            Err(_) => return Response::Error(ErrorCode::InternalError),
        };
        let leaf = match self.current_leaf(since_epoch.as_secs()) {
            Ok(leaf) => leaf,
            Err(e) => {
                warn!(error = %e, "mock NSM could not issue a leaf certificate");
                return Response::Error(ErrorCode::InternalError);
            }
        };
        // Field order is the struct's: module_id, digest, timestamp, pcrs, certificate, cabundle,
        // public_key, user_data, nonce — the order of every real document; absent optional fields
        // encode as CBOR null, as on the device (`nitro-facts.md` §1.2).
        let doc = AttestationDoc::new(
            MODULE_ID.to_string(),
            Digest::SHA384,
            timestamp_ms,
            pcrs,
            leaf.certificate_der().to_vec(),
            leaf.cabundle(),
            user_data.map(ByteBuf::into_vec),
            nonce.map(ByteBuf::into_vec),
            public_key.map(ByteBuf::into_vec),
        );
        // ciborium encodes `AttestationDoc` byte-for-byte like the crate's serde_cbor
        // `to_binary()` (checked in the tests), without its internal unwrap.
        let mut payload = Vec::new();
        if ciborium::ser::into_writer(&doc, &mut payload).is_err() {
            return Response::Error(ErrorCode::InternalError);
        }
        match leaf.sign_cose_sign1(&payload) {
            Ok(document) => Response::Attestation { document },
            Err(e) => {
                warn!(error = %e, "mock NSM could not sign a document");
                Response::Error(ErrorCode::InternalError)
            }
        }
    }
}

impl Nsm for MockNsm {
    fn process(&self, request: Request) -> Response {
        self.process_at(request, SystemTime::now())
    }
}

#[cfg(test)]
mod tests;

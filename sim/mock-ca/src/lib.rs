//! SIMULATION ONLY: a mock certificate authority that stands in for the AWS Nitro PKI, so that the
//! mock NSM can produce attestation documents shaped exactly like real ones.
//!
//! What it does: generates a P-384 root → intermediate chain (ecdsa-with-SHA384), stores it in a
//! directory (`root.pem`, `intermediate.pem`, `intermediate.key.pem` with mode 0600), issues short-
//! lived leaf certificates, and signs COSE_Sign1 envelopes (RFC 9052 §4.2, ES384) with a leaf key in
//! the same form as the Nitro hypervisor: untagged, protected header `{1: -35}`, empty unprotected
//! header, 96-byte raw `r || s` signature. The certificate profile follows the observed AWS profile
//! (`nitro-facts.md` §1.3): CA certificates have critical basicConstraints and keyUsage
//! keyCertSign+cRLSign; the leaf is CA:FALSE (critical), keyUsage digitalSignature, no EKU.
//!
//! What it does not do: it is not a real CA and nothing in it is trusted by default. Every subject
//! says "MOCK … (simulation only)", and verifiers accept it only when the operator names its root
//! explicitly (`--trust-root FILE`). It keeps no CRLs and does no path validation beyond sanity
//! checks when loading a directory.
//!
//! # Layout
//! - [`MockCa`]: root + intermediate; generate, write/load a directory, issue leaves.
//! - [`MockLeaf`]: a leaf key and certificate; signs COSE_Sign1 documents.
//! - [`MockCaError`]: every failure, with no key material in any message.
//! - [`measure`]: the mock NSM's boot PCRs (shared by the enclave and `sealed-sim measure`).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod measure;

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use der::asn1::OctetString;
use der::oid::AssociatedOid;
use der::pem::LineEnding;
use der::{DateTime, Decode, Encode};
use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p384::elliptic_curve::Generate;
use p384::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use x509_cert::Certificate;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use x509_cert::time::{Time, Validity};
use zeroize::Zeroizing;

/// Subject CN of the mock root. Says "MOCK" so that nobody mistakes it for the AWS Nitro root.
pub const ROOT_CN: &str = "Sealed Inference MOCK Nitro Root (simulation only)";
/// Subject CN of the mock intermediate.
pub const INTERMEDIATE_CN: &str = "Sealed Inference MOCK Nitro Intermediate (simulation only)";
/// Subject CN of every mock leaf; carries the mock NSM's module id, as AWS leaves carry theirs.
pub const LEAF_CN: &str =
    "Sealed Inference MOCK NSM i-mock0000000000000-enc0000000000000000 (simulation only)";
/// Organisation of every mock certificate.
const ORGANIZATION: &str = "Sealed Inference MOCK";
/// Organisational unit of every mock certificate.
const ORGANIZATIONAL_UNIT: &str = "simulation only";

/// File names inside a mock CA directory.
pub const ROOT_FILE: &str = "root.pem";
pub const INTERMEDIATE_FILE: &str = "intermediate.pem";
pub const INTERMEDIATE_KEY_FILE: &str = "intermediate.key.pem";

/// Root lifetime (about ten years).
const ROOT_VALIDITY_SECS: u64 = 10 * 365 * 24 * 3600;
/// Intermediate lifetime (about one year).
const INTERMEDIATE_VALIDITY_SECS: u64 = 365 * 24 * 3600;
/// CA certificates start a minute early to tolerate small clock differences between processes.
const CA_BACKDATE_SECS: u64 = 60;
/// AWS leaves start about 3 s before the document timestamp (`nitro-facts.md` §1.3); so do ours.
const LEAF_BACKDATE_SECS: u64 = 3;
/// Largest PEM file accepted by [`MockCa::load_dir`]; real ones are under 2 KiB.
const MAX_PEM_FILE_LEN: u64 = 64 * 1024;

/// COSE protected header `{1: -35}` (alg = ES384), exactly the bytes the Nitro hypervisor emits.
pub const COSE_PROTECTED_ES384: [u8; 4] = [0xa1, 0x01, 0x38, 0x22];
/// Length of a raw ES384 signature (`r || s`, 48 bytes each).
pub const ES384_SIGNATURE_LEN: usize = 96;

/// Why the mock CA failed. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum MockCaError {
    #[error("operating-system randomness is unavailable")]
    Random,
    #[error("certificate could not be built: {0}")]
    Build(String),
    #[error("DER encoding or decoding failed: {0}")]
    Der(#[from] der::Error),
    #[error("PEM encoding or decoding failed: {0}")]
    Pem(String),
    #[error("the PKCS#8 private key could not be encoded or decoded")]
    PrivateKey,
    #[error("ECDSA signing failed")]
    Sign,
    #[error("CBOR encoding failed")]
    Cbor,
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is larger than {max} bytes", path.display())]
    FileTooLarge { path: PathBuf, max: u64 },
    #[error("mock CA directory is inconsistent: {0}")]
    Inconsistent(&'static str),
    #[error("time {0} (unix seconds) cannot be expressed in a certificate")]
    TimeOutOfRange(u64),
    #[error("leaf validity must be at least 1 second")]
    ZeroValidity,
    #[error(
        "the mock intermediate is not valid at {now} (valid {not_before}..={not_after}); regenerate the mock CA"
    )]
    IntermediateNotValid {
        now: u64,
        not_before: u64,
        not_after: u64,
    },
    #[error(
        "a leaf valid until {leaf_not_after} would outlive the mock intermediate (valid until {intermediate_not_after})"
    )]
    LeafOutlivesIntermediate {
        leaf_not_after: u64,
        intermediate_not_after: u64,
    },
}

/// Root and intermediate of the mock chain. Holds the intermediate's private key (zeroized on drop
/// by `p384`); the root key exists only while [`MockCa::generate`] runs.
pub struct MockCa {
    root_der: Vec<u8>,
    root_pem: String,
    intermediate_der: Vec<u8>,
    intermediate_name: Name,
    intermediate_not_before: u64,
    intermediate_not_after: u64,
    intermediate_key: SigningKey,
}

// Manual Debug: never print the key.
impl fmt::Debug for MockCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockCa")
            .field("intermediate_not_before", &self.intermediate_not_before)
            .field("intermediate_not_after", &self.intermediate_not_after)
            .finish_non_exhaustive()
    }
}

impl MockCa {
    /// Generates a fresh root and intermediate from OS randomness. The root is valid for about ten
    /// years and the intermediate for about one, both from `now_unix_secs` minus a minute.
    pub fn generate(now_unix_secs: u64) -> Result<MockCa, MockCaError> {
        let not_before = now_unix_secs.saturating_sub(CA_BACKDATE_SECS);
        let root_key = SigningKey::try_generate().map_err(|_| MockCaError::Random)?;
        let intermediate_key = SigningKey::try_generate().map_err(|_| MockCaError::Random)?;

        let root_name = ca_name(ROOT_CN)?;
        let intermediate_name = ca_name(INTERMEDIATE_CN)?;

        let root = build_cert(
            MockProfile {
                subject: root_name.clone(),
                issuer: root_name.clone(),
                kind: CertKind::Root,
            },
            validity(not_before, add_secs(not_before, ROOT_VALIDITY_SECS)?)?,
            root_key.verifying_key(),
            &root_key,
        )?;
        let intermediate_not_after = add_secs(not_before, INTERMEDIATE_VALIDITY_SECS)?;
        let intermediate = build_cert(
            MockProfile {
                subject: intermediate_name.clone(),
                issuer: root_name,
                kind: CertKind::Intermediate,
            },
            validity(not_before, intermediate_not_after)?,
            intermediate_key.verifying_key(),
            &root_key,
        )?;
        // `root_key` is dropped (and zeroized) here: leaves are issued by the intermediate only.
        let root_der = root.to_der()?;
        Ok(MockCa {
            root_pem: cert_pem(&root_der)?,
            root_der,
            intermediate_der: intermediate.to_der()?,
            intermediate_name,
            intermediate_not_before: not_before,
            intermediate_not_after,
            intermediate_key,
        })
    }

    /// The root certificate as PEM (what `--trust-root FILE` points at).
    pub fn root_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// The root certificate as DER.
    pub fn root_der(&self) -> Vec<u8> {
        self.root_der.clone()
    }

    /// The intermediate certificate as DER.
    pub fn intermediate_der(&self) -> Vec<u8> {
        self.intermediate_der.clone()
    }

    /// End of the intermediate's validity (unix seconds): no leaf can outlive it.
    pub fn intermediate_not_after(&self) -> u64 {
        self.intermediate_not_after
    }

    /// Writes `root.pem`, `intermediate.pem` and `intermediate.key.pem` into `dir`, creating it
    /// (mode 0700) if needed. The key file is created with mode 0600 and forced to 0600 if it
    /// already existed. The root key is not written: it no longer exists.
    pub fn write_dir(&self, dir: &Path) -> Result<(), MockCaError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| io_error(dir, source))?;
        write_file(&dir.join(ROOT_FILE), self.root_pem.as_bytes(), 0o644)?;
        let intermediate_pem = cert_pem(&self.intermediate_der)?;
        write_file(
            &dir.join(INTERMEDIATE_FILE),
            intermediate_pem.as_bytes(),
            0o644,
        )?;
        let key_pem = self
            .intermediate_key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| MockCaError::PrivateKey)?;
        write_file(&dir.join(INTERMEDIATE_KEY_FILE), key_pem.as_bytes(), 0o600)
    }

    /// Loads a directory written by [`MockCa::write_dir`]. Checks that the root is self-signed, that
    /// the intermediate is issued and signed by the root, and that the key matches the intermediate,
    /// so that a mixed-up directory fails here rather than at verification time.
    pub fn load_dir(dir: &Path) -> Result<MockCa, MockCaError> {
        let root_pem = read_bounded(&dir.join(ROOT_FILE))?;
        let root_der = decode_cert_pem(&root_pem)?;
        let intermediate_der = decode_cert_pem(&read_bounded(&dir.join(INTERMEDIATE_FILE))?)?;
        let key_pem = Zeroizing::new(read_bounded(&dir.join(INTERMEDIATE_KEY_FILE))?);
        let intermediate_key =
            SigningKey::from_pkcs8_pem(&key_pem).map_err(|_| MockCaError::PrivateKey)?;

        let root = Certificate::from_der(&root_der)?;
        let intermediate = Certificate::from_der(&intermediate_der)?;
        let root_key = cert_verifying_key(&root)?;
        verify_cert_signature(&root, &root_key)
            .map_err(|_| MockCaError::Inconsistent("root.pem is not self-signed"))?;
        if intermediate.tbs_certificate().issuer() != root.tbs_certificate().subject() {
            return Err(MockCaError::Inconsistent(
                "intermediate.pem was not issued by root.pem",
            ));
        }
        verify_cert_signature(&intermediate, &root_key)
            .map_err(|_| MockCaError::Inconsistent("intermediate.pem is not signed by root.pem"))?;
        if cert_verifying_key(&intermediate)? != *intermediate_key.verifying_key() {
            return Err(MockCaError::Inconsistent(
                "intermediate.key.pem does not match intermediate.pem",
            ));
        }
        let validity = intermediate.tbs_certificate().validity();
        Ok(MockCa {
            root_pem: cert_pem(&root_der)?,
            root_der,
            intermediate_der,
            intermediate_name: intermediate.tbs_certificate().subject().clone(),
            intermediate_not_before: validity.not_before.to_unix_duration().as_secs(),
            intermediate_not_after: validity.not_after.to_unix_duration().as_secs(),
            intermediate_key,
        })
    }

    /// Issues a leaf valid from `now_unix_secs - 3` for `validity_secs` seconds, with a fresh key.
    /// Fails if the intermediate is not valid now or would expire before the leaf.
    pub fn issue_leaf(
        &self,
        now_unix_secs: u64,
        validity_secs: u64,
    ) -> Result<MockLeaf, MockCaError> {
        if validity_secs == 0 {
            return Err(MockCaError::ZeroValidity);
        }
        if now_unix_secs < self.intermediate_not_before
            || now_unix_secs > self.intermediate_not_after
        {
            return Err(MockCaError::IntermediateNotValid {
                now: now_unix_secs,
                not_before: self.intermediate_not_before,
                not_after: self.intermediate_not_after,
            });
        }
        let not_before = now_unix_secs
            .saturating_sub(LEAF_BACKDATE_SECS)
            .max(self.intermediate_not_before);
        let not_after = add_secs(not_before, validity_secs)?;
        if not_after > self.intermediate_not_after {
            return Err(MockCaError::LeafOutlivesIntermediate {
                leaf_not_after: not_after,
                intermediate_not_after: self.intermediate_not_after,
            });
        }
        let key = SigningKey::try_generate().map_err(|_| MockCaError::Random)?;
        let cert = build_cert(
            MockProfile {
                subject: ca_name(LEAF_CN)?,
                issuer: self.intermediate_name.clone(),
                kind: CertKind::Leaf,
            },
            validity(not_before, not_after)?,
            key.verifying_key(),
            &self.intermediate_key,
        )?;
        Ok(MockLeaf {
            key,
            certificate_der: cert.to_der()?,
            cabundle: vec![self.root_der.clone(), self.intermediate_der.clone()],
            not_before,
            not_after,
        })
    }
}

/// A leaf certificate and its private key (zeroized on drop by `p384`), used to sign documents.
pub struct MockLeaf {
    key: SigningKey,
    certificate_der: Vec<u8>,
    cabundle: Vec<Vec<u8>>,
    not_before: u64,
    not_after: u64,
}

// Manual Debug: never print the key.
impl fmt::Debug for MockLeaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockLeaf")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl MockLeaf {
    /// The leaf certificate (DER), the document's `certificate` field.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// `[root DER, intermediate DER]`, the document's `cabundle` field (root first, as AWS orders it).
    pub fn cabundle(&self) -> Vec<Vec<u8>> {
        self.cabundle.clone()
    }

    /// Start of the leaf's validity (unix seconds).
    pub fn not_before(&self) -> u64 {
        self.not_before
    }

    /// End of the leaf's validity (unix seconds).
    pub fn not_after(&self) -> u64 {
        self.not_after
    }

    /// Signs `payload` as an untagged COSE_Sign1 (RFC 9052 §4.2):
    /// `[h'a1013822', {}, payload, signature]`, where the 96-byte `r || s` signature is ES384 over
    /// `Sig_structure = ["Signature1", h'a1013822', h'', payload]` (RFC 9052 §4.4). This is the form
    /// the Nitro hypervisor emits (`nitro-facts.md` §1.1).
    pub fn sign_cose_sign1(&self, payload: &[u8]) -> Result<Vec<u8>, MockCaError> {
        let to_be_signed = sig_structure(payload)?;
        let signature: Signature = self
            .key
            .try_sign(&to_be_signed)
            .map_err(|_| MockCaError::Sign)?;
        let envelope = ciborium::Value::Array(vec![
            ciborium::Value::Bytes(COSE_PROTECTED_ES384.to_vec()),
            ciborium::Value::Map(Vec::new()),
            ciborium::Value::Bytes(payload.to_vec()),
            ciborium::Value::Bytes(signature.to_bytes().to_vec()),
        ]);
        cbor(&envelope)
    }
}

/// `Sig_structure` for a COSE_Sign1 with our fixed protected header and no external AAD
/// (RFC 9052 §4.4).
pub fn sig_structure(payload: &[u8]) -> Result<Vec<u8>, MockCaError> {
    cbor(&ciborium::Value::Array(vec![
        ciborium::Value::Text("Signature1".to_string()),
        ciborium::Value::Bytes(COSE_PROTECTED_ES384.to_vec()),
        ciborium::Value::Bytes(Vec::new()),
        ciborium::Value::Bytes(payload.to_vec()),
    ]))
}

fn cbor(value: &ciborium::Value) -> Result<Vec<u8>, MockCaError> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).map_err(|_| MockCaError::Cbor)?;
    Ok(out)
}

/// Which certificate of the chain a profile builds.
#[derive(Clone, Copy)]
enum CertKind {
    Root,
    Intermediate,
    Leaf,
}

/// Our own builder profile: the `cabf` profiles add extensions (SKI/AKI, EKU checks) that AWS's
/// Nitro chain does not have, so we state the AWS-like extensions directly.
struct MockProfile {
    subject: Name,
    issuer: Name,
    kind: CertKind,
}

impl BuilderProfile for MockProfile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        _spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        _tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let ca_usage = KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign);
        let extensions = match self.kind {
            // RFC 5280 §4.2.1.9: basicConstraints critical in CA certificates. The AWS root has
            // no pathLen; the intermediate signs leaves directly, hence pathLen 0.
            CertKind::Root => vec![
                extension(
                    &BasicConstraints {
                        ca: true,
                        path_len_constraint: None,
                    },
                    true,
                )?,
                extension(&ca_usage, true)?,
            ],
            CertKind::Intermediate => vec![
                extension(
                    &BasicConstraints {
                        ca: true,
                        path_len_constraint: Some(0),
                    },
                    true,
                )?,
                extension(&ca_usage, true)?,
            ],
            // AWS leaf: CA:FALSE critical, keyUsage digitalSignature non-critical, no EKU.
            CertKind::Leaf => vec![
                extension(
                    &BasicConstraints {
                        ca: false,
                        path_len_constraint: None,
                    },
                    true,
                )?,
                extension(&KeyUsage(KeyUsages::DigitalSignature.into()), false)?,
            ],
        };
        Ok(extensions)
    }
}

fn extension<T: Encode + AssociatedOid>(
    value: &T,
    critical: bool,
) -> x509_cert::builder::Result<Extension> {
    Ok(Extension {
        extn_id: T::OID,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

fn ca_name(cn: &str) -> Result<Name, MockCaError> {
    // RFC 4514 string form; the CNs contain no characters that need escaping.
    Ok(Name::from_str(&format!(
        "CN={cn},OU={ORGANIZATIONAL_UNIT},O={ORGANIZATION}"
    ))?)
}

fn build_cert(
    profile: MockProfile,
    validity: Validity,
    subject_key: &VerifyingKey,
    issuer_key: &SigningKey,
) -> Result<Certificate, MockCaError> {
    let spki = SubjectPublicKeyInfoOwned::from_key(subject_key)
        .map_err(|e| MockCaError::Build(e.to_string()))?;
    let builder = CertificateBuilder::new(profile, random_serial()?, validity, spki)
        .map_err(|e| MockCaError::Build(e.to_string()))?;
    // DER-encoded ECDSA signature inside the certificate (RFC 5758 §3.2); the signature algorithm
    // ecdsa-with-SHA384 comes from the P-384 signing key.
    builder
        .build::<_, DerSignature>(issuer_key)
        .map_err(|e| MockCaError::Build(e.to_string()))
}

/// 16 random bytes, positive and without a leading zero byte (RFC 5280 §4.1.2.2: ≤ 20 octets,
/// positive).
fn random_serial() -> Result<SerialNumber, MockCaError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| MockCaError::Random)?;
    if let Some(first) = bytes.first_mut() {
        *first = (*first & 0x7f) | 0x01;
    }
    Ok(SerialNumber::new(&bytes)?)
}

fn add_secs(base: u64, secs: u64) -> Result<u64, MockCaError> {
    base.checked_add(secs)
        .ok_or(MockCaError::TimeOutOfRange(u64::MAX))
}

fn cert_time(unix_secs: u64) -> Result<Time, MockCaError> {
    let datetime = DateTime::from_unix_duration(Duration::from_secs(unix_secs))
        .map_err(|_| MockCaError::TimeOutOfRange(unix_secs))?;
    // UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280 §4.1.2.5).
    Ok(Time::from(datetime))
}

fn validity(not_before: u64, not_after: u64) -> Result<Validity, MockCaError> {
    Ok(Validity::new(cert_time(not_before)?, cert_time(not_after)?))
}

fn cert_pem(der: &[u8]) -> Result<String, MockCaError> {
    der::pem::encode_string("CERTIFICATE", LineEnding::LF, der)
        .map_err(|e| MockCaError::Pem(e.to_string()))
}

fn decode_cert_pem(pem: &str) -> Result<Vec<u8>, MockCaError> {
    let (label, der) =
        der::pem::decode_vec(pem.as_bytes()).map_err(|e| MockCaError::Pem(e.to_string()))?;
    if label != "CERTIFICATE" {
        return Err(MockCaError::Pem(format!(
            "expected a CERTIFICATE, found {label:?}"
        )));
    }
    Ok(der)
}

fn cert_verifying_key(cert: &Certificate) -> Result<VerifyingKey, MockCaError> {
    let point = cert
        .tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .as_bytes()
        .ok_or(MockCaError::Inconsistent("malformed public key bit string"))?;
    VerifyingKey::from_sec1_bytes(point)
        .map_err(|_| MockCaError::Inconsistent("certificate key is not a P-384 point"))
}

fn verify_cert_signature(cert: &Certificate, issuer: &VerifyingKey) -> Result<(), MockCaError> {
    let tbs = cert.tbs_certificate().to_der()?;
    let signature_der = cert
        .signature()
        .as_bytes()
        .ok_or(MockCaError::Inconsistent("malformed signature bit string"))?;
    let signature = DerSignature::from_bytes(signature_der)
        .map_err(|_| MockCaError::Inconsistent("malformed ECDSA signature"))?;
    issuer
        .verify(&tbs, &signature)
        .map_err(|_| MockCaError::Inconsistent("certificate signature does not verify"))
}

fn io_error(path: &Path, source: io::Error) -> MockCaError {
    MockCaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), MockCaError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|source| io_error(path, source))?;
    // `mode` applies only when the file is created; force it for files that already existed.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|source| io_error(path, source))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(path, source))
}

fn read_bounded(path: &Path) -> Result<String, MockCaError> {
    let file = fs::File::open(path).map_err(|source| io_error(path, source))?;
    // Reserved up front so the buffer never reallocates: a key read here leaves no stray copies.
    let mut text = String::with_capacity(MAX_PEM_FILE_LEN as usize + 1);
    file.take(MAX_PEM_FILE_LEN + 1)
        .read_to_string(&mut text)
        .map_err(|source| io_error(path, source))?;
    if text.len() as u64 > MAX_PEM_FILE_LEN {
        return Err(MockCaError::FileTooLarge {
            path: path.to_path_buf(),
            max: MAX_PEM_FILE_LEN,
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests;

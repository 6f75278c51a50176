//! The certificate chain of an attestation document, checked against a pinned trust anchor
//! (`attestation_process.md` §3.2.3–3.2.4, RFC 5280 §6.1; nitro-facts §1.3).
//!
//! What it does: pins `cabundle[0]` byte-for-byte to the [`TrustAnchor`], builds the path
//! `certificate, cabundle[N-1], …, cabundle[1], anchor`, and for every link checks issuer/subject
//! name chaining, the ecdsa-with-SHA384 signature with a P-384 key, validity at the injected time,
//! basicConstraints (critical, cA) + keyCertSign + pathLenConstraint on CA certificates, and
//! that the leaf is not a CA and may sign (digitalSignature). Unknown critical extensions are
//! refused (RFC 5280 §4.2).
//!
//! What it does not do: revocation (AWS: "We do not use CRL"), name constraints or policies (the
//! Nitro PKI uses neither), extended key usage (the real leaf has no EKU), or any algorithm other
//! than ECDSA P-384 with SHA-384 (the only one the Nitro PKI uses). Nothing is trusted implicitly:
//! the anchor is always passed in.

use std::fmt;
use std::time::Duration;

use der::asn1::ObjectIdentifier;
use der::{Decode, Encode, Header, Reader, SliceReader};
use p384::ecdsa::signature::Verifier;
use p384::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};

/// The AWS Nitro Enclaves Root-G1 certificate, as published in `AWS_NitroEnclaves_Root-G1.zip`
/// (ZIP SHA-256 8cf60e2b…faff7c; DER SHA-256 641a0321…79bb5b; nitro-facts §1.4).
pub const AWS_NITRO_ROOT_G1_PEM: &str = "-----BEGIN CERTIFICATE-----
MIICETCCAZagAwIBAgIRAPkxdWgbkK/hHUbMtOTn+FYwCgYIKoZIzj0EAwMwSTEL
MAkGA1UEBhMCVVMxDzANBgNVBAoMBkFtYXpvbjEMMAoGA1UECwwDQVdTMRswGQYD
VQQDDBJhd3Mubml0cm8tZW5jbGF2ZXMwHhcNMTkxMDI4MTMyODA1WhcNNDkxMDI4
MTQyODA1WjBJMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGQW1hem9uMQwwCgYDVQQL
DANBV1MxGzAZBgNVBAMMEmF3cy5uaXRyby1lbmNsYXZlczB2MBAGByqGSM49AgEG
BSuBBAAiA2IABPwCVOumCMHzaHDimtqQvkY4MpJzbolL//Zy2YlES1BR5TSksfbb
48C8WBoyt7F2Bw7eEtaaP+ohG2bnUs990d0JX28TcPQXCEPZ3BABIeTPYwEoCWZE
h8l5YoQwTcU/9KNCMEAwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQUkCW1DdkF
R+eWw5b6cp3PmanfS5YwDgYDVR0PAQH/BAQDAgGGMAoGCCqGSM49BAMDA2kAMGYC
MQCjfy+Rocm9Xue4YnwWmNJVA44fA0P5W2OpYow9OYCVRaEevL8uO1XYru5xtMPW
rfMCMQCi85sWBbJwKKXdS6BptQFuZbT73o/gBh1qUxl/nNr12UO8Yfwr6wPLb+6N
IwLz3/Y=
-----END CERTIFICATE-----
";

/// Most entries accepted in `cabundle`. Real documents carry 4; the bound caps the signature
/// checks an attacker can make us run (each is a P-384 verification).
pub const MAX_CABUNDLE_LEN: usize = 8;

/// Largest trust anchor certificate accepted.
pub const MAX_ANCHOR_LEN: usize = 4096;

// RFC 5758 §3.2.
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
// RFC 5480 §2.1.1 / §2.1.1.1.
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
// RFC 5280 §4.2.1.3 and §4.2.1.9: the only extensions we process, so the only ones that may be critical.
const ID_CE_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const ID_CE_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");

/// A root certificate that a document's chain must end at. Only what is passed in is trusted: the
/// AWS root via [`TrustAnchor::aws_nitro_root_g1`], or a root the user named (the mock CA in
/// simulation).
#[derive(Clone, PartialEq, Eq)]
pub struct TrustAnchor {
    der: Vec<u8>,
}

/// Why a trust anchor could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnchorError {
    #[error("trust anchor is not a PEM certificate: {0}")]
    Pem(&'static str),
    #[error("trust anchor of {len} bytes exceeds the maximum {max}")]
    TooLarge { len: usize, max: usize },
    #[error("trust anchor is not a DER X.509 certificate")]
    Der,
    #[error("trust anchor key is not ECDSA P-384")]
    UnsupportedKey,
}

impl TrustAnchor {
    /// The AWS Nitro Enclaves Root-G1, built in. This is the default and only implicit choice
    /// offered; callers still pass it explicitly in [`crate::VerifyOptions`].
    pub fn aws_nitro_root_g1() -> TrustAnchor {
        // The constant is a fixed, tested certificate: a failure here could only come from
        // editing it, which the known-answer test catches. Fall back to an anchor that matches
        // nothing rather than panicking.
        TrustAnchor::from_pem(AWS_NITRO_ROOT_G1_PEM).unwrap_or(TrustAnchor { der: Vec::new() })
    }

    /// Loads a PEM certificate (`-----BEGIN CERTIFICATE-----`). Text around the one block is
    /// ignored, so a file with a comment above the certificate still loads; more than one
    /// certificate is refused, since the anchor must be unambiguous.
    pub fn from_pem(pem: &str) -> Result<TrustAnchor, AnchorError> {
        const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
        const END: &str = "-----END CERTIFICATE-----";
        let start = pem
            .find(BEGIN)
            .ok_or(AnchorError::Pem("no certificate block"))?;
        let rest = pem
            .get(start..)
            .ok_or(AnchorError::Pem("no certificate block"))?;
        let end = rest
            .find(END)
            .ok_or(AnchorError::Pem("unterminated certificate block"))?;
        let block = rest
            .get(..end + END.len())
            .ok_or(AnchorError::Pem("unterminated certificate block"))?;
        let after = rest.get(end + END.len()..).unwrap_or_default();
        if after.contains(BEGIN) {
            return Err(AnchorError::Pem("more than one certificate"));
        }
        let mut decoder = der::pem::Decoder::new_detect_wrap(block.as_bytes())
            .map_err(|_| AnchorError::Pem("malformed PEM"))?;
        if decoder.type_label() != "CERTIFICATE" {
            return Err(AnchorError::Pem("not a CERTIFICATE block"));
        }
        let mut der = Vec::new();
        decoder
            .decode_to_end(&mut der)
            .map_err(|_| AnchorError::Pem("malformed base64"))?;
        TrustAnchor::from_der(&der)
    }

    /// Loads a DER certificate. It must parse and carry a P-384 key, since it signs the next
    /// certificate of the chain.
    pub fn from_der(der: &[u8]) -> Result<TrustAnchor, AnchorError> {
        if der.len() > MAX_ANCHOR_LEN {
            return Err(AnchorError::TooLarge {
                len: der.len(),
                max: MAX_ANCHOR_LEN,
            });
        }
        let cert = Certificate::from_der(der).map_err(|_| AnchorError::Der)?;
        p384_key(&cert).ok_or(AnchorError::UnsupportedKey)?;
        Ok(TrustAnchor { der: der.to_vec() })
    }

    /// The certificate's DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// SHA-256 of the DER certificate (the usual certificate fingerprint).
    pub fn sha256_fingerprint(&self) -> [u8; 32] {
        Sha256::digest(&self.der).into()
    }
}

impl fmt::Debug for TrustAnchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustAnchor")
            .field("sha256", &hex::encode(self.sha256_fingerprint()))
            .finish()
    }
}

/// Which certificate of the document a chain error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRole {
    /// The document's `certificate` (signs the document).
    Leaf,
    /// `cabundle[i]`; `cabundle[0]` is the trust anchor.
    CaBundle(usize),
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertRole::Leaf => f.write_str("leaf certificate"),
            CertRole::CaBundle(0) => f.write_str("cabundle[0] (root)"),
            CertRole::CaBundle(i) => write!(f, "cabundle[{i}]"),
        }
    }
}

/// Why the chain was refused. Validity failures are kept apart ([`ChainError::is_validity`]) so
/// that a CLI can say "expired" rather than "forged".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("cabundle holds {len} certificates, more than the {max} accepted")]
    TooManyCertificates { len: usize, max: usize },
    #[error("cabundle[0] is not the trust anchor (sha256 {anchor_sha256})")]
    RootMismatch { anchor_sha256: String },
    #[error("{0} is not a valid DER X.509 certificate")]
    Parse(CertRole),
    #[error("{0} is not an X.509 v3 certificate")]
    NotV3(CertRole),
    #[error("{0}: issuer does not match the subject of the next certificate in the chain")]
    IssuerMismatch(CertRole),
    #[error("{0} is not signed with ecdsa-with-SHA384")]
    UnsupportedSignatureAlgorithm(CertRole),
    #[error("{0} does not carry an ECDSA P-384 public key")]
    UnsupportedKey(CertRole),
    #[error("{0}: signature does not verify with its issuer's key")]
    BadSignature(CertRole),
    #[error("{0} is not yet valid at the verification time")]
    NotYetValid(CertRole),
    #[error("{0} has expired at the verification time")]
    Expired(CertRole),
    #[error("{0} has a malformed or repeated extension")]
    MalformedExtension(CertRole),
    #[error("{0} has an unsupported critical extension")]
    UnknownCriticalExtension(CertRole),
    #[error("{0} is not a CA (basicConstraints must be present, critical, with cA true)")]
    NotACa(CertRole),
    #[error("{0} may not sign certificates (keyUsage lacks keyCertSign)")]
    MissingKeyCertSign(CertRole),
    #[error("{0}: pathLenConstraint exceeded")]
    PathLenExceeded(CertRole),
    #[error("the leaf certificate is a CA or carries a path length")]
    LeafIsCa,
    #[error("the leaf certificate may not sign (keyUsage lacks digitalSignature)")]
    LeafMissingDigitalSignature,
    #[error("verification time is before 1970")]
    TimeBeforeEpoch,
}

impl ChainError {
    /// True for "not valid at this time" failures, as opposed to structural or signature ones.
    pub fn is_validity(&self) -> bool {
        matches!(
            self,
            ChainError::NotYetValid(_) | ChainError::Expired(_) | ChainError::TimeBeforeEpoch
        )
    }
}

/// One certificate with the exact bytes its issuer signed.
struct Parsed<'a> {
    role: CertRole,
    cert: Certificate,
    tbs: &'a [u8],
}

fn parse_cert(der: &[u8], role: CertRole) -> Result<Parsed<'_>, ChainError> {
    let cert = Certificate::from_der(der).map_err(|_| ChainError::Parse(role))?;
    // The signature covers the TBSCertificate as transmitted; take those bytes rather than a
    // re-encoding (RFC 5280 §4.1.1.3).
    let tbs = tbs_bytes(der).map_err(|_| ChainError::Parse(role))?;
    Ok(Parsed { role, cert, tbs })
}

/// The first element of the outer `Certificate ::= SEQUENCE`: the TBSCertificate TLV as encoded.
fn tbs_bytes(der: &[u8]) -> der::Result<&[u8]> {
    let mut reader = SliceReader::new(der)?;
    let outer = Header::decode(&mut reader)?;
    outer.tag().assert_eq(der::Tag::Sequence)?;
    reader.tlv_bytes()
}

/// Verifies the chain of a document and returns the leaf's key, which signs the document.
///
/// `now` is the verification time as a duration since the UNIX epoch.
pub(crate) fn verify(
    leaf: &[u8],
    cabundle: &[Vec<u8>],
    anchor: &TrustAnchor,
    now: Duration,
) -> Result<VerifyingKey, ChainError> {
    if cabundle.len() > MAX_CABUNDLE_LEN {
        return Err(ChainError::TooManyCertificates {
            len: cabundle.len(),
            max: MAX_CABUNDLE_LEN,
        });
    }
    // The pin comes first: cabundle[0] is only a hint of which root the enclave believes in, and
    // is trusted only when it is byte-for-byte the anchor we were given (nitro-facts §1.3).
    match cabundle.first() {
        Some(root) if root.as_slice() == anchor.der() && !root.is_empty() => {}
        _ => {
            return Err(ChainError::RootMismatch {
                anchor_sha256: hex::encode(anchor.sha256_fingerprint()),
            });
        }
    }

    // Path from leaf to root: certificate, cabundle[N-1], …, cabundle[0] (§3.2.3).
    let mut path = Vec::with_capacity(cabundle.len() + 1);
    path.push(parse_cert(leaf, CertRole::Leaf)?);
    for (i, der) in cabundle.iter().enumerate().rev() {
        path.push(parse_cert(der, CertRole::CaBundle(i))?);
    }

    for (position, pc) in path.iter().enumerate() {
        check_version(pc)?;
        check_validity(pc, now)?;
        check_critical_extensions(pc)?;
        if position == 0 {
            check_leaf(pc)?;
        } else {
            // `position - 1` CA certificates sit between this one and the leaf (RFC 5280 §4.2.1.9:
            // pathLenConstraint counts the non-self-issued intermediates that may follow).
            check_ca(pc, position.saturating_sub(1))?;
        }
    }

    // Each certificate is signed by the next one on the path.
    for link in path.windows(2) {
        let [child, issuer] = link else { continue };
        check_link(child, issuer)?;
    }

    let leaf = path.first().ok_or(ChainError::Parse(CertRole::Leaf))?;
    p384_key(&leaf.cert).ok_or(ChainError::UnsupportedKey(CertRole::Leaf))
}

fn check_version(pc: &Parsed<'_>) -> Result<(), ChainError> {
    if pc.cert.tbs_certificate().version() != x509_cert::Version::V3 {
        return Err(ChainError::NotV3(pc.role));
    }
    Ok(())
}

fn check_validity(pc: &Parsed<'_>, now: Duration) -> Result<(), ChainError> {
    let validity = pc.cert.tbs_certificate().validity();
    // RFC 5280 §4.1.2.5: valid from notBefore through notAfter inclusive.
    if now < validity.not_before.to_unix_duration() {
        return Err(ChainError::NotYetValid(pc.role));
    }
    if now > validity.not_after.to_unix_duration() {
        return Err(ChainError::Expired(pc.role));
    }
    Ok(())
}

fn check_critical_extensions(pc: &Parsed<'_>) -> Result<(), ChainError> {
    let exts = pc.cert.tbs_certificate().extensions().map(Vec::as_slice);
    for ext in exts.unwrap_or_default() {
        if ext.critical && ext.extn_id != ID_CE_BASIC_CONSTRAINTS && ext.extn_id != ID_CE_KEY_USAGE
        {
            return Err(ChainError::UnknownCriticalExtension(pc.role));
        }
    }
    Ok(())
}

fn basic_constraints(pc: &Parsed<'_>) -> Result<Option<(bool, BasicConstraints)>, ChainError> {
    pc.cert
        .tbs_certificate()
        .get_extension::<BasicConstraints>()
        .map_err(|_| ChainError::MalformedExtension(pc.role))
}

fn key_usage(pc: &Parsed<'_>) -> Result<Option<KeyUsage>, ChainError> {
    pc.cert
        .tbs_certificate()
        .get_extension::<KeyUsage>()
        .map(|o| o.map(|(_, ku)| ku))
        .map_err(|_| ChainError::MalformedExtension(pc.role))
}

fn check_ca(pc: &Parsed<'_>, cas_below: usize) -> Result<(), ChainError> {
    // §3.2.3.2 / RFC 5280 §4.2.1.9: CA certificates MUST carry a critical basicConstraints, cA TRUE.
    let bc = match basic_constraints(pc)? {
        Some((true, bc)) if bc.ca => bc,
        _ => return Err(ChainError::NotACa(pc.role)),
    };
    if let Some(max) = bc.path_len_constraint
        && cas_below > usize::from(max)
    {
        return Err(ChainError::PathLenExceeded(pc.role));
    }
    // RFC 5280 §4.2.1.3: a CA key that signs certificates must assert keyCertSign.
    match key_usage(pc)? {
        Some(ku) if ku.key_cert_sign() => Ok(()),
        _ => Err(ChainError::MissingKeyCertSign(pc.role)),
    }
}

fn check_leaf(pc: &Parsed<'_>) -> Result<(), ChainError> {
    // The real leaf has `CA:FALSE` (critical) and no pathLen (nitro-facts §1.3).
    if let Some((_, bc)) = basic_constraints(pc)?
        && (bc.ca || bc.path_len_constraint.is_some())
    {
        return Err(ChainError::LeafIsCa);
    }
    // The leaf signs the document, so it must be allowed to make digital signatures. Its keyUsage
    // is required, as on every real leaf; no EKU is required (the real leaf has none).
    match key_usage(pc)? {
        Some(ku) if ku.digital_signature() => Ok(()),
        _ => Err(ChainError::LeafMissingDigitalSignature),
    }
}

fn check_link(child: &Parsed<'_>, issuer: &Parsed<'_>) -> Result<(), ChainError> {
    let tbs = child.cert.tbs_certificate();
    // Name chaining by exact DER equality: stricter than RFC 5280 §7.1 comparison, and what the
    // Nitro PKI produces (one issuer, one encoding).
    let issuer_name = tbs.issuer().to_der();
    let subject_name = issuer.cert.tbs_certificate().subject().to_der();
    match (issuer_name, subject_name) {
        (Ok(a), Ok(b)) if a == b => {}
        _ => return Err(ChainError::IssuerMismatch(child.role)),
    }

    // RFC 5758 §3.2: ecdsa-with-SHA384, parameters absent; the TBS copy must match (RFC 5280 §4.1.1.2).
    let alg = child.cert.signature_algorithm();
    if alg.oid != ECDSA_WITH_SHA384 || alg.parameters.is_some() || tbs.signature() != alg {
        return Err(ChainError::UnsupportedSignatureAlgorithm(child.role));
    }
    let key = p384_key(&issuer.cert).ok_or(ChainError::UnsupportedKey(issuer.role))?;
    let sig = child
        .cert
        .signature()
        .as_bytes()
        .and_then(|der| Signature::from_der(der).ok())
        .ok_or(ChainError::BadSignature(child.role))?;
    key.verify(child.tbs, &sig)
        .map_err(|_| ChainError::BadSignature(child.role))
}

/// The certificate's key if it is an EC key on P-384 (RFC 5480 §2), else `None`.
fn p384_key(cert: &Certificate) -> Option<VerifyingKey> {
    let spki = cert.tbs_certificate().subject_public_key_info();
    if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
        return None;
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())?;
    if curve != SECP384R1 {
        return None;
    }
    let point = spki.subject_public_key.as_bytes()?;
    VerifyingKey::from_sec1_bytes(point).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_root_has_published_fingerprint() {
        let anchor = TrustAnchor::aws_nitro_root_g1();
        assert_eq!(
            hex::encode(anchor.sha256_fingerprint()),
            "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
        );
        assert_eq!(anchor.der().len(), 533);
    }

    #[test]
    fn from_pem_ignores_surrounding_text_and_matches_from_der() {
        let with_comment = format!("# AWS root\n{AWS_NITRO_ROOT_G1_PEM}\n");
        let a = TrustAnchor::from_pem(&with_comment).unwrap();
        let b = TrustAnchor::from_der(TrustAnchor::aws_nitro_root_g1().der()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn from_pem_rejects_two_certificates_and_garbage() {
        let two = format!("{AWS_NITRO_ROOT_G1_PEM}{AWS_NITRO_ROOT_G1_PEM}");
        assert!(matches!(
            TrustAnchor::from_pem(&two),
            Err(AnchorError::Pem(_))
        ));
        assert!(matches!(
            TrustAnchor::from_pem("hello"),
            Err(AnchorError::Pem(_))
        ));
        let key = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(TrustAnchor::from_pem(key).is_err());
    }

    #[test]
    fn from_der_rejects_non_certificates() {
        assert_eq!(TrustAnchor::from_der(&[0x30, 0x00]), Err(AnchorError::Der));
        assert!(matches!(
            TrustAnchor::from_der(&[0u8; MAX_ANCHOR_LEN + 1]),
            Err(AnchorError::TooLarge { .. })
        ));
    }

    #[test]
    fn debug_shows_only_the_fingerprint() {
        let s = format!("{:?}", TrustAnchor::aws_nitro_root_g1());
        assert!(s.contains("641a0321"));
    }
}

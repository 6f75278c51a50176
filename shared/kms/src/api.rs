//! KMS JSON 1.1 messages for Nitro key release (nitro-facts.md §3.2; AWS KMS API Reference for
//! `Decrypt`, `Encrypt`, `GenerateDataKey`, `GenerateRandom`).
//!
//! What it does: request and response types with AWS's PascalCase field names and base64 blobs,
//! the documented length limits ([`DecryptRequest::validate`] and friends), the awsJson error body
//! with a typed [`KmsErrorKind`], and the fail-closed extraction of `CiphertextForRecipient`
//! ([`decrypt_response_for_recipient`]): a response that carries `Plaintext` when we asked for a
//! recipient is refused, since it means the key left KMS outside the attested channel.
//!
//! What it does not do: HTTP, SigV4, or any key-policy logic. Optional fields are omitted when
//! `None`; unknown fields in input are ignored, as AWS SDKs do.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::cms::{self, CmsError, EnvelopedRecipient};

/// `Content-Type` of every KMS request and response (awsJson1.1).
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// Largest JSON response body we parse. KMS bodies are a few KiB (blobs ≤ 6144 bytes, base64).
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// `CiphertextBlob` length, bytes (AWS: 1..6144).
pub const CIPHERTEXT_BLOB_LEN: (usize, usize) = (1, 6144);
/// `CiphertextForRecipient` length, bytes (AWS: 1..6144).
pub const CIPHERTEXT_FOR_RECIPIENT_LEN: (usize, usize) = (1, 6144);
/// `KeyId` length, characters (AWS: 1..2048).
pub const KEY_ID_LEN: (usize, usize) = (1, 2048);
/// `Plaintext` length for `Encrypt`, bytes (AWS: 1..4096).
pub const PLAINTEXT_LEN: (usize, usize) = (1, 4096);
/// `NumberOfBytes` for `GenerateDataKey` and `GenerateRandom` (AWS: 1..1024).
pub const NUMBER_OF_BYTES: (u16, u16) = (1, 1024);
/// `GrantTokens` count (AWS: at most 10).
pub const MAX_GRANT_TOKENS: usize = 10;
/// `AttestationDocument` length, bytes. Our bound, not an AWS figure: Nitro documents with a
/// certificate chain are about 4.5 KiB.
pub const ATTESTATION_DOCUMENT_LEN: (usize, usize) = (1, 16 * 1024);

/// The KMS operations used for key release, with their `X-Amz-Target` header values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Decrypt,
    Encrypt,
    GenerateDataKey,
    GenerateRandom,
}

impl Operation {
    /// The `X-Amz-Target` header value.
    pub fn target(self) -> &'static str {
        match self {
            Self::Decrypt => "TrentService.Decrypt",
            Self::Encrypt => "TrentService.Encrypt",
            Self::GenerateDataKey => "TrentService.GenerateDataKey",
            Self::GenerateRandom => "TrentService.GenerateRandom",
        }
    }

    /// The operation named by an `X-Amz-Target` header value.
    pub fn from_target(target: &str) -> Option<Self> {
        [
            Self::Decrypt,
            Self::Encrypt,
            Self::GenerateDataKey,
            Self::GenerateRandom,
        ]
        .into_iter()
        .find(|op| op.target() == target)
    }
}

/// Public binary data carried as standard base64 (ciphertexts, attestation documents).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl fmt::Debug for Blob {
    // Length only: blobs are large and logs leave the enclave through the host.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Blob)
            .map_err(|_| serde::de::Error::custom("invalid base64 blob"))
    }
}

/// Secret binary data (`Plaintext`): base64 on the wire, zeroized on drop, no `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBlob(pub Zeroizing<Vec<u8>>);

impl SecretBlob {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for SecretBlob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(STANDARD.encode(self.0.as_slice()));
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for SecretBlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        STANDARD
            .decode(text.as_bytes())
            .map(SecretBlob::new)
            .map_err(|_| serde::de::Error::custom("invalid base64 blob"))
    }
}

/// `KeyEncryptionAlgorithm` of a [`Recipient`]: "The only valid encryption algorithm is
/// RSAES_OAEP_SHA_256" (KMS API Reference, RecipientInfo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyEncryptionAlgorithm {
    #[serde(rename = "RSAES_OAEP_SHA_256")]
    RsaesOaepSha256,
}

/// The `Recipient` parameter: an attestation document whose `public_key` is the enclave's
/// RSA-2048 SubjectPublicKeyInfo; KMS then answers with `CiphertextForRecipient`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Recipient {
    pub attestation_document: Blob,
    pub key_encryption_algorithm: KeyEncryptionAlgorithm,
}

impl Recipient {
    /// A recipient for `attestation_document` with the only algorithm KMS accepts.
    pub fn new(attestation_document: Vec<u8>) -> Self {
        Self {
            attestation_document: Blob(attestation_document),
            key_encryption_algorithm: KeyEncryptionAlgorithm::RsaesOaepSha256,
        }
    }
}

/// `KeySpec` of `GenerateDataKey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataKeySpec {
    #[serde(rename = "AES_256")]
    Aes256,
    #[serde(rename = "AES_128")]
    Aes128,
}

impl DataKeySpec {
    /// Data key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Self::Aes256 => 32,
            Self::Aes128 => 16,
        }
    }
}

/// `TrentService.Decrypt` request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptRequest {
    pub ciphertext_blob: Blob,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<Recipient>,
}

/// `TrentService.Decrypt` response. With a `Recipient`, AWS sends `CiphertextForRecipient` and
/// no `Plaintext`.
#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<SecretBlob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_for_recipient: Option<Blob>,
}

/// `TrentService.GenerateDataKey` request: exactly one of `KeySpec` and `NumberOfBytes`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_spec: Option<DataKeySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_bytes: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<Recipient>,
}

/// `TrentService.GenerateDataKey` response.
#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyResponse {
    pub ciphertext_blob: Blob,
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<SecretBlob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_for_recipient: Option<Blob>,
}

/// `TrentService.Encrypt` request.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptRequest {
    pub key_id: String,
    pub plaintext: SecretBlob,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<Vec<String>>,
}

/// `TrentService.Encrypt` response.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptResponse {
    pub ciphertext_blob: Blob,
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<String>,
}

/// `TrentService.GenerateRandom` request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateRandomRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_bytes: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_key_store_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<Recipient>,
}

/// `TrentService.GenerateRandom` response.
#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateRandomResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<SecretBlob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_for_recipient: Option<Blob>,
}

/// A request field outside AWS's documented limits; what KMS answers with `ValidationException`.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ValidationError {
    #[error("{field} has length {len}, allowed {min}..={max}")]
    Length {
        field: &'static str,
        len: usize,
        min: usize,
        max: usize,
    },
    #[error("exactly one of KeySpec and NumberOfBytes must be given")]
    KeySpecXorNumberOfBytes,
    #[error("{field} is required")]
    Missing { field: &'static str },
}

fn check_len(
    field: &'static str,
    len: usize,
    (min, max): (usize, usize),
) -> Result<(), ValidationError> {
    if (min..=max).contains(&len) {
        Ok(())
    } else {
        Err(ValidationError::Length {
            field,
            len,
            min,
            max,
        })
    }
}

fn check_common(
    key_id: Option<&str>,
    grant_tokens: Option<&Vec<String>>,
    recipient: Option<&Recipient>,
) -> Result<(), ValidationError> {
    if let Some(key_id) = key_id {
        check_len("KeyId", key_id.chars().count(), KEY_ID_LEN)?;
    }
    if let Some(tokens) = grant_tokens {
        check_len("GrantTokens", tokens.len(), (0, MAX_GRANT_TOKENS))?;
    }
    if let Some(r) = recipient {
        check_len(
            "Recipient.AttestationDocument",
            r.attestation_document.0.len(),
            ATTESTATION_DOCUMENT_LEN,
        )?;
    }
    Ok(())
}

fn check_number_of_bytes(n: u16) -> Result<(), ValidationError> {
    let (min, max) = NUMBER_OF_BYTES;
    check_len(
        "NumberOfBytes",
        usize::from(n),
        (usize::from(min), usize::from(max)),
    )
}

impl DecryptRequest {
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_len(
            "CiphertextBlob",
            self.ciphertext_blob.0.len(),
            CIPHERTEXT_BLOB_LEN,
        )?;
        check_common(
            self.key_id.as_deref(),
            self.grant_tokens.as_ref(),
            self.recipient.as_ref(),
        )
    }
}

impl GenerateDataKeyRequest {
    pub fn validate(&self) -> Result<(), ValidationError> {
        match (self.key_spec, self.number_of_bytes) {
            (Some(_), None) => {}
            (None, Some(n)) => check_number_of_bytes(n)?,
            _ => return Err(ValidationError::KeySpecXorNumberOfBytes),
        }
        check_common(
            Some(&self.key_id),
            self.grant_tokens.as_ref(),
            self.recipient.as_ref(),
        )
    }
}

impl EncryptRequest {
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_len("Plaintext", self.plaintext.0.len(), PLAINTEXT_LEN)?;
        check_common(Some(&self.key_id), self.grant_tokens.as_ref(), None)
    }
}

impl GenerateRandomRequest {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let n = self.number_of_bytes.ok_or(ValidationError::Missing {
            field: "NumberOfBytes",
        })?;
        check_number_of_bytes(n)?;
        check_common(None, None, self.recipient.as_ref())
    }
}

/// KMS error types we distinguish (KMS API Reference "Errors" and "Common Errors").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsErrorKind {
    AccessDenied,
    InvalidCiphertext,
    NotFound,
    InvalidState,
    Disabled,
    IncorrectKey,
    InvalidKeyUsage,
    InvalidGrantToken,
    Validation,
    UnrecognizedClient,
    InvalidSignature,
    IncompleteSignature,
    MissingAuthenticationToken,
    Throttling,
    KeyUnavailable,
    DependencyTimeout,
    Internal,
    /// Any other `__type`, namespace stripped.
    Other(String),
}

const KNOWN_KINDS: [(KmsErrorKind, &str, u16); 17] = [
    (KmsErrorKind::AccessDenied, "AccessDeniedException", 400),
    (
        KmsErrorKind::InvalidCiphertext,
        "InvalidCiphertextException",
        400,
    ),
    (KmsErrorKind::NotFound, "NotFoundException", 400),
    (KmsErrorKind::InvalidState, "KMSInvalidStateException", 400),
    (KmsErrorKind::Disabled, "DisabledException", 400),
    (KmsErrorKind::IncorrectKey, "IncorrectKeyException", 400),
    (
        KmsErrorKind::InvalidKeyUsage,
        "InvalidKeyUsageException",
        400,
    ),
    (
        KmsErrorKind::InvalidGrantToken,
        "InvalidGrantTokenException",
        400,
    ),
    (KmsErrorKind::Validation, "ValidationException", 400),
    (
        KmsErrorKind::UnrecognizedClient,
        "UnrecognizedClientException",
        400,
    ),
    (
        KmsErrorKind::InvalidSignature,
        "InvalidSignatureException",
        400,
    ),
    (
        KmsErrorKind::IncompleteSignature,
        "IncompleteSignature",
        400,
    ),
    (
        KmsErrorKind::MissingAuthenticationToken,
        "MissingAuthenticationToken",
        403,
    ),
    (KmsErrorKind::Throttling, "ThrottlingException", 400),
    (KmsErrorKind::KeyUnavailable, "KeyUnavailableException", 500),
    (
        KmsErrorKind::DependencyTimeout,
        "DependencyTimeoutException",
        503,
    ),
    (KmsErrorKind::Internal, "KMSInternalException", 500),
];

impl KmsErrorKind {
    /// The `__type` string AWS sends (without namespace).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Other(s) => s,
            known => KNOWN_KINDS
                .iter()
                .find(|(k, _, _)| k == known)
                .map_or("", |(_, name, _)| name),
        }
    }

    /// The HTTP status KMS uses for this error type.
    pub fn http_status(&self) -> u16 {
        KNOWN_KINDS
            .iter()
            .find(|(k, _, _)| k == self)
            .map_or(400, |(_, _, status)| *status)
    }

    /// Reads a `__type` value. Per the awsJson1.1 protocol (Smithy "Operation error
    /// serialization"), drop anything after a `:` and anything up to a `#`.
    pub fn from_type(value: &str) -> Self {
        let value = value.split(':').next().unwrap_or(value);
        let value = value.rsplit('#').next().unwrap_or(value);
        KNOWN_KINDS
            .iter()
            .find(|(_, name, _)| *name == value)
            .map_or_else(|| Self::Other(value.to_owned()), |(k, _, _)| k.clone())
    }
}

/// The awsJson error body: `{"__type": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsErrorBody {
    #[serde(rename = "__type")]
    pub error_type: String,
    /// Some services send `Message`; KMS sends `message`.
    #[serde(default, alias = "Message", skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl KmsErrorBody {
    pub fn new(kind: &KmsErrorKind, message: impl Into<String>) -> Self {
        Self {
            error_type: kind.as_str().to_owned(),
            message: Some(message.into()),
        }
    }

    pub fn kind(&self) -> KmsErrorKind {
        KmsErrorKind::from_type(&self.error_type)
    }
}

/// Why a recipient response was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RecipientResponseError {
    #[error("response body of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// The JSON did not match the response shape. serde's message is dropped: it can quote
    /// values from the body.
    #[error("malformed KMS response JSON at line {line}, column {column}")]
    MalformedJson { line: usize, column: usize },
    /// Fail closed: the data key was returned in the clear rather than to the attested key.
    #[error("KMS response carries Plaintext instead of CiphertextForRecipient")]
    PlaintextPresent,
    #[error("KMS response has no CiphertextForRecipient")]
    MissingCiphertextForRecipient,
    #[error("CiphertextForRecipient has length {len}, allowed 1..={max}")]
    CiphertextForRecipientLength { len: usize, max: usize },
    #[error("CiphertextForRecipient: {0}")]
    Cms(#[from] CmsError),
}

fn parse_json<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Result<T, RecipientResponseError> {
    if json.len() > MAX_MESSAGE_LEN {
        return Err(RecipientResponseError::TooLarge {
            len: json.len(),
            max: MAX_MESSAGE_LEN,
        });
    }
    serde_json::from_slice(json).map_err(|e| RecipientResponseError::MalformedJson {
        line: e.line(),
        column: e.column(),
    })
}

/// The fail-closed rule shared by all recipient responses.
fn recipient_from(
    plaintext: Option<&SecretBlob>,
    ciphertext_for_recipient: Option<&Blob>,
) -> Result<EnvelopedRecipient, RecipientResponseError> {
    if plaintext.is_some() {
        return Err(RecipientResponseError::PlaintextPresent);
    }
    let blob =
        ciphertext_for_recipient.ok_or(RecipientResponseError::MissingCiphertextForRecipient)?;
    let (min, max) = CIPHERTEXT_FOR_RECIPIENT_LEN;
    if !(min..=max).contains(&blob.0.len()) {
        return Err(RecipientResponseError::CiphertextForRecipientLength {
            len: blob.0.len(),
            max,
        });
    }
    Ok(cms::parse(&blob.0)?)
}

/// Parses a `Decrypt` response to a request that carried a `Recipient`. Fails closed if the
/// response carries `Plaintext` (even alongside `CiphertextForRecipient`).
pub fn decrypt_response_for_recipient(
    json: &[u8],
) -> Result<EnvelopedRecipient, RecipientResponseError> {
    let response: DecryptResponse = parse_json(json)?;
    recipient_from(
        response.plaintext.as_ref(),
        response.ciphertext_for_recipient.as_ref(),
    )
}

/// Parses a `GenerateDataKey` response to a request with a `Recipient`: the data key under the KMS
/// key (`CiphertextBlob`, to store) and the data key for the enclave. Fails closed on `Plaintext`.
pub fn generate_data_key_response_for_recipient(
    json: &[u8],
) -> Result<(Blob, EnvelopedRecipient), RecipientResponseError> {
    let response: GenerateDataKeyResponse = parse_json(json)?;
    let recipient = recipient_from(
        response.plaintext.as_ref(),
        response.ciphertext_for_recipient.as_ref(),
    )?;
    Ok((response.ciphertext_blob, recipient))
}

/// Parses a `GenerateRandom` response to a request with a `Recipient`. Fails closed on `Plaintext`.
pub fn generate_random_response_for_recipient(
    json: &[u8],
) -> Result<EnvelopedRecipient, RecipientResponseError> {
    let response: GenerateRandomResponse = parse_json(json)?;
    recipient_from(
        response.plaintext.as_ref(),
        response.ciphertext_for_recipient.as_ref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const VECTOR: &[u8] =
        include_bytes!("../tests/data/aws-nitro-enclaves-sdk-c_cms_test_input_ber_w_ctx.ber");

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    #[test]
    fn decrypt_request_serializes_with_aws_field_names() {
        let request = DecryptRequest {
            ciphertext_blob: Blob(vec![1, 2, 3]),
            key_id: Some("alias/model".into()),
            encryption_context: Some(BTreeMap::from([("model".into(), "m1".into())])),
            recipient: Some(Recipient::new(vec![0xd2, 0x84])),
            ..Default::default()
        };
        let value = serde_json::to_value(&request).unwrap();
        assert_eq!(
            value,
            json!({
                "CiphertextBlob": "AQID",
                "KeyId": "alias/model",
                "EncryptionContext": {"model": "m1"},
                "Recipient": {
                    "AttestationDocument": "0oQ=",
                    "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"
                }
            })
        );
        let back: DecryptRequest = serde_json::from_value(value).unwrap();
        assert_eq!(back, request);
    }

    #[test]
    fn generate_data_key_request_serializes_key_spec() {
        let request = GenerateDataKeyRequest {
            key_id: "1234abcd-12ab-34cd-56ef-1234567890ab".into(),
            key_spec: Some(DataKeySpec::Aes256),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"KeyId":"1234abcd-12ab-34cd-56ef-1234567890ab","KeySpec":"AES_256"}"#
        );
        request.validate().unwrap();
    }

    #[test]
    fn generate_random_request_and_encrypt_request_serialize() {
        let request = GenerateRandomRequest {
            number_of_bytes: Some(32),
            recipient: Some(Recipient::new(vec![1])),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"NumberOfBytes":32,"Recipient":{"AttestationDocument":"AQ==","KeyEncryptionAlgorithm":"RSAES_OAEP_SHA_256"}}"#
        );
        let encrypt = EncryptRequest {
            key_id: "k".into(),
            plaintext: SecretBlob::new(vec![0xff]),
            encryption_algorithm: None,
            encryption_context: None,
            grant_tokens: None,
        };
        assert_eq!(
            serde_json::to_string(&encrypt).unwrap(),
            r#"{"KeyId":"k","Plaintext":"/w=="}"#
        );
    }

    #[test]
    fn responses_deserialize_from_aws_shapes() {
        let body = json!({
            "CiphertextBlob": "AQID",
            "KeyId": "arn:aws:kms:us-east-1:111122223333:key/k",
            "CiphertextForRecipient": b64(VECTOR),
        });
        let r: GenerateDataKeyResponse = serde_json::from_value(body).unwrap();
        assert_eq!(r.ciphertext_blob, Blob(vec![1, 2, 3]));
        assert!(r.plaintext.is_none());
        let e: EncryptResponse = serde_json::from_str(
            r#"{"CiphertextBlob":"AQID","KeyId":"k","EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}"#,
        )
        .unwrap();
        assert_eq!(e.encryption_algorithm.as_deref(), Some("SYMMETRIC_DEFAULT"));
    }

    #[test]
    fn rejects_unknown_key_encryption_algorithm() {
        let r = serde_json::from_str::<Recipient>(
            r#"{"AttestationDocument":"AQ==","KeyEncryptionAlgorithm":"RSAES_OAEP_SHA_1"}"#,
        );
        assert!(r.is_err());
    }

    #[test]
    fn decrypt_response_for_recipient_parses_cms() {
        let body = json!({
            "KeyId": "k",
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            "CiphertextForRecipient": b64(VECTOR),
        })
        .to_string();
        let r = decrypt_response_for_recipient(body.as_bytes()).unwrap();
        assert_eq!(r.encrypted_content.len(), 16);
        // AWS documents Plaintext as null with a Recipient: null is absent, not present.
        let body = json!({"Plaintext": null, "CiphertextForRecipient": b64(VECTOR)}).to_string();
        assert!(decrypt_response_for_recipient(body.as_bytes()).is_ok());
    }

    #[test]
    fn recipient_responses_fail_closed_on_plaintext() {
        let with_both =
            json!({"Plaintext": "AAAA", "CiphertextForRecipient": b64(VECTOR)}).to_string();
        let only_plaintext = json!({"KeyId": "k", "Plaintext": "AAAA"}).to_string();
        for body in [&with_both, &only_plaintext] {
            assert_eq!(
                decrypt_response_for_recipient(body.as_bytes()).unwrap_err(),
                RecipientResponseError::PlaintextPresent
            );
            assert_eq!(
                generate_random_response_for_recipient(body.as_bytes()).unwrap_err(),
                RecipientResponseError::PlaintextPresent
            );
        }
        let gdk = json!({"CiphertextBlob": "AQID", "KeyId": "k", "Plaintext": "AAAA",
            "CiphertextForRecipient": b64(VECTOR)})
        .to_string();
        assert_eq!(
            generate_data_key_response_for_recipient(gdk.as_bytes()).unwrap_err(),
            RecipientResponseError::PlaintextPresent
        );
    }

    #[test]
    fn recipient_response_without_ciphertext_for_recipient_is_refused() {
        assert_eq!(
            decrypt_response_for_recipient(br#"{"KeyId":"k"}"#).unwrap_err(),
            RecipientResponseError::MissingCiphertextForRecipient
        );
        let body = json!({"CiphertextForRecipient": ""}).to_string();
        assert!(matches!(
            decrypt_response_for_recipient(body.as_bytes()).unwrap_err(),
            RecipientResponseError::CiphertextForRecipientLength { len: 0, .. }
        ));
        let body = json!({"CiphertextForRecipient": "AQID"}).to_string();
        assert!(matches!(
            decrypt_response_for_recipient(body.as_bytes()).unwrap_err(),
            RecipientResponseError::Cms(_)
        ));
    }

    #[test]
    fn generate_data_key_response_for_recipient_returns_blob_and_recipient() {
        let body = json!({"CiphertextBlob": "AQID", "KeyId": "k",
            "CiphertextForRecipient": b64(VECTOR)})
        .to_string();
        let (blob, r) = generate_data_key_response_for_recipient(body.as_bytes()).unwrap();
        assert_eq!(blob.0, [1, 2, 3]);
        assert_eq!(r.encrypted_key.len(), 256);
    }

    #[test]
    fn malformed_json_error_does_not_quote_the_body() {
        let err = decrypt_response_for_recipient(br#"{"Plaintext": 12345678}"#).unwrap_err();
        assert!(matches!(err, RecipientResponseError::MalformedJson { .. }));
        assert!(!err.to_string().contains("12345678"));
        let big = vec![b' '; MAX_MESSAGE_LEN + 1];
        assert!(matches!(
            decrypt_response_for_recipient(&big).unwrap_err(),
            RecipientResponseError::TooLarge { .. }
        ));
    }

    #[test]
    fn validate_enforces_aws_limits() {
        let mut d = DecryptRequest {
            ciphertext_blob: Blob(vec![0; 6144]),
            ..Default::default()
        };
        d.validate().unwrap();
        d.ciphertext_blob = Blob(vec![0; 6145]);
        assert!(matches!(
            d.validate(),
            Err(ValidationError::Length {
                field: "CiphertextBlob",
                ..
            })
        ));
        d.ciphertext_blob = Blob(vec![]);
        assert!(d.validate().is_err());
        d.ciphertext_blob = Blob(vec![0]);
        d.key_id = Some("x".repeat(2049));
        assert!(matches!(
            d.validate(),
            Err(ValidationError::Length { field: "KeyId", .. })
        ));
        d.key_id = Some(String::new());
        assert!(d.validate().is_err());

        let mut g = GenerateRandomRequest {
            number_of_bytes: Some(1024),
            ..Default::default()
        };
        g.validate().unwrap();
        g.number_of_bytes = Some(1025);
        assert!(g.validate().is_err());
        g.number_of_bytes = Some(0);
        assert!(g.validate().is_err());

        let mut k = GenerateDataKeyRequest {
            key_id: "k".into(),
            key_spec: Some(DataKeySpec::Aes256),
            number_of_bytes: Some(32),
            ..Default::default()
        };
        assert_eq!(k.validate(), Err(ValidationError::KeySpecXorNumberOfBytes));
        k.key_spec = None;
        k.validate().unwrap();
        k.grant_tokens = Some(vec![String::new(); 11]);
        assert!(k.validate().is_err());

        let e = EncryptRequest {
            key_id: "k".into(),
            plaintext: SecretBlob::new(vec![0; 4097]),
            encryption_algorithm: None,
            encryption_context: None,
            grant_tokens: None,
        };
        assert!(matches!(
            e.validate(),
            Err(ValidationError::Length {
                field: "Plaintext",
                ..
            })
        ));
    }

    #[test]
    fn error_body_round_trips_with_typed_kind() {
        let body = KmsErrorBody::new(&KmsErrorKind::AccessDenied, "denied by key policy");
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"__type":"AccessDeniedException","message":"denied by key policy"}"#
        );
        let parsed: KmsErrorBody =
            serde_json::from_str(r#"{"__type":"NotFoundException","Message":"no key"}"#).unwrap();
        assert_eq!(parsed.kind(), KmsErrorKind::NotFound);
        assert_eq!(parsed.message.as_deref(), Some("no key"));
        assert_eq!(KmsErrorKind::InvalidCiphertext.http_status(), 400);
        assert_eq!(KmsErrorKind::Internal.http_status(), 500);
    }

    #[test]
    fn error_kind_strips_awsjson_namespace_and_suffix() {
        assert_eq!(
            KmsErrorKind::from_type("com.amazonaws.kms#KMSInvalidStateException"),
            KmsErrorKind::InvalidState
        );
        assert_eq!(
            KmsErrorKind::from_type("UnrecognizedClientException:http://internal.amazon.com/"),
            KmsErrorKind::UnrecognizedClient
        );
        assert_eq!(
            KmsErrorKind::from_type("SomethingNewException"),
            KmsErrorKind::Other("SomethingNewException".into())
        );
        for kind in [
            KmsErrorKind::InvalidSignature,
            KmsErrorKind::Disabled,
            KmsErrorKind::IncorrectKey,
            KmsErrorKind::Validation,
        ] {
            assert_eq!(KmsErrorKind::from_type(kind.as_str()), kind);
        }
    }

    #[test]
    fn operation_targets_match_x_amz_target() {
        assert_eq!(Operation::Decrypt.target(), "TrentService.Decrypt");
        assert_eq!(
            Operation::from_target("TrentService.GenerateDataKey"),
            Some(Operation::GenerateDataKey)
        );
        assert_eq!(Operation::from_target("TrentService.CreateGrant"), None);
    }

    #[test]
    fn blob_debug_shows_length_only() {
        assert_eq!(format!("{:?}", Blob(vec![1, 2, 3])), "Blob(3 bytes)");
    }
}

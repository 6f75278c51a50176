//! The KMS JSON 1.1 request handler: authentication (SigV4), dispatch on `X-Amz-Target`,
//! authorisation (key policy), the operations, and AWS-shaped errors. Independent of the HTTP
//! server: it takes a request's parts and the time, and returns status, error type and body.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use getrandom::SysRng;
use sealed_attestation::{PcrPolicy, TrustAnchor, VerifyOptions};
use sealed_kms::api::{
    self, Blob, DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse,
    GenerateDataKeyRequest, GenerateDataKeyResponse, GenerateRandomRequest, GenerateRandomResponse,
    KmsErrorBody, KmsErrorKind, Recipient, SecretBlob,
};
use sealed_kms::{cms, sigv4};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::policy::{Policy, RequestContext};
use crate::state::{BlobError, Key, KeyStore};
use crate::{Credential, SYMMETRIC_DEFAULT};

/// A response before HTTP framing.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// `Some` on errors: the `__type`, also sent as `x-amzn-ErrorType`.
    pub error_type: Option<String>,
    pub body: Vec<u8>,
}

/// An error reply in AWS's shape.
#[derive(Debug)]
pub struct Failure {
    kind: KmsErrorKind,
    message: String,
}

fn fail(kind: KmsErrorKind, message: impl Into<String>) -> Failure {
    Failure {
        kind,
        message: message.into(),
    }
}

fn other(name: &str, message: impl Into<String>) -> Failure {
    fail(KmsErrorKind::Other(name.to_owned()), message)
}

impl Failure {
    fn into_reply(self) -> Reply {
        // HTTP status per type (KMS API Reference "Errors"); the few not in the shared table
        // are 400 on AWS too.
        let status = self.kind.http_status();
        let body = KmsErrorBody::new(&self.kind, self.message);
        Reply {
            status,
            error_type: Some(body.error_type.clone()),
            body: serde_json::to_vec(&body).unwrap_or_default(),
        }
    }
}

/// Everything the handler needs besides the key store.
pub struct Service {
    pub region: String,
    pub account_id: String,
    pub credentials: Vec<Credential>,
    pub attestation_root: Option<TrustAnchor>,
    pub max_attestation_age: Duration,
    pub store: Mutex<KeyStore>,
}

/// The attested facts of a verified `Recipient`.
struct Attested {
    keys: BTreeMap<String, String>,
    public_key: sealed_kms::rsa::PublicKey,
    spki: Vec<u8>,
}

impl Service {
    /// Handles one request. `headers` are as received (any case).
    pub fn handle(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
        now: SystemTime,
    ) -> Reply {
        match self.handle_inner(method, path, query, headers, body, now) {
            Ok(value) => Reply {
                status: 200,
                error_type: None,
                body: value.to_vec(),
            },
            Err(f) => f.into_reply(),
        }
    }

    fn handle_inner(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
        now: SystemTime,
    ) -> Result<Zeroizing<Vec<u8>>, Failure> {
        let principal = self.authenticate(method, path, query, headers, body, now)?;
        if method != "POST" || path != "/" {
            return Err(other(
                "UnknownOperationException",
                "KMS accepts only POST / (awsJson1.1)",
            ));
        }
        let target = header(headers, "x-amz-target").unwrap_or_default();
        let op = target.strip_prefix("TrentService.").unwrap_or_default();
        let content_type = header(headers, "content-type").unwrap_or_default();
        if !content_type.starts_with(api::CONTENT_TYPE) {
            return Err(other(
                "UnknownOperationException",
                "Content-Type must be application/x-amz-json-1.1",
            ));
        }
        tracing::info!(op, principal = %principal.principal_arn, "kms request");
        let call = Call {
            svc: self,
            principal: &principal.principal_arn,
            now,
        };
        let out = match op {
            "CreateKey" => call.create_key(parse(body)?),
            "DescribeKey" => call.describe_key(parse(body)?),
            "GetKeyPolicy" => call.get_key_policy(parse(body)?),
            "PutKeyPolicy" => call.put_key_policy(parse(body)?),
            "Encrypt" => call.encrypt(parse(body)?),
            "Decrypt" => call.decrypt(parse(body)?),
            "GenerateDataKey" => call.generate_data_key(parse(body)?),
            "GenerateRandom" => call.generate_random(parse(body)?),
            _ => Err(other(
                "UnknownOperationException",
                format!("unsupported operation {target:?}"),
            )),
        }?;
        Ok(out)
    }

    /// SigV4 (General Reference "Signature Version 4"), in AWS's order of checks.
    fn authenticate(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
        now: SystemTime,
    ) -> Result<&Credential, Failure> {
        let Some(auth) = header(headers, "authorization") else {
            return Err(fail(
                KmsErrorKind::MissingAuthenticationToken,
                "Missing Authentication Token",
            ));
        };
        let auth = sigv4::parse_authorization(auth)
            .map_err(|e| fail(KmsErrorKind::IncompleteSignature, e.to_string()))?;
        let invalid_token = || {
            fail(
                KmsErrorKind::UnrecognizedClient,
                "The security token included in the request is invalid.",
            )
        };
        let cred = self
            .credentials
            .iter()
            .find(|c| c.access_key_id == auth.access_key_id)
            .ok_or_else(invalid_token)?;
        let sent_token = header(headers, "x-amz-security-token");
        let token_ok = match (&cred.session_token, sent_token) {
            (None, None) => true,
            (Some(want), Some(got)) => {
                want.len() == got.len()
                    && want
                        .bytes()
                        .zip(got.bytes())
                        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                        == 0
            }
            _ => false,
        };
        if !token_ok {
            return Err(invalid_token());
        }
        let request = sigv4::ReceivedRequest {
            method,
            path,
            query,
            headers,
            body,
        };
        let verified = sigv4::verify(
            &request,
            &auth,
            &cred.secret_access_key,
            &self.region,
            sigv4::KMS_SERVICE,
        )
        .map_err(|e| match e {
            sigv4::SigV4Error::SignatureMismatch => fail(
                KmsErrorKind::InvalidSignature,
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method. Consult the service \
                 documentation for details.",
            ),
            sigv4::SigV4Error::ScopeMismatch(_) => fail(
                KmsErrorKind::InvalidSignature,
                format!(
                    "Credential should be scoped to a valid region and service: {}/{}",
                    self.region,
                    sigv4::KMS_SERVICE
                ),
            ),
            other => fail(KmsErrorKind::IncompleteSignature, other.to_string()),
        })?;
        sigv4::check_clock_skew(verified.time, now, sigv4::MAX_CLOCK_SKEW).map_err(|_| {
            fail(
                KmsErrorKind::InvalidSignature,
                "Signature expired or not yet current: the request time is more than 15 \
                 minutes from the server's clock.",
            )
        })?;
        Ok(cred)
    }

    /// Verifies a `Recipient` document against the configured root and extracts the condition
    /// keys and the RSA key.
    fn attest(&self, recipient: &Recipient, now: SystemTime) -> Result<Attested, Failure> {
        let Some(anchor) = &self.attestation_root else {
            return Err(fail(
                KmsErrorKind::Validation,
                "this mock KMS has no attestation root configured (--attestation-root); \
                 Recipient requests are refused",
            ));
        };
        let doc = sealed_attestation::verify(
            &recipient.attestation_document.0,
            &VerifyOptions {
                trust_anchor: anchor.clone(),
                pcr_policy: PcrPolicy::AcceptAny,
                expected_nonce: None,
                max_age: Some(self.max_attestation_age),
                // Debug-mode documents (PCRs zero) are let through: key-policy PCR conditions
                // then fail on their own, as on AWS.
                allow_debug: true,
                now,
            },
        )
        .map_err(|e| {
            fail(
                KmsErrorKind::Validation,
                format!("Invalid attestation document: {} check failed", e.check()),
            )
        })?;
        let spki = doc.public_key.clone().ok_or_else(|| {
            fail(
                KmsErrorKind::Validation,
                "attestation document has no public_key",
            )
        })?;
        let public_key = cms::recipient_public_key_from_spki(&spki)
            .map_err(|e| fail(KmsErrorKind::Validation, e.to_string()))?;
        let mut keys = BTreeMap::new();
        for (index, value) in &doc.pcrs {
            keys.insert(
                format!("kms:RecipientAttestation:PCR{index}"),
                hex::encode(value),
            );
        }
        if let Some(pcr0) = doc.pcrs.get(&0) {
            keys.insert(
                "kms:RecipientAttestation:ImageSha384".to_owned(),
                hex::encode(pcr0),
            );
        }
        Ok(Attested {
            keys,
            public_key,
            spki,
        })
    }
}

fn header<'a>(headers: &[(&str, &'a [u8])], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Failure> {
    // serde_json errors name positions and types, never input bytes.
    serde_json::from_slice(body).map_err(|e| {
        other(
            "SerializationException",
            format!("request body does not match the operation's input: {e}"),
        )
    })
}

fn json_reply(value: &impl serde::Serialize) -> Result<Zeroizing<Vec<u8>>, Failure> {
    serde_json::to_vec(value)
        .map(Zeroizing::new)
        .map_err(|_| fail(KmsErrorKind::Internal, "response encoding failed"))
}

fn random_bytes(n: usize) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let mut out = Zeroizing::new(vec![0u8; n]);
    getrandom::fill(&mut out).map_err(|_| fail(KmsErrorKind::Internal, "RNG failed"))?;
    Ok(out)
}

/// One authenticated call.
struct Call<'a> {
    svc: &'a Service,
    principal: &'a str,
    now: SystemTime,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateKeyRequest {
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    key_usage: Option<String>,
    #[serde(default)]
    key_spec: Option<String>,
    #[serde(default)]
    customer_master_key_spec: Option<String>,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    bypass_policy_lockout_safety_check: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdRequest {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutKeyPolicyRequest {
    key_id: String,
    #[serde(default)]
    policy_name: Option<String>,
    policy: String,
    #[serde(default)]
    bypass_policy_lockout_safety_check: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetKeyPolicyRequest {
    key_id: String,
    #[serde(default)]
    policy_name: Option<String>,
}

fn key_metadata(key: &Key, account_id: &str) -> Value {
    // Shape of the KMS `KeyMetadata` structure; `CreationDate` is epoch seconds (awsJson
    // timestamps are numbers).
    json!({
        "AWSAccountId": account_id,
        "KeyId": key.key_id,
        "Arn": key.arn,
        "CreationDate": key.creation_date,
        "Enabled": key.enabled,
        "Description": key.description,
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": if key.enabled { "Enabled" } else { "Disabled" },
        "Origin": "AWS_KMS",
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": SYMMETRIC_DEFAULT,
        "KeySpec": SYMMETRIC_DEFAULT,
        "EncryptionAlgorithms": [SYMMETRIC_DEFAULT],
        "MultiRegion": false,
    })
}

impl Call<'_> {
    fn store(&self) -> Result<std::sync::MutexGuard<'_, KeyStore>, Failure> {
        self.svc
            .store
            .lock()
            .map_err(|_| fail(KmsErrorKind::Internal, "key store unavailable"))
    }

    fn context<'k>(
        &'k self,
        action: &'k str,
        key_arn: &'k str,
        keys: BTreeMap<String, String>,
    ) -> RequestContext<'k> {
        RequestContext {
            principal_arn: self.principal,
            account_id: &self.svc.account_id,
            action,
            resource_arn: key_arn,
            keys,
        }
    }

    /// Key-policy check; AWS's message for an implicit or explicit deny.
    fn authorize(
        &self,
        key: &Key,
        action: &str,
        keys: BTreeMap<String, String>,
    ) -> Result<(), Failure> {
        if key.policy.allows(&self.context(action, &key.arn, keys)) {
            return Ok(());
        }
        Err(fail(
            KmsErrorKind::AccessDenied,
            format!(
                "User: {} is not authorized to perform: {action} on resource: {} because no \
                 resource-based policy allows the {action} action",
                self.principal, key.arn
            ),
        ))
    }

    fn not_found(key_id: &str) -> Failure {
        fail(
            KmsErrorKind::NotFound,
            format!(
                "Key '{}' does not exist",
                key_id.chars().take(2048).collect::<String>()
            ),
        )
    }

    fn validate_policy(&self, text: &str, key_arn: &str, bypass: bool) -> Result<Policy, Failure> {
        let policy = Policy::parse(text)
            .map_err(|e| other("MalformedPolicyDocumentException", e.to_string()))?;
        // AWS's lockout safety check: the caller must still be able to change the policy.
        if !bypass && !policy.allows(&self.context("kms:PutKeyPolicy", key_arn, BTreeMap::new())) {
            return Err(other(
                "MalformedPolicyDocumentException",
                "The new key policy will not allow you to update the key policy in the future.",
            ));
        }
        Ok(policy)
    }

    fn create_key(&self, req: CreateKeyRequest) -> Result<Zeroizing<Vec<u8>>, Failure> {
        let spec_ok = |s: &Option<String>| s.as_deref().is_none_or(|s| s == SYMMETRIC_DEFAULT);
        if !spec_ok(&req.key_spec)
            || !spec_ok(&req.customer_master_key_spec)
            || req
                .key_usage
                .as_deref()
                .is_some_and(|u| u != "ENCRYPT_DECRYPT")
            || req.origin.as_deref().is_some_and(|o| o != "AWS_KMS")
        {
            return Err(other(
                "UnsupportedOperationException",
                "this mock KMS supports only SYMMETRIC_DEFAULT ENCRYPT_DECRYPT keys with origin AWS_KMS",
            ));
        }
        let description = req.description.unwrap_or_default();
        if description.len() > 8192 {
            return Err(fail(
                KmsErrorKind::Validation,
                "Description exceeds 8192 characters",
            ));
        }
        let text = req
            .policy
            .unwrap_or_else(|| Policy::default_text(&self.svc.account_id));
        // The ARN is not known before creation; the safety check uses a resource wildcard.
        let policy = self.validate_policy(
            &text,
            &format!(
                "arn:aws:kms:{}:{}:key/*",
                self.svc.region, self.svc.account_id
            ),
            req.bypass_policy_lockout_safety_check.unwrap_or(false),
        )?;
        let mut store = self.store()?;
        let key = store
            .create(
                &self.svc.region,
                &self.svc.account_id,
                description,
                text,
                policy,
                self.now,
            )
            .map_err(|e| fail(KmsErrorKind::Internal, e.to_string()))?;
        let meta = key_metadata(key, &self.svc.account_id);
        let key_id = key.key_id.clone();
        store.save().map_err(|e| {
            tracing::error!(error = %e, "saving state failed");
            fail(KmsErrorKind::Internal, "state could not be saved")
        })?;
        tracing::info!(%key_id, "key created");
        json_reply(&json!({ "KeyMetadata": meta }))
    }

    fn describe_key(&self, req: KeyIdRequest) -> Result<Zeroizing<Vec<u8>>, Failure> {
        let store = self.store()?;
        let key = store
            .find(&req.key_id)
            .ok_or_else(|| Self::not_found(&req.key_id))?;
        self.authorize(key, "kms:DescribeKey", BTreeMap::new())?;
        json_reply(&json!({ "KeyMetadata": key_metadata(key, &self.svc.account_id) }))
    }

    fn get_key_policy(&self, req: GetKeyPolicyRequest) -> Result<Zeroizing<Vec<u8>>, Failure> {
        check_policy_name(req.policy_name.as_deref())?;
        let store = self.store()?;
        let key = store
            .find(&req.key_id)
            .ok_or_else(|| Self::not_found(&req.key_id))?;
        self.authorize(key, "kms:GetKeyPolicy", BTreeMap::new())?;
        json_reply(&json!({ "Policy": key.policy_text, "PolicyName": "default" }))
    }

    fn put_key_policy(&self, req: PutKeyPolicyRequest) -> Result<Zeroizing<Vec<u8>>, Failure> {
        check_policy_name(req.policy_name.as_deref())?;
        let mut store = self.store()?;
        let key = store
            .find(&req.key_id)
            .ok_or_else(|| Self::not_found(&req.key_id))?;
        self.authorize(key, "kms:PutKeyPolicy", BTreeMap::new())?;
        let policy = self.validate_policy(
            &req.policy,
            &key.arn,
            req.bypass_policy_lockout_safety_check.unwrap_or(false),
        )?;
        let key = store
            .find_mut(&req.key_id)
            .ok_or_else(|| Self::not_found(&req.key_id))?;
        key.policy = policy;
        key.policy_text = req.policy;
        let key_id = key.key_id.clone();
        store.save().map_err(|e| {
            tracing::error!(error = %e, "saving state failed");
            fail(KmsErrorKind::Internal, "state could not be saved")
        })?;
        tracing::info!(%key_id, "key policy replaced");
        // PutKeyPolicy has no output members: an empty JSON object.
        Ok(Zeroizing::new(b"{}".to_vec()))
    }

    fn encrypt(&self, req: EncryptRequest) -> Result<Zeroizing<Vec<u8>>, Failure> {
        req.validate()
            .map_err(|e| fail(KmsErrorKind::Validation, e.to_string()))?;
        check_algorithm(req.encryption_algorithm.as_deref())?;
        let store = self.store()?;
        let key = store
            .find(&req.key_id)
            .ok_or_else(|| Self::not_found(&req.key_id))?;
        self.authorize(key, "kms:Encrypt", BTreeMap::new())?;
        let blob = key
            .encrypt(
                req.plaintext.expose(),
                &req.encryption_context.unwrap_or_default(),
            )
            .map_err(|e| fail(KmsErrorKind::Internal, e.to_string()))?;
        json_reply(&EncryptResponse {
            ciphertext_blob: Blob(blob),
            key_id: key.arn.clone(),
            encryption_algorithm: Some(SYMMETRIC_DEFAULT.to_owned()),
        })
    }

    fn decrypt(&self, req: DecryptRequest) -> Result<Zeroizing<Vec<u8>>, Failure> {
        req.validate()
            .map_err(|e| fail(KmsErrorKind::Validation, e.to_string()))?;
        check_algorithm(req.encryption_algorithm.as_deref())?;
        let attested = match &req.recipient {
            Some(r) => Some(self.attest(r, self.now)?),
            None => None,
        };
        let store = self.store()?;
        let invalid = || fail(KmsErrorKind::InvalidCiphertext, "");
        let key = store
            .blob_key(&req.ciphertext_blob.0)
            .map_err(|_| invalid())?;
        if let Some(asked) = &req.key_id
            && store.find(asked).map(|k| &k.key_id) != Some(&key.key_id)
        {
            return Err(fail(
                KmsErrorKind::IncorrectKey,
                "The key ID in the request does not identify a KMS key that can perform this operation.",
            ));
        }
        self.authorize(
            key,
            "kms:Decrypt",
            attested
                .as_ref()
                .map(|a| a.keys.clone())
                .unwrap_or_default(),
        )?;
        let plaintext = key
            .decrypt(
                &req.ciphertext_blob.0,
                &req.encryption_context.unwrap_or_default(),
            )
            .map_err(|_: BlobError| invalid())?;
        let mut resp = DecryptResponse {
            key_id: Some(key.arn.clone()),
            encryption_algorithm: Some(SYMMETRIC_DEFAULT.to_owned()),
            ..Default::default()
        };
        match attested {
            Some(a) => resp.ciphertext_for_recipient = Some(Blob(for_recipient(&plaintext, &a)?)),
            None => resp.plaintext = Some(SecretBlob(plaintext)),
        }
        json_reply(&resp)
    }

    fn generate_data_key(
        &self,
        req: GenerateDataKeyRequest,
    ) -> Result<Zeroizing<Vec<u8>>, Failure> {
        req.validate()
            .map_err(|e| fail(KmsErrorKind::Validation, e.to_string()))?;
        let len = match (req.key_spec, req.number_of_bytes) {
            (Some(spec), None) => spec.key_len(),
            (None, Some(n)) => usize::from(n),
            _ => {
                return Err(fail(
                    KmsErrorKind::Validation,
                    "exactly one of KeySpec and NumberOfBytes must be given",
                ));
            }
        };
        let attested = match &req.recipient {
            Some(r) => Some(self.attest(r, self.now)?),
            None => None,
        };
        let store = self.store()?;
        let key = store
            .find(&req.key_id)
            .ok_or_else(|| Self::not_found(&req.key_id))?;
        self.authorize(
            key,
            "kms:GenerateDataKey",
            attested
                .as_ref()
                .map(|a| a.keys.clone())
                .unwrap_or_default(),
        )?;
        let data_key = random_bytes(len)?;
        let blob = key
            .encrypt(&data_key, &req.encryption_context.unwrap_or_default())
            .map_err(|e| fail(KmsErrorKind::Internal, e.to_string()))?;
        let mut resp = GenerateDataKeyResponse {
            ciphertext_blob: Blob(blob),
            key_id: key.arn.clone(),
            ..Default::default()
        };
        match attested {
            Some(a) => resp.ciphertext_for_recipient = Some(Blob(for_recipient(&data_key, &a)?)),
            None => resp.plaintext = Some(SecretBlob(data_key)),
        }
        json_reply(&resp)
    }

    fn generate_random(&self, req: GenerateRandomRequest) -> Result<Zeroizing<Vec<u8>>, Failure> {
        req.validate()
            .map_err(|e| fail(KmsErrorKind::Validation, e.to_string()))?;
        if req.custom_key_store_id.is_some() {
            return Err(other(
                "CustomKeyStoreNotFoundException",
                "this mock KMS has no custom key stores",
            ));
        }
        let n = req
            .number_of_bytes
            .ok_or_else(|| fail(KmsErrorKind::Validation, "NumberOfBytes is required"))?;
        let bytes = random_bytes(usize::from(n))?;
        let mut resp = GenerateRandomResponse::default();
        match &req.recipient {
            // GenerateRandom is authorised by IAM policy on AWS (no key); the mock has no IAM,
            // so any authenticated caller may; the document is still verified.
            Some(r) => {
                let a = self.svc.attest(r, self.now)?;
                resp.ciphertext_for_recipient = Some(Blob(for_recipient(&bytes, &a)?));
            }
            None => resp.plaintext = Some(SecretBlob(bytes)),
        }
        json_reply(&resp)
    }
}

impl Call<'_> {
    fn attest(&self, r: &Recipient, now: SystemTime) -> Result<Attested, Failure> {
        self.svc.attest(r, now)
    }
}

fn for_recipient(plaintext: &[u8], a: &Attested) -> Result<Vec<u8>, Failure> {
    cms::build_ciphertext_for_recipient(
        plaintext,
        &a.public_key,
        &cms::subject_key_id(&a.spki),
        &mut SysRng,
    )
    .map_err(|e| fail(KmsErrorKind::Internal, e.to_string()))
}

fn check_algorithm(alg: Option<&str>) -> Result<(), Failure> {
    match alg {
        None | Some(SYMMETRIC_DEFAULT) => Ok(()),
        Some(_) => Err(fail(
            KmsErrorKind::InvalidKeyUsage,
            "symmetric keys support only the SYMMETRIC_DEFAULT encryption algorithm",
        )),
    }
}

fn check_policy_name(name: Option<&str>) -> Result<(), Failure> {
    match name {
        None | Some("default") => Ok(()),
        Some(_) => Err(fail(
            KmsErrorKind::NotFound,
            "The only valid policy name is default",
        )),
    }
}

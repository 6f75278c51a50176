//! [`Client`] and the attested [`Session`].
//!
//! A [`Session`] can only be obtained from [`Client::attest`], which verifies a fresh attestation
//! document (nonce chosen here) against the client's [`Policy`], checks the manifest commitment, and
//! takes the enclave's public key from the verified document. [`Session::infer`] is the only way to
//! send inputs, and it seals them to that key. There is no flag, constructor or feature that skips
//! any of this.
//!
//! The enclave rotates its key (docs/protocol.md §2.3). When the host answers a request with
//! `unsupported_key_config` (the enclave could not open it: the key it was sealed to has been
//! retired, or the enclave restarted), [`Session::infer`] attests again under the same policy with
//! a fresh nonce and full verification, and sends the request once more, sealed to the new key
//! under a new request id. Requests the enclave did open are never sent again automatically,
//! whatever their sealed answer (a retry of a request that ran would run it twice).

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand_core::UnwrapErr;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;

use sealed_attestation::{VerifiedDocument, commitment};
use sealed_crypto::{
    KeyConfig, PreparedRequest, REQUEST_OVERHEAD, REQUEST_PREFIX_LEN, RESPONSE_OVERHEAD, TAG_LEN,
};
use sealed_wire::limits::{
    MAX_ATTESTATION_DOC_LEN, MAX_MANIFEST_LEN, MAX_SEALED_MESSAGE_LEN, MAX_TENSORS,
};
use sealed_wire::message::valid_model_id;
use sealed_wire::{InferRequest, InferResponse, ModelManifest, NamedTensor, REQUEST_ID_LEN};

use crate::error::{ClientError, sanitize};
use crate::http::{self, HostUrl, MAX_ATTESTATION_RESPONSE_LEN};
use crate::policy::{AcceptedAs, Policy};

/// Length of the attestation nonce the client picks (the host accepts 16..=64 bytes).
pub const NONCE_LEN: usize = 32;
/// Largest sealed response read from the host.
pub const MAX_INFER_RESPONSE_LEN: usize = MAX_SEALED_MESSAGE_LEN + RESPONSE_OVERHEAD;
/// Default timeout of one HTTP exchange (attestation or inference).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Connection timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of one `sealed-host`, with the policy its enclave must satisfy.
#[derive(Debug, Clone)]
pub struct Client {
    host: HostUrl,
    policy: Policy,
    http: reqwest::Client,
}

/// The host's attestation response.
#[derive(Deserialize)]
struct AttestationBody {
    document: String,
    manifest: String,
}

impl Client {
    /// A client for the host at `host_url` (`http://HOST:PORT[/PREFIX]`). Fails on a URL this
    /// build cannot use (anything but `http://`) and on a policy that says nothing definite
    /// ([`Policy::validate`]).
    pub fn new(host_url: &str, policy: Policy) -> Result<Client, ClientError> {
        Client::with_timeout(host_url, policy, DEFAULT_TIMEOUT)
    }

    /// [`Client::new`] with a timeout per HTTP exchange other than [`DEFAULT_TIMEOUT`].
    pub fn with_timeout(
        host_url: &str,
        policy: Policy,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let host = HostUrl::parse(host_url)?;
        policy.validate()?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout)
            // The host API never redirects; following one would only move sealed bytes elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|source| ClientError::Http {
                step: "client_setup",
                source,
            })?;
        Ok(Client { host, policy, http })
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Fetches a fresh attestation document for a random nonce and verifies it (see the module
    /// docs). Only a document that passes every check yields a [`Session`].
    pub async fn attest(&self) -> Result<Session, ClientError> {
        let attested = Arc::new(self.attest_enclave().await?);
        Ok(Session {
            client: self.clone(),
            first: Arc::clone(&attested),
            current: Arc::new(RwLock::new(attested)),
            reattesting: Arc::new(tokio::sync::Mutex::new(())),
            next: NextSetup::default(),
        })
    }

    /// One full attestation: a fresh nonce, the document and manifest, every check.
    async fn attest_enclave(&self) -> Result<AttestedEnclave, ClientError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(ClientError::Random)?;

        let (document, manifest_bytes) = self.fetch_attestation(&nonce).await?;
        let opts = self
            .policy
            .verify_options(Some(nonce.to_vec()), SystemTime::now())?;
        AttestedEnclave::verify(&self.policy, &document, &manifest_bytes, &opts)
    }

    /// `GET /v1/attestation?nonce=HEX` → the document and manifest bytes, still unverified.
    async fn fetch_attestation(&self, nonce: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ClientError> {
        const STEP: &str = "attestation_request";
        let mut url = self.host.endpoint("attestation")?;
        url.query_pairs_mut()
            .append_pair("nonce", &hex::encode(nonce));
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|source| ClientError::Http { step: STEP, source })?;
        if response.status() != StatusCode::OK {
            return Err(http::host_error(response, STEP).await);
        }
        let body = http::read_bounded(response, MAX_ATTESTATION_RESPONSE_LEN, STEP).await?;
        parse_attestation_body(&body)
    }
}

/// Decodes `{"document": b64, "manifest": b64}`, bounding both before use.
fn parse_attestation_body(body: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ClientError> {
    let malformed = |reason: &str| ClientError::MalformedResponse {
        step: "attestation_response",
        reason: reason.to_string(),
    };
    let parsed: AttestationBody = serde_json::from_slice(body)
        .map_err(|_| malformed("expected JSON {\"document\": base64, \"manifest\": base64}"))?;
    let document = BASE64
        .decode(parsed.document)
        .map_err(|_| malformed("document is not standard base64"))?;
    let manifest = BASE64
        .decode(parsed.manifest)
        .map_err(|_| malformed("manifest is not standard base64"))?;
    if document.is_empty() || document.len() > MAX_ATTESTATION_DOC_LEN {
        return Err(malformed("document length is out of bounds"));
    }
    if manifest.len() > MAX_MANIFEST_LEN {
        return Err(malformed("manifest length is out of bounds"));
    }
    Ok((document, manifest))
}

/// One enclave attestation that passed every check: the verified document, the manifest it
/// committed to, and the key configuration requests are sealed to.
#[derive(Debug, Clone)]
pub struct AttestedEnclave {
    document: VerifiedDocument,
    manifest: ModelManifest,
    key_config: KeyConfig,
    accepted_as: Option<AcceptedAs>,
}

impl AttestedEnclave {
    /// Verifies a document against `opts`, checks the commitment to `manifest_bytes`, and decodes
    /// the enclave key. Private: the only caller is [`Client::attest_enclave`], which chose the
    /// nonce.
    fn verify(
        policy: &Policy,
        document: &[u8],
        manifest_bytes: &[u8],
        opts: &sealed_attestation::VerifyOptions,
    ) -> Result<AttestedEnclave, ClientError> {
        // Signature, chain to the anchor, PCRs, nonce, age, debug mode (nitro-facts §1.5).
        let document = sealed_attestation::verify(document, opts)?;
        // Which accepted set it matched (a release name from a policy file), for the caller.
        let accepted_as = policy.accepted_as(&document.pcrs);
        // user_data = version ‖ SHA-384(manifest bytes): the manifest is what this enclave serves.
        let manifest = commitment::verify_document(document.user_data.as_deref(), manifest_bytes)?;
        // The models it serves must be the ones the policy pins, digest for digest.
        policy
            .check_manifest(&manifest)
            .map_err(|model_id| ClientError::ModelDigestMismatch { model_id })?;
        // public_key = the RFC 9458 key configuration requests are sealed to.
        let key_config = KeyConfig::decode(
            document
                .public_key
                .as_deref()
                .ok_or(ClientError::NoPublicKey)?,
        )?;
        Ok(AttestedEnclave {
            document,
            manifest,
            key_config,
            accepted_as,
        })
    }

    /// The verified attestation document.
    pub fn document(&self) -> &VerifiedDocument {
        &self.document
    }

    /// The accepted PCR set the enclave matched (see [`Session::accepted_as`]).
    pub fn accepted_as(&self) -> Option<&AcceptedAs> {
        self.accepted_as.as_ref()
    }

    /// The models the enclave committed to serving.
    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    /// Ids of the attested models.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.manifest.models.iter().map(|m| m.model_id.as_str())
    }

    /// The attested key configuration that requests are sealed to.
    pub fn key_config(&self) -> &KeyConfig {
        &self.key_config
    }

    fn models_list(&self) -> String {
        let ids: Vec<&str> = self.models().collect();
        if ids.is_empty() {
            "(none)".to_string()
        } else {
            ids.join(", ")
        }
    }
}

/// An enclave that passed attestation, and the key requests are sealed to. Only
/// [`Client::attest`] creates one.
///
/// A session re-attests when the enclave's key has rotated (see the module docs), so it holds two
/// attestations: the one it was created from, which the borrowing accessors ([`Session::document`]
/// and the rest) keep returning, and the latest one ([`Session::current`]), whose key new requests
/// are sealed to. Clones share the latest attestation.
#[derive(Debug, Clone)]
pub struct Session {
    client: Client,
    /// The attestation made by [`Client::attest`].
    first: Arc<AttestedEnclave>,
    /// The latest verified attestation. Replaced whole, never edited.
    current: Arc<RwLock<Arc<AttestedEnclave>>>,
    /// Held while attesting again, so that requests refused together attest once.
    reattesting: Arc<tokio::sync::Mutex<()>>,
    /// The next request's HPKE setup, made while the previous request was on the wire.
    next: NextSetup,
}

/// One request's HPKE setup made ahead ([`PreparedRequest`]): `SetupBaseS` needs only the
/// enclave's key (RFC 9180 §5.1.1), so each request makes the next one's while it waits for its
/// answer, and the next request seals with AES-GCM alone. That takes the X25519 work (~64 µs
/// on the benchmark's machine) off every request's path but the first (docs/performance.md, round
/// 16). One slot, shared by a session's clones: each setup is used by one request at most, a
/// setup for a key that has rotated out is dropped (wiped) unused, and one request at a time
/// makes the next setup, so requests in flight together do not make setups that none will use.
#[derive(Clone, Default)]
struct NextSetup(Arc<std::sync::Mutex<Slot>>);

#[derive(Default)]
struct Slot {
    ready: Option<PreparedRequest>,
    /// A request is making the next setup now.
    filling: bool,
}

impl std::fmt::Debug for NextSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Holds key material: say only whether one is ready.
        let ready = self.lock().ready.is_some();
        f.debug_struct("NextSetup").field("ready", &ready).finish()
    }
}

impl NextSetup {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        // A panic while holding the lock leaves at worst no setup or a whole one.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The setup made ahead for `config`, if there is one; one for another key is dropped.
    fn take_for(&self, config: &KeyConfig) -> Option<PreparedRequest> {
        self.lock().ready.take().filter(|p| p.is_for(config))
    }

    /// Makes a setup for `config` unless one is ready or being made. Yields first, so that the
    /// request that calls this is handed to its connection before the work starts.
    async fn fill_for(&self, config: &KeyConfig) {
        tokio::task::yield_now().await;
        {
            let mut slot = self.lock();
            if slot.filling || slot.ready.as_ref().is_some_and(|p| p.is_for(config)) {
                return;
            }
            slot.filling = true;
        }
        // See `send` on the generator; a failure here only means the next request makes its own.
        let made = PreparedRequest::new(config, &mut UnwrapErr(getrandom::SysRng)).ok();
        let mut slot = self.lock();
        slot.filling = false;
        if made.is_some() {
            // Replaces (and so wipes) a setup for a key that has rotated out.
            slot.ready = made;
        }
    }
}

impl Session {
    /// The latest verified attestation: after a key rotation, the one new requests use.
    pub fn current(&self) -> Arc<AttestedEnclave> {
        // A poisoned lock only means a panic while cloning an Arc; the value is whole.
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Attests the enclave again under the same policy, with a fresh nonce and every check of
    /// [`Client::attest`]; on success the new document, manifest and key replace the current
    /// ones. On failure the session keeps what it had.
    pub async fn reattest(&self) -> Result<(), ClientError> {
        let _one_at_a_time = self.reattesting.lock().await;
        self.replace_attestation().await
    }

    /// Re-attests unless another request already did since `seen` was current.
    async fn reattest_after(&self, seen: &Arc<AttestedEnclave>) -> Result<(), ClientError> {
        let _one_at_a_time = self.reattesting.lock().await;
        if !Arc::ptr_eq(&self.current(), seen) {
            return Ok(());
        }
        self.replace_attestation().await
    }

    async fn replace_attestation(&self) -> Result<(), ClientError> {
        let fresh = Arc::new(self.client.attest_enclave().await?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// The document verified when this session was created ([`Session::current`] has the
    /// latest).
    pub fn document(&self) -> &VerifiedDocument {
        self.first.document()
    }

    /// The accepted PCR set the enclave matched: with a policy file, the release name it was
    /// accepted as. `None` under [`Policy::no_pcr_policy`]. From the attestation that created
    /// this session.
    pub fn accepted_as(&self) -> Option<&AcceptedAs> {
        self.first.accepted_as()
    }

    /// The models the enclave committed to serving when this session was created.
    pub fn manifest(&self) -> &ModelManifest {
        self.first.manifest()
    }

    /// Ids of the models attested when this session was created.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.first.models()
    }

    /// The key configuration attested when this session was created ([`Session::current`] has
    /// the one requests are sealed to now).
    pub fn key_config(&self) -> &KeyConfig {
        self.first.key_config()
    }

    /// Runs `model_id` on `inputs` in the attested enclave: seals the request to the attested key,
    /// posts it, and opens the response. The host sees only ciphertext.
    ///
    /// If the host answers `unsupported_key_config`, the session attests again
    /// ([`Session::reattest`]) and sends the request once more under a new request id; a second
    /// `unsupported_key_config` is returned as the error.
    pub async fn infer(
        &self,
        model_id: &str,
        inputs: Vec<NamedTensor>,
    ) -> Result<Vec<NamedTensor>, ClientError> {
        let attested = self.current();
        check_request(&attested, model_id, &inputs)?;
        let mut request = InferRequest {
            request_id: [0; REQUEST_ID_LEN],
            sent_at_ms: 0,
            model_id: model_id.to_string(),
            inputs,
        };
        match self.send(&attested, &mut request).await {
            // The enclave did not open it (the key has rotated out, or the enclave restarted):
            // nothing ran, so sending it again under a newly attested key is safe.
            Err(e) if e.needs_reattestation() => {
                self.reattest_after(&attested).await?;
                let attested = self.current();
                // The enclave may serve other models now.
                check_request(&attested, model_id, &request.inputs)?;
                self.send(&attested, &mut request).await
            }
            other => other,
        }
    }

    /// Seals `request` to `attested`'s key under a fresh id and the current time, posts it, and
    /// opens the answer.
    async fn send(
        &self,
        attested: &AttestedEnclave,
        request: &mut InferRequest,
    ) -> Result<Vec<NamedTensor>, ClientError> {
        const STEP: &str = "infer_request";
        // Replay protection (docs/protocol.md §2.2): a fresh random id and our clock, both sealed.
        // Every attempt gets its own id, so the enclave can tell a retry from a replay.
        getrandom::fill(&mut request.request_id).map_err(|e| {
            ClientError::InvalidRequest(format!("the OS random number generator failed: {e}"))
        })?;
        request.sent_at_ms = unix_millis(SystemTime::now());
        // Encoded once at its exact size with room for the HPKE header, `enc` and tag, then sealed
        // where it lies: the plaintext encoding becomes the request body, with no copy.
        let mut sealed = request
            .encode_with_room(REQUEST_PREFIX_LEN, TAG_LEN)
            .map_err(ClientError::Encode)?;
        // The host refuses sealed bodies over MAX_SEALED_MESSAGE_LEN; say so before sealing.
        let max_plaintext = MAX_SEALED_MESSAGE_LEN - REQUEST_OVERHEAD;
        let len = sealed.len() - REQUEST_PREFIX_LEN;
        if len > max_plaintext {
            sealed_wire::wipe::wipe(&mut sealed);
            return Err(ClientError::InvalidRequest(format!(
                "encoded request is {len} bytes, more than the {max_plaintext} a sealed message holds"
            )));
        }
        // The OS generator (getrandom) as a CryptoRng. It only fails if the OS has no entropy
        // source at all, which `attest` has already shown not to be the case; `UnwrapErr` would
        // then panic rather than seal with bad randomness.
        let mut rng = UnwrapErr(getrandom::SysRng);
        let config = attested.key_config();
        let prepared = match self.next.take_for(config) {
            Some(prepared) => prepared,
            None => PreparedRequest::new(config, &mut rng)?,
        };
        // Wipes the buffer itself if it fails.
        let opener = prepared.seal_in_place(&mut sealed)?;

        let post = self
            .client
            .http
            .post(self.client.host.endpoint("infer")?)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(sealed)
            .send();
        // The next request's setup is made while this one travels.
        let (response, ()) = tokio::join!(post, self.next.fill_for(config));
        let response = response.map_err(|source| ClientError::Http { step: STEP, source })?;
        if response.status() != StatusCode::OK {
            return Err(http::host_error(response, STEP).await);
        }
        let mut body = http::read_bounded(response, MAX_INFER_RESPONSE_LEN, STEP).await?;
        // Opened where it lies, decoded, then the whole body wiped.
        let decoded = match opener.open_in_place(&mut body) {
            Ok(range) => InferResponse::decode(body.get(range).unwrap_or_default()),
            Err(e) => return Err(e.into()),
        };
        sealed_wire::wipe::wipe(&mut body);
        match decoded.map_err(ClientError::Decode)? {
            InferResponse::Ok { outputs } => Ok(outputs),
            InferResponse::Error { code, message } => Err(ClientError::Inference {
                code,
                message: sanitize(&message, sealed_wire::limits::MAX_ERROR_MESSAGE_LEN),
            }),
        }
    }
}

/// Refuses what the enclave would refuse anyway, before anything is sealed or sent: a model
/// the enclave did not attest to, and malformed tensor lists.
fn check_request(
    attested: &AttestedEnclave,
    model_id: &str,
    inputs: &[NamedTensor],
) -> Result<(), ClientError> {
    if !valid_model_id(model_id) || !attested.models().any(|m| m == model_id) {
        return Err(ClientError::ModelNotAttested {
            model_id: sanitize(model_id, 128),
            available: attested.models_list(),
        });
    }
    if inputs.is_empty() {
        return Err(ClientError::InvalidRequest("no inputs".into()));
    }
    if inputs.len() > MAX_TENSORS {
        return Err(ClientError::InvalidRequest(format!(
            "{} inputs, more than the maximum of {MAX_TENSORS}",
            inputs.len()
        )));
    }
    for (i, input) in inputs.iter().enumerate() {
        let name = &input.name;
        if !sealed_wire::message::valid_name(name) {
            return Err(ClientError::InvalidRequest(format!(
                "invalid input name {:?}",
                sanitize(name, 64)
            )));
        }
        if inputs.iter().take(i).any(|o| &o.name == name) {
            return Err(ClientError::InvalidRequest(format!(
                "input {name:?} is given twice"
            )));
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch; 0 for a clock set before 1970 (the enclave then refuses the
/// request as stale, which is the truth).
fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealed_wire::{ManifestEntry, Tensor};

    fn key(id: u8) -> KeyConfig {
        sealed_crypto::ServerKey::generate(id, &mut UnwrapErr(getrandom::SysRng)).config()
    }

    #[tokio::test]
    async fn the_next_setup_is_made_once_and_used_once() {
        let next = NextSetup::default();
        let a = key(1);
        assert!(next.take_for(&a).is_none());
        next.fill_for(&a).await;
        assert_eq!(format!("{next:?}"), "NextSetup { ready: true }");
        let first = next.take_for(&a).expect("a setup was made");
        assert!(first.is_for(&a));
        // Taken: the slot is empty until the next fill.
        assert!(next.take_for(&a).is_none());
        // A fill while one is ready keeps it: the work per request stays one setup.
        next.fill_for(&a).await;
        assert!(next.lock().ready.as_ref().is_some_and(|p| p.is_for(&a)));
        next.fill_for(&a).await;
        assert!(next.take_for(&a).is_some());
        // While one request makes the next setup, another does not make a second.
        next.lock().filling = true;
        next.fill_for(&a).await;
        assert!(next.take_for(&a).is_none());
        next.lock().filling = false;
        next.fill_for(&a).await;
        assert!(next.take_for(&a).is_some());
    }

    #[tokio::test]
    async fn a_setup_for_a_rotated_key_is_dropped_not_used() {
        let next = NextSetup::default();
        let (old, new) = (key(1), key(2));
        next.fill_for(&old).await;
        // Asked for the new key, the old key's setup is not handed out, and it is gone.
        assert!(next.take_for(&new).is_none());
        assert_eq!(format!("{next:?}"), "NextSetup { ready: false }");
        // A fill for the new key replaces a stale one.
        next.fill_for(&old).await;
        next.fill_for(&new).await;
        assert!(next.take_for(&new).is_some_and(|p| p.is_for(&new)));
    }

    fn session_with(models: &[&str]) -> Session {
        // Unit tests of the request checks only; a real Session comes from `attest`.
        let client = Client::new("http://127.0.0.1:9", Policy::new().no_pcr_policy()).unwrap();
        let attested = Arc::new(AttestedEnclave {
            document: VerifiedDocument {
                module_id: "i-0-enc0".into(),
                timestamp_ms: 0,
                digest: "SHA384".into(),
                pcrs: Default::default(),
                certificate: vec![],
                cabundle: vec![],
                public_key: None,
                user_data: None,
                nonce: None,
            },
            manifest: ModelManifest {
                models: models
                    .iter()
                    .map(|m| ManifestEntry {
                        model_id: m.to_string(),
                        sha384: vec![0; 48],
                    })
                    .collect(),
            },
            key_config: KeyConfig {
                key_id: 0,
                public_key: [9; 32],
            },
            accepted_as: None,
        });
        Session {
            client,
            first: Arc::clone(&attested),
            current: Arc::new(RwLock::new(attested)),
            reattesting: Arc::new(tokio::sync::Mutex::new(())),
            next: NextSetup::default(),
        }
    }

    fn input(name: &str) -> NamedTensor {
        NamedTensor {
            name: name.into(),
            tensor: Tensor::from_f32(vec![1], &[1.0]).unwrap(),
        }
    }

    #[tokio::test]
    async fn refuses_a_model_that_is_not_in_the_attested_manifest_before_sending() {
        // The host URL points at the discard port: were anything sent, the error would be Http.
        let s = session_with(&["add", "digits"]);
        let err = s.infer("resnet", vec![input("x")]).await.unwrap_err();
        match &err {
            ClientError::ModelNotAttested {
                model_id,
                available,
            } => {
                assert_eq!(model_id, "resnet");
                assert_eq!(available, "add, digits");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(err.step(), "model_not_attested");
        let err = session_with(&[])
            .infer("x", vec![input("x")])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("(none)"), "{err}");
    }

    #[tokio::test]
    async fn refuses_empty_duplicate_or_badly_named_inputs_before_sending() {
        let s = session_with(&["digits"]);
        for (inputs, needle) in [
            (vec![], "no inputs"),
            (vec![input("x"), input("x")], "twice"),
            (vec![input("")], "invalid input name"),
            (vec![input("a\nb")], "invalid input name"),
            (
                (0..65).map(|i| input(&format!("x{i}"))).collect(),
                "maximum",
            ),
        ] {
            let err = s.infer("digits", inputs).await.unwrap_err();
            assert!(matches!(err, ClientError::InvalidRequest(_)), "{err:?}");
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn models_lists_the_attested_ids() {
        let s = session_with(&["add", "digits"]);
        assert_eq!(s.models().collect::<Vec<_>>(), ["add", "digits"]);
    }

    #[test]
    fn client_refuses_https_and_an_empty_policy() {
        let err = Client::new("https://h.test", Policy::new().no_pcr_policy()).unwrap_err();
        assert_eq!(err.step(), "url");
        let err = Client::new("http://h.test", Policy::new()).unwrap_err();
        assert!(matches!(err, ClientError::Policy(_)), "{err:?}");
    }

    #[test]
    fn attestation_body_is_json_with_base64_fields_within_bounds() {
        let (d, m) = parse_attestation_body(br#"{"document":"AAEC","manifest":""}"#).unwrap();
        assert_eq!((d, m), (vec![0, 1, 2], vec![]));
        for bad in [
            &br#"{"document":"AAEC"}"#[..],
            br#"{"document":"!!","manifest":""}"#,
            br#"{"document":"","manifest":""}"#,
            br#"{"document":"AAEC","manifest":"*"}"#,
            b"not json",
        ] {
            let err = parse_attestation_body(bad).unwrap_err();
            assert_eq!(err.step(), "attestation_response", "{err:?}");
        }
        let big = BASE64.encode(vec![0u8; MAX_ATTESTATION_DOC_LEN + 1]);
        let body = format!(r#"{{"document":"{big}","manifest":""}}"#);
        assert!(parse_attestation_body(body.as_bytes()).is_err());
    }
}

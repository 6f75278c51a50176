//! Fuzz target bodies for every decoder of Sealed Inference that reads outside input
//! (docs/fuzzing.md). Each `fuzz_targets/<name>.rs` binary calls the function of the same name.
//!
//! Beyond "no panic, no abort, no unbounded allocation", targets check properties that only hold
//! if the decoder is right: whatever decodes re-encodes and decodes to the same value; whatever
//! opens passed the cheaper header check first; the streaming opener of a sealed model agrees
//! with the one-shot opener. Fixed keys (derived from constants below) let valid ciphertexts in
//! the seed corpus reach the code behind the authentication checks.
//!
//! [`seeds`] builds the generated part of the seed corpus (`fuzz/seeds/<target>/`); the real
//! vectors (attestation documents, KMS CMS blobs) are copied from the crates' `tests/data`.

use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use rand_core::{TryCryptoRng, TryRng};
use sha2::{Digest, Sha256};

use sealed_wire::frame::{self, FrameDecoder, HEADER_LEN};
use sealed_wire::limits::{MAX_FRAME_LEN, MAX_SEALED_MESSAGE_LEN};
use sealed_wire::{EnclaveRequest, EnclaveResponse, InferRequest, InferResponse, ModelManifest};

// client/src/policy.rs and policy_file.rs, compiled here as they are in sealed-client (the latter
// names the former as `crate::policy`), so that fuzzing them does not link the whole client.
#[allow(dead_code, unused_imports)]
#[path = "../../client/src/policy.rs"]
pub mod policy;
#[allow(dead_code, unused_imports)]
#[path = "../../client/src/policy_file.rs"]
pub mod policy_file;

pub mod seeds;

/// Every target, in the order scripts/fuzz.sh runs them.
pub const TARGETS: &[&str] = &[
    "frame",
    "enclave_request",
    "enclave_response",
    "infer_request",
    "infer_response",
    "tensor",
    "manifest",
    "sealed_request",
    "sealed_response",
    "sealed_model",
    "attestation",
    "kms_cms",
    "kms_json",
    "policy_file",
];

/// Runs the target called `name` on `data` (the replay test and the seed check use this).
pub fn run(name: &str, data: &[u8]) -> bool {
    let f: fn(&[u8]) = match name {
        "frame" => frame,
        "enclave_request" => enclave_request,
        "enclave_response" => enclave_response,
        "infer_request" => infer_request,
        "infer_response" => infer_response,
        "tensor" => tensor,
        "manifest" => manifest,
        "sealed_request" => sealed_request,
        "sealed_response" => sealed_response,
        "sealed_model" => sealed_model,
        "attestation" => attestation,
        "kms_cms" => kms_cms,
        "kms_json" => kms_json,
        "policy_file" => policy_file,
        _ => return false,
    };
    f(data);
    true
}

// ---------------------------------------------------------------------------------------------
// Deterministic randomness and fixed keys.

/// A deterministic generator (SHA-256 in counter mode over a seed). Not for production: it makes
/// the fixed keys and the sealed seeds reproducible, so a seed sealed once opens in every run.
pub struct DetRng {
    seed: [u8; 32],
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl DetRng {
    pub fn new(label: &str) -> DetRng {
        DetRng {
            seed: Sha256::digest(label.as_bytes()).into(),
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }
}

impl TryRng for DetRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for byte in dst {
            if self.used == self.block.len() {
                let mut h = Sha256::new();
                h.update(self.seed);
                h.update(self.counter.to_le_bytes());
                self.block = h.finalize().into();
                self.counter += 1;
                self.used = 0;
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
        Ok(())
    }
}

impl TryCryptoRng for DetRng {}

/// Key id of the fixed enclave key.
pub const SERVER_KEY_ID: u8 = 7;
/// The fixed sealed-model data key.
pub const MODEL_DATA_KEY: [u8; 32] = [0x42; 32];

/// The fixed enclave HPKE key that `sealed_request` opens with.
pub fn server_key() -> &'static sealed_crypto::ServerKey {
    static KEY: OnceLock<sealed_crypto::ServerKey> = OnceLock::new();
    KEY.get_or_init(|| sealed_crypto::ServerKey::derive(SERVER_KEY_ID, &[0x11; 32]))
}

/// The plaintext of the one request whose response `sealed_response` opens.
pub const RESPONSE_TARGET_REQUEST: &[u8] = b"sealed-fuzz fixed request";

/// The fixed sealed request (same bytes every call) and its response opener.
pub fn fixed_request() -> (Vec<u8>, sealed_crypto::ResponseOpener) {
    let mut rng = DetRng::new("sealed-fuzz request");
    sealed_crypto::seal_request(&server_key().config(), RESPONSE_TARGET_REQUEST, &mut rng)
        .expect("sealing a small plaintext to a valid key cannot fail")
}

/// The fixed RSA-2048 recipient key that `kms_cms` decrypts with (generated once per process
/// from a fixed seed: the same key in every run, so sealed seeds decrypt).
pub fn rsa_key() -> &'static sealed_kms::rsa::PrivateKey {
    static KEY: OnceLock<sealed_kms::rsa::PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        sealed_kms::rsa::PrivateKey::new(&mut DetRng::new("sealed-fuzz rsa"), 2048)
            .expect("RSA-2048 generation")
    })
}

// ---------------------------------------------------------------------------------------------
// sealed-wire.

/// Frame header and the incremental decoder. The first byte picks how the rest is split into
/// pushes, so that frames straddling reads are covered.
pub fn frame(data: &[u8]) {
    if let Some(header) = data.first_chunk::<HEADER_LEN>()
        && let Ok(h) = frame::decode_header(header, MAX_FRAME_LEN)
    {
        assert!(h.body_len <= MAX_FRAME_LEN as usize);
        let again = frame::encode_header(h.request_id, h.body_len).expect("re-encode header");
        assert_eq!(&again, header, "header round trip");
    }
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 31) + 1;
    // A small maximum so that the "too large" path is reachable with small inputs.
    let max = 4096;
    let mut decoder = FrameDecoder::new(max);
    let mut whole = FrameDecoder::new(max);
    whole.push(stream);
    let mut frames = Vec::new();
    'outer: for chunk in stream.chunks(step) {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.body.len() <= max as usize);
                    frames.push(f);
                }
                Ok(None) => break,
                Err(_) => break 'outer,
            }
        }
        assert!(decoder.buffered() <= stream.len());
    }
    // Split reads yield the same frames as one read.
    for f in &frames {
        match whole.next_frame() {
            Ok(Some(g)) => assert!(g.request_id == f.request_id && g.body == f.body),
            other => panic!("one read disagrees with split reads: {:?}", other.is_ok()),
        }
    }
    // Every frame decoded re-encodes to the bytes it came from.
    let mut encoded = Vec::new();
    for f in &frames {
        encoded.extend(frame::encode_frame(f.request_id, &f.body).expect("re-encode frame"));
    }
    assert!(
        stream.starts_with(&encoded),
        "frames re-encode to the stream prefix"
    );
}

pub fn enclave_request(data: &[u8]) {
    if let Ok(msg) = EnclaveRequest::decode(data) {
        let bytes = msg.encode().expect("re-encode EnclaveRequest");
        let again = EnclaveRequest::decode(&bytes).expect("re-decode EnclaveRequest");
        assert!(again == msg, "EnclaveRequest round trip");
    }
}

pub fn enclave_response(data: &[u8]) {
    if let Ok(msg) = EnclaveResponse::decode(data) {
        let bytes = msg.encode().expect("re-encode EnclaveResponse");
        let again = EnclaveResponse::decode(&bytes).expect("re-decode EnclaveResponse");
        assert!(again == msg, "EnclaveResponse round trip");
    }
}

/// The decoder reads our own layout on a fast path (`sealed_wire`'s `fast.rs`) and everything
/// else through ciborium; the encoder writes that layout by hand. Differential checks: whatever
/// `decode` accepts, ciborium alone decodes to the same value, and `encode` writes exactly the
/// bytes ciborium writes for it.
pub fn infer_request(data: &[u8]) {
    if let Ok(msg) = InferRequest::decode(data) {
        let full: InferRequest = sealed_wire::cbor::from_slice(data, MAX_SEALED_MESSAGE_LEN)
            .expect("ciborium refuses an InferRequest that decode accepted");
        assert_eq!(full, msg, "decode and ciborium disagree on an InferRequest");
        let bytes = msg.encode().expect("re-encode InferRequest");
        let reference = sealed_wire::cbor::to_vec(&msg).expect("ciborium encodes InferRequest");
        assert!(bytes == reference, "encode differs from ciborium's bytes");
        let again = InferRequest::decode(&bytes).expect("re-decode InferRequest");
        assert_eq!(again, msg, "InferRequest round trip");
    }
}

/// As [`infer_request`], for the response.
pub fn infer_response(data: &[u8]) {
    if let Ok(msg) = InferResponse::decode(data) {
        let full: InferResponse = sealed_wire::cbor::from_slice(data, MAX_SEALED_MESSAGE_LEN)
            .expect("ciborium refuses an InferResponse that decode accepted");
        assert_eq!(
            full, msg,
            "decode and ciborium disagree on an InferResponse"
        );
        let bytes = msg.encode().expect("re-encode InferResponse");
        let reference = sealed_wire::cbor::to_vec(&msg).expect("ciborium encodes InferResponse");
        assert!(bytes == reference, "encode differs from ciborium's bytes");
        let again = InferResponse::decode(&bytes).expect("re-decode InferResponse");
        assert_eq!(again, msg, "InferResponse round trip");
    }
}

/// A tensor on its own (inside messages it is reached through `infer_*` too).
pub fn tensor(data: &[u8]) {
    use sealed_wire::Tensor;
    let max = sealed_wire::limits::MAX_SEALED_MESSAGE_LEN;
    if let Ok(t) = sealed_wire::cbor::from_slice::<Tensor>(data, max) {
        let expected = sealed_wire::tensor::checked_byte_len(t.dtype(), t.shape())
            .expect("a decoded tensor is within limits");
        assert_eq!(t.data().len() as u64, expected, "data length matches shape");
        let bytes = sealed_wire::cbor::to_vec(&t).expect("re-encode Tensor");
        let again: Tensor = sealed_wire::cbor::from_slice(&bytes, max).expect("re-decode Tensor");
        assert!(again == t, "Tensor round trip");
    }
}

/// The manifest the host relays next to an attestation document, and the client's check of it
/// against the document's `user_data` commitment (which must agree with a plain decode).
pub fn manifest(data: &[u8]) {
    use sealed_attestation::commitment;
    let decoded = ModelManifest::decode(data);
    if let Ok(m) = &decoded {
        let bytes = m.encode().expect("re-encode ModelManifest");
        assert_eq!(&ModelManifest::decode(&bytes).expect("re-decode"), m);
    }
    let committed = commitment::verify(&commitment::user_data(data), data);
    assert_eq!(
        committed.ok(),
        decoded.ok(),
        "commitment check agrees with decode"
    );
}

// ---------------------------------------------------------------------------------------------
// sealed-crypto.

/// The enclave's path for a sealed request: header check, open with the fixed key, decode the
/// plaintext as an `InferRequest`, seal a response.
pub fn sealed_request(data: &[u8]) {
    // The key config a client reads from an attestation document's `public_key`.
    if let Ok(config) = sealed_crypto::KeyConfig::decode(data) {
        assert_eq!(config.encode().as_slice(), data, "key config round trip");
    }
    let key = server_key();
    let header_ok = key.check_header(data).is_ok();
    if let Ok((plaintext, sealer)) = key.open_request(data) {
        assert!(header_ok, "opened a request whose header check failed");
        infer_request(&plaintext);
        let mut rng = DetRng::new("sealed-fuzz response nonce");
        sealer.seal(&plaintext, &mut rng).expect("seal response");
    }
}

/// The client's path for a response to the fixed request.
pub fn sealed_response(data: &[u8]) {
    let (_, opener) = fixed_request();
    if let Ok(plaintext) = opener.open(data) {
        infer_response(&plaintext);
    }
}

// ---------------------------------------------------------------------------------------------
// sealed-model.

/// The sealed-model file: prefix and header, then the chunk stream with the fixed data key, both
/// one-shot (`open`) and chunk by chunk as the enclave's upload path does; both must agree.
pub fn sealed_model(data: &[u8]) {
    use sealed_model::{Opener, header_total_len, open, parse_header};
    let _ = header_total_len(data);
    let one_shot = open(data, &MODEL_DATA_KEY);
    let Ok((header, header_len)) = parse_header(data) else {
        assert!(
            one_shot.is_err(),
            "opened a file whose header does not parse"
        );
        return;
    };
    let encoded = header.encode().expect("re-encode a parsed header");
    assert_eq!(
        parse_header(&encoded).ok().map(|(h, _)| h == header),
        Some(true),
        "header round trip"
    );
    // Callers bound the output by what they hold before allocating it (the enclave by the
    // announced upload length); mirror that so a huge declared length is not allocated here.
    let Some((header_bytes, mut rest)) = data.split_at_checked(header_len) else {
        return;
    };
    if header.plaintext_len > rest.len() as u64 {
        assert!(
            one_shot.is_err(),
            "opened a file shorter than its plaintext"
        );
        return;
    }
    let mut opener = Opener::new(&header, header_bytes, &MODEL_DATA_KEY).expect("opener");
    let mut out = opener.output_buffer().expect("bounded buffer");
    let mut streamed = true;
    while let Some(len) = opener.next_chunk_len() {
        let Some((chunk, tail)) = rest.split_at_checked(len) else {
            streamed = false;
            break;
        };
        if opener.open_chunk(chunk, &mut out).is_err() {
            streamed = false;
            break;
        }
        rest = tail;
    }
    let streamed = streamed && rest.is_empty() && opener.finish().is_ok();
    match one_shot {
        Ok(plain) => {
            assert!(streamed, "one-shot opened what streaming refused");
            assert_eq!(plain.as_slice(), out.as_slice(), "same plaintext");
        }
        Err(_) => assert!(!streamed, "streaming opened what one-shot refused"),
    }
}

// ---------------------------------------------------------------------------------------------
// sealed-attestation.

/// Verification instants (ms since the epoch): inside the validity of each real document's
/// certificates (`shared/attestation/tests/data/README.md`). The first input byte picks one, so
/// each real seed verifies all the way to the policy checks.
pub const ATTESTATION_TIMES_MS: [u64; 3] = [
    1_665_651_482_136 + 1_000, // evervault, 2022-10-13
    1_725_719_859_545 + 1_000, // nitrite, 2024-09-07
    1_767_472_867_402 + 1_000, // nitro-validator, 2026-01-03
];

/// COSE_Sign1 parse and full verification against the AWS Nitro root.
pub fn attestation(data: &[u8]) {
    use sealed_attestation::{PcrPolicy, VerifyOptions, cose, verify};
    let Some((&pick, document)) = data.split_first() else {
        return;
    };
    let _ = cose::parse(document);
    let now_ms = ATTESTATION_TIMES_MS[usize::from(pick) % ATTESTATION_TIMES_MS.len()];
    // Nonce and age checks run when the document is authentic; set them from `pick` so both
    // outcomes are reachable.
    let opts = VerifyOptions {
        trust_anchor: aws_root().clone(),
        pcr_policy: PcrPolicy::AcceptAny,
        expected_nonce: (pick & 0x10 != 0).then(|| vec![0u8; 20]),
        max_age: (pick & 0x20 != 0).then(|| Duration::from_secs(60)),
        allow_debug: pick & 0x40 != 0,
        now: UNIX_EPOCH + Duration::from_millis(now_ms),
    };
    if let Ok(doc) = verify(document, &opts) {
        assert!(!doc.cabundle.is_empty(), "a verified document has a chain");
    }
}

fn aws_root() -> &'static sealed_attestation::TrustAnchor {
    static ROOT: OnceLock<sealed_attestation::TrustAnchor> = OnceLock::new();
    ROOT.get_or_init(sealed_attestation::TrustAnchor::aws_nitro_root_g1)
}

// ---------------------------------------------------------------------------------------------
// sealed-kms.

/// `CiphertextForRecipient` (BER CMS EnvelopedData): parse, then decrypt with the fixed RSA key.
pub fn kms_cms(data: &[u8]) {
    if let Ok(recipient) = sealed_kms::cms::parse(data) {
        let mut rng = DetRng::new("sealed-fuzz rsa blinding");
        if let Ok(plain) = sealed_kms::cms::decrypt(&recipient, rsa_key(), &mut rng) {
            assert!(plain.len() <= sealed_kms::cms::MAX_PLAINTEXT_LEN);
        }
    }
}

/// KMS JSON 1.1 responses the enclave parses (first byte picks which), and the error body.
pub fn kms_json(data: &[u8]) {
    use sealed_kms::api;
    let Some((&pick, json)) = data.split_first() else {
        return;
    };
    match pick % 4 {
        0 => {
            let _ = api::decrypt_response_for_recipient(json);
        }
        1 => {
            let _ = api::generate_data_key_response_for_recipient(json);
        }
        2 => {
            let _ = api::generate_random_response_for_recipient(json);
        }
        _ => {
            if json.len() <= api::MAX_MESSAGE_LEN
                && let Ok(body) = serde_json::from_slice::<api::KmsErrorBody>(json)
            {
                let kind = body.kind();
                let _ = (kind.as_str(), kind.http_status());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// sealed-client policy files.

/// A client policy file and a nitro-cli `measurements.json`: whatever parses re-serialises to a
/// file that parses to the same policy.
pub fn policy_file(data: &[u8]) {
    use policy_file::{Measurements, PolicyFile};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = PolicyFile::from_json(text) {
        let again = PolicyFile::from_json(&file.to_json()).expect("re-parse own output");
        assert_eq!(again, file, "policy file round trip");
        let policy = file.to_policy();
        assert!(
            policy.validate().is_ok(),
            "a parsed policy file is a valid policy"
        );
    }
    if let Ok(m) = Measurements::from_nitro_cli_json(text) {
        let _ = m.select(&[0, 1, 2]);
    }
}

//! The bad-input matrix (issue 5): one table of hostile inputs across every layer, each with the
//! exact outcome it must get, run against one simulation stack (enclave + host + mock KMS + admin
//! API). Layers: HTTP, sealed envelope, sealed plaintext, raw frames on the enclave socket, sealed
//! models through the admin API, tampered attestation documents, replays, stale timestamps and a
//! slow-headers (slowloris) client.
//!
//! Every case runs even when another fails: failures are collected with the case's name and
//! asserted at the end. After every case, and once at the end, a valid sealed request must still
//! get the digits model's expected label, so a case that wedges or kills a component fails by name.
//!
//! Hostile plaintexts are CBOR built by hand here ([`C`]) and sealed with `sealed_crypto` directly,
//! so nothing in the client SDK can refuse them first.

mod common;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use sealed_client::seal::DataKey;
use sealed_client::{Client, ClientError, Session, npy};
use sealed_crypto::KeyConfig;
use sealed_sim::stack::{ModelFile, Stack, StackOptions};
use sealed_wire::frame::{FrameDecoder, HEADER_LEN, decode_header, encode_frame};
use sealed_wire::limits::{MAX_FRAME_LEN, MAX_SEALED_MESSAGE_LEN};
use sealed_wire::{EnclaveRequest, EnclaveResponse, ErrorCode, InferResponse, NamedTensor, Tensor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long any single exchange may take before the case fails (nothing here should be slow; the
/// bound only keeps a wedged peer from hanging the test).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The table.
// ---------------------------------------------------------------------------------------------

type CaseResult = Result<(), String>;
type BoxFut<'a> = Pin<Box<dyn Future<Output = CaseResult> + 'a>>;

struct Case {
    name: &'static str,
    layer: &'static str,
    input: &'static str,
    expected: &'static str,
    run: for<'a> fn(&'a Ctx) -> BoxFut<'a>,
}

macro_rules! case {
    ($name:literal, $layer:literal, $input:literal, $expected:literal, |$c:ident| $body:expr) => {
        Case {
            name: $name,
            layer: $layer,
            input: $input,
            expected: $expected,
            run: |$c| Box::pin(async move { $body }),
        }
    };
}

fn cases() -> Vec<Case> {
    vec![
        // ---- HTTP ------------------------------------------------------------------------
        case!(
            "http_get_on_infer",
            "http",
            "GET /v1/infer",
            "405 not_found",
            |c| http_expect(c, "GET", "/v1/infer", None, None, 405, Some("not_found")).await
        ),
        case!(
            "http_put_on_attestation",
            "http",
            "PUT /v1/attestation?nonce=<32 hex bytes>",
            "405 not_found",
            |c| http_expect(
                c,
                "PUT",
                &format!("/v1/attestation?nonce={}", "ab".repeat(32)),
                None,
                None,
                405,
                Some("not_found")
            )
            .await
        ),
        case!(
            "http_delete_on_models",
            "http",
            "DELETE /v1/models",
            "405 not_found",
            |c| http_expect(
                c,
                "DELETE",
                "/v1/models",
                None,
                None,
                405,
                Some("not_found")
            )
            .await
        ),
        case!(
            "http_unknown_path",
            "http",
            "GET /v1/keys",
            "404 not_found",
            |c| http_expect(c, "GET", "/v1/keys", None, None, 404, Some("not_found")).await
        ),
        case!(
            "http_path_below_a_route",
            "http",
            "POST /v1/infer/extra",
            "404 not_found",
            |c| http_expect(
                c,
                "POST",
                "/v1/infer/extra",
                Some(vec![1, 2, 3]),
                None,
                404,
                Some("not_found")
            )
            .await
        ),
        case!(
            "http_path_case",
            "http",
            "POST /V1/INFER",
            "404 not_found",
            |c| http_expect(
                c,
                "POST",
                "/V1/INFER",
                Some(vec![1, 2, 3]),
                None,
                404,
                Some("not_found")
            )
            .await
        ),
        case!(
            "http_admin_route_on_public_api",
            "http",
            "POST /v1/admin/models on the public listener",
            "404 not_found",
            |c| http_expect(
                c,
                "POST",
                "/v1/admin/models",
                Some(vec![1, 2, 3]),
                Some("application/octet-stream"),
                404,
                Some("not_found")
            )
            .await
        ),
        case!(
            "http_empty_infer_body",
            "http",
            "POST /v1/infer with an empty body",
            "400 malformed_message",
            |c| http_expect(
                c,
                "POST",
                "/v1/infer",
                Some(Vec::new()),
                None,
                400,
                Some("malformed_message")
            )
            .await
        ),
        case!(
            "http_zero_bytes_body",
            "http",
            "POST /v1/infer with 100 zero bytes",
            "400 unsupported_key_config (suite 0/0/0 is not served)",
            |c| http_expect(
                c,
                "POST",
                "/v1/infer",
                Some(vec![0; 100]),
                None,
                400,
                Some("unsupported_key_config")
            )
            .await
        ),
        case!(
            "http_json_body",
            "http",
            "POST /v1/infer, Content-Type application/json, a 90-byte JSON body",
            "400 unsupported_key_config (read as a sealed envelope whatever its type: its first 7 bytes name no suite we serve)",
            |c| {
                http_expect(c, "POST", "/v1/infer", Some(br#"{"model_id":"digits","inputs":[{"name":"input","shape":[1,64],"dtype":"f32","data":[]}]}"#.to_vec()), Some("application/json"), 400, Some("unsupported_key_config")).await
            }
        ),
        case!(
            "http_form_body",
            "http",
            "POST /v1/infer, Content-Type application/x-www-form-urlencoded, body a=b",
            "400 sealed_request_invalid (3 bytes: shorter than an envelope)",
            |c| http_expect(
                c,
                "POST",
                "/v1/infer",
                Some(b"a=b".to_vec()),
                Some("application/x-www-form-urlencoded"),
                400,
                Some("sealed_request_invalid")
            )
            .await
        ),
        case!(
            "http_valid_request_odd_content_type",
            "http",
            "a valid sealed request with Content-Type text/plain",
            "200, the digits model's answer (the host never interprets the body)",
            |c| valid_request_with_content_type(c, "text/plain").await
        ),
        case!(
            "http_oversized_body",
            "http",
            "POST /v1/infer with MAX_SEALED_MESSAGE_LEN + 1 bytes (Content-Length)",
            "413 request_too_large",
            |c| oversized_content_length(c).await
        ),
        case!(
            "http_oversized_body_written_first",
            "http",
            "the same, written whole before the answer is read (as most HTTP clients do)",
            "413 request_too_large: the host closes in stages and drains the refused body, so the \
             answer is not lost to a connection reset",
            |c| oversized_content_length_written_first(c).await
        ),
        case!(
            "http_oversized_chunked_body",
            "http",
            "POST /v1/infer, Transfer-Encoding chunked, 17 MiB",
            "413 request_too_large",
            |c| oversized_chunked(c).await
        ),
        case!(
            "http_body_shorter_than_content_length",
            "http",
            "POST /v1/infer, Content-Length 1000, 10 bytes sent, then write side closed",
            "400 malformed_message (body could not be read)",
            |c| short_body(c).await
        ),
        case!(
            "http_garbage_request_line",
            "http",
            "raw TCP: \"\\x00\\x01GARBAGE\\r\\n\\r\\n\"",
            "HTTP 400 from the server, then close",
            |c| raw_http_expect(c, b"\x00\x01GARBAGE\r\n\r\n".to_vec(), 400).await
        ),
        case!(
            "http_oversized_headers",
            "http",
            "GET /v1/health with a 20 KiB header",
            "431 (H2: max header bytes 16 KiB)",
            |c| oversized_headers(c).await
        ),
        case!(
            "http_nonce_missing",
            "http",
            "GET /v1/attestation",
            "400 invalid_nonce",
            |c| http_expect(
                c,
                "GET",
                "/v1/attestation",
                None,
                None,
                400,
                Some("invalid_nonce")
            )
            .await
        ),
        case!(
            "http_nonce_too_short",
            "http",
            "GET /v1/attestation?nonce=00",
            "400 invalid_nonce",
            |c| http_expect(
                c,
                "GET",
                "/v1/attestation?nonce=00",
                None,
                None,
                400,
                Some("invalid_nonce")
            )
            .await
        ),
        case!(
            "http_nonce_15_bytes",
            "http",
            "nonce of 15 bytes (one under the minimum)",
            "400 invalid_nonce",
            |c| http_expect(
                c,
                "GET",
                &format!("/v1/attestation?nonce={}", "ab".repeat(15)),
                None,
                None,
                400,
                Some("invalid_nonce")
            )
            .await
        ),
        case!(
            "http_nonce_too_long",
            "http",
            "nonce of 65 bytes (one over the maximum)",
            "400 invalid_nonce",
            |c| http_expect(
                c,
                "GET",
                &format!("/v1/attestation?nonce={}", "ab".repeat(65)),
                None,
                None,
                400,
                Some("invalid_nonce")
            )
            .await
        ),
        case!(
            "http_nonce_not_hex",
            "http",
            "nonce=zz…(32 chars)",
            "400 invalid_nonce",
            |c| http_expect(
                c,
                "GET",
                &format!("/v1/attestation?nonce={}", "zz".repeat(16)),
                None,
                None,
                400,
                Some("invalid_nonce")
            )
            .await
        ),
        case!(
            "http_nonce_odd_length",
            "http",
            "nonce of 33 hex digits",
            "400 invalid_nonce",
            |c| http_expect(
                c,
                "GET",
                &format!("/v1/attestation?nonce={}a", "ab".repeat(16)),
                None,
                None,
                400,
                Some("invalid_nonce")
            )
            .await
        ),
        case!(
            "http_nonce_twice",
            "http",
            "nonce=<valid>&nonce=<valid>",
            "400 invalid_nonce (malformed query string)",
            |c| http_expect(
                c,
                "GET",
                &format!("/v1/attestation?nonce={0}&nonce={0}", "ab".repeat(16)),
                None,
                None,
                400,
                Some("invalid_nonce")
            )
            .await
        ),
        case!(
            "http_slowloris",
            "http",
            "separate stack with --http-header-timeout-secs 2: request headers trickled one line per 500 ms",
            "the host closes the connection before 8 s; that stack still serves a valid request (H2)",
            |c| slowloris(c).await
        ),
        // ---- Sealed envelope (RFC 9458 §4.1 header | enc | ct | tag) -------------------------
        case!(
            "envelope_truncated_below_overhead",
            "envelope",
            "the first 20 bytes of a valid sealed request",
            "400 sealed_request_invalid",
            |c| envelope_expect(c, |s| s.truncate(20), 400, "sealed_request_invalid").await
        ),
        case!(
            "envelope_header_only",
            "envelope",
            "the 7-byte header alone",
            "400 sealed_request_invalid",
            |c| envelope_expect(c, |s| s.truncate(7), 400, "sealed_request_invalid").await
        ),
        case!(
            "envelope_tag_cut",
            "envelope",
            "a valid sealed request without its last byte",
            "400 sealed_request_invalid",
            |c| envelope_expect(
                c,
                |s| {
                    s.pop();
                },
                400,
                "sealed_request_invalid"
            )
            .await
        ),
        case!(
            "envelope_trailing_byte",
            "envelope",
            "a valid sealed request plus one byte",
            "400 sealed_request_invalid",
            |c| envelope_expect(c, |s| s.push(0), 400, "sealed_request_invalid").await
        ),
        case!(
            "envelope_garbage_after_valid_header",
            "envelope",
            "valid 7-byte header then 2000 random bytes",
            "400 sealed_request_invalid",
            |c| envelope_expect(
                c,
                |s| {
                    s.truncate(7);
                    s.extend(random_bytes(2000));
                },
                400,
                "sealed_request_invalid"
            )
            .await
        ),
        case!(
            "envelope_wrong_key_id",
            "envelope",
            "key id + 128",
            "400 unsupported_key_config (cleartext: the enclave cannot open it)",
            |c| envelope_expect(
                c,
                |s| s[0] = s[0].wrapping_add(128),
                400,
                "unsupported_key_config"
            )
            .await
        ),
        case!(
            "envelope_wrong_kem_id",
            "envelope",
            "kem_id 0x0021 (X448)",
            "400 unsupported_key_config",
            |c| envelope_expect(c, |s| s[2] = 0x21, 400, "unsupported_key_config").await
        ),
        case!(
            "envelope_wrong_kdf_id",
            "envelope",
            "kdf_id 0x0003 (HKDF-SHA512)",
            "400 unsupported_key_config",
            |c| envelope_expect(c, |s| s[4] = 0x03, 400, "unsupported_key_config").await
        ),
        case!(
            "envelope_wrong_aead_id",
            "envelope",
            "aead_id 0x0003 (ChaCha20Poly1305)",
            "400 unsupported_key_config",
            |c| envelope_expect(c, |s| s[6] = 0x03, 400, "unsupported_key_config").await
        ),
        case!(
            "envelope_tampered_enc",
            "envelope",
            "one bit of enc flipped",
            "400 sealed_request_invalid",
            |c| envelope_expect(c, |s| s[7 + 5] ^= 0x01, 400, "sealed_request_invalid").await
        ),
        case!(
            "envelope_tampered_ciphertext",
            "envelope",
            "one bit in the middle of the ciphertext flipped",
            "400 sealed_request_invalid",
            |c| envelope_expect(
                c,
                |s| {
                    let m = 39 + (s.len() - 55) / 2;
                    s[m] ^= 0x80;
                },
                400,
                "sealed_request_invalid"
            )
            .await
        ),
        case!(
            "envelope_tampered_tag",
            "envelope",
            "one bit of the tag flipped",
            "400 sealed_request_invalid",
            |c| envelope_expect(
                c,
                |s| {
                    let l = s.len() - 1;
                    s[l] ^= 0x01;
                },
                400,
                "sealed_request_invalid"
            )
            .await
        ),
        case!(
            "envelope_sealed_to_another_key",
            "envelope",
            "a request sealed to a different X25519 key under the enclave's key id",
            "400 sealed_request_invalid",
            |c| sealed_to_another_key(c).await
        ),
        // ---- Sealed plaintext: hand-built CBOR, sealed correctly; the code comes back sealed ---
        case!(
            "plaintext_hand_built_control",
            "plaintext",
            "a valid request built with the hand CBOR encoder",
            "sealed Ok with the expected label (control for the cases below)",
            |c| hand_built_control(c).await
        ),
        case!(
            "plaintext_garbage",
            "plaintext",
            "256 random bytes",
            "sealed 102 malformed_message",
            |c| sealed_expect(c, &random_bytes(256), ErrorCode::MalformedMessage).await
        ),
        case!(
            "plaintext_empty",
            "plaintext",
            "zero bytes",
            "sealed 102 malformed_message",
            |c| sealed_expect(c, &[], ErrorCode::MalformedMessage).await
        ),
        case!(
            "plaintext_not_a_map",
            "plaintext",
            "CBOR array [1, 2, 3]",
            "sealed 102 malformed_message",
            |c| sealed_expect(
                c,
                &C::A(vec![C::U(1), C::U(2), C::U(3)]).enc(),
                ErrorCode::MalformedMessage
            )
            .await
        ),
        case!(
            "plaintext_trailing_bytes",
            "plaintext",
            "a valid request followed by one more CBOR item",
            "sealed 102 malformed_message",
            |c| {
                let mut p = request_map(c, "digits", vec![digit_input(c)]).enc();
                p.push(0x00);
                sealed_expect(c, &p, ErrorCode::MalformedMessage).await
            }
        ),
        case!(
            "plaintext_model_id_integer",
            "plaintext",
            "model_id: 7 (integer)",
            "sealed 102 malformed_message",
            |c| sealed_expect(
                c,
                &request_with(c, "model_id", C::U(7)).enc(),
                ErrorCode::MalformedMessage
            )
            .await
        ),
        case!(
            "plaintext_request_id_15_bytes",
            "plaintext",
            "request_id of 15 bytes",
            "sealed 102 malformed_message",
            |c| sealed_expect(
                c,
                &request_with(c, "request_id", C::B(random_bytes(15))).enc(),
                ErrorCode::MalformedMessage
            )
            .await
        ),
        case!(
            "plaintext_request_id_text",
            "plaintext",
            "request_id as a text string",
            "sealed 102 malformed_message",
            |c| sealed_expect(
                c,
                &request_with(c, "request_id", C::T("0123456789abcdef".into())).enc(),
                ErrorCode::MalformedMessage
            )
            .await
        ),
        case!(
            "plaintext_sent_at_negative",
            "plaintext",
            "sent_at_ms: -1",
            "sealed 102 malformed_message",
            |c| sealed_expect(
                c,
                &request_with(c, "sent_at_ms", C::N(0)).enc(),
                ErrorCode::MalformedMessage
            )
            .await
        ),
        case!(
            "plaintext_missing_sent_at",
            "plaintext",
            "no sent_at_ms field",
            "sealed 102 malformed_message",
            |c| sealed_expect(
                c,
                &request_without(c, "sent_at_ms").enc(),
                ErrorCode::MalformedMessage
            )
            .await
        ),
        case!(
            "plaintext_inputs_not_array",
            "plaintext",
            "inputs: {} (a map)",
            "sealed 102 malformed_message",
            |c| sealed_expect(
                c,
                &request_with(c, "inputs", C::M(vec![])).enc(),
                ErrorCode::MalformedMessage
            )
            .await
        ),
        case!(
            "plaintext_unknown_model",
            "plaintext",
            "model_id \"no-such-model\"",
            "sealed 300 unknown_model",
            |c| sealed_expect(
                c,
                &request_map(c, "no-such-model", vec![digit_input(c)]).enc(),
                ErrorCode::UnknownModel
            )
            .await
        ),
        case!(
            "plaintext_invalid_model_id",
            "plaintext",
            "model_id \"../digits\"",
            "sealed 102 malformed_message",
            |c| sealed_expect(
                c,
                &request_map(c, "../digits", vec![digit_input(c)]).enc(),
                ErrorCode::MalformedMessage
            )
            .await
        ),
        case!(
            "plaintext_wrong_dtype",
            "plaintext",
            "input i64 [1, 64]",
            "sealed 301 input_mismatch",
            |c| sealed_expect(
                c,
                &request_map(
                    c,
                    "digits",
                    vec![named("input", tensor("i64", &[1, 64], vec![0; 512]))]
                )
                .enc(),
                ErrorCode::InputMismatch
            )
            .await
        ),
        case!(
            "plaintext_wrong_shape",
            "plaintext",
            "input f32 [1, 63]",
            "sealed 301 input_mismatch",
            |c| sealed_expect(
                c,
                &request_map(
                    c,
                    "digits",
                    vec![named("input", f32_tensor(&[1, 63], &[0.5; 63]))]
                )
                .enc(),
                ErrorCode::InputMismatch
            )
            .await
        ),
        case!(
            "plaintext_wrong_rank",
            "plaintext",
            "input f32 [64] (rank 1)",
            "sealed 301 input_mismatch",
            |c| sealed_expect(
                c,
                &request_map(
                    c,
                    "digits",
                    vec![named("input", f32_tensor(&[64], &[0.5; 64]))]
                )
                .enc(),
                ErrorCode::InputMismatch
            )
            .await
        ),
        case!(
            "plaintext_wrong_input_name",
            "plaintext",
            "the right tensor named \"x\"",
            "sealed 301 input_mismatch",
            |c| sealed_expect(
                c,
                &request_map(
                    c,
                    "digits",
                    vec![named("x", f32_tensor(&[1, 64], &[0.5; 64]))]
                )
                .enc(),
                ErrorCode::InputMismatch
            )
            .await
        ),
        case!(
            "plaintext_no_inputs",
            "plaintext",
            "inputs: []",
            "sealed 301 input_mismatch",
            |c| sealed_expect(
                c,
                &request_map(c, "digits", vec![]).enc(),
                ErrorCode::InputMismatch
            )
            .await
        ),
        case!(
            "plaintext_extra_input",
            "plaintext",
            "the right input plus \"extra\"",
            "sealed 301 input_mismatch",
            |c| sealed_expect(
                c,
                &request_map(
                    c,
                    "digits",
                    vec![digit_input(c), named("extra", f32_tensor(&[1], &[1.0]))]
                )
                .enc(),
                ErrorCode::InputMismatch
            )
            .await
        ),
        case!(
            "plaintext_too_many_tensors",
            "plaintext",
            "65 inputs (MAX_TENSORS + 1)",
            "sealed 102 malformed_message",
            |c| sealed_expect(
                c,
                &request_map(
                    c,
                    "digits",
                    (0..65)
                        .map(|i| named(&format!("t{i}"), f32_tensor(&[1], &[1.0])))
                        .collect()
                )
                .enc(),
                ErrorCode::MalformedMessage
            )
            .await
        ),
        case!(
            "plaintext_duplicate_names",
            "plaintext",
            "two inputs both named \"input\"",
            "sealed 102 malformed_message",
            |c| sealed_expect(
                c,
                &request_map(c, "digits", vec![digit_input(c), digit_input(c)]).enc(),
                ErrorCode::MalformedMessage
            )
            .await
        ),
        case!(
            "plaintext_control_char_name",
            "plaintext",
            "input named \"in\\nput\"",
            "sealed 102 malformed_message",
            |c| sealed_expect(
                c,
                &request_map(
                    c,
                    "digits",
                    vec![named("in\nput", f32_tensor(&[1, 64], &[0.5; 64]))]
                )
                .enc(),
                ErrorCode::MalformedMessage
            )
            .await
        ),
        case!(
            "plaintext_nan_inputs",
            "plaintext",
            "input f32 [1, 64] all NaN",
            "sealed Ok: label i64 [1] and 10 probabilities (a normal answer)",
            |c| normal_answer(c, &[f32::NAN; 64]).await
        ),
        case!(
            "plaintext_inf_inputs",
            "plaintext",
            "input f32 [1, 64] alternating +Inf / -Inf",
            "sealed Ok: label i64 [1] and 10 probabilities (a normal answer)",
            |c| normal_answer(
                c,
                &std::array::from_fn::<f32, 64, _>(|i| if i % 2 == 0 {
                    f32::INFINITY
                } else {
                    f32::NEG_INFINITY
                })
            )
            .await
        ),
        case!(
            "plaintext_huge_declared_shape",
            "plaintext",
            "shape [4194304, 4194304] f32 with 256 bytes of data",
            "sealed 302 invalid_tensor",
            |c| sealed_expect(
                c,
                &request_map(
                    c,
                    "digits",
                    vec![named(
                        "input",
                        tensor("f32", &[4_194_304, 4_194_304], vec![0; 256])
                    )]
                )
                .enc(),
                ErrorCode::InvalidTensor
            )
            .await
        ),
        case!(
            "plaintext_u64_max_dimension",
            "plaintext",
            "shape [0, 2^64-1] f32, no data",
            "sealed 302 invalid_tensor",
            |c| sealed_expect(
                c,
                &request_map(
                    c,
                    "digits",
                    vec![named("input", tensor("f32", &[0, u64::MAX], vec![]))]
                )
                .enc(),
                ErrorCode::InvalidTensor
            )
            .await
        ),
        case!(
            "plaintext_rank_9",
            "plaintext",
            "shape of rank 9 (MAX_TENSOR_RANK + 1)",
            "sealed 302 invalid_tensor",
            |c| sealed_expect(
                c,
                &request_map(
                    c,
                    "digits",
                    vec![named("input", tensor("f32", &[1; 9], vec![0; 4]))]
                )
                .enc(),
                ErrorCode::InvalidTensor
            )
            .await
        ),
        case!(
            "plaintext_data_length_mismatch",
            "plaintext",
            "shape [1, 64] f32 with 255 bytes",
            "sealed 302 invalid_tensor",
            |c| sealed_expect(
                c,
                &request_map(
                    c,
                    "digits",
                    vec![named("input", tensor("f32", &[1, 64], vec![0; 255]))]
                )
                .enc(),
                ErrorCode::InvalidTensor
            )
            .await
        ),
        case!(
            "plaintext_huge_declared_data_length",
            "plaintext",
            "data: CBOR byte string declaring 2^40 bytes, 16 present",
            "sealed 102 malformed_message (truncated input)",
            |c| {
                let t = C::M(vec![
                    (C::t("dtype"), C::t("f32")),
                    (C::t("shape"), dims(&[1, 64])),
                    (C::t("data"), C::Raw(huge_bytes_head(1 << 40, 16))),
                ]);
                sealed_expect(
                    c,
                    &request_map(c, "digits", vec![named("input", t)]).enc(),
                    ErrorCode::MalformedMessage,
                )
                .await
            }
        ),
        case!(
            "plaintext_huge_declared_array",
            "plaintext",
            "inputs: CBOR array declaring 2^32 items, one present",
            "sealed 102 malformed_message",
            |c| sealed_expect(
                c,
                &request_with(
                    c,
                    "inputs",
                    C::Raw([&[0x9a, 0xff, 0xff, 0xff, 0xff][..], &digit_input(c).enc()].concat())
                )
                .enc(),
                ErrorCode::MalformedMessage
            )
            .await
        ),
        case!(
            "plaintext_unknown_dtype",
            "plaintext",
            "dtype \"f128\"",
            "sealed 102 malformed_message",
            |c| sealed_expect(
                c,
                &request_map(
                    c,
                    "digits",
                    vec![named("input", tensor("f128", &[1, 64], vec![0; 1024]))]
                )
                .enc(),
                ErrorCode::MalformedMessage
            )
            .await
        ),
        case!(
            "plaintext_bool_out_of_range",
            "plaintext",
            "bool tensor holding byte 2",
            "sealed 302 invalid_tensor",
            |c| sealed_expect(
                c,
                &request_map(
                    c,
                    "digits",
                    vec![named("input", tensor("bool", &[1, 2], vec![1, 2]))]
                )
                .enc(),
                ErrorCode::InvalidTensor
            )
            .await
        ),
        case!(
            "plaintext_deep_nesting",
            "plaintext",
            "model_id: 100 nested arrays",
            "sealed 102 malformed_message",
            |c| sealed_expect(
                c,
                &request_with(
                    c,
                    "model_id",
                    C::Raw([vec![0x81; 100], vec![0x00]].concat())
                )
                .enc(),
                ErrorCode::MalformedMessage
            )
            .await
        ),
        // ---- Replay and freshness (H1) -------------------------------------------------------
        case!(
            "replay_identical_body",
            "replay",
            "a valid sealed request sent twice, byte for byte",
            "first: the normal answer; second: sealed 202 replayed_request, opened by the requester (H1)",
            |c| replay_identical(c).await
        ),
        case!(
            "replay_same_id_new_envelope",
            "replay",
            "a second request sealed afresh but reusing the first request_id",
            "sealed 202 replayed_request (H1)",
            |c| replay_same_id(c).await
        ),
        case!(
            "stale_one_hour_old",
            "freshness",
            "sent_at_ms = now - 1 h",
            "sealed 203 stale_request (H1)",
            |c| sealed_expect(
                c,
                &request_with(c, "sent_at_ms", C::U(now_ms() - 3_600_000)).enc(),
                ErrorCode::StaleRequest
            )
            .await
        ),
        case!(
            "stale_one_hour_ahead",
            "freshness",
            "sent_at_ms = now + 1 h",
            "sealed 203 stale_request (H1)",
            |c| sealed_expect(
                c,
                &request_with(c, "sent_at_ms", C::U(now_ms() + 3_600_000)).enc(),
                ErrorCode::StaleRequest
            )
            .await
        ),
        case!(
            "stale_epoch_zero",
            "freshness",
            "sent_at_ms = 0",
            "sealed 203 stale_request (H1)",
            |c| sealed_expect(
                c,
                &request_with(c, "sent_at_ms", C::U(0)).enc(),
                ErrorCode::StaleRequest
            )
            .await
        ),
        case!(
            "stale_u64_max",
            "freshness",
            "sent_at_ms = 2^64 - 1",
            "sealed 203 stale_request, no overflow (H1)",
            |c| sealed_expect(
                c,
                &request_with(c, "sent_at_ms", C::U(u64::MAX)).enc(),
                ErrorCode::StaleRequest
            )
            .await
        ),
        // ---- Raw frames on the enclave socket ------------------------------------------------
        case!(
            "frame_zero_length",
            "frame",
            "header len = 0",
            "error frame (id 0) 100 malformed_frame, then the connection closes",
            |c| frame_closes(
                c,
                header(0, 1).to_vec(),
                false,
                Some(ErrorCode::MalformedFrame)
            )
            .await
        ),
        case!(
            "frame_shorter_than_id",
            "frame",
            "header len = 7",
            "error frame (id 0) 100 malformed_frame, then close",
            |c| frame_closes(
                c,
                header(7, 1).to_vec(),
                false,
                Some(ErrorCode::MalformedFrame)
            )
            .await
        ),
        case!(
            "frame_len_u32_max",
            "frame",
            "header len = 2^32 - 1",
            "error frame (id 0) 101 frame_too_large, then close",
            |c| frame_closes(
                c,
                header(u32::MAX, 1).to_vec(),
                false,
                Some(ErrorCode::FrameTooLarge)
            )
            .await
        ),
        case!(
            "frame_len_max_plus_one",
            "frame",
            "header len = MAX_FRAME_LEN + 1",
            "error frame (id 0) 101 frame_too_large, then close",
            |c| frame_closes(
                c,
                header(MAX_FRAME_LEN + 1, 1).to_vec(),
                false,
                Some(ErrorCode::FrameTooLarge)
            )
            .await
        ),
        case!(
            "frame_truncated_header",
            "frame",
            "5 header bytes, then the write side closes",
            "the connection closes, no answer",
            |c| frame_closes(c, vec![0, 0, 0, 20, 0], true, None).await
        ),
        case!(
            "frame_truncated_body",
            "frame",
            "len 108 declared, 20 body bytes, then the write side closes",
            "the connection closes, no answer",
            |c| frame_closes(c, [&header(108, 3)[..], &[0xa1; 20]].concat(), true, None).await
        ),
        case!(
            "frame_huge_declared_then_close",
            "frame",
            "len = MAX_FRAME_LEN (80 MiB) declared, 1 KiB sent, then close",
            "the connection closes, no answer; memory reserved for it is released",
            |c| frame_closes(
                c,
                [&header(MAX_FRAME_LEN, 4)[..], &[0u8; 1024]].concat(),
                true,
                None
            )
            .await
        ),
        case!(
            "frame_empty_body",
            "frame",
            "len = 8 (request id, no body)",
            "error frame for that id: 102 malformed_message; the connection stays open",
            |c| frame_answers(c, Vec::new(), ErrorCode::MalformedMessage).await
        ),
        case!(
            "frame_garbage_cbor",
            "frame",
            "body = 0xff 0xfe 0xfd…",
            "102 malformed_message for that id; connection stays open",
            |c| frame_answers(
                c,
                vec![0xff, 0xfe, 0xfd, 0x00, 0x13],
                ErrorCode::MalformedMessage
            )
            .await
        ),
        case!(
            "frame_unknown_variant",
            "frame",
            "body = CBOR \"shutdown\"",
            "102 malformed_message; connection stays open",
            |c| frame_answers(c, C::t("shutdown").enc(), ErrorCode::MalformedMessage).await
        ),
        case!(
            "frame_unknown_variant_map",
            "frame",
            "body = {\"load_plugin\": {\"path\": \"/bin/sh\"}}",
            "102 malformed_message; connection stays open",
            |c| frame_answers(
                c,
                C::M(vec![(
                    C::t("load_plugin"),
                    C::M(vec![(C::t("path"), C::t("/bin/sh"))])
                )])
                .enc(),
                ErrorCode::MalformedMessage
            )
            .await
        ),
        case!(
            "frame_huge_declared_bytes",
            "frame",
            "Infer{sealed: byte string declaring 2^62 bytes}, 8 present",
            "102 malformed_message; connection stays open",
            |c| frame_answers(
                c,
                C::M(vec![(
                    C::t("infer"),
                    C::M(vec![(C::t("sealed"), C::Raw(huge_bytes_head(1 << 62, 8)))])
                )])
                .enc(),
                ErrorCode::MalformedMessage
            )
            .await
        ),
        case!(
            "frame_huge_declared_map",
            "frame",
            "a CBOR map declaring 2^32 entries",
            "102 malformed_message; connection stays open",
            |c| frame_answers(
                c,
                vec![0xba, 0xff, 0xff, 0xff, 0xff, 0x60, 0x60],
                ErrorCode::MalformedMessage
            )
            .await
        ),
        case!(
            "frame_empty_sealed",
            "frame",
            "Infer{sealed: b\"\"}",
            "102 malformed_message; connection stays open",
            |c| frame_answers(
                c,
                EnclaveRequest::Infer { sealed: vec![] }.encode().unwrap(),
                ErrorCode::MalformedMessage
            )
            .await
        ),
        case!(
            "frame_short_nonce",
            "frame",
            "Attestation{nonce: 1 byte}",
            "500 invalid_nonce; connection stays open",
            |c| frame_answers(
                c,
                EnclaveRequest::Attestation { nonce: vec![1] }
                    .encode()
                    .unwrap(),
                ErrorCode::InvalidNonce
            )
            .await
        ),
        case!(
            "frame_bad_model_id",
            "frame",
            "LoadModel{model_id: \"a/b\", onnx: 1 byte}",
            "102 malformed_message; connection stays open",
            |c| frame_answers(
                c,
                EnclaveRequest::LoadModel {
                    model_id: "a/b".into(),
                    onnx: vec![1]
                }
                .encode()
                .unwrap(),
                ErrorCode::MalformedMessage
            )
            .await
        ),
        case!(
            "frame_chunk_unknown_upload",
            "frame",
            "LoadSealedModelChunk{upload_id: 2^64-1}",
            "411 unknown_upload; connection stays open",
            |c| frame_answers(
                c,
                EnclaveRequest::LoadSealedModelChunk {
                    upload_id: u64::MAX,
                    data: vec![1; 16]
                }
                .encode()
                .unwrap(),
                ErrorCode::UnknownUpload
            )
            .await
        ),
        case!(
            "frame_end_unknown_upload",
            "frame",
            "LoadSealedModelEnd{upload_id: 12345}",
            "411 unknown_upload; connection stays open",
            |c| frame_answers(
                c,
                EnclaveRequest::LoadSealedModelEnd { upload_id: 12345 }
                    .encode()
                    .unwrap(),
                ErrorCode::UnknownUpload
            )
            .await
        ),
        // ---- Sealed models through the admin API ---------------------------------------------
        case!(
            "model_malformed_onnx",
            "sealed_model",
            "a correctly sealed file (real KMS data key) whose plaintext is 10 KiB of 0xff (protobuf wire type 7: never valid ONNX)",
            "422 model_rejected (tract refuses the ONNX)",
            |c| upload_expect(
                c,
                sealed_file(&c.keys.bad_onnx, "bad-onnx", &[0xff; 10 * 1024], None),
                422,
                "model_rejected"
            )
            .await
        ),
        case!(
            "model_truncated_file",
            "sealed_model",
            "a correctly sealed digits model cut in half",
            "422 model_corrupt",
            |c| {
                let f = sealed_file(&c.keys.truncated, "truncated", &c.model_bytes, None);
                upload_expect(c, f[..f.len() / 2].to_vec(), 422, "model_corrupt").await
            }
        ),
        case!(
            "model_wrong_digest",
            "sealed_model",
            "every chunk authenticates but the header's SHA-384 is of other bytes",
            "422 model_digest_mismatch",
            |c| upload_expect(
                c,
                sealed_file(
                    &c.keys.bad_digest,
                    "bad-digest",
                    &c.model_bytes,
                    Some([7; 48])
                ),
                422,
                "model_digest_mismatch"
            )
            .await
        ),
        case!(
            "model_header_len_u32_max",
            "sealed_model",
            "magic then header length 2^32 - 1",
            "422 model_corrupt (refused before allocating)",
            |c| upload_expect(
                c,
                [&b"SIMODEL1"[..], &u32::MAX.to_be_bytes()].concat(),
                422,
                "model_corrupt"
            )
            .await
        ),
        case!(
            "model_absurd_plaintext_len_valid_format",
            "sealed_model",
            "header with plaintext_len = 8 GiB (the format maximum) and 1 KiB of body",
            "413 model_too_large (refused at begin, before KMS and before allocating)",
            |c| upload_expect(c, absurd_header(8 << 30, 1024), 413, "model_too_large").await
        ),
        case!(
            "model_absurd_plaintext_len_u64_max",
            "sealed_model",
            "hand-built canonical header with plaintext_len = 2^64 - 1",
            "413 model_too_large",
            |c| upload_expect(c, absurd_header(u64::MAX, 1024), 413, "model_too_large").await
        ),
        case!(
            "model_bad_magic",
            "sealed_model",
            "an ONNX file uploaded as is",
            "422 model_corrupt",
            |c| upload_expect(c, c.model_bytes.clone(), 422, "model_corrupt").await
        ),
        case!(
            "model_wrong_content_type",
            "sealed_model",
            "a sealed file with Content-Type application/json",
            "415 malformed_message",
            |c| upload_expect_ct(
                c,
                b"SIMODEL1".to_vec(),
                "application/json",
                415,
                "malformed_message"
            )
            .await
        ),
        case!(
            "model_control_valid_upload",
            "sealed_model",
            "the digits model sealed the same way as the cases above",
            "200, then served: sealed inference on it gives the expected label (control)",
            |c| valid_sealed_upload(c).await
        ),
        // ---- Tampered attestation (a proxy in front of the host rewrites the answer) ---------
        case!(
            "attest_signature_flipped",
            "attestation",
            "last byte of the COSE signature flipped",
            "ClientError::Verification, step verify:signature",
            |c| attest_refused(c, Tamper::FlipLastDocByte, "verify:signature").await
        ),
        case!(
            "attest_pcr0_in_payload_changed",
            "attestation",
            "one byte of PCR0 inside the signed payload changed",
            "ClientError::Verification, step verify:signature",
            |c| attest_refused(c, Tamper::FlipPcr0, "verify:signature").await
        ),
        case!(
            "attest_document_truncated",
            "attestation",
            "document cut in half",
            "ClientError::Verification, step verify:cose",
            |c| attest_refused(c, Tamper::TruncateDoc, "verify:cose").await
        ),
        case!(
            "attest_document_garbage",
            "attestation",
            "document = 2000 random bytes",
            "ClientError::Verification, step verify:cose",
            |c| attest_refused(c, Tamper::GarbageDoc, "verify:cose").await
        ),
        case!(
            "attest_manifest_changed",
            "attestation",
            "one byte of the manifest flipped",
            "ClientError::Commitment, step commitment:commitment_digest",
            |c| attest_refused(c, Tamper::FlipManifestByte, "commitment:commitment_digest").await
        ),
        case!(
            "attest_other_nonce",
            "attestation",
            "a genuine document fetched for another nonce",
            "ClientError::Verification, step verify:nonce",
            |c| attest_refused(c, Tamper::OtherNonce, "verify:nonce").await
        ),
        case!(
            "attest_not_base64",
            "attestation",
            "document field is not base64",
            "ClientError::MalformedResponse, step attestation_response",
            |c| attest_refused(c, Tamper::NotBase64, "attestation_response").await
        ),
        case!(
            "attest_missing_fields",
            "attestation",
            "JSON body {}",
            "ClientError::MalformedResponse, step attestation_response",
            |c| attest_refused(c, Tamper::EmptyJson, "attestation_response").await
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_input_gets_its_exact_outcome_and_the_stack_keeps_serving() {
    let ctx = Ctx::start().await;
    let cases = cases();
    assert!(cases.len() >= 40, "the matrix has {} cases", cases.len());
    let mut names = std::collections::HashSet::new();
    for case in &cases {
        assert!(names.insert(case.name), "duplicate case name {}", case.name);
    }
    // The control before anything hostile: if this fails, nothing below means anything.
    ctx.check_serving()
        .await
        .expect("the stack serves before any case");

    let mut failures = Vec::new();
    for case in &cases {
        let outcome = match tokio::time::timeout(Duration::from_secs(60), (case.run)(&ctx)).await {
            Ok(r) => r,
            Err(_) => Err("no outcome within 60 s".to_string()),
        };
        let serving = ctx.check_serving().await;
        let status = match (&outcome, &serving) {
            (Ok(()), Ok(())) => "ok",
            _ => "FAIL",
        };
        eprintln!("[{status}] {:<11} {}", case.layer, case.name);
        if let Err(e) = outcome {
            failures.push(format!(
                "{} [{}]\n    input:    {}\n    expected: {}\n    got:      {e}",
                case.name, case.layer, case.input, case.expected
            ));
        }
        if let Err(e) = serving {
            failures.push(format!(
                "{} [{}]: after this case a valid sealed request failed: {e}",
                case.name, case.layer
            ));
        }
    }
    let end = ctx.check_serving().await;
    ctx.stop().await;
    if let Err(e) = end {
        failures.push(format!("at the end, a valid sealed request failed: {e}"));
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The stack.
// ---------------------------------------------------------------------------------------------

/// One KMS data key per file the cases seal (a data key must seal one file only).
struct Keys {
    bad_onnx: DataKey,
    truncated: DataKey,
    bad_digest: DataKey,
    control: DataKey,
}

struct Ctx {
    sim: common::Sim,
    model_bytes: Vec<u8>,
    session: Session,
    http: reqwest::Client,
    keys: Keys,
}

impl Ctx {
    async fn start() -> Ctx {
        let sim = common::Sim::start_with_aws(&[], &[]).await;
        let kms = sim.aws().owner_kms_client().await.unwrap();
        let key_arn = kms
            .create_key()
            .policy(sealed_sim::stack::key_policy(&sim.stack.pcr0))
            .send()
            .await
            .unwrap()
            .key_metadata()
            .unwrap()
            .arn()
            .unwrap()
            .to_string();
        let mut data_keys = Vec::new();
        for model_id in ["bad-onnx", "truncated", "bad-digest", "digits-sealed"] {
            data_keys.push(
                sealed_client::kms::generate_data_key(&kms, &key_arn, model_id)
                    .await
                    .unwrap(),
            );
        }
        let [bad_onnx, truncated, bad_digest, control] = <[DataKey; 4]>::try_from(data_keys)
            .map_err(|_| "four keys")
            .unwrap();
        let session = sim.session().await;
        let model_bytes = std::fs::read(&sim.digits.model).unwrap();
        Ctx {
            sim,
            model_bytes,
            session,
            http: reqwest::Client::builder()
                .timeout(EXCHANGE_TIMEOUT)
                .build()
                .unwrap(),
            keys: Keys {
                bad_onnx,
                truncated,
                bad_digest,
                control,
            },
        }
    }

    async fn stop(self) {
        self.sim.stop().await;
    }

    fn host_addr(&self) -> String {
        addr_of(&self.sim.stack.host_url)
    }

    fn key_config(&self) -> KeyConfig {
        self.session.key_config().clone()
    }

    /// A valid sealed request through the SDK gets the digits model's expected label.
    async fn check_serving(&self) -> CaseResult {
        let example = &self.sim.digits.examples[0];
        let tensor = npy::read_file(&example.file).map_err(|e| e.to_string())?;
        let outputs = self
            .session
            .infer(
                "digits",
                vec![NamedTensor {
                    name: "input".into(),
                    tensor,
                }],
            )
            .await
            .map_err(|e| format!("valid request: {e}"))?;
        check_label(&outputs, &example.predicted_labels)
    }
}

fn check_label(outputs: &[NamedTensor], want: &[i64]) -> CaseResult {
    let label = outputs
        .iter()
        .find(|o| o.name == "label")
        .ok_or("no label output")?;
    let got = label.tensor.to_i64().map_err(|e| e.to_string())?;
    if got != want {
        return Err(format!("label {got:?}, expected {want:?}"));
    }
    Ok(())
}

fn addr_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).unwrap();
    v
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// ---------------------------------------------------------------------------------------------
// HTTP.
// ---------------------------------------------------------------------------------------------

fn error_name(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["name"].as_str().map(str::to_string))
        .unwrap_or_else(|| {
            format!(
                "<not an error body: {}>",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )
        })
}

async fn http_send(
    c: &Ctx,
    base: &str,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    content_type: Option<&str>,
) -> Result<(u16, Vec<u8>), String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let mut req = c.http.request(method, format!("{base}{path}"));
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let r = req
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = r.status().as_u16();
    let bytes = r
        .bytes()
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    Ok((status, bytes.to_vec()))
}

fn expect_status(status: u16, body: &[u8], want: u16, want_name: Option<&str>) -> CaseResult {
    let name = error_name(body);
    if status != want || want_name.is_some_and(|n| n != name) {
        return Err(format!("HTTP {status} {name}"));
    }
    Ok(())
}

async fn http_expect(
    c: &Ctx,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    content_type: Option<&str>,
    want: u16,
    want_name: Option<&str>,
) -> CaseResult {
    let (status, body) =
        http_send(c, &c.sim.stack.host_url, method, path, body, content_type).await?;
    expect_status(status, &body, want, want_name)
}

/// Writes `request` on a fresh TCP connection while reading the answer concurrently (the server
/// may answer and close before the request is fully written); returns everything read.
async fn raw_exchange(addr: &str, request: Vec<u8>, half_close: bool) -> Result<Vec<u8>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = rd.read_to_end(&mut buf).await;
        buf
    });
    for piece in request.chunks(64 * 1024) {
        if wr.write_all(piece).await.is_err() {
            break;
        }
    }
    if half_close {
        let _ = wr.shutdown().await;
    }
    let buf = tokio::time::timeout(EXCHANGE_TIMEOUT, reader)
        .await
        .map_err(|_| "the server neither answered nor closed".to_string())?
        .map_err(|e| e.to_string())?;
    drop(wr);
    Ok(buf)
}

/// Status code and body of a raw HTTP/1.1 response (body after the blank line, not de-chunked:
/// the cases below only send requests whose answers have a Content-Length).
fn parse_raw_response(buf: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let text = String::from_utf8_lossy(buf);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| {
            format!(
                "no HTTP status line in {} bytes: {:?}",
                buf.len(),
                &text[..text.len().min(120)]
            )
        })?;
    let body = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| buf[p + 4..].to_vec())
        .unwrap_or_default();
    Ok((status, body))
}

async fn raw_http_expect(c: &Ctx, request: Vec<u8>, want: u16) -> CaseResult {
    let buf = raw_exchange(&c.host_addr(), request, false).await?;
    let (status, body) = parse_raw_response(&buf)?;
    expect_status(status, &body, want, None)
}

/// POST /v1/infer with a Content-Length and a body one byte over the limit.
fn oversized_request(addr: &str) -> Vec<u8> {
    let len = MAX_SEALED_MESSAGE_LEN + 1;
    let mut req = format!(
        "POST /v1/infer HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    req.resize(req.len() + len, 0x5a);
    req
}

/// The host refuses on the Content-Length alone, without reading the body; here the answer is
/// read while the body is still being written (the next case writes it whole first).
async fn oversized_content_length(c: &Ctx) -> CaseResult {
    let addr = c.host_addr();
    let req = oversized_request(&addr);
    let buf = raw_exchange(&addr, req, true).await?;
    let (status, body) = parse_raw_response(&buf)?;
    expect_status(status, &body, 413, Some("request_too_large"))
}

/// Writes the whole refused request before reading: the host answers on the Content-Length
/// alone, then half-closes and discards the body (limits.rs `linger_close`), so the write
/// completes and the 413 is still there to read. Before the lingering close, the unread bytes
/// made the host's close a reset that could erase the answer.
async fn oversized_content_length_written_first(c: &Ctx) -> CaseResult {
    let addr = c.host_addr();
    let req = oversized_request(&addr);
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(&req)
        .await
        .map_err(|e| format!("writing the whole request failed: {e}"))?;
    let mut buf = Vec::new();
    tokio::time::timeout(EXCHANGE_TIMEOUT, stream.read_to_end(&mut buf))
        .await
        .map_err(|_| "the server neither answered nor closed".to_string())?
        .map_err(|e| format!("reading the answer failed: {e}"))?;
    let (status, body) = parse_raw_response(&buf)?;
    expect_status(status, &body, 413, Some("request_too_large"))
}

async fn oversized_chunked(c: &Ctx) -> CaseResult {
    let addr = c.host_addr();
    let mut req = format!(
        "POST /v1/infer HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    let chunk = vec![0x41u8; 1 << 20];
    for _ in 0..17 {
        req.extend_from_slice(b"100000\r\n");
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let buf = raw_exchange(&addr, req, true).await?;
    let (status, body) = parse_raw_response(&buf)?;
    expect_status(status, &body, 413, Some("request_too_large"))
}

async fn short_body(c: &Ctx) -> CaseResult {
    let addr = c.host_addr();
    let req = format!(
        "POST /v1/infer HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n0123456789"
    )
    .into_bytes();
    let buf = raw_exchange(&addr, req, true).await?;
    let (status, body) = parse_raw_response(&buf)?;
    expect_status(status, &body, 400, Some("malformed_message"))
}

async fn oversized_headers(c: &Ctx) -> CaseResult {
    let addr = c.host_addr();
    let req = format!(
        "GET /v1/health HTTP/1.1\r\nHost: {addr}\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(20 * 1024)
    )
    .into_bytes();
    let buf = raw_exchange(&addr, req, false).await?;
    let (status, body) = parse_raw_response(&buf)?;
    expect_status(status, &body, 431, None)
}

async fn valid_request_with_content_type(c: &Ctx, content_type: &str) -> CaseResult {
    let example = &c.sim.digits.examples[0];
    let tensor = npy::read_file(&example.file).map_err(|e| e.to_string())?;
    let plaintext = sealed_wire::InferRequest {
        request_id: random_bytes(16).try_into().unwrap(),
        sent_at_ms: now_ms(),
        model_id: "digits".into(),
        inputs: vec![NamedTensor {
            name: "input".into(),
            tensor,
        }],
    }
    .encode()
    .map_err(|e| e.to_string())?;
    match sealed_exchange_ct(c, &plaintext, Some(content_type)).await? {
        InferResponse::Ok { outputs } => check_label(&outputs, &example.predicted_labels),
        InferResponse::Error { code, message } => Err(format!("sealed error {code}: {message}")),
    }
}

/// H2: a client that never finishes its headers is cut off at `--http-header-timeout-secs`.
async fn slowloris(c: &Ctx) -> CaseResult {
    let stack = Stack::start_with(
        &c.sim.paths,
        StackOptions {
            name: "slow-",
            enclave_binary: c.sim.paths.enclave(),
            plaintext_models: vec![ModelFile {
                id: "digits".into(),
                path: c.sim.digits.model.clone(),
            }],
            aws: None,
            enclave_args: Vec::new(),
            host_args: vec!["--http-header-timeout-secs".into(), "2".into()],
            host_enclave_socket: None,
        },
    )
    .await
    .map_err(|e| format!("the host did not start with --http-header-timeout-secs 2: {e:#}"))?;
    let result = slowloris_against(&stack).await;
    // A normal client of the same host is unaffected.
    let serving = async {
        let session = Client::new(&stack.host_url, c.sim.policy())
            .map_err(|e| e.to_string())?
            .attest()
            .await
            .map_err(|e| format!("attesting the slowloris stack: {e}"))?;
        let example = &c.sim.digits.examples[0];
        let tensor = npy::read_file(&example.file).map_err(|e| e.to_string())?;
        let outputs = session
            .infer(
                "digits",
                vec![NamedTensor {
                    name: "input".into(),
                    tensor,
                }],
            )
            .await
            .map_err(|e| format!("inference on the slowloris stack: {e}"))?;
        check_label(&outputs, &example.predicted_labels)
    }
    .await;
    stack.stop().await;
    result?;
    serving
}

async fn slowloris_against(stack: &Stack) -> CaseResult {
    let addr = addr_of(&stack.host_url);
    let mut s = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(format!("GET /v1/health HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let mut i = 0u32;
    // One more header line every 500 ms, never the blank line: an idle timer never fires, only
    // a deadline on the whole header section does.
    while started.elapsed() < Duration::from_secs(8) {
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            // Some servers say 408 before closing: also a close, once the read hits EOF.
            Ok(Ok(_)) => continue,
            Err(_) => {}
        }
        i += 1;
        if s.write_all(format!("X-Slow-{i}: x\r\n").as_bytes())
            .await
            .is_err()
        {
            return Ok(());
        }
    }
    Err(format!(
        "the host still held the connection after {:?} of trickled headers",
        started.elapsed()
    ))
}

// ---------------------------------------------------------------------------------------------
// Sealed envelope and sealed plaintext.
// ---------------------------------------------------------------------------------------------

fn seal(c: &Ctx, plaintext: &[u8]) -> Result<(Vec<u8>, sealed_crypto::ResponseOpener), String> {
    let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
    sealed_crypto::seal_request(&c.key_config(), plaintext, &mut rng).map_err(|e| e.to_string())
}

async fn post_sealed(
    c: &Ctx,
    body: Vec<u8>,
    content_type: Option<&str>,
) -> Result<(u16, Vec<u8>), String> {
    http_send(
        c,
        &c.sim.stack.host_url,
        "POST",
        "/v1/infer",
        Some(body),
        content_type,
    )
    .await
}

async fn sealed_exchange_ct(
    c: &Ctx,
    plaintext: &[u8],
    content_type: Option<&str>,
) -> Result<InferResponse, String> {
    let (sealed, opener) = seal(c, plaintext)?;
    let (status, body) = post_sealed(c, sealed, content_type).await?;
    open_response(status, &body, opener)
}

fn open_response(
    status: u16,
    body: &[u8],
    opener: sealed_crypto::ResponseOpener,
) -> Result<InferResponse, String> {
    if status != 200 {
        return Err(format!(
            "HTTP {status} {} (expected a sealed answer)",
            error_name(body)
        ));
    }
    let opened = opener
        .open(body)
        .map_err(|_| "the sealed answer does not open with the requester's opener".to_string())?;
    InferResponse::decode(&opened).map_err(|e| format!("opened answer does not decode: {e}"))
}

async fn sealed_expect(c: &Ctx, plaintext: &[u8], want: ErrorCode) -> CaseResult {
    match sealed_exchange_ct(c, plaintext, None).await? {
        InferResponse::Error { code, .. } if code == want => Ok(()),
        InferResponse::Error { code, message } => Err(format!("sealed {code}: {message}")),
        InferResponse::Ok { .. } => Err("sealed Ok (a normal answer)".into()),
    }
}

/// A valid request for the digits model, sealed, then `tamper`ed before it is posted.
async fn envelope_expect(c: &Ctx, tamper: fn(&mut Vec<u8>), want: u16, name: &str) -> CaseResult {
    let plaintext = request_map(c, "digits", vec![digit_input(c)]).enc();
    let (mut sealed, _opener) = seal(c, &plaintext)?;
    tamper(&mut sealed);
    let (status, body) = post_sealed(c, sealed, None).await?;
    expect_status(status, &body, want, Some(name))
}

async fn sealed_to_another_key(c: &Ctx) -> CaseResult {
    let mut other = c.key_config();
    other.public_key = random_bytes(32).try_into().unwrap();
    let plaintext = request_map(c, "digits", vec![digit_input(c)]).enc();
    let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
    let (sealed, _) =
        sealed_crypto::seal_request(&other, &plaintext, &mut rng).map_err(|e| e.to_string())?;
    let (status, body) = post_sealed(c, sealed, None).await?;
    expect_status(status, &body, 400, Some("sealed_request_invalid"))
}

async fn hand_built_control(c: &Ctx) -> CaseResult {
    let example = &c.sim.digits.examples[0];
    let tensor = npy::read_file(&example.file).map_err(|e| e.to_string())?;
    let id: [u8; 16] = random_bytes(16).try_into().unwrap();
    let sent = now_ms();
    let hand = C::M(vec![
        (C::t("request_id"), C::B(id.to_vec())),
        (C::t("sent_at_ms"), C::U(sent)),
        (C::t("model_id"), C::t("digits")),
        (
            C::t("inputs"),
            C::A(vec![named("input", tensor_of(&tensor))]),
        ),
    ])
    .enc();
    // The encoder agrees with the real one byte for byte, so the hostile variants differ from a
    // valid request only where a case says.
    let real = sealed_wire::InferRequest {
        request_id: id,
        sent_at_ms: sent,
        model_id: "digits".into(),
        inputs: vec![NamedTensor {
            name: "input".into(),
            tensor,
        }],
    }
    .encode()
    .map_err(|e| e.to_string())?;
    if hand != real {
        return Err("the hand CBOR encoding differs from InferRequest::encode".into());
    }
    match sealed_exchange_ct(c, &hand, None).await? {
        InferResponse::Ok { outputs } => check_label(&outputs, &example.predicted_labels),
        InferResponse::Error { code, message } => Err(format!("sealed {code}: {message}")),
    }
}

async fn normal_answer(c: &Ctx, values: &[f32; 64]) -> CaseResult {
    let plaintext = request_map(
        c,
        "digits",
        vec![named("input", f32_tensor(&[1, 64], values))],
    )
    .enc();
    match sealed_exchange_ct(c, &plaintext, None).await? {
        InferResponse::Ok { outputs } => {
            let label = outputs
                .iter()
                .find(|o| o.name == "label")
                .ok_or("no label")?;
            let probs = outputs
                .iter()
                .find(|o| o.name == "probabilities")
                .ok_or("no probabilities")?;
            let l = label.tensor.to_i64().map_err(|e| e.to_string())?;
            let p = probs.tensor.to_f32().map_err(|e| e.to_string())?;
            if l.len() != 1 || p.len() != 10 {
                return Err(format!(
                    "label of {} values, {} probabilities",
                    l.len(),
                    p.len()
                ));
            }
            Ok(())
        }
        InferResponse::Error { code, message } => Err(format!("sealed {code}: {message}")),
    }
}

/// Hands out the same pre-drawn random bytes to every sealing: two `seal_request` calls with two
/// clones give byte-identical requests and two openers for the one response secret.
#[derive(Clone)]
struct ReplayRng {
    bytes: Vec<u8>,
    pos: usize,
}

impl rand_core::TryRng for ReplayRng {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for d in dst {
            *d = self.bytes[self.pos % self.bytes.len()];
            self.pos += 1;
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for ReplayRng {}

async fn replay_identical(c: &Ctx) -> CaseResult {
    let plaintext = request_map(c, "digits", vec![digit_input(c)]).enc();
    let rng = ReplayRng {
        bytes: random_bytes(256),
        pos: 0,
    };
    let kc = c.key_config();
    let (first, opener1) = sealed_crypto::seal_request(&kc, &plaintext, &mut rng.clone())
        .map_err(|e| e.to_string())?;
    let (second, opener2) = sealed_crypto::seal_request(&kc, &plaintext, &mut rng.clone())
        .map_err(|e| e.to_string())?;
    if first != second {
        return Err("could not build two identical sealed requests".into());
    }
    let (status, body) = post_sealed(c, first, None).await?;
    match open_response(status, &body, opener1)? {
        InferResponse::Ok { outputs } => {
            check_label(&outputs, &c.sim.digits.examples[0].predicted_labels)
                .map_err(|e| format!("first send: {e}"))?
        }
        InferResponse::Error { code, message } => {
            return Err(format!("first send: sealed {code}: {message}"));
        }
    }
    let (status, body) = post_sealed(c, second, None).await?;
    match open_response(status, &body, opener2).map_err(|e| format!("replay: {e}"))? {
        InferResponse::Error {
            code: ErrorCode::ReplayedRequest,
            ..
        } => Ok(()),
        InferResponse::Error { code, message } => Err(format!("replay: sealed {code}: {message}")),
        InferResponse::Ok { .. } => Err("replay: answered normally (the model ran twice)".into()),
    }
}

async fn replay_same_id(c: &Ctx) -> CaseResult {
    let id = C::B(random_bytes(16));
    let plaintext = request_with(c, "request_id", id).enc();
    match sealed_exchange_ct(c, &plaintext, None).await? {
        InferResponse::Ok { .. } => {}
        InferResponse::Error { code, message } => {
            return Err(format!("first send: sealed {code}: {message}"));
        }
    }
    // Same plaintext, fresh ephemeral key: a different envelope carrying the same request_id.
    match sealed_exchange_ct(c, &plaintext, None).await? {
        InferResponse::Error {
            code: ErrorCode::ReplayedRequest,
            ..
        } => Ok(()),
        InferResponse::Error { code, message } => {
            Err(format!("second send: sealed {code}: {message}"))
        }
        InferResponse::Ok { .. } => Err("second send: answered normally".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-built CBOR (RFC 8949), so that plaintexts can break every rule the real encoder keeps.
// ---------------------------------------------------------------------------------------------

enum C {
    U(u64),
    /// Negative integer -1 - n.
    N(u64),
    B(Vec<u8>),
    T(String),
    A(Vec<C>),
    M(Vec<(C, C)>),
    /// Bytes copied as they are (to declare lengths the data does not have).
    Raw(Vec<u8>),
}

impl C {
    fn t(s: &str) -> C {
        C::T(s.to_string())
    }

    fn enc(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            C::U(n) => head(out, 0, *n),
            C::N(n) => head(out, 1, *n),
            C::B(b) => {
                head(out, 2, b.len() as u64);
                out.extend_from_slice(b);
            }
            C::T(s) => {
                head(out, 3, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            C::A(items) => {
                head(out, 4, items.len() as u64);
                for i in items {
                    i.write(out);
                }
            }
            C::M(entries) => {
                head(out, 5, entries.len() as u64);
                for (k, v) in entries {
                    k.write(out);
                    v.write(out);
                }
            }
            C::Raw(b) => out.extend_from_slice(b),
        }
    }
}

/// The shortest head for `major` and argument `n` (RFC 8949 §3).
fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// A byte-string head declaring `declared` bytes followed by only `present` bytes.
fn huge_bytes_head(declared: u64, present: usize) -> Vec<u8> {
    let mut out = Vec::new();
    head(&mut out, 2, declared);
    out.extend(std::iter::repeat_n(0u8, present));
    out
}

fn dims(shape: &[u64]) -> C {
    C::A(shape.iter().map(|&d| C::U(d)).collect())
}

fn tensor(dtype: &str, shape: &[u64], data: Vec<u8>) -> C {
    C::M(vec![
        (C::t("dtype"), C::t(dtype)),
        (C::t("shape"), dims(shape)),
        (C::t("data"), C::B(data)),
    ])
}

fn f32_tensor(shape: &[u64], values: &[f32]) -> C {
    tensor(
        "f32",
        shape,
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

fn tensor_of(t: &Tensor) -> C {
    let values = t.to_f32().unwrap();
    f32_tensor(t.shape(), &values)
}

fn named(name: &str, tensor: C) -> C {
    C::M(vec![(C::t("name"), C::t(name)), (C::t("tensor"), tensor)])
}

fn digit_input(c: &Ctx) -> C {
    let t = npy::read_file(&c.sim.digits.examples[0].file).unwrap();
    named("input", tensor_of(&t))
}

/// `{request_id, sent_at_ms, model_id, inputs}` with a fresh id and the current time.
fn request_map(_c: &Ctx, model_id: &str, inputs: Vec<C>) -> C {
    C::M(vec![
        (C::t("request_id"), C::B(random_bytes(16))),
        (C::t("sent_at_ms"), C::U(now_ms())),
        (C::t("model_id"), C::t(model_id)),
        (C::t("inputs"), C::A(inputs)),
    ])
}

/// A valid digits request with one field's value replaced.
fn request_with(c: &Ctx, field: &str, value: C) -> C {
    let C::M(entries) = request_map(c, "digits", vec![digit_input(c)]) else {
        unreachable!()
    };
    let mut value = Some(value);
    C::M(
        entries
            .into_iter()
            .map(|(k, v)| match &k {
                C::T(name) if name == field => (k, value.take().unwrap()),
                _ => (k, v),
            })
            .collect(),
    )
}

/// A valid digits request without one field.
fn request_without(c: &Ctx, field: &str) -> C {
    let C::M(entries) = request_map(c, "digits", vec![digit_input(c)]) else {
        unreachable!()
    };
    C::M(
        entries
            .into_iter()
            .filter(|(k, _)| !matches!(k, C::T(name) if name == field))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// Raw frames on the enclave socket.
// ---------------------------------------------------------------------------------------------

fn header(len: u32, request_id: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&len.to_be_bytes());
    h[4..].copy_from_slice(&request_id.to_be_bytes());
    h
}

fn enclave_socket(c: &Ctx) -> &Path {
    c.sim.stack.enclave_socket()
}

/// Sends `bytes` (then closes the write side if `half_close`); the enclave must close the
/// connection, after one error frame with `want` for request id 0 or after nothing at all.
async fn frame_closes(
    c: &Ctx,
    bytes: Vec<u8>,
    half_close: bool,
    want: Option<ErrorCode>,
) -> CaseResult {
    let mut s = tokio::net::UnixStream::connect(enclave_socket(c))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(&bytes).await.map_err(|e| e.to_string())?;
    if half_close {
        s.shutdown().await.map_err(|e| e.to_string())?;
    }
    let mut buf = Vec::new();
    tokio::time::timeout(EXCHANGE_TIMEOUT, s.read_to_end(&mut buf))
        .await
        .map_err(|_| "the enclave kept the connection open".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    let frames = decode_frames(&buf)?;
    match (want, frames.as_slice()) {
        (None, []) => Ok(()),
        (Some(code), [(0, EnclaveResponse::Error(e))]) if e.code == code => Ok(()),
        (_, got) => Err(format!("then closed; received {got:?}")),
    }
}

fn decode_frames(buf: &[u8]) -> Result<Vec<(u64, EnclaveResponse)>, String> {
    let mut d = FrameDecoder::new(MAX_FRAME_LEN);
    d.push(buf);
    let mut out = Vec::new();
    while let Some(f) = d
        .next_frame()
        .map_err(|e| format!("enclave sent a bad frame: {e}"))?
    {
        let r = EnclaveResponse::decode(&f.body)
            .map_err(|e| format!("enclave sent an undecodable response: {e}"))?;
        out.push((f.request_id, r));
    }
    if d.buffered() != 0 {
        return Err(format!("{} trailing bytes from the enclave", d.buffered()));
    }
    Ok(out)
}

async fn read_one_frame(s: &mut tokio::net::UnixStream) -> Result<(u64, EnclaveResponse), String> {
    let mut h = [0u8; HEADER_LEN];
    let read = async {
        s.read_exact(&mut h).await?;
        let header = decode_header(&h, MAX_FRAME_LEN).map_err(std::io::Error::other)?;
        let mut body = vec![0u8; header.body_len];
        s.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>((header.request_id, body))
    };
    let (id, body) = tokio::time::timeout(EXCHANGE_TIMEOUT, read)
        .await
        .map_err(|_| "no answer from the enclave".to_string())?
        .map_err(|e| format!("reading the answer: {e}"))?;
    let r = EnclaveResponse::decode(&body).map_err(|e| format!("undecodable answer: {e}"))?;
    Ok((id, r))
}

/// Sends one frame with `body`; the enclave must answer that request id with `want` and keep the
/// connection open (a Health request on it is answered next).
async fn frame_answers(c: &Ctx, body: Vec<u8>, want: ErrorCode) -> CaseResult {
    let mut s = tokio::net::UnixStream::connect(enclave_socket(c))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let frame = encode_frame(0x1234, &body).map_err(|e| e.to_string())?;
    s.write_all(&frame).await.map_err(|e| e.to_string())?;
    match read_one_frame(&mut s).await? {
        (0x1234, EnclaveResponse::Error(e)) if e.code == want => {}
        other => return Err(format!("answered {other:?}")),
    }
    let health = encode_frame(0x1235, &EnclaveRequest::Health.encode().unwrap()).unwrap();
    s.write_all(&health)
        .await
        .map_err(|e| format!("connection closed: {e}"))?;
    match read_one_frame(&mut s).await? {
        (0x1235, EnclaveResponse::Health(_)) => Ok(()),
        other => Err(format!("the next request on that connection got {other:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Sealed models through the admin API.
// ---------------------------------------------------------------------------------------------

/// Seals `plaintext` under `key` as model `model_id`; with `digest`, the header claims that
/// SHA-384 instead (every chunk still authenticates under the header it carries).
fn sealed_file(
    key: &DataKey,
    model_id: &str,
    plaintext: &[u8],
    digest: Option<[u8; 48]>,
) -> Vec<u8> {
    let nonce_prefix: [u8; 7] = random_bytes(7).try_into().unwrap();
    let params = sealed_model::SealParams {
        model_id: model_id.into(),
        kms_key_id: key.key_arn().into(),
        encrypted_data_key: key.ciphertext_blob().to_vec(),
        chunk_size: sealed_model::MIN_CHUNK_SIZE,
    };
    let Some(digest) = digest else {
        return sealed_model::seal(params, key.key(), plaintext, nonce_prefix).unwrap();
    };
    let header = sealed_model::SealedModelHeader {
        model_id: params.model_id,
        kms_key_id: params.kms_key_id,
        encrypted_data_key: params.encrypted_data_key,
        plaintext_len: plaintext.len() as u64,
        plaintext_sha384: digest,
        chunk_size: params.chunk_size,
        nonce_prefix,
    };
    let mut sealer = sealed_model::Sealer::new(&header, key.key()).unwrap();
    let mut out = sealer.header_bytes().to_vec();
    let pieces: Vec<&[u8]> = plaintext.chunks(params.chunk_size as usize).collect();
    for (i, piece) in pieces.iter().enumerate() {
        out.extend(sealer.seal_chunk(piece, i + 1 == pieces.len()).unwrap());
    }
    // No `finish`: it would (rightly) refuse the digest.
    out
}

/// A canonical version-1 header claiming `plaintext_len` bytes (built by hand: the library
/// refuses to encode a length over its maximum), then `body` bytes of zeros.
fn absurd_header(plaintext_len: u64, body: usize) -> Vec<u8> {
    let cbor = C::M(vec![
        (C::t("format_version"), C::U(1)),
        (C::t("model_id"), C::t("absurd")),
        (
            C::t("kms_key_id"),
            C::t("arn:aws:kms:us-east-1:111122223333:key/absurd"),
        ),
        (C::t("encrypted_data_key"), C::B(vec![0xab; 184])),
        (C::t("plaintext_len"), C::U(plaintext_len)),
        (C::t("plaintext_sha384"), C::B(vec![7; 48])),
        (
            C::t("chunk_size"),
            C::U(u64::from(sealed_model::MIN_CHUNK_SIZE)),
        ),
        (C::t("nonce_prefix"), C::B(vec![1; 7])),
    ])
    .enc();
    let mut out = b"SIMODEL1".to_vec();
    out.extend_from_slice(&(cbor.len() as u32).to_be_bytes());
    out.extend_from_slice(&cbor);
    out.extend(std::iter::repeat_n(0u8, body));
    out
}

async fn upload_expect_ct(
    c: &Ctx,
    body: Vec<u8>,
    content_type: &str,
    want: u16,
    name: &str,
) -> CaseResult {
    let admin = c.sim.stack.admin_url.clone().ok_or("no admin API")?;
    let (status, body) = http_send(
        c,
        &admin,
        "POST",
        "/v1/admin/models",
        Some(body),
        Some(content_type),
    )
    .await?;
    expect_status(status, &body, want, Some(name))
}

async fn upload_expect(c: &Ctx, body: Vec<u8>, want: u16, name: &str) -> CaseResult {
    upload_expect_ct(c, body, "application/octet-stream", want, name).await
}

async fn valid_sealed_upload(c: &Ctx) -> CaseResult {
    let file = sealed_file(&c.keys.control, "digits-sealed", &c.model_bytes, None);
    let admin = c.sim.stack.admin_url.clone().ok_or("no admin API")?;
    let (status, body) = http_send(
        c,
        &admin,
        "POST",
        "/v1/admin/models",
        Some(file),
        Some("application/octet-stream"),
    )
    .await?;
    if status != 200 {
        return Err(format!("upload: HTTP {status} {}", error_name(&body)));
    }
    let session = Client::new(&c.sim.stack.host_url, c.sim.policy())
        .map_err(|e| e.to_string())?
        .attest()
        .await
        .map_err(|e| e.to_string())?;
    let example = &c.sim.digits.examples[0];
    let tensor = npy::read_file(&example.file).map_err(|e| e.to_string())?;
    let outputs = session
        .infer(
            "digits-sealed",
            vec![NamedTensor {
                name: "input".into(),
                tensor,
            }],
        )
        .await
        .map_err(|e| format!("inference on the sealed model: {e}"))?;
    check_label(&outputs, &example.predicted_labels)
}

// ---------------------------------------------------------------------------------------------
// Tampered attestation: an HTTP proxy on 127.0.0.1 in front of the host rewrites the answer.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Tamper {
    FlipLastDocByte,
    FlipPcr0,
    TruncateDoc,
    GarbageDoc,
    FlipManifestByte,
    OtherNonce,
    NotBase64,
    EmptyJson,
}

async fn attest_refused(c: &Ctx, tamper: Tamper, want_step: &str) -> CaseResult {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let proxy_url = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let upstream = c.sim.stack.host_url.clone();
    let pcr0 = c.sim.stack.pcr0;
    let http = c.http.clone();
    let proxy = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let (upstream, http) = (upstream.clone(), http.clone());
            tokio::spawn(proxy_one(conn, upstream, http, tamper, pcr0));
        }
    });
    let result = Client::new(&proxy_url, c.sim.policy())
        .map_err(|e| e.to_string())?
        .attest()
        .await;
    proxy.abort();
    match result {
        Ok(_) => Err("the client accepted the tampered attestation".into()),
        Err(e) => {
            let kind_ok = match want_step {
                s if s.starts_with("verify:") => matches!(e, ClientError::Verification(_)),
                s if s.starts_with("commitment:") => matches!(e, ClientError::Commitment(_)),
                _ => matches!(e, ClientError::MalformedResponse { .. }),
            };
            if kind_ok && e.step() == want_step {
                Ok(())
            } else {
                Err(format!("step {}: {e}", e.step()))
            }
        }
    }
}

async fn proxy_one(
    mut conn: tokio::net::TcpStream,
    upstream: String,
    http: reqwest::Client,
    tamper: Tamper,
    pcr0: [u8; 48],
) {
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 64 * 1024 {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&req)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let mut path = line.split(' ').nth(1).unwrap_or("/").to_string();
    if let Tamper::OtherNonce = tamper {
        path = format!("/v1/attestation?nonce={}", hex::encode(random_bytes(32)));
    }
    let body = match http.get(format!("{upstream}{path}")).send().await {
        Ok(r) => r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut doc = b64_decode(json["document"].as_str().unwrap_or_default());
    let mut manifest = b64_decode(json["manifest"].as_str().unwrap_or_default());
    let out = match tamper {
        Tamper::FlipLastDocByte => {
            if let Some(b) = doc.last_mut() {
                *b ^= 0x01;
            }
            None
        }
        Tamper::FlipPcr0 => {
            if let Some(p) = doc.windows(48).position(|w| w == pcr0) {
                doc[p + 47] ^= 0x01;
            }
            None
        }
        Tamper::TruncateDoc => {
            doc.truncate(doc.len() / 2);
            None
        }
        Tamper::GarbageDoc => {
            doc = random_bytes(2000);
            None
        }
        Tamper::FlipManifestByte => {
            if let Some(b) = manifest.last_mut() {
                *b ^= 0x01;
            }
            None
        }
        Tamper::OtherNonce => None,
        Tamper::NotBase64 => Some(r#"{"document":"***not base64***","manifest":""}"#.to_string()),
        Tamper::EmptyJson => Some("{}".to_string()),
    };
    let out = out.unwrap_or_else(|| {
        serde_json::json!({"document": b64_encode(&doc), "manifest": b64_encode(&manifest)})
            .to_string()
    });
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}",
        out.len()
    );
    let _ = conn.write_all(response.as_bytes()).await;
    let _ = conn.shutdown().await;
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4).
fn b64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for ch in s.bytes().filter(|&b| b != b'=') {
        let Some(v) = B64.iter().position(|&x| x == ch) else {
            return Vec::new();
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn base64_and_cbor_helpers_agree_with_known_vectors() {
    // RFC 4648 §10.
    for (plain, enc) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(b64_encode(plain.as_bytes()), enc);
        assert_eq!(b64_decode(enc), plain.as_bytes());
    }
    // RFC 8949 Appendix A.
    assert_eq!(C::U(23).enc(), [0x17]);
    assert_eq!(C::U(24).enc(), [0x18, 0x18]);
    assert_eq!(C::U(1000).enc(), [0x19, 0x03, 0xe8]);
    assert_eq!(C::U(1_000_000).enc(), [0x1a, 0x00, 0x0f, 0x42, 0x40]);
    assert_eq!(
        C::U(u64::MAX).enc(),
        [0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
    );
    assert_eq!(C::N(0).enc(), [0x20]);
    assert_eq!(C::t("IETF").enc(), [0x64, 0x49, 0x45, 0x54, 0x46]);
    assert_eq!(C::B(vec![1, 2, 3, 4]).enc(), [0x44, 1, 2, 3, 4]);
    assert_eq!(
        C::M(vec![(C::U(1), C::U(2)), (C::U(3), C::U(4))]).enc(),
        [0xa2, 0x01, 0x02, 0x03, 0x04]
    );
    // The hand-built absurd header is the library's own encoding when the length is in range.
    let h = absurd_header(10_000, 0);
    let (parsed, len) = sealed_model::parse_header(&h).unwrap();
    assert_eq!((parsed.plaintext_len, len), (10_000, h.len()));
}

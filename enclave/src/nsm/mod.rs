//! Access to the Nitro Secure Module (NSM) behind one trait, [`Nsm`], with two implementations:
//! [`real::RealNsm`] talks to `/dev/nsm` through the `aws-nitro-enclaves-nsm-api` driver, and
//! `mock::MockNsm` (feature `simulation` only) answers the same requests in-process, signing
//! documents with the mock CA. Both speak the crate's own [`Request`]/[`Response`] types, so the
//! code above this module cannot tell them apart.
//!
//! What it does not do: verify documents (that is `sealed-attestation`, on the client side), or
//! choose what goes into them (the server passes the key, the commitment and the client's nonce).
//! A production build (no `simulation` feature) contains no mock code and no way to select it.
//!
//! # Layout
//! - [`Nsm`]: the trait; [`attest`], [`get_random`], [`describe_pcr`], [`extend_pcr`],
//!   [`lock_pcr`]: typed helpers over it.
//! - [`NsmError`]: the NSM's [`ErrorCode`]s and unexpected answers as one error type.
//! - [`real`]: the device driver. `mock`: the simulation NSM.

use aws_nitro_enclaves_nsm_api::api::{ErrorCode, Request, Response};
use serde_bytes::ByteBuf;
use zeroize::Zeroize;

#[cfg(feature = "simulation")]
pub mod mock;
pub mod real;

pub use real::RealNsm;

/// Largest `user_data`, `nonce` and `public_key` in an attestation request. AWS's CDDL says
/// `bytes .size (0..1024)` for each (`nitro-facts.md` §1.2; aws-nitro-enclaves-nsm-api issue #52
/// on the conflicting 512), and real documents carry 1024-byte fields. Both implementations reject
/// anything larger with [`ErrorCode::InputTooLarge`] before doing any work.
pub const MAX_ATTESTATION_FIELD_LEN: usize = 1024;

/// Largest CBOR-encoded request the driver passes to the device (`NSM_REQUEST_MAX_SIZE` = 0x1000
/// in the crate's `driver` module); larger ones get [`ErrorCode::InputTooLarge`].
pub const MAX_REQUEST_LEN: usize = 0x1000;

/// Length of each PCR: the NSM's bank is SHA-384 (`nitro-facts.md` §4).
pub const PCR_LEN: usize = 48;

/// The Nitro Secure Module: one request in, one response out. The real device serialises requests
/// itself; implementations must be callable from several threads at once.
pub trait Nsm: Send + Sync {
    /// Processes one request. Failures come back as [`Response::Error`], as from the device.
    fn process(&self, request: Request) -> Response;
}

/// Why an NSM call failed: the device's [`ErrorCode`] or an answer of the wrong kind. Carries no
/// request data, so it can be logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NsmError {
    #[error("NSM device {path} could not be opened (not running inside a Nitro enclave?)")]
    DeviceUnavailable { path: &'static str },
    #[error("NSM: invalid argument")]
    InvalidArgument,
    #[error("NSM: PCR index out of range")]
    InvalidIndex,
    #[error("NSM: response does not match the request")]
    InvalidResponse,
    #[error("NSM: PCR is locked (read-only)")]
    ReadOnlyIndex,
    #[error("NSM: operation not supported")]
    InvalidOperation,
    #[error("NSM: output buffer too small")]
    BufferTooSmall,
    #[error("NSM: input too large")]
    InputTooLarge,
    #[error("NSM: internal error")]
    Internal,
    #[error("NSM answered a {request} request with {response}")]
    UnexpectedResponse {
        request: &'static str,
        response: &'static str,
    },
    #[error("NSM returned no random bytes")]
    NoRandomBytes,
    #[error("NSM returned a PCR of {len} bytes, expected {PCR_LEN}")]
    BadPcrLength { len: usize },
    #[error("attestation document of {len} bytes exceeds the maximum {max}")]
    DocumentTooLarge { len: usize, max: usize },
}

impl NsmError {
    /// A stable snake_case name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            NsmError::DeviceUnavailable { .. } => "device_unavailable",
            NsmError::InvalidArgument => "invalid_argument",
            NsmError::InvalidIndex => "invalid_index",
            NsmError::InvalidResponse => "invalid_response",
            NsmError::ReadOnlyIndex => "read_only_index",
            NsmError::InvalidOperation => "invalid_operation",
            NsmError::BufferTooSmall => "buffer_too_small",
            NsmError::InputTooLarge => "input_too_large",
            NsmError::Internal => "internal",
            NsmError::UnexpectedResponse { .. } => "unexpected_response",
            NsmError::NoRandomBytes => "no_random_bytes",
            NsmError::BadPcrLength { .. } => "bad_pcr_length",
            NsmError::DocumentTooLarge { .. } => "document_too_large",
        }
    }
}

impl From<ErrorCode> for NsmError {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::InvalidArgument => NsmError::InvalidArgument,
            ErrorCode::InvalidIndex => NsmError::InvalidIndex,
            ErrorCode::ReadOnlyIndex => NsmError::ReadOnlyIndex,
            ErrorCode::InvalidOperation => NsmError::InvalidOperation,
            ErrorCode::BufferTooSmall => NsmError::BufferTooSmall,
            ErrorCode::InputTooLarge => NsmError::InputTooLarge,
            ErrorCode::InternalError => NsmError::Internal,
            // `Error(Success)` is not a meaningful answer to any request.
            ErrorCode::InvalidResponse | ErrorCode::Success => NsmError::InvalidResponse,
        }
    }
}

/// Current state of one PCR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrDescription {
    /// The PCR is read-only (locked at boot or by `LockPCR(s)`).
    pub locked: bool,
    /// Its value (48 bytes).
    pub value: Vec<u8>,
}

/// Asks the NSM for a signed attestation document (COSE_Sign1 bytes) carrying `public_key`,
/// `user_data` and `nonce`. Each must be at most [`MAX_ATTESTATION_FIELD_LEN`] bytes.
pub fn attest(
    nsm: &dyn Nsm,
    public_key: Option<Vec<u8>>,
    user_data: Option<Vec<u8>>,
    nonce: Option<Vec<u8>>,
) -> Result<Vec<u8>, NsmError> {
    let request = Request::Attestation {
        user_data: user_data.map(ByteBuf::from),
        nonce: nonce.map(ByteBuf::from),
        public_key: public_key.map(ByteBuf::from),
    };
    match nsm.process(request) {
        Response::Attestation { document } => {
            let max = sealed_wire::limits::MAX_ATTESTATION_DOC_LEN;
            if document.len() > max {
                return Err(NsmError::DocumentTooLarge {
                    len: document.len(),
                    max,
                });
            }
            Ok(document)
        }
        other => Err(unexpected("Attestation", other)),
    }
}

/// Fills `out` with random bytes from the NSM (one `GetRandom` per up to 256 bytes). Intermediate
/// copies are zeroized, since the bytes may become key material.
pub fn get_random(nsm: &dyn Nsm, out: &mut [u8]) -> Result<(), NsmError> {
    let mut filled = 0;
    while let Some(rest) = out.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        let mut random = match nsm.process(Request::GetRandom) {
            Response::GetRandom { random } => random,
            other => return Err(unexpected("GetRandom", other)),
        };
        // Every round must make progress, so the loop ends after at most `out.len()` rounds.
        if random.is_empty() {
            return Err(NsmError::NoRandomBytes);
        }
        let n = rest.len().min(random.len());
        if let (Some(dst), Some(src)) = (rest.get_mut(..n), random.get(..n)) {
            dst.copy_from_slice(src);
        }
        random.zeroize();
        filled += n;
    }
    Ok(())
}

/// Reads one PCR and whether it is locked.
pub fn describe_pcr(nsm: &dyn Nsm, index: u16) -> Result<PcrDescription, NsmError> {
    match nsm.process(Request::DescribePCR { index }) {
        Response::DescribePCR { lock, data } => {
            check_pcr_len(&data)?;
            Ok(PcrDescription {
                locked: lock,
                value: data,
            })
        }
        other => Err(unexpected("DescribePCR", other)),
    }
}

/// Extends a PCR with `data` and returns its new value.
pub fn extend_pcr(nsm: &dyn Nsm, index: u16, data: Vec<u8>) -> Result<Vec<u8>, NsmError> {
    match nsm.process(Request::ExtendPCR { index, data }) {
        Response::ExtendPCR { data } => {
            check_pcr_len(&data)?;
            Ok(data)
        }
        other => Err(unexpected("ExtendPCR", other)),
    }
}

/// Makes a PCR read-only until the enclave stops.
pub fn lock_pcr(nsm: &dyn Nsm, index: u16) -> Result<(), NsmError> {
    match nsm.process(Request::LockPCR { index }) {
        Response::LockPCR => Ok(()),
        other => Err(unexpected("LockPCR", other)),
    }
}

fn check_pcr_len(data: &[u8]) -> Result<(), NsmError> {
    if data.len() == PCR_LEN {
        Ok(())
    } else {
        Err(NsmError::BadPcrLength { len: data.len() })
    }
}

/// Maps a response of the wrong kind (or an error response) to an [`NsmError`].
fn unexpected(request: &'static str, response: Response) -> NsmError {
    let response = match response {
        Response::Error(code) => return NsmError::from(code),
        Response::DescribePCR { .. } => "DescribePCR",
        Response::ExtendPCR { .. } => "ExtendPCR",
        Response::LockPCR => "LockPCR",
        Response::LockPCRs => "LockPCRs",
        Response::DescribeNSM { .. } => "DescribeNSM",
        Response::Attestation { .. } => "Attestation",
        Response::GetRandom { .. } => "GetRandom",
        _ => "an unknown response",
    };
    NsmError::UnexpectedResponse { request, response }
}

/// Size checks applied by both implementations before any work: the per-field attestation limit
/// and the driver's limit on the encoded request. Returns the code the device path would return.
pub(crate) fn check_request_limits(request: &Request) -> Result<(), ErrorCode> {
    if let Request::Attestation {
        user_data,
        nonce,
        public_key,
    } = request
    {
        let too_large = [user_data, nonce, public_key]
            .into_iter()
            .flatten()
            .any(|field| field.len() > MAX_ATTESTATION_FIELD_LEN);
        if too_large {
            return Err(ErrorCode::InputTooLarge);
        }
    }
    // The driver encodes with serde_cbor; ciborium produces the same bytes for these serde types
    // (externally tagged enums, text-keyed maps), so the length is the one the driver checks.
    // Encoding stops early once past the limit: an oversized request is never buffered whole.
    let mut counter = LimitedCounter { len: 0 };
    match ciborium::ser::into_writer(request, &mut counter) {
        Ok(()) => Ok(()),
        Err(_) if counter.len > MAX_REQUEST_LEN => Err(ErrorCode::InputTooLarge),
        Err(_) => Err(ErrorCode::InternalError),
    }
}

/// A writer that only counts bytes and fails once the count exceeds [`MAX_REQUEST_LEN`].
struct LimitedCounter {
    len: usize,
}

impl std::io::Write for LimitedCounter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.len = self.len.saturating_add(data.len());
        if self.len > MAX_REQUEST_LEN {
            Err(std::io::ErrorKind::FileTooLarge.into())
        } else {
            Ok(data.len())
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A scripted NSM for the helpers: returns the queued responses in order. It stands in for
    /// nothing but "some implementation of the trait"; device behaviour is tested in `real`/`mock`.
    struct Scripted(Mutex<Vec<Response>>);

    impl Nsm for Scripted {
        fn process(&self, _request: Request) -> Response {
            self.0
                .lock()
                .unwrap()
                .pop()
                .unwrap_or(Response::Error(ErrorCode::InternalError))
        }
    }

    fn scripted(mut responses: Vec<Response>) -> Scripted {
        responses.reverse();
        Scripted(Mutex::new(responses))
    }

    #[test]
    fn get_random_fills_buffers_larger_than_one_response() {
        let nsm = scripted(vec![
            Response::GetRandom {
                random: vec![1; 256],
            },
            Response::GetRandom {
                random: vec![2; 256],
            },
        ]);
        let mut out = [0u8; 300];
        get_random(&nsm, &mut out).unwrap();
        assert!(out[..256].iter().all(|&b| b == 1));
        assert!(out[256..].iter().all(|&b| b == 2));
    }

    #[test]
    fn get_random_rejects_an_empty_answer_instead_of_looping() {
        let nsm = scripted(vec![Response::GetRandom { random: vec![] }]);
        let mut out = [0u8; 8];
        assert_eq!(get_random(&nsm, &mut out), Err(NsmError::NoRandomBytes));
    }

    #[test]
    fn get_random_of_nothing_makes_no_request() {
        let nsm = scripted(vec![]);
        get_random(&nsm, &mut []).unwrap();
    }

    #[test]
    fn helpers_map_error_codes_and_wrong_answers() {
        let nsm = scripted(vec![
            Response::Error(ErrorCode::ReadOnlyIndex),
            Response::LockPCR,
            Response::Error(ErrorCode::Success),
        ]);
        assert_eq!(extend_pcr(&nsm, 0, vec![1]), Err(NsmError::ReadOnlyIndex));
        assert_eq!(
            attest(&nsm, None, None, None),
            Err(NsmError::UnexpectedResponse {
                request: "Attestation",
                response: "LockPCR"
            })
        );
        assert_eq!(describe_pcr(&nsm, 0), Err(NsmError::InvalidResponse));
    }

    #[test]
    fn describe_pcr_rejects_wrong_length_values() {
        let nsm = scripted(vec![Response::DescribePCR {
            lock: true,
            data: vec![0; 32],
        }]);
        assert_eq!(
            describe_pcr(&nsm, 0),
            Err(NsmError::BadPcrLength { len: 32 })
        );
    }

    #[test]
    fn attest_rejects_documents_over_the_relay_limit() {
        let max = sealed_wire::limits::MAX_ATTESTATION_DOC_LEN;
        let nsm = scripted(vec![Response::Attestation {
            document: vec![0; max + 1],
        }]);
        assert_eq!(
            attest(&nsm, None, None, None),
            Err(NsmError::DocumentTooLarge { len: max + 1, max })
        );
    }

    fn attestation(user_data: usize, nonce: usize, public_key: usize) -> Request {
        Request::Attestation {
            user_data: Some(ByteBuf::from(vec![0; user_data])),
            nonce: Some(ByteBuf::from(vec![0; nonce])),
            public_key: Some(ByteBuf::from(vec![0; public_key])),
        }
    }

    #[test]
    fn attestation_fields_of_1024_bytes_pass_and_1025_fail() {
        assert!(check_request_limits(&attestation(1024, 1024, 1024)).is_ok());
        for request in [
            attestation(1025, 0, 0),
            attestation(0, 1025, 0),
            attestation(0, 0, 1025),
        ] {
            assert!(matches!(
                check_request_limits(&request),
                Err(ErrorCode::InputTooLarge)
            ));
        }
    }

    #[test]
    fn requests_over_the_driver_limit_are_too_large() {
        let small = Request::ExtendPCR {
            index: 16,
            data: vec![0; 1024],
        };
        assert!(check_request_limits(&small).is_ok());
        let large = Request::ExtendPCR {
            index: 16,
            data: vec![0; MAX_REQUEST_LEN],
        };
        assert!(matches!(
            check_request_limits(&large),
            Err(ErrorCode::InputTooLarge)
        ));
    }

    #[test]
    fn request_length_matches_the_full_cbor_encoding() {
        // Exactly at the limit passes, one byte over fails: the counter measures the whole
        // encoding of `{"ExtendPCR": {"index": 16, "data": h'…'}}`, as the driver does.
        let request = |len: usize| Request::ExtendPCR {
            index: 16,
            data: vec![0; len],
        };
        let mut full = Vec::new();
        ciborium::ser::into_writer(&request(1000), &mut full).unwrap();
        let overhead = full.len() - 1000;
        assert!(check_request_limits(&request(MAX_REQUEST_LEN - overhead)).is_ok());
        assert!(matches!(
            check_request_limits(&request(MAX_REQUEST_LEN - overhead + 1)),
            Err(ErrorCode::InputTooLarge)
        ));
    }
}

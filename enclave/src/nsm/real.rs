//! The real NSM: `/dev/nsm` through the `aws-nitro-enclaves-nsm-api` driver (one `ioctl` per
//! request). Compiled into every build; it can only be opened inside a Nitro enclave.
//!
//! It does not retry, cache or interpret answers: the helpers in [`super`] do the typing. Size
//! limits are checked here before the `ioctl`, with the same rule as the mock, so that an oversized
//! request fails identically in both modes.

use aws_nitro_enclaves_nsm_api::api::{Request, Response};
use aws_nitro_enclaves_nsm_api::driver;

use super::{Nsm, NsmError, check_request_limits};

/// Path the driver opens (`DEV_FILE` in the crate's `driver` module).
pub const DEVICE_PATH: &str = "/dev/nsm";

/// An open `/dev/nsm` descriptor, closed on drop.
#[derive(Debug)]
pub struct RealNsm {
    fd: i32,
}

impl RealNsm {
    /// Opens `/dev/nsm`. Fails outside a Nitro enclave (no such device).
    pub fn open() -> Result<RealNsm, NsmError> {
        let fd = driver::nsm_init();
        if fd < 0 {
            return Err(NsmError::DeviceUnavailable { path: DEVICE_PATH });
        }
        Ok(RealNsm { fd })
    }
}

impl Nsm for RealNsm {
    fn process(&self, request: Request) -> Response {
        if let Err(code) = check_request_limits(&request) {
            return Response::Error(code);
        }
        // Concurrent callers share the descriptor: the kernel's nsm driver serialises requests on
        // the device, and each ioctl carries its own request and response buffers.
        driver::nsm_process_request(self.fd, request)
    }
}

impl Drop for RealNsm {
    fn drop(&mut self) {
        if self.fd >= 0 {
            driver::nsm_exit(self.fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_nitro_enclaves_nsm_api::api::ErrorCode;
    use serde_bytes::ByteBuf;
    use std::path::Path;

    #[test]
    fn open_fails_where_there_is_no_nsm_device() {
        // These machines are not Nitro enclaves; on one that is, opening must succeed instead.
        let result = RealNsm::open();
        if Path::new(DEVICE_PATH).exists() {
            assert!(result.is_ok());
        } else {
            assert_eq!(
                result.unwrap_err(),
                NsmError::DeviceUnavailable { path: DEVICE_PATH }
            );
        }
    }

    /// A descriptor that is certainly closed: any request reaching the `ioctl` fails with EBADF,
    /// which the driver reports as `InternalError`. So `InputTooLarge` proves the limit check ran
    /// before the driver call, and `InternalError` proves a valid request did reach the driver.
    fn closed() -> RealNsm {
        RealNsm { fd: -1 }
    }

    fn attestation(len: usize) -> Request {
        Request::Attestation {
            user_data: Some(ByteBuf::from(vec![0; len])),
            nonce: None,
            public_key: None,
        }
    }

    #[test]
    fn oversized_attestation_fields_are_rejected_before_the_ioctl() {
        assert!(matches!(
            closed().process(attestation(1025)),
            Response::Error(ErrorCode::InputTooLarge)
        ));
        for request in [
            Request::Attestation {
                user_data: None,
                nonce: Some(ByteBuf::from(vec![0; 1025])),
                public_key: None,
            },
            Request::Attestation {
                user_data: None,
                nonce: None,
                public_key: Some(ByteBuf::from(vec![0; 1025])),
            },
        ] {
            assert!(matches!(
                closed().process(request),
                Response::Error(ErrorCode::InputTooLarge)
            ));
        }
    }

    #[test]
    fn requests_within_limits_reach_the_driver() {
        assert!(matches!(
            closed().process(attestation(1024)),
            Response::Error(ErrorCode::InternalError)
        ));
        assert!(matches!(
            closed().process(Request::GetRandom),
            Response::Error(ErrorCode::InternalError)
        ));
    }

    #[test]
    fn helpers_surface_driver_errors() {
        let nsm = closed();
        assert_eq!(
            super::super::get_random(&nsm, &mut [0; 8]),
            Err(NsmError::Internal)
        );
        assert_eq!(
            super::super::attest(&nsm, None, Some(vec![0; 1025]), None),
            Err(NsmError::InputTooLarge)
        );
    }
}

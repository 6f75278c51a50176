//! Seeds the kernel's random pool from the NSM at startup, before any key is made.
//!
//! Inside a Nitro enclave the kernel generator is fed by the NSM's hardware RNG (`nsm-hwrng`), and
//! `getrandom(2)` blocks until the kernel generator is initialised, so [`crate::rng`] never returns
//! weak bytes. This is defence in depth on top of that, as AWS's own enclave SDK does
//! (aws-nitro-enclaves-sdk-c `aws_nitro_enclaves_library_seed_entropy`): draw [`SEED_LEN`] bytes
//! from the NSM with `GetRandom` and mix them into the pool, so that keys made right after boot
//! depend on the NSM even if the hwrng driver were missing from the enclave kernel.
//!
//! How: the bytes are *written* to `/dev/random`. The kernel mixes written data into the pool
//! without crediting entropy (random(4)). The SDK additionally credits it with the
//! `RNDADDTOENTCNT` ioctl; we do not, because that needs `unsafe` (denied in this workspace) and
//! `CAP_SYS_ADMIN`, and crediting only changes when `getrandom(2)` unblocks, not what it returns.
//! Mixing can only add unpredictability: a bad NSM answer cannot make the pool weaker.
//!
//! Failure policy: if the NSM cannot give randomness, the enclave does not start (the NSM is also
//! what attests; an enclave without it is not one we want serving). If the pool cannot be written,
//! a production build does not start either; a simulation build logs a warning and continues (a
//! developer machine may not allow writing `/dev/random`, and the mock NSM's bytes come from the
//! same kernel pool anyway).

use std::fs::OpenOptions;
use std::io::{self, Write};

use zeroize::Zeroizing;

use crate::nsm::{self, Nsm, NsmError};

/// Bytes drawn at startup: 4096 bits, as the SDK's examples seed (`DEV_SEED_CNT` = 512). The
/// kernel needs 256 bits to initialise its generator.
pub const SEED_LEN: usize = 512;

/// One `GetRandom` answer is at most this long on the device; we ask in pieces of this size.
const CHUNK_LEN: usize = 256;

/// The kernel pool's write end (random(4): writing mixes the data in, credits nothing).
pub const KERNEL_POOL: &str = "/dev/random";

/// Why seeding failed. Carries no random bytes.
#[derive(Debug, thiserror::Error)]
pub enum EntropyError {
    #[error("NSM GetRandom failed: {0}")]
    Nsm(#[from] NsmError),
    #[error("cannot open {path} to seed the kernel pool: {source}")]
    Open {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot write to {path} to seed the kernel pool: {source}")]
    Write {
        path: &'static str,
        #[source]
        source: io::Error,
    },
}

impl EntropyError {
    /// Whether the NSM itself failed (fatal in every build), rather than the pool write.
    pub fn is_nsm(&self) -> bool {
        matches!(self, EntropyError::Nsm(_))
    }
}

/// Draws `len` bytes from the NSM and writes them to `pool`, one NSM answer at a time, wiping each
/// buffer after use. Returns the number of bytes written (`len`). The NSM is asked before anything
/// is written, per chunk, so a failing NSM leaves at most the chunks it did answer in the pool.
pub fn seed(nsm: &dyn Nsm, pool: &mut dyn Write, len: usize) -> Result<usize, EntropyError> {
    let mut written = 0;
    while written < len {
        let n = (len - written).min(CHUNK_LEN);
        let mut chunk = Zeroizing::new([0u8; CHUNK_LEN]);
        let part = chunk.get_mut(..n).unwrap_or_default();
        nsm::get_random(nsm, part)?;
        pool.write_all(part)
            .and_then(|()| pool.flush())
            .map_err(|source| EntropyError::Write {
                path: KERNEL_POOL,
                source,
            })?;
        written += n;
    }
    Ok(written)
}

/// Seeds the kernel pool ([`KERNEL_POOL`]) with [`SEED_LEN`] bytes from the NSM.
pub fn seed_kernel_pool(nsm: &dyn Nsm) -> Result<usize, EntropyError> {
    let mut pool = OpenOptions::new()
        .write(true)
        .open(KERNEL_POOL)
        .map_err(|source| EntropyError::Open {
            path: KERNEL_POOL,
            source,
        })?;
    seed(nsm, &mut pool, SEED_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_nitro_enclaves_nsm_api::api::{ErrorCode, Request, Response};
    use std::sync::Mutex;

    /// Answers GetRandom with `answer(n)` for the n-th request, counting requests.
    struct CountingNsm {
        requests: Mutex<usize>,
        answer: fn(usize) -> Response,
    }

    impl Nsm for CountingNsm {
        fn process(&self, request: Request) -> Response {
            assert!(matches!(request, Request::GetRandom));
            let mut requests = self.requests.lock().unwrap();
            *requests += 1;
            (self.answer)(*requests)
        }
    }

    fn nsm(answer: fn(usize) -> Response) -> CountingNsm {
        CountingNsm {
            requests: Mutex::new(0),
            answer,
        }
    }

    #[test]
    fn seed_writes_exactly_the_nsm_bytes_in_order() {
        let nsm = nsm(|n| Response::GetRandom {
            random: vec![n as u8; 256],
        });
        let mut pool = Vec::new();
        assert_eq!(seed(&nsm, &mut pool, 600).unwrap(), 600);
        assert_eq!(pool.len(), 600);
        assert!(pool[..256].iter().all(|&b| b == 1));
        assert!(pool[256..512].iter().all(|&b| b == 2));
        assert!(pool[512..].iter().all(|&b| b == 3));
        assert_eq!(*nsm.requests.lock().unwrap(), 3);
    }

    #[test]
    fn seed_fails_when_the_nsm_fails_and_writes_nothing_unanswered() {
        let nsm = nsm(|n| {
            if n == 1 {
                Response::GetRandom {
                    random: vec![7; 256],
                }
            } else {
                Response::Error(ErrorCode::InternalError)
            }
        });
        let mut pool = Vec::new();
        let err = seed(&nsm, &mut pool, SEED_LEN).unwrap_err();
        assert!(matches!(err, EntropyError::Nsm(NsmError::Internal)));
        assert!(err.is_nsm());
        assert_eq!(pool, vec![7; 256]);
    }

    #[test]
    fn seed_fails_when_the_nsm_returns_no_bytes() {
        let nsm = nsm(|_| Response::GetRandom { random: vec![] });
        let err = seed(&nsm, &mut Vec::new(), SEED_LEN).unwrap_err();
        assert!(matches!(err, EntropyError::Nsm(NsmError::NoRandomBytes)));
    }

    /// A pool that refuses writes, as /dev/random on a read-only /dev would.
    struct Refusing;
    impl Write for Refusing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::PermissionDenied.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn seed_reports_a_pool_that_cannot_be_written() {
        let nsm = nsm(|_| Response::GetRandom {
            random: vec![1; 256],
        });
        let err = seed(&nsm, &mut Refusing, SEED_LEN).unwrap_err();
        assert!(!err.is_nsm());
        assert!(err.to_string().contains("/dev/random"), "{err}");
    }

    #[test]
    fn seeding_nothing_asks_the_nsm_nothing() {
        let nsm = nsm(|_| Response::Error(ErrorCode::InternalError));
        assert_eq!(seed(&nsm, &mut Vec::new(), 0).unwrap(), 0);
        assert_eq!(*nsm.requests.lock().unwrap(), 0);
    }
}

//! Startup seeding with the mock NSM, as the simulation enclave runs it: GetRandom through the
//! same `Nsm` trait the device sits behind, mixed into this machine's real `/dev/random`.
#![cfg(feature = "simulation")]

use std::time::{SystemTime, UNIX_EPOCH};

use sealed_enclave::entropy::{self, SEED_LEN};
use sealed_enclave::nsm::mock::MockNsm;
use sealed_mock_ca::MockCa;

fn mock_nsm() -> (MockNsm, tempfile::NamedTempFile) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let image = tempfile::NamedTempFile::new().unwrap();
    let nsm = MockNsm::new(MockCa::generate(now).unwrap(), image.path()).unwrap();
    (nsm, image)
}

#[test]
fn mock_nsm_seeds_the_kernel_pool() {
    let (nsm, _image) = mock_nsm();
    assert_eq!(entropy::seed_kernel_pool(&nsm).unwrap(), SEED_LEN);
}

#[test]
fn mock_nsm_seed_bytes_are_random_not_constant() {
    let (nsm, _image) = mock_nsm();
    let (mut first, mut second) = (Vec::new(), Vec::new());
    entropy::seed(&nsm, &mut first, SEED_LEN).unwrap();
    entropy::seed(&nsm, &mut second, SEED_LEN).unwrap();
    assert_eq!((first.len(), second.len()), (SEED_LEN, SEED_LEN));
    // 4096 random bits: equal draws, or a chunk of zeros, would mean the bytes are not the NSM's.
    assert_ne!(first, second);
    assert!(first.chunks(256).all(|c| c.iter().any(|&b| b != 0)));
}

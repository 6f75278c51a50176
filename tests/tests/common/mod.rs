//! Shared by the end-to-end test binaries.

use std::path::PathBuf;

/// target/debug, where cargo put the binaries (the test runs from target/debug/deps).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    for bin in ["sealed-enclave", "sealed-host", "sealed"] {
        assert!(
            dir.join(bin).is_file(),
            "{} missing: run ./scripts/test.sh (it builds the simulation binaries first)",
            dir.join(bin).display()
        );
    }
    dir
}

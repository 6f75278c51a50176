//! End-to-end tests live in `tests/tests/`: they start the real `sealed-enclave` (simulation
//! build) and `sealed-host` binaries over a Unix socket and talk to them as a client would. Build
//! the binaries first (`scripts/test.sh` does): the tests look for them next to the test executable.

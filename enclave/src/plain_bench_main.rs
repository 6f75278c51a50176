//! `sealed-enclave-plain-bench`: the enclave with inference sealing switched off, for the
//! `sealed-bench compare` plain-HTTP variant only (feature `bench-plaintext`, docs/performance.md).
//! Never shipped: the enclave image builds `sealed-enclave` without `simulation`, which this needs.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

include!("enclave_main.rs");

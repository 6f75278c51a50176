//! `sealed-enclave`: wiring only — arguments, tracing, the NSM, then [`sealed_enclave::run`].
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

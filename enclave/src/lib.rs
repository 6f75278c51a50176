//! The Sealed Inference enclave (placeholder; modules land one by one).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)
)]

pub mod engine;
pub mod nsm;

//! Sealed Inference simulation: run the whole system on one Linux machine with no Nitro hardware.
//!
//! The launcher creates a mock CA (simulation only: nothing trusts it unless its root is named
//! explicitly), starts the simulation build of `sealed-enclave` (mock NSM, Unix socket) and
//! `sealed-host` as real child processes, and drives them with the `sealed-client` SDK exactly as a
//! client would.
//!
//! # Layout
//! - [`stack`]: the mock CA on disk and the child processes.
//! - [`demo`]: the scripted demo (`sealed-sim demo`) and the long-running stack (`sealed-sim up`).
//! - [`assets`]: the bundled digits model, its real test inputs and their expected outputs.

pub mod assets;
pub mod demo;
pub mod imds;
pub mod measure;
pub mod stack;

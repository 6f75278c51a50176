//! The enclave's randomness: the kernel generator, which inside a Nitro Enclave is fed by the NSM
//! hardware RNG (`nsm-hwrng`). A failure to read randomness is unrecoverable: [`rand_core::UnwrapErr`]
//! panics rather than let a key or nonce be made from anything weaker, and the panic stays inside
//! the task that asked.

/// A cryptographic RNG over the OS generator.
pub type OsRng = rand_core::UnwrapErr<getrandom::SysRng>;

/// Returns the OS RNG.
pub fn os_rng() -> OsRng {
    rand_core::UnwrapErr(getrandom::SysRng)
}

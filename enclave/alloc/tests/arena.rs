//! `sealed_alloc::init` and `sealed_alloc::trim` on glibc (the simulation builds): after `init`,
//! a block another thread freed is given back by `trim`. Without `init` that thread has an arena
//! of its own, whose free top `malloc_trim` leaves resident (docs/performance.md, round 18): a
//! sealed-model upload's frames stayed beside the model for the enclave's life.
//! `harness = false` (Cargo.toml): `init` must run before any other thread exists, and the test
//! harness starts its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn main() {
    use std::hint::black_box;

    sealed_alloc::init();

    // Raise glibc's dynamic mmap threshold past the block below, as a model load does (a freed
    // mmapped block of 16 MiB makes the threshold 16 MiB and the trim threshold 32 MiB): the
    // 4 MiB block is then served from an arena and stays there when freed, as a sealed-model
    // upload's 4 MiB frames did.
    drop(black_box(vec![1u8; 16 << 20]));

    const BLOCK: usize = 4 << 20;
    std::thread::spawn(|| drop(black_box(vec![1u8; BLOCK])))
        .join()
        .unwrap();

    let before = rss_anon_kib();
    sealed_alloc::trim();
    let after = rss_anon_kib();
    let given_back = before.saturating_sub(after);
    assert!(
        given_back >= (BLOCK / 1024) * 3 / 4,
        "trim gave back {given_back} KiB of the {} KiB another thread freed (RssAnon {before} → \
         {after} KiB): that thread's arena kept it",
        BLOCK / 1024
    );
    println!("test arena: ok (trim gave back {given_back} KiB)");
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn rss_anon_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/self/status")
}

// Elsewhere (musl, the image) both calls do nothing: nothing to check.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn main() {}

//! `sealed_alloc::EnclaveAlloc::new(true)` as this test binary's global allocator, as it is in
//! the musl enclave image: freed large blocks come back for the same layout, model loads
//! (`hold_off`) keep nothing and give everything back, and what it hands out is usable memory.
//! One test function: the cache is process-wide, and tests in parallel would share it.
#![allow(clippy::unwrap_used)]
// A global allocator is unsafe by contract; this drives it directly once.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};

use sealed_alloc::{self as alloc, CAPACITY, EnclaveAlloc, MAX_BLOCK, MIN_BLOCK};

#[global_allocator]
static ALLOCATOR: EnclaveAlloc = EnclaveAlloc::new(true);

fn filled(len: usize, byte: u8) -> Vec<u8> {
    vec![byte; len]
}

#[test]
fn the_global_allocator_keeps_large_blocks_for_their_layout() {
    alloc::release();
    assert_eq!(alloc::kept_bytes(), 0);

    // A freed block of a kept size comes back for the same size, with its memory intact.
    let a = filled(MIN_BLOCK * 4, 7);
    let at = a.as_ptr();
    drop(a);
    assert_eq!(alloc::kept_bytes(), MIN_BLOCK * 4);
    let b: Vec<u8> = Vec::with_capacity(MIN_BLOCK * 4);
    assert_eq!(b.as_ptr(), at, "the kept block is reused");
    assert_eq!(alloc::kept_bytes(), 0);
    drop(b);

    // A zeroed allocation served from the cache is zeroed.
    let z = vec![0u8; MIN_BLOCK * 4];
    assert_eq!(z.as_ptr(), at);
    assert!(
        z.iter().all(|&x| x == 0),
        "a reused block is wiped for alloc_zeroed"
    );
    drop(z);

    // Another size does not take it.
    let other = filled(MIN_BLOCK * 3, 1);
    assert_ne!(other.as_ptr(), at);
    drop(other);
    assert_eq!(alloc::kept_bytes(), MIN_BLOCK * 7);

    // Small and oversized blocks are never kept.
    drop(filled(MIN_BLOCK - 1, 1));
    drop(filled(MAX_BLOCK + 1, 1));
    assert_eq!(alloc::kept_bytes(), MIN_BLOCK * 7);

    // realloc goes to the system and keeps the contents.
    let mut grown = filled(MIN_BLOCK, 9);
    grown.reserve_exact(MIN_BLOCK * 8);
    grown.resize(MIN_BLOCK * 9, 9);
    assert!(grown.iter().all(|&x| x == 9));
    drop(grown);

    // The bytes kept never pass the capacity.
    let blocks: Vec<Vec<u8>> = (0..4).map(|_| filled(MAX_BLOCK, 3)).collect();
    drop(blocks);
    assert!(alloc::kept_bytes() <= CAPACITY, "{}", alloc::kept_bytes());
    assert!(alloc::kept_bytes() >= 2 * MAX_BLOCK);

    // A model load: everything kept is given back, nothing freed during it is kept, and the
    // cache works again afterwards.
    let hold = alloc::hold_off();
    assert_eq!(alloc::kept_bytes(), 0);
    drop(filled(MIN_BLOCK * 2, 5));
    assert_eq!(alloc::kept_bytes(), 0);
    let nested = alloc::hold_off();
    drop(hold);
    drop(filled(MIN_BLOCK * 2, 5));
    assert_eq!(alloc::kept_bytes(), 0, "still held off by the second load");
    drop(nested);
    drop(filled(MIN_BLOCK * 2, 5));
    assert_eq!(alloc::kept_bytes(), MIN_BLOCK * 2);

    // Freeing what only a load would reuse: nothing kept, nothing wiped, and when the guard
    // drops what was kept before is given back too.
    let keeping = alloc::keep_nothing();
    let wiped = alloc::wiped_bytes();
    drop(filled(MIN_BLOCK * 3, 6));
    assert_eq!(alloc::kept_bytes(), MIN_BLOCK * 2);
    assert_eq!(
        alloc::wiped_bytes(),
        wiped,
        "keep_nothing opens no wipe window"
    );
    drop(keeping);
    assert_eq!(alloc::kept_bytes(), 0);
    drop(filled(MIN_BLOCK * 2, 5));
    assert_eq!(alloc::kept_bytes(), MIN_BLOCK * 2);

    // Direct calls with an alignment above the minimum.
    let layout = Layout::from_size_align(MIN_BLOCK, 4096).unwrap();
    // SAFETY: a non-zero layout; the block is freed with the same layout.
    unsafe {
        let p = ALLOCATOR.alloc(layout);
        assert!(!p.is_null());
        assert_eq!(p as usize % 4096, 0);
        p.write_bytes(1, MIN_BLOCK);
        ALLOCATOR.dealloc(p, layout);
        let q = ALLOCATOR.alloc(layout);
        assert_eq!(q, p);
        ALLOCATOR.dealloc(q, layout);
    }
    alloc::release();
    assert_eq!(alloc::kept_bytes(), 0);
}

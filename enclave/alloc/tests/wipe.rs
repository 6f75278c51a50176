//! The wipe, observed from below: `EnclaveAlloc::wiping_only` over an inner allocator that looks
//! at every block of a marker size as it is freed. Blocks freed inside a `wiping` or `hold_off`
//! window, or by dropping a `WipeOnDrop`, reach it zeroed (also the old block of a `realloc`);
//! blocks freed outside reach it with their data, which shows the check can fail.
//! One test function: the recorder's counters are process-wide.
#![allow(clippy::unwrap_used)]
// A global allocator is unsafe by contract.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use sealed_alloc::{EnclaveAlloc, WipeOnDrop};

/// Sizes nothing else in this test binary allocates: a small block and one above musl's mmap
/// threshold.
const SMALL: usize = 1031;
const LARGE: usize = 300_007;

static ZEROED: AtomicUsize = AtomicUsize::new(0);
static DIRTY: AtomicUsize = AtomicUsize::new(0);

/// `System`, noting whether each freed block of a marker size is all zeros.
struct Recorder;

// SAFETY: forwards to `System` unchanged; it only reads blocks it is handed back, which the test
// filled completely (so every byte is initialised).
unsafe impl GlobalAlloc for Recorder {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() == SMALL || layout.size() == LARGE {
            let bytes = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            let counter = if bytes.iter().all(|&b| b == 0) {
                &ZEROED
            } else {
                &DIRTY
            };
            counter.fetch_add(1, Ordering::SeqCst);
        }
        unsafe { System.dealloc(ptr, layout) }
    }
    // `realloc` is the trait's default: alloc, copy, and `dealloc` of the old block above.
}

#[global_allocator]
static ALLOCATOR: EnclaveAlloc<Recorder> = EnclaveAlloc::wiping_only(Recorder);

/// (zeroed, dirty) marker blocks freed since the last call.
fn seen() -> (usize, usize) {
    (
        ZEROED.swap(0, Ordering::SeqCst),
        DIRTY.swap(0, Ordering::SeqCst),
    )
}

fn secret(len: usize) -> Vec<u8> {
    vec![0xA5; len]
}

#[test]
fn blocks_freed_inside_a_window_reach_the_system_zeroed() {
    seen();

    // Outside any window a freed block keeps its bytes: the recorder sees them.
    drop(secret(SMALL));
    drop(secret(LARGE));
    assert_eq!(seen(), (0, 2));

    // `wiping`: every block freed is zeroed first, small or large.
    let window = sealed_alloc::wiping();
    drop(secret(SMALL));
    drop(secret(LARGE));
    assert_eq!(seen(), (2, 0));
    drop(window);
    drop(secret(SMALL));
    assert_eq!(seen(), (0, 1), "the window closed with its guard");

    // `hold_off` (a model load) wipes too, and nested windows stay open until the last guard.
    let load = sealed_alloc::hold_off();
    let inner = sealed_alloc::wiping();
    drop(secret(LARGE));
    drop(inner);
    drop(secret(SMALL));
    assert_eq!(seen(), (2, 0));
    drop(load);
    drop(secret(LARGE));
    assert_eq!(seen(), (0, 1));

    // Windows are per thread: another thread's frees meanwhile are not wiped.
    let window = sealed_alloc::wiping();
    std::thread::spawn(|| drop(secret(SMALL))).join().unwrap();
    assert_eq!(seen(), (0, 1));
    drop(window);

    // `wipe_this_thread`: a window for the rest of the thread's life, with no guard; the other
    // threads, this one included, are not affected.
    assert!(!sealed_alloc::wipes_this_thread());
    let worker = std::thread::spawn(|| {
        sealed_alloc::wipe_this_thread();
        let open = sealed_alloc::wipes_this_thread();
        drop(secret(SMALL));
        drop(secret(LARGE));
        open
    });
    assert!(worker.join().unwrap());
    assert_eq!(seen(), (2, 0));
    drop(secret(SMALL));
    assert_eq!(seen(), (0, 1));
    assert!(!sealed_alloc::wipes_this_thread());

    // A `WipeOnDrop` value is dropped inside its own window, wherever it is dropped.
    let model = WipeOnDrop::new(vec![secret(SMALL), secret(LARGE)]);
    assert_eq!(model.len(), 2);
    let moved = std::thread::spawn(move || drop(model));
    moved.join().unwrap();
    assert_eq!(seen(), (2, 0));
    drop(secret(SMALL));
    assert_eq!(seen(), (0, 1));

    // `realloc` inside a window: the contents move, and the old block is freed zeroed (a `Vec`
    // growing while tract reads a model). Outside, the old block goes back with its bytes.
    for (window, expected) in [(true, (1, 0)), (false, (0, 1))] {
        let guard = window.then(sealed_alloc::wiping);
        let mut grown = secret(LARGE);
        grown.reserve_exact(LARGE);
        assert_eq!(seen(), expected, "window: {window}");
        assert_eq!(grown.len(), LARGE);
        assert!(grown.iter().all(|&b| b == 0xA5), "the data moved intact");
        drop(guard);
        grown.clear();
        grown.shrink_to_fit();
    }
}

//! Decoders allocate in proportion to the input they were given, not to the lengths and counts
//! that input declares.
//!
//! A counting global allocator records the peak of live heap bytes while each decoder runs. This
//! is a separate test binary with a single test so that no other test allocates concurrently.
// A `GlobalAlloc` impl is unsafe by definition; this one only delegates to `System` and counts.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use sealed_wire::{EnclaveRequest, InferRequest, InferResponse, ModelManifest, Tensor, cbor};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the counters do not affect allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap bytes allocated on top of what was live before `f` ran, at the worst moment.
fn peak_extra<T>(f: impl FnOnce() -> T) -> usize {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = f();
    drop(out);
    PEAK.load(Ordering::Relaxed).saturating_sub(before)
}

/// CBOR header with an 8-byte argument: major type `major`, value `n`.
fn header(major: u8, n: u64) -> Vec<u8> {
    let mut v = vec![(major << 5) | 27];
    v.extend_from_slice(&n.to_be_bytes());
    v
}

fn text(s: &str) -> Vec<u8> {
    let mut v = vec![0x60 | s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

#[test]
fn decoders_allocate_by_input_size_not_declared_size() {
    const KIB: usize = 1024;
    let huge = 0x7fff_ffff_ffff_ffff;

    // 1. Byte strings, text strings, arrays and maps declaring 2^63-1 items in a few bytes.
    for major in [2u8, 3, 4, 5] {
        let mut input = header(major, huge);
        input.extend_from_slice(b"abc");
        let extra = peak_extra(|| {
            let _ = EnclaveRequest::decode(&input);
            let _ = InferRequest::decode(&input);
            let _ = ModelManifest::decode(&input);
            let _ = cbor::from_slice::<serde_bytes::ByteBuf>(&input, 64);
            let _ = cbor::from_slice::<String>(&input, 64);
        });
        assert!(extra < 64 * KIB, "major {major}: {extra} bytes");
        // A plain `Vec` reserves from the declared length, capped by serde at 1 MiB
        // (`serde::de::size_hint::cautious`); the message types bound their lists themselves.
        let extra = peak_extra(|| cbor::from_slice::<Vec<u64>>(&input, 64));
        assert!(
            extra <= KIB * KIB + 64 * KIB,
            "major {major}: {extra} bytes"
        );
    }

    // 2. An `Infer` request whose `sealed` field declares 2^63-1 bytes but carries 1 KiB.
    let mut input = vec![0xa1]; // map(1)
    input.extend(text("infer"));
    input.push(0xa1);
    input.extend(text("sealed"));
    input.extend(header(2, huge));
    input.extend(vec![0u8; KIB]);
    let extra = peak_extra(|| EnclaveRequest::decode(&input));
    assert!(extra < 64 * KIB, "sealed: {extra} bytes");

    // 3. A tensor shape of a million zeros (1 MB of input, 8 MB as a Vec<u64>): refused at the
    //    ninth dimension, not after collecting the million.
    let n = 1_000_000;
    let mut input = vec![0xa3]; // map(3)
    input.extend(text("dtype"));
    input.extend(text("u8"));
    input.extend(text("shape"));
    input.extend(header(4, n));
    input.extend(vec![0u8; n as usize]);
    input.extend(text("data"));
    input.push(0x40);
    let extra = peak_extra(|| cbor::from_slice::<Tensor>(&input, input.len()));
    assert!(extra < 64 * KIB, "shape: {extra} bytes");

    // 4. An inference request of 200 000 one-byte tensors (~3 MB of input, far more as
    //    `NamedTensor`s): refused at the 65th.
    let tensor = {
        let mut t = vec![0xa2]; // map(2)
        t.extend(text("name"));
        t.push(0x60); // "" (invalid name, but the count is what fails first)
        t.extend(text("tensor"));
        t.push(0x83); // [dtype, shape, data] as a sequence
        t.extend(text("u8"));
        t.push(0x80); // []
        t.extend([0x41, 0x07]); // h'07'
        t
    };
    let count = 200_000;
    let mut input = vec![0xa2];
    input.extend(text("model_id"));
    input.extend(text("m"));
    input.extend(text("inputs"));
    input.extend(header(4, count));
    for _ in 0..count {
        input.extend_from_slice(&tensor);
    }
    let extra = peak_extra(|| InferRequest::decode(&input));
    assert!(extra < 256 * KIB, "tensors: {extra} bytes");
    let mut outputs = vec![0xa1];
    outputs.extend(text("ok"));
    outputs.push(0xa1);
    outputs.extend(text("outputs"));
    outputs.extend_from_slice(&input[input.len() - tensor.len() * count as usize - 9..]);
    let extra = peak_extra(|| InferResponse::decode(&outputs));
    assert!(extra < 256 * KIB, "outputs: {extra} bytes");
}

//! The enclave binaries' global allocator: the system allocator, with every block freed while a
//! model's plaintext is in memory wiped first, and on musl freed large blocks kept for the next
//! allocation of the same layout.
//!
//! **Wiping.** A model's bytes are a secret the enclave exists to keep, but tract copies them as
//! it loads (the decoded protobuf holds its own copy of every weight, then each weight goes into
//! a tensor, then into packed panels) and frees those copies like any other memory: without this
//! they stay in freed heap blocks until reused. While a [`hold_off`] guard (a model load) or a [`wiping`] guard is
//! alive, and whenever a [`WipeOnDrop`] value (a loaded model's plan) is dropped, every block
//! freed by that thread is zeroed before it goes back, and `realloc` copies to a new block and
//! wipes the old one. The secrets of our own types are wiped by their `Zeroizing` wrappers as before; this
//! covers what a dependency copies. Threads that only ever hold secrets (the engine's inference
//! workers, whose frees are a request's tensors and tract's activations derived from them) open a
//! window for their whole life with [`wipe_this_thread`], so one request's data never lies in a
//! freed block that the next request's uninitialised tensor may be handed; a kept block (below) is
//! wiped before it is kept. Other threads' frees outside a window are not wiped (they handle
//! ciphertext and our own `Zeroizing` buffers).
//!
//! **Keeping** (musl only, [`EnclaveAlloc::new`]`(true)`). The enclave image is a static musl
//! binary, and musl's allocator (mallocng) serves every request of 128 KiB or more with its own
//! `mmap` and gives it back with `munmap` on free, with no tunable to change that. tract allocates
//! each intermediate tensor afresh on every run, so on musl every inference faulted its
//! activations in again: `conv` (197 kB input) took ~3 500 page faults and 20 % more worker CPU per
//! request than the same code on glibc, whose mmap threshold rises to the sizes it sees freed
//! (docs/performance.md, round 7). Keeping those blocks for reuse is what glibc does; this does it
//! above musl's allocator (conv: 20 % → 5–6 % more worker CPU than bare tract on glibc, of which
//! ~3 % is tract itself built for musl: round 8). glibc builds do not keep: there it only held
//! more memory.
//! Written by hand because the maintained replacements do worse in an enclave, whose memory is
//! fixed at launch: `mimalloc` (C in the static image) removed the faults but kept 43–56 MiB more
//! resident after a model load (measured); `dlmalloc` gives the top of its heap back past 2 MiB
//! (its `sys_trim`), which would bring the faults back; neither wipes.
//!
//! Policy: only blocks of [`MIN_BLOCK`]..=[`MAX_BLOCK`] bytes with alignment up to a page are
//! kept, at most [`CAPACITY`] bytes and [`SLOTS`] blocks, the oldest given back first; a block is
//! reused only for the exact layout it was allocated with. While a model loads
//! ([`hold_off`]) nothing new is kept, and when the last load ends everything kept is given back:
//! a load's transient buffers are the wrong sizes for inference and would only raise the peak. A
//! model's plaintext buffer is freed under [`keep_nothing`] for the same reason.
//! Every kept block is the system allocator's own: the cache delays `System::dealloc`, nothing
//! else.
#![allow(unsafe_code)]
// An allocator must never panic: the same lints as the enclave's own crates, outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Smallest block kept: four pages. Below its `MMAP_THRESHOLD` (131 052 bytes) mallocng serves
/// blocks from groups of one size class, but it unmaps a group (or `MADV_FREE`s a freed block of
/// two pages or more) as soon as it empties, and tract's per-run tensors of 16–128 KiB did that
/// on every run: with 128 KiB here `conv` still took ~110 page faults per request, with 16 KiB ~9
/// (docs/performance.md, round 8).
pub const MIN_BLOCK: usize = 16 * 1024;
/// Largest block kept: glibc's ceiling for its dynamic mmap threshold (32 MiB on 64-bit).
pub const MAX_BLOCK: usize = 32 << 20;
/// Bytes kept at most.
pub const CAPACITY: usize = 64 << 20;
/// Blocks kept at most.
pub const SLOTS: usize = 64;
const MAX_ALIGN: usize = 4096;

#[derive(Clone, Copy)]
struct Slot {
    /// Address of the block; 0 for an empty slot.
    addr: usize,
    size: usize,
    align: usize,
    /// Insertion order: the smallest is the oldest.
    stamp: u64,
}

const EMPTY: Slot = Slot {
    addr: 0,
    size: 0,
    align: 0,
    stamp: 0,
};

/// The kept blocks. Addresses are stored as `usize` so that the state is `Send` (a block belongs
/// to the cache alone while it is kept).
struct BlockCache {
    slots: [Slot; SLOTS],
    bytes: usize,
    clock: u64,
}

impl BlockCache {
    const fn new() -> BlockCache {
        BlockCache {
            slots: [EMPTY; SLOTS],
            bytes: 0,
            clock: 0,
        }
    }

    /// Blocks kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.addr != 0).count()
    }

    /// Takes a kept block of exactly `layout`, if there is one.
    fn take(&mut self, layout: Layout) -> Option<*mut u8> {
        let slot = self
            .slots
            .iter_mut()
            .filter(|s| s.addr != 0 && s.size == layout.size() && s.align == layout.align())
            // The most recent: the likeliest to be in cache.
            .max_by_key(|s| s.stamp)?;
        let addr = slot.addr;
        self.bytes -= slot.size;
        *slot = EMPTY;
        Some(addr as *mut u8)
    }

    /// Keeps `ptr`, a block of `layout`, giving up the oldest blocks to make room: they are
    /// written to `evicted` (`count` of them) for the caller to free. False when `ptr` cannot be
    /// kept (the caller frees it).
    fn put(
        &mut self,
        ptr: *mut u8,
        layout: Layout,
        evicted: &mut [Slot; SLOTS],
        count: &mut usize,
    ) -> bool {
        let size = layout.size();
        if size > CAPACITY {
            return false;
        }
        while self.bytes + size > CAPACITY || self.slots.iter().all(|s| s.addr != 0) {
            let Some(oldest) = self
                .slots
                .iter_mut()
                .filter(|s| s.addr != 0)
                .min_by_key(|s| s.stamp)
            else {
                return false;
            };
            let Some(room) = evicted.get_mut(*count) else {
                return false;
            };
            *room = *oldest;
            *count += 1;
            self.bytes -= oldest.size;
            *oldest = EMPTY;
        }
        let Some(free) = self.slots.iter_mut().find(|s| s.addr == 0) else {
            return false;
        };
        self.clock += 1;
        *free = Slot {
            addr: ptr as usize,
            size,
            align: layout.align(),
            stamp: self.clock,
        };
        self.bytes += size;
        true
    }

    /// Empties the cache; returns what it held.
    fn drain(&mut self) -> [Slot; SLOTS] {
        let all = self.slots;
        self.slots = [EMPTY; SLOTS];
        self.bytes = 0;
        all
    }
}

static CACHE: Mutex<BlockCache> = Mutex::new(BlockCache::new());
/// Loads in progress and other [`keep_nothing`] guards: while > 0 nothing new is kept.
static HELD_OFF: AtomicUsize = AtomicUsize::new(0);

fn kept(layout: Layout) -> bool {
    (MIN_BLOCK..=MAX_BLOCK).contains(&layout.size()) && layout.align() <= MAX_ALIGN
}

fn cache() -> std::sync::MutexGuard<'static, BlockCache> {
    // Nothing panics while the lock is held; a poisoned lock still holds consistent state.
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A kept block for exactly `layout`, taken out of the cache (the lock is released on return).
fn take(layout: Layout) -> Option<*mut u8> {
    if !kept(layout) {
        return None;
    }
    cache().take(layout)
}

/// The global allocator of `sealed-enclave` and `sealed-enclave-plain-bench`
/// (`#[global_allocator]` in their `main`): [`EnclaveAlloc::new`]. The kept blocks and the wipe
/// state live in this module, so that [`hold_off`], [`wiping`] and [`release`] reach them from
/// the engine; a program has one global allocator, so one instance.
pub struct EnclaveAlloc<A = System> {
    inner: A,
    /// Keeps freed large blocks (musl). Only [`EnclaveAlloc::new`] sets it, so the inner
    /// allocator is then `System`, to which the cache gives its blocks back.
    keep: bool,
}

impl EnclaveAlloc<System> {
    /// The system allocator, wiping as the module says, and keeping freed large blocks when
    /// `keep` (the enclave: on musl only).
    pub const fn new(keep: bool) -> Self {
        EnclaveAlloc {
            inner: System,
            keep,
        }
    }
}

impl<A: GlobalAlloc> EnclaveAlloc<A> {
    /// `inner`, wiping as the module says and keeping nothing (tests observe the wipe through
    /// their own `inner`).
    pub const fn wiping_only(inner: A) -> Self {
        EnclaveAlloc { inner, keep: false }
    }
}

thread_local! {
    /// Open [`hold_off`] and [`wiping`] windows on this thread: while > 0, every block this
    /// thread frees is wiped. Per thread because a load runs on one thread (tract's load spawns
    /// none) while the enclave's other threads go on serving requests: their frees hold no copy
    /// of the model, and a process-wide window would make them pay for the wipe (and fault in
    /// the untouched tails of large buffers to zero them). `const` and without a destructor, so
    /// the allocator may read it at any point of a thread's life.
    static WIPING: Cell<usize> = const { Cell::new(0) };
}

/// Bytes wiped so far ([`wiped_bytes`]).
static WIPED: AtomicUsize = AtomicUsize::new(0);

fn wiping_now() -> bool {
    WIPING.try_with(|w| w.get() > 0).unwrap_or(false)
}

fn open_window() {
    let _ = WIPING.try_with(|w| w.set(w.get().saturating_add(1)));
}

fn close_window() {
    let _ = WIPING.try_with(|w| w.set(w.get().saturating_sub(1)));
}

/// Guards are `!Send`: a window is closed on the thread that opened it.
type NotSend = PhantomData<*const ()>;

/// Bytes wiped on free since the program started (for tests and diagnostics).
pub fn wiped_bytes() -> usize {
    WIPED.load(Ordering::Relaxed)
}

/// Zeroes `len` bytes at `ptr`, which is about to be freed.
///
/// SAFETY: `ptr` is valid for `len` bytes of writes.
unsafe fn wipe(ptr: *mut u8, len: usize) {
    // SAFETY: the caller's guarantee.
    unsafe { ptr.write_bytes(0, len) };
    WIPED.fetch_add(len, Ordering::Relaxed);
    // The block is freed next, and the optimiser may drop stores to memory about to be freed
    // (dead-store elimination knows `free`); an opaque use of the pointer keeps them, as
    // `zeroize` does with its fence, at memset speed instead of volatile byte stores.
    std::hint::black_box(ptr);
}

// SAFETY: every pointer returned comes from the inner allocator with the same layout it is
// returned for (a kept block, always `System`'s since only `new` keeps, is handed out only for
// the exact layout it was allocated with), and every pointer freed is given to the allocator that
// allocated it with that layout; the cache never hands a block out twice (`take` empties its slot
// under the lock). Wiping writes only within the block being freed.
unsafe impl<A: GlobalAlloc> GlobalAlloc for EnclaveAlloc<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.keep
            && let Some(ptr) = take(layout)
        {
            return ptr;
        }
        // SAFETY: forwarded with the caller's guarantees (non-zero size).
        unsafe { self.inner.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if self.keep
            && let Some(ptr) = take(layout)
        {
            // SAFETY: `ptr` is a block of `layout.size()` bytes that nobody else holds.
            unsafe { ptr.write_bytes(0, layout.size()) };
            return ptr;
        }
        // SAFETY: as in `alloc`.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if wiping_now() {
            // SAFETY: the caller hands back a live block of `layout`.
            unsafe { wipe(ptr, layout.size()) };
        }
        if self.keep && kept(layout) && HELD_OFF.load(Ordering::Acquire) == 0 {
            // Room for what keeping `ptr` pushes out, on the stack: nothing may allocate while
            // the lock is held (this is the allocator), and the blocks are freed after it.
            let mut evicted = [EMPTY; SLOTS];
            let mut count = 0;
            let stored = cache().put(ptr, layout, &mut evicted, &mut count);
            for slot in evicted.iter().take(count) {
                // SAFETY: a kept block, allocated by `System` with this layout and no longer in
                // the cache.
                unsafe { System.dealloc(slot.addr as *mut u8, slot_layout(slot)) };
            }
            if stored {
                return;
            }
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !wiping_now() {
            // SAFETY: `ptr` is the inner allocator's block of `layout` (see the impl's note): a
            // kept block is handed out as a block of exactly its own layout, so the inner
            // allocator may resize it.
            return unsafe { self.inner.realloc(ptr, layout, new_size) };
        }
        // The system's realloc may move the data and free the old block unwiped (a `Vec`
        // growing while tract reads a model): copy, then free the old block through `dealloc`.
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `new_size` is non-zero (the caller's guarantee) and the layout valid.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

fn slot_layout(slot: &Slot) -> Layout {
    // The slot was filled from a valid `Layout` with these exact fields, so this never falls back
    // (and `System::dealloc` on Unix frees by address alone).
    Layout::from_size_align(slot.size, slot.align).unwrap_or(Layout::new::<u8>())
}

/// Gives every kept block back to the system.
pub fn release() {
    let all = cache().drain();
    for slot in all.iter().filter(|s| s.addr != 0) {
        // SAFETY: a kept block, allocated by `System` with this layout, now out of the cache.
        unsafe { System.dealloc(slot.addr as *mut u8, slot_layout(slot)) };
    }
}

/// Sets the system allocator's process-wide options for an enclave binary; call it first in
/// `main`, before any thread starts. On glibc (the simulation builds) it keeps every thread on
/// one arena (`M_ARENA_MAX` = 1): with an arena per thread, the free space at the top of each
/// arena stays with it (glibc trims an arena's top only past its dynamic trim threshold, twice
/// the largest block it has seen freed, and `malloc_trim` trims the main arena's top alone), so
/// the 4 MiB frames of a sealed-model upload, read on the async threads, stayed resident beside
/// the model for the enclave's life: `large` held +8.7 MiB over bare tract, conv +2.1 MiB
/// (docs/performance.md, round 18). On musl (the image) it does nothing: mallocng has no
/// per-thread arenas and gives large blocks back itself.
pub fn init() {
    system::init();
}

/// Gives the free memory the system allocator holds back to the kernel where it can (glibc's
/// `malloc_trim(3)`; nothing elsewhere). [`before_load`] calls it, so that a load's peak does
/// not count memory freed before it (a sealed model's upload frames). Not after
/// a load: what the load freed is reused by what comes next (one arena, [`init`]), and giving it
/// back makes the next load fault all of it in again (docs/performance.md, round 18).
pub fn trim() {
    system::trim();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod system {
    // glibc's own interface (malloc.h), declared here because the crate has no dependencies
    // (Cargo.toml); `libc` declares the same two functions.
    unsafe extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
        fn malloc_trim(pad: usize) -> i32;
    }
    /// malloc.h: `#define M_ARENA_MAX -8`.
    const M_ARENA_MAX: i32 = -8;

    pub(super) fn init() {
        // SAFETY: mallopt(3) changes the allocator's parameters only; any value is accepted or
        // refused (returns 0), never undefined.
        unsafe { mallopt(M_ARENA_MAX, 1) };
    }

    pub(super) fn trim() {
        // SAFETY: malloc_trim(3) gives free pages back; it touches no live block.
        unsafe { malloc_trim(0) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod system {
    pub(super) fn init() {}
    pub(super) fn trim() {}
}

/// Bytes kept now (for tests and diagnostics).
pub fn kept_bytes() -> usize {
    cache().bytes
}

/// A model load: until the guard drops, nothing freed is kept by any thread (the load's transient
/// buffers would only raise the peak) and every block this thread frees is wiped first (they hold
/// copies of the model); when the last guard drops, everything kept is given back.
pub fn hold_off() -> HoldOff {
    let keeping = keep_nothing();
    open_window();
    release();
    HoldOff {
        _window: PhantomData,
        _keeping: keeping,
    }
}

/// See [`hold_off`].
pub struct HoldOff {
    _window: NotSend,
    // Dropped after `drop` closes the window: the last guard gives everything back.
    _keeping: KeepNothing,
}

impl Drop for HoldOff {
    fn drop(&mut self) {
        close_window();
    }
}

/// Until the guard drops, nothing freed is kept by any thread; when the last such guard (or
/// [`hold_off`]'s) drops, everything kept is given back. For freeing what only a load would reuse:
/// a model's plaintext, which wipes itself ([`hold_off`]'s window would wipe it a second time).
pub fn keep_nothing() -> KeepNothing {
    HELD_OFF.fetch_add(1, Ordering::AcqRel);
    KeepNothing(PhantomData)
}

/// What a model load's caller holds around it (the enclave's sealed and plaintext load paths):
/// gives back what the system allocator holds free ([`trim`]), so that memory freed before (a
/// sealed model's upload frames) does not count in the load's peak, then keeps nothing until the
/// guard drops, so that the model's bytes, freed after the load, are not kept for reuse.
pub fn before_load() -> KeepNothing {
    let keeping = keep_nothing();
    system::trim();
    keeping
}

/// See [`keep_nothing`].
pub struct KeepNothing(NotSend);

impl Drop for KeepNothing {
    fn drop(&mut self) {
        if HELD_OFF.fetch_sub(1, Ordering::AcqRel) == 1 {
            release();
        }
    }
}

/// Until the guard drops, every block this thread frees is wiped first.
pub fn wiping() -> Wiping {
    open_window();
    Wiping(PhantomData)
}

/// See [`wiping`].
pub struct Wiping(NotSend);

/// Opens a window for the rest of the calling thread's life: every block it frees from now on is
/// wiped. For threads that handle nothing but secrets: the engine's inference workers and its
/// intra-op pool, whose frees are a request's input tensors, tract's activations (derived from
/// the input) and its outputs. No guard: the window closes with the thread.
pub fn wipe_this_thread() {
    open_window();
}

/// Whether a block this thread frees now would be wiped (for tests and diagnostics).
pub fn wipes_this_thread() -> bool {
    wiping_now()
}

impl Drop for Wiping {
    fn drop(&mut self) {
        close_window();
    }
}

/// A value whose drop frees its memory wiped (inside a [`wiping`] window on the thread that drops
/// it), wherever the drop happens: a loaded model's plan, whose tensors are the model's weights,
/// dropped by whichever thread lets go of the model last.
pub struct WipeOnDrop<T>(ManuallyDrop<T>);

impl<T> WipeOnDrop<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        WipeOnDrop(ManuallyDrop::new(value))
    }
}

impl<T> Deref for WipeOnDrop<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> Drop for WipeOnDrop<T> {
    fn drop(&mut self) {
        let _wiping = wiping();
        // SAFETY: dropped once, here, and never used again (`self` is being dropped).
        unsafe { ManuallyDrop::drop(&mut self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The cache's bookkeeping never touches the blocks, so these addresses need no memory.
    fn block(n: usize) -> *mut u8 {
        (0x1000_0000 + n * 0x10_0000) as *mut u8
    }

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 64).unwrap()
    }

    fn put(cache: &mut BlockCache, ptr: *mut u8, size: usize) -> (bool, Vec<usize>) {
        let mut evicted = [EMPTY; SLOTS];
        let mut count = 0;
        let stored = cache.put(ptr, layout(size), &mut evicted, &mut count);
        (stored, evicted[..count].iter().map(|s| s.addr).collect())
    }

    #[test]
    fn a_block_is_reused_only_for_its_exact_layout() {
        let mut cache = BlockCache::new();
        assert_eq!(put(&mut cache, block(1), MIN_BLOCK), (true, vec![]));
        assert_eq!(cache.take(layout(MIN_BLOCK + 64)), None);
        assert_eq!(
            cache.take(Layout::from_size_align(MIN_BLOCK, 128).unwrap()),
            None
        );
        assert_eq!(cache.take(layout(MIN_BLOCK)), Some(block(1)));
        assert_eq!(cache.take(layout(MIN_BLOCK)), None, "handed out once");
        assert_eq!(cache.bytes, 0);
    }

    #[test]
    fn the_most_recent_block_of_a_size_goes_out_first() {
        let mut cache = BlockCache::new();
        put(&mut cache, block(1), MIN_BLOCK);
        put(&mut cache, block(2), MIN_BLOCK);
        assert_eq!(cache.take(layout(MIN_BLOCK)), Some(block(2)));
        assert_eq!(cache.take(layout(MIN_BLOCK)), Some(block(1)));
    }

    #[test]
    fn the_oldest_blocks_make_room_when_the_bytes_would_pass_the_capacity() {
        let mut cache = BlockCache::new();
        let big = MAX_BLOCK;
        assert_eq!(put(&mut cache, block(1), big), (true, vec![]));
        assert_eq!(put(&mut cache, block(2), big), (true, vec![]));
        assert_eq!(cache.bytes, CAPACITY);
        let (stored, evicted) = put(&mut cache, block(3), MIN_BLOCK);
        assert!(stored);
        assert_eq!(evicted, vec![block(1) as usize]);
        assert_eq!(cache.bytes, big + MIN_BLOCK);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn the_oldest_block_makes_room_when_every_slot_is_taken() {
        let mut cache = BlockCache::new();
        for n in 0..SLOTS {
            assert_eq!(put(&mut cache, block(n), MIN_BLOCK), (true, vec![]));
        }
        let (stored, evicted) = put(&mut cache, block(SLOTS), MIN_BLOCK);
        assert!(stored);
        assert_eq!(evicted, vec![block(0) as usize]);
        assert_eq!(cache.len(), SLOTS);
        assert_eq!(cache.bytes, SLOTS * MIN_BLOCK);
    }

    #[test]
    fn drain_empties_the_cache() {
        let mut cache = BlockCache::new();
        put(&mut cache, block(1), MIN_BLOCK);
        put(&mut cache, block(2), 2 * MIN_BLOCK);
        let all = cache.drain();
        assert_eq!(all.iter().filter(|s| s.addr != 0).count(), 2);
        assert_eq!((cache.len(), cache.bytes), (0, 0));
    }

    #[test]
    fn only_large_blocks_with_at_most_page_alignment_are_kept() {
        assert!(!kept(layout(MIN_BLOCK - 1)));
        assert!(kept(layout(MIN_BLOCK)));
        assert!(kept(layout(MAX_BLOCK)));
        assert!(!kept(layout(MAX_BLOCK + 1)));
        assert!(kept(Layout::from_size_align(MIN_BLOCK, MAX_ALIGN).unwrap()));
        assert!(!kept(
            Layout::from_size_align(MIN_BLOCK, 2 * MAX_ALIGN).unwrap()
        ));
    }
}

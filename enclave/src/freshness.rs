//! Freshness and replay protection for sealed requests (docs/protocol.md §2.2).
//!
//! The host may replay a captured sealed request as often as it likes; HPKE opens it every time.
//! What stops the replay is inside the ciphertext, where the host cannot change it: the client's
//! random `request_id` and its clock, `sent_at_ms`. After opening, the enclave
//!
//! 1. refuses a request whose `sent_at_ms` is more than the window away from its own clock, either
//!    way (`stale_request`, 203), and then
//! 2. remembers every `request_id` it accepted for as long as that request could still pass
//!    check 1, and refuses one it already remembers (`replayed_request`, 202).
//!
//! An id can be forgotten once its `sent_at_ms` has left the window, because a replay of it would
//! then fail check 1. Memory is therefore bounded by the requests accepted within one window
//! either side of now, and by a hard capacity: when the cache holds `capacity` live ids the enclave
//! answers `busy` rather than evict one, since eviction would reopen that id to replay.
//!
//! The clock only moves forward here: expiry and the lower bound of the window use the latest time
//! seen, so a clock stepped backwards cannot bring a forgotten id back into the window.
//!
//! Sans-IO: time comes in as an argument (Unix milliseconds), which the tests set freely.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use sealed_wire::{ErrorCode, REQUEST_ID_LEN};

/// Default freshness window, either side of the enclave clock.
pub const DEFAULT_FRESHNESS_WINDOW_SECS: u64 = 120;
/// Largest window accepted: 15 minutes, the same bound AWS puts on SigV4 clock skew.
pub const MAX_FRESHNESS_WINDOW_SECS: u64 = 900;
/// Default capacity of the replay cache (2^20 ids).
pub const DEFAULT_REPLAY_CACHE_ENTRIES: usize = 1 << 20;
/// Largest capacity accepted (2^24 ids, about 0.9 GiB of cache when full, see
/// [`ReplayCache::heap_bytes`]).
pub const MAX_REPLAY_CACHE_ENTRIES: usize = 1 << 24;

/// Freshness settings of the enclave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshnessConfig {
    /// How far `sent_at_ms` may be from the enclave clock, either way.
    pub window: Duration,
    /// Live request ids remembered at most; beyond it requests are answered `busy`.
    pub replay_cache_entries: usize,
}

impl Default for FreshnessConfig {
    fn default() -> Self {
        FreshnessConfig {
            window: Duration::from_secs(DEFAULT_FRESHNESS_WINDOW_SECS),
            replay_cache_entries: DEFAULT_REPLAY_CACHE_ENTRIES,
        }
    }
}

/// Why a sealed request was refused. The messages name no id and no time of the request: they
/// travel sealed to the requester, but there is nothing in them the requester needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FreshnessError {
    /// `sent_at_ms` is outside the window around the enclave clock.
    #[error(
        "request timestamp is more than {window_secs} s from the enclave clock: check the client clock"
    )]
    Stale { window_secs: u64 },
    /// The request id was already accepted inside the window.
    #[error("request id already used: each request needs a fresh random id")]
    Replayed,
    /// Every slot of the replay cache holds an id that is still inside the window.
    #[error("too many recent requests to remember; retry later")]
    Full,
}

impl FreshnessError {
    /// The stable code sealed to the requester.
    pub fn code(&self) -> ErrorCode {
        match self {
            FreshnessError::Stale { .. } => ErrorCode::StaleRequest,
            FreshnessError::Replayed => ErrorCode::ReplayedRequest,
            FreshnessError::Full => ErrorCode::Busy,
        }
    }
}

type RequestId = [u8; REQUEST_ID_LEN];

/// The replay cache: the ids accepted within the window, and a min-heap of their expiry times.
///
/// Per request: one hash lookup and insert (O(1)) and one heap push (O(log n)); expired ids are
/// popped from the heap top, each once (amortised O(log n)). Not thread-safe on its own; the
/// enclave wraps it in [`ReplayGuard`].
pub struct ReplayCache {
    window_ms: u64,
    capacity: usize,
    ids: HashSet<RequestId>,
    /// `(expires_at_ms, id)`, earliest first: the id may be forgotten once the (monotonic) clock is
    /// past `expires_at_ms = sent_at_ms + window`.
    expiry: BinaryHeap<Reverse<(u64, RequestId)>>,
    /// The latest clock reading seen (never goes back).
    high_water_ms: u64,
}

impl ReplayCache {
    /// An empty cache. Nothing is allocated up front; storage grows with use up to `capacity`.
    pub fn new(config: FreshnessConfig) -> ReplayCache {
        ReplayCache {
            window_ms: u64::try_from(config.window.as_millis()).unwrap_or(u64::MAX),
            capacity: config.replay_cache_entries,
            ids: HashSet::new(),
            expiry: BinaryHeap::new(),
            high_water_ms: 0,
        }
    }

    /// Checks one opened request at enclave time `now_ms` and, if it passes, remembers its id.
    /// Only a request for which this returns `Ok` may run.
    pub fn check(
        &mut self,
        request_id: RequestId,
        sent_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), FreshnessError> {
        self.high_water_ms = self.high_water_ms.max(now_ms);
        self.expire();
        let stale = FreshnessError::Stale {
            window_secs: self.window_ms / 1000,
        };
        // Lower bound from the monotonic clock (see the module docs), upper bound from the
        // current reading: a client clock ahead of ours by more than the window is refused too,
        // or a request dated in the future would outlive its place in the cache.
        if sent_at_ms < self.high_water_ms.saturating_sub(self.window_ms)
            || sent_at_ms > now_ms.saturating_add(self.window_ms)
        {
            return Err(stale);
        }
        if self.ids.contains(&request_id) {
            return Err(FreshnessError::Replayed);
        }
        if self.ids.len() >= self.capacity {
            return Err(FreshnessError::Full);
        }
        self.ids.insert(request_id);
        self.expiry.push(Reverse((
            sent_at_ms.saturating_add(self.window_ms),
            request_id,
        )));
        Ok(())
    }

    /// Forgets the ids whose request is now outside the window.
    fn expire(&mut self) {
        while let Some(Reverse((expires_at, id))) = self.expiry.peek() {
            if *expires_at >= self.high_water_ms {
                break;
            }
            self.ids.remove(id);
            self.expiry.pop();
        }
        // Give memory back after a burst (the cache may have grown far beyond its steady size).
        if self.expiry.capacity() > 4 * self.expiry.len().max(1024) {
            self.expiry.shrink_to_fit();
            self.ids.shrink_to_fit();
        }
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Heap bytes the cache holds now, computed from the capacities of its two tables:
    /// the hash set (hashbrown: one 16-byte id plus one control byte per bucket, buckets = the
    /// next power of two ≥ capacity × 8/7) and the heap (24 bytes per slot). At 2^20 live ids this
    /// is 2^21 × 17 + 2^20 × 24 = 60.8 MB (58 MiB), 58 bytes per id (test
    /// `memory_per_entry_is_measured_from_the_table_capacities` measures 58.0 at 2^16). While a
    /// table grows, the old and the new allocation exist together for a moment.
    pub fn heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<RequestId>() + 1;
        let buckets = if self.ids.capacity() == 0 {
            0
        } else if self.ids.capacity() < 8 {
            (self.ids.capacity() + 1).next_power_of_two()
        } else {
            (self.ids.capacity() * 8 / 7).next_power_of_two()
        };
        buckets * slot + self.expiry.capacity() * std::mem::size_of::<Reverse<(u64, RequestId)>>()
    }
}

/// [`ReplayCache`] behind a mutex, shared by every connection of the enclave.
pub struct ReplayGuard {
    cache: Mutex<ReplayCache>,
}

impl ReplayGuard {
    pub fn new(config: FreshnessConfig) -> ReplayGuard {
        ReplayGuard {
            cache: Mutex::new(ReplayCache::new(config)),
        }
    }

    /// [`ReplayCache::check`] at enclave time `now_ms`.
    pub fn check(
        &self,
        request_id: RequestId,
        sent_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), FreshnessError> {
        // A poisoned lock means a panic mid-update; the cache's invariants hold between any two
        // statements of `check`, so carrying on is safe (and failing open would not be).
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.check(request_id, sent_at_ms, now_ms)
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Unix time in milliseconds from the enclave clock (0 before 1970, which makes every request
/// stale: the truth about such a clock).
pub fn unix_millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW_MS: u64 = 120_000;
    const NOW: u64 = 1_800_000_000_000;

    fn cache(capacity: usize) -> ReplayCache {
        ReplayCache::new(FreshnessConfig {
            window: Duration::from_millis(WINDOW_MS),
            replay_cache_entries: capacity,
        })
    }

    fn id(n: u32) -> RequestId {
        let mut id = [0u8; REQUEST_ID_LEN];
        id[..4].copy_from_slice(&n.to_be_bytes());
        id
    }

    #[test]
    fn defaults_are_two_minutes_and_a_million_ids() {
        let c = FreshnessConfig::default();
        assert_eq!(c.window, Duration::from_secs(120));
        assert_eq!(c.replay_cache_entries, 1_048_576);
    }

    #[test]
    fn accepts_timestamps_on_both_edges_of_the_window_and_refuses_one_ms_beyond() {
        let mut c = cache(16);
        assert_eq!(c.check(id(1), NOW - WINDOW_MS, NOW), Ok(()));
        assert_eq!(c.check(id(2), NOW + WINDOW_MS, NOW), Ok(()));
        assert_eq!(c.check(id(3), NOW, NOW), Ok(()));
        let stale = Err(FreshnessError::Stale { window_secs: 120 });
        assert_eq!(c.check(id(4), NOW - WINDOW_MS - 1, NOW), stale);
        assert_eq!(c.check(id(5), NOW + WINDOW_MS + 1, NOW), stale);
        assert_eq!(c.check(id(6), 0, NOW), stale);
        assert_eq!(c.check(id(7), u64::MAX, NOW), stale);
        // Refused requests are not remembered.
        assert_eq!(c.len(), 3);
        assert_eq!(c.check(id(4), NOW, NOW), Ok(()));
    }

    #[test]
    fn the_same_id_is_refused_while_inside_the_window_even_with_another_timestamp() {
        let mut c = cache(16);
        assert_eq!(c.check(id(1), NOW, NOW), Ok(()));
        assert_eq!(c.check(id(1), NOW, NOW), Err(FreshnessError::Replayed));
        assert_eq!(
            c.check(id(1), NOW + 5_000, NOW + 10),
            Err(FreshnessError::Replayed)
        );
        // Still remembered at the last instant its request is acceptable.
        assert_eq!(
            c.check(id(1), NOW, NOW + WINDOW_MS),
            Err(FreshnessError::Replayed)
        );
        assert_eq!(c.check(id(2), NOW, NOW), Ok(()));
    }

    #[test]
    fn an_id_is_forgotten_once_its_request_would_be_stale_anyway() {
        let mut c = cache(16);
        assert_eq!(c.check(id(1), NOW, NOW), Ok(()));
        let later = NOW + WINDOW_MS + 1;
        // A replay of the original request is now stale, not replayed…
        assert_eq!(
            c.check(id(1), NOW, later),
            Err(FreshnessError::Stale { window_secs: 120 })
        );
        // …and the id's slot has been freed.
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn a_full_cache_of_live_ids_refuses_as_busy_without_evicting() {
        let mut c = cache(3);
        for n in 0..3 {
            assert_eq!(c.check(id(n), NOW, NOW), Ok(()));
        }
        assert_eq!(c.check(id(9), NOW, NOW), Err(FreshnessError::Full));
        assert_eq!(FreshnessError::Full.code(), ErrorCode::Busy);
        // Every remembered id is still refused: nothing was evicted to make room.
        for n in 0..3 {
            assert_eq!(c.check(id(n), NOW, NOW), Err(FreshnessError::Replayed));
        }
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn expiry_frees_space_in_timestamp_order() {
        let mut c = cache(3);
        assert_eq!(c.check(id(0), NOW - 1_000, NOW), Ok(()));
        assert_eq!(c.check(id(1), NOW + 5_000, NOW), Ok(()));
        assert_eq!(c.check(id(2), NOW, NOW), Ok(()));
        assert_eq!(c.check(id(3), NOW, NOW), Err(FreshnessError::Full));
        // id 0 (the earliest timestamp) expires first, freeing one slot.
        let t = NOW - 1_000 + WINDOW_MS + 1;
        assert_eq!(c.check(id(3), t, t), Ok(()));
        assert_eq!(c.check(id(4), t, t), Err(FreshnessError::Full));
        assert_eq!(c.check(id(2), NOW, t), Err(FreshnessError::Replayed));
        // Past the windows of ids 1 and 2, only id 3 is left besides the new one.
        let t2 = NOW + 5_000 + WINDOW_MS + 1;
        assert_eq!(c.check(id(5), t2, t2), Ok(()));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn a_clock_stepped_back_cannot_revive_a_forgotten_id() {
        let mut c = cache(16);
        assert_eq!(c.check(id(1), NOW, NOW), Ok(()));
        let later = NOW + WINDOW_MS + 10;
        assert_eq!(c.check(id(2), later, later), Ok(()));
        assert_eq!(c.len(), 1, "id 1 expired");
        // The clock goes back to NOW: the original request would fit the window of that reading,
        // but the window's lower bound follows the latest time seen.
        assert_eq!(
            c.check(id(1), NOW, NOW),
            Err(FreshnessError::Stale { window_secs: 120 })
        );
    }

    #[test]
    fn the_guard_is_shared_across_threads() {
        let guard = std::sync::Arc::new(ReplayGuard::new(FreshnessConfig {
            window: Duration::from_secs(120),
            replay_cache_entries: 1_000,
        }));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = guard.clone();
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|n| g.check(id(*n), NOW, NOW).is_ok())
                        .count()
                })
            })
            .collect();
        let accepted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        // Each of the 100 ids was accepted by exactly one thread.
        assert_eq!(accepted, 100);
        assert_eq!(guard.len(), 100);
    }

    /// Prints the figure docs/operations.md quotes, and checks that it stays within 64 bytes per
    /// id once the tables are grown (a regression to a fatter entry would fail here).
    #[test]
    fn memory_per_entry_is_measured_from_the_table_capacities() {
        let n: u32 = 1 << 16;
        let mut c = cache(n as usize);
        for i in 0..n {
            c.check(id(i), NOW, NOW).unwrap();
        }
        let bytes = c.heap_bytes();
        let per_entry = bytes as f64 / f64::from(n);
        println!("replay cache: {n} ids, {bytes} heap bytes, {per_entry:.1} bytes per id");
        assert!(per_entry > 40.0 && per_entry <= 64.0, "{per_entry}");
    }

    #[test]
    fn error_codes_are_the_sealed_protocol_codes() {
        assert_eq!(
            FreshnessError::Stale { window_secs: 1 }.code(),
            ErrorCode::StaleRequest
        );
        assert_eq!(FreshnessError::Replayed.code(), ErrorCode::ReplayedRequest);
    }
}

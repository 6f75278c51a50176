//! The enclave's HPKE keys over time: the current [`ServerKey`], which attestation publishes, and
//! the keys retired within the last overlap period, which still open requests so that a client
//! that attested just before a rotation is not cut off mid-flight (docs/protocol.md §2.3).
//!
//! Every `rotation` a new key becomes current and the old one is retired; a retired key is
//! dropped (and its private key zeroized, `x25519-dalek`'s `StaticSecret`) `overlap` after its
//! retirement. A request naming a key id that is no longer in the ring is answered
//! `unsupported_key_config` in the clear, and the client attests again.
//!
//! Key ids are one byte (RFC 9458 §3): the first is random, each next one is the previous plus one
//! (wrapping), skipping any id still in the ring, so that an id always names one key.
//!
//! Sans-IO: time comes in as an [`Instant`] argument and randomness as an RNG; the enclave calls
//! [`KeyRing::maintain`] from a timer and before every use.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::CryptoRng;
use sealed_crypto::ServerKey;

/// Default rotation period (1 hour).
pub const DEFAULT_KEY_ROTATION_SECS: u64 = 3600;
/// Default overlap during which a retired key still opens requests (5 minutes).
pub const DEFAULT_KEY_OVERLAP_SECS: u64 = 300;
/// Longest rotation period accepted (one week).
pub const MAX_KEY_ROTATION_SECS: u64 = 7 * 24 * 3600;
/// Retired keys kept at most. With `overlap < rotation` at most one is ever retired at a time;
/// the bound holds even if maintenance ran late.
const MAX_RETIRED: usize = 4;

/// Rotation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRingConfig {
    /// How long a key is current.
    pub rotation: Duration,
    /// How long a retired key still opens requests. Must be shorter than `rotation`.
    pub overlap: Duration,
}

impl Default for KeyRingConfig {
    fn default() -> Self {
        KeyRingConfig {
            rotation: Duration::from_secs(DEFAULT_KEY_ROTATION_SECS),
            overlap: Duration::from_secs(DEFAULT_KEY_OVERLAP_SECS),
        }
    }
}

/// A rotation configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingConfigError {
    #[error("key rotation period must be at least 1 second")]
    RotationTooShort,
    #[error(
        "key overlap ({overlap_secs} s) must be shorter than the rotation period ({rotation_secs} s)"
    )]
    OverlapNotShorter {
        overlap_secs: u64,
        rotation_secs: u64,
    },
}

impl KeyRingConfig {
    /// Checks `rotation ≥ 1 s` and `overlap < rotation`.
    pub fn validate(&self) -> Result<(), KeyRingConfigError> {
        if self.rotation < Duration::from_secs(1) {
            return Err(KeyRingConfigError::RotationTooShort);
        }
        if self.overlap >= self.rotation {
            return Err(KeyRingConfigError::OverlapNotShorter {
                overlap_secs: self.overlap.as_secs(),
                rotation_secs: self.rotation.as_secs(),
            });
        }
        Ok(())
    }
}

struct Retired {
    key: Arc<ServerKey>,
    drop_at: Instant,
}

/// The current key and the retired keys still inside their overlap.
///
/// Keys are held as `Arc`s so that a request being opened keeps its key alive without holding the
/// ring's lock; the last holder drops (and zeroizes) it.
pub struct KeyRing {
    config: KeyRingConfig,
    current: Arc<ServerKey>,
    next_rotation: Instant,
    retired: Vec<Retired>,
}

impl KeyRing {
    /// A ring whose first key has a random id, current from `now`.
    pub fn new<R: CryptoRng + ?Sized>(config: KeyRingConfig, now: Instant, rng: &mut R) -> KeyRing {
        let mut id = [0u8; 1];
        rng.fill_bytes(&mut id);
        let [first_id] = id;
        KeyRing::with_key(config, ServerKey::generate(first_id, rng), now)
    }

    /// A ring whose current key is `key` (from `now`); later keys follow its id.
    pub fn with_key(config: KeyRingConfig, key: ServerKey, now: Instant) -> KeyRing {
        KeyRing {
            config,
            current: Arc::new(key),
            next_rotation: now + config.rotation,
            retired: Vec::new(),
        }
    }

    /// The key attestation publishes and new requests are sealed to.
    pub fn current(&self) -> &Arc<ServerKey> {
        &self.current
    }

    /// The key with this id, if it is current or still inside its overlap.
    pub fn get(&self, key_id: u8) -> Option<Arc<ServerKey>> {
        if self.current.key_id() == key_id {
            return Some(Arc::clone(&self.current));
        }
        self.retired
            .iter()
            .find(|r| r.key.key_id() == key_id)
            .map(|r| Arc::clone(&r.key))
    }

    /// Ids of every key in the ring, current first.
    pub fn key_ids(&self) -> Vec<u8> {
        std::iter::once(self.current.key_id())
            .chain(self.retired.iter().map(|r| r.key.key_id()))
            .collect()
    }

    /// Drops retired keys whose overlap is over and rotates if the current key's time is up.
    /// Returns true if a new key became current. Idempotent; call it as often as convenient.
    pub fn maintain<R: CryptoRng + ?Sized>(&mut self, now: Instant, rng: &mut R) -> bool {
        self.retired.retain(|r| r.drop_at > now);
        if now < self.next_rotation {
            return false;
        }
        let id = self.next_id();
        let new = Arc::new(ServerKey::generate(id, rng));
        let old = std::mem::replace(&mut self.current, new);
        // The overlap runs from the actual retirement, so a late rotation never shortens it.
        self.retired.push(Retired {
            key: old,
            drop_at: now + self.config.overlap,
        });
        if self.retired.len() > MAX_RETIRED {
            self.retired.remove(0);
        }
        // Scheduled from now, not from the missed deadline: a late timer rotates once, not in a
        // burst of keys nobody attested.
        self.next_rotation = now + self.config.rotation;
        true
    }

    /// The next instant at which [`KeyRing::maintain`] has something to do.
    pub fn next_deadline(&self) -> Instant {
        self.retired
            .iter()
            .map(|r| r.drop_at)
            .fold(self.next_rotation, Instant::min)
    }

    /// The current id plus one (wrapping), skipping ids still in the ring. The ring holds at most
    /// `1 + MAX_RETIRED` keys, far fewer than 256 ids, so a free one is always found.
    fn next_id(&self) -> u8 {
        let in_use = self.key_ids();
        let mut id = self.current.key_id();
        for _ in 0..=u8::MAX {
            id = id.wrapping_add(1);
            if !in_use.contains(&id) {
                break;
            }
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> crate::rng::OsRng {
        crate::rng::os_rng()
    }

    fn config(rotation: u64, overlap: u64) -> KeyRingConfig {
        KeyRingConfig {
            rotation: Duration::from_secs(rotation),
            overlap: Duration::from_secs(overlap),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn defaults_are_an_hour_and_five_minutes_and_valid() {
        let c = KeyRingConfig::default();
        assert_eq!(c, config(3600, 300));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn overlap_must_be_shorter_than_rotation() {
        assert_eq!(config(2, 1).validate(), Ok(()));
        assert_eq!(config(1, 0).validate(), Ok(()));
        assert_eq!(
            config(60, 60).validate(),
            Err(KeyRingConfigError::OverlapNotShorter {
                overlap_secs: 60,
                rotation_secs: 60
            })
        );
        assert_eq!(
            config(0, 0).validate(),
            Err(KeyRingConfigError::RotationTooShort)
        );
    }

    #[test]
    fn rotates_on_schedule_and_the_old_key_opens_until_its_overlap_ends() {
        let t0 = Instant::now();
        let mut ring = KeyRing::new(config(10, 3), t0, &mut rng());
        let first = Arc::clone(ring.current());
        let first_id = first.key_id();
        assert!(!ring.maintain(t0 + secs(9), &mut rng()));
        assert_eq!(ring.key_ids(), [first_id]);
        assert_eq!(ring.next_deadline(), t0 + secs(10));

        // Rotation: a new current key, id + 1, a new public key; the old one still served.
        assert!(ring.maintain(t0 + secs(10), &mut rng()));
        let second = Arc::clone(ring.current());
        assert_eq!(second.key_id(), first_id.wrapping_add(1));
        assert_ne!(second.config().public_key, first.config().public_key);
        assert_eq!(ring.key_ids(), [second.key_id(), first_id]);
        assert!(ring.get(first_id).is_some());
        assert_eq!(ring.next_deadline(), t0 + secs(13));

        // Overlap: still there one instant before its end, gone at it.
        ring.maintain(t0 + secs(13) - Duration::from_millis(1), &mut rng());
        assert!(ring.get(first_id).is_some());
        assert!(!ring.maintain(t0 + secs(13), &mut rng()));
        assert!(ring.get(first_id).is_none());
        assert_eq!(ring.key_ids(), [second.key_id()]);
        assert_eq!(ring.next_deadline(), t0 + secs(20));
        // Unknown ids are simply absent.
        assert!(ring.get(first_id.wrapping_add(7)).is_none());
    }

    #[test]
    fn a_retired_key_is_dropped_when_the_last_user_lets_go() {
        let t0 = Instant::now();
        let mut ring = KeyRing::new(config(2, 1), t0, &mut rng());
        let in_flight = Arc::clone(ring.current());
        let weak = Arc::downgrade(&in_flight);
        ring.maintain(t0 + secs(2), &mut rng());
        ring.maintain(t0 + secs(3), &mut rng());
        // Out of the ring, but a request being opened with it keeps it alive…
        assert!(ring.get(in_flight.key_id()).is_none());
        assert!(weak.upgrade().is_some());
        // …until it is done; then the key (and its zeroize-on-drop secret) is gone.
        drop(in_flight);
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn ids_wrap_around_and_never_name_two_keys() {
        let t0 = Instant::now();
        let mut ring = KeyRing::with_key(config(10, 5), ServerKey::generate(254, &mut rng()), t0);
        ring.maintain(t0 + secs(10), &mut rng());
        assert_eq!(ring.current().key_id(), 255);
        ring.maintain(t0 + secs(20), &mut rng());
        assert_eq!(ring.current().key_id(), 0);
        // 254's overlap is over; 255 is in its own.
        assert_eq!(ring.key_ids(), [0, 255]);

        // Ids still in the ring are skipped: fake a ring that holds the next id as retired.
        let t = t0 + secs(20);
        let mut ring = KeyRing::with_key(config(10, 5), ServerKey::generate(9, &mut rng()), t);
        ring.retired.push(Retired {
            key: Arc::new(ServerKey::generate(10, &mut rng())),
            drop_at: t + secs(100),
        });
        ring.maintain(t + secs(10), &mut rng());
        assert_eq!(ring.current().key_id(), 11);
        let mut ids = ring.key_ids();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), ring.key_ids().len());
    }

    #[test]
    fn a_late_maintenance_rotates_once_and_keeps_a_full_overlap() {
        let t0 = Instant::now();
        let mut ring = KeyRing::new(config(10, 3), t0, &mut rng());
        let first_id = ring.current().key_id();
        // Nothing ran for 35 s (three missed rotations): one new key, the old one kept 3 s more.
        assert!(ring.maintain(t0 + secs(35), &mut rng()));
        assert_eq!(ring.key_ids(), [first_id.wrapping_add(1), first_id]);
        assert_eq!(ring.next_deadline(), t0 + secs(38));
        assert!(!ring.maintain(t0 + secs(38), &mut rng()));
        assert!(ring.maintain(t0 + secs(45), &mut rng()));
    }

    #[test]
    fn the_ring_stays_bounded_even_when_overlap_is_misconfigured() {
        // validate() refuses this; the ring must still not grow without bound.
        let t0 = Instant::now();
        let mut ring = KeyRing::new(config(1, 100), t0, &mut rng());
        for s in 1..50 {
            ring.maintain(t0 + secs(s), &mut rng());
        }
        assert_eq!(ring.key_ids().len(), 1 + MAX_RETIRED);
    }
}

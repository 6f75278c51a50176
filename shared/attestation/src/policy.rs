//! What the client requires of an authentic document: debug mode off, PCRs it accepts, its nonce,
//! and freshness (nitro-facts §1.5 step 5).
//!
//! What it does not do: decide *which* PCR values to trust (the caller's policy) or check the
//! `user_data` commitment ([`crate::commitment`]). These checks run only after the signature has
//! verified; on their own they say nothing about authenticity.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{VerifiedDocument, VerifyError, VerifyOptions};

/// How far a document's timestamp may be ahead of the verifier's clock (clock skew allowance).
pub const MAX_FUTURE_SKEW: Duration = Duration::from_secs(5 * 60);

/// Which PCR values a client accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PcrPolicy {
    /// A document passes if, for at least one map, every listed PCR is present in the document with
    /// exactly that value. An empty list, or an empty map in it, is refused as a policy error:
    /// it would otherwise accept every enclave by accident.
    AnyOf(Vec<BTreeMap<u16, Vec<u8>>>),
    /// Accept any PCR values: an explicit opt-out, for tools that only inspect documents.
    AcceptAny,
}

/// Why a PCR policy refused a document, or could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the PCR policy lists no accepted measurements")]
    EmptyPolicy,
    #[error("the PCR policy has an entry that lists no PCRs")]
    EmptyEntry,
    #[error("the document's PCRs match none of the {alternatives} accepted measurement set(s)")]
    NoMatch { alternatives: usize },
}

impl PcrPolicy {
    /// Checks a document's PCRs against the policy.
    pub fn check(&self, pcrs: &BTreeMap<u16, Vec<u8>>) -> Result<(), PolicyError> {
        let alternatives = match self {
            PcrPolicy::AcceptAny => return Ok(()),
            PcrPolicy::AnyOf(alternatives) => alternatives,
        };
        if alternatives.is_empty() {
            return Err(PolicyError::EmptyPolicy);
        }
        if alternatives.iter().any(BTreeMap::is_empty) {
            return Err(PolicyError::EmptyEntry);
        }
        let matches = |expected: &BTreeMap<u16, Vec<u8>>| {
            expected
                .iter()
                .all(|(index, value)| pcrs.get(index) == Some(value))
        };
        if alternatives.iter().any(matches) {
            Ok(())
        } else {
            Err(PolicyError::NoMatch {
                alternatives: alternatives.len(),
            })
        }
    }
}

/// Runs the policy checks, in this order: debug mode, PCRs, nonce, timestamp. Debug mode comes
/// first so that a debug enclave is reported as such, not as an unknown measurement.
pub(crate) fn check(
    doc: &VerifiedDocument,
    opts: &VerifyOptions,
    now: Duration,
) -> Result<(), VerifyError> {
    // AWS: debug-mode enclaves report PCRs "made up entirely of zeros"; in real debug documents
    // PCR0..2 are zero but PCR3/4 are not (nitro-facts §4), so PCR0 decides. A document without
    // PCR0 cannot show it is not in debug mode.
    if !opts.allow_debug {
        match doc.pcrs.get(&0) {
            Some(pcr0) if pcr0.iter().any(|b| *b != 0) => {}
            _ => return Err(VerifyError::DebugMode),
        }
    }

    opts.pcr_policy
        .check(&doc.pcrs)
        .map_err(VerifyError::PcrPolicy)?;

    if let Some(expected) = &opts.expected_nonce {
        match &doc.nonce {
            None => return Err(VerifyError::NonceMissing),
            Some(actual) if !ct_eq(actual, expected) => return Err(VerifyError::NonceMismatch),
            Some(_) => {}
        }
    }

    let issued = Duration::from_millis(doc.timestamp_ms);
    if issued > now.saturating_add(MAX_FUTURE_SKEW) {
        return Err(VerifyError::TimestampInFuture {
            ahead_ms: millis(issued.saturating_sub(now)),
        });
    }
    if let Some(max_age) = opts.max_age {
        let age = now.saturating_sub(issued);
        if age > max_age {
            return Err(VerifyError::TooOld {
                age_ms: millis(age),
                max_age_ms: millis(max_age),
            });
        }
    }
    Ok(())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Equality whose time does not depend on where the first difference is. Nonces are not secret,
/// but comparing them this way costs nothing.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrustAnchor;
    use std::time::UNIX_EPOCH;

    const T0_MS: u64 = 1_725_719_859_545;

    fn doc(pcr0: [u8; 48]) -> VerifiedDocument {
        let mut pcrs = BTreeMap::new();
        pcrs.insert(0, pcr0.to_vec());
        pcrs.insert(1, vec![1; 48]);
        pcrs.insert(4, vec![4; 48]);
        VerifiedDocument {
            module_id: "i-0-enc0".into(),
            timestamp_ms: T0_MS,
            digest: "SHA384".into(),
            pcrs,
            certificate: vec![1],
            cabundle: vec![vec![1]],
            public_key: None,
            user_data: None,
            nonce: Some(vec![9; 32]),
        }
    }

    fn opts() -> VerifyOptions {
        VerifyOptions {
            trust_anchor: TrustAnchor::aws_nitro_root_g1(),
            pcr_policy: PcrPolicy::AcceptAny,
            expected_nonce: None,
            max_age: None,
            allow_debug: false,
            now: UNIX_EPOCH + Duration::from_millis(T0_MS),
        }
    }

    fn run(d: &VerifiedDocument, o: &VerifyOptions) -> Result<(), VerifyError> {
        let now = o.now.duration_since(UNIX_EPOCH).unwrap();
        check(d, o, now)
    }

    fn map(entries: &[(u16, u8)]) -> BTreeMap<u16, Vec<u8>> {
        entries.iter().map(|(i, b)| (*i, vec![*b; 48])).collect()
    }

    #[test]
    fn rejects_debug_mode_unless_allowed() {
        let d = doc([0; 48]);
        let err = run(&d, &opts()).unwrap_err();
        assert_eq!(err.check(), "debug_mode");
        let o = VerifyOptions {
            allow_debug: true,
            ..opts()
        };
        run(&d, &o).unwrap();
    }

    #[test]
    fn rejects_document_without_pcr0_as_debug() {
        let mut d = doc([5; 48]);
        d.pcrs.remove(&0);
        assert_eq!(run(&d, &opts()).unwrap_err().check(), "debug_mode");
    }

    #[test]
    fn debug_check_precedes_pcr_policy() {
        let o = VerifyOptions {
            pcr_policy: PcrPolicy::AnyOf(vec![map(&[(0, 7)])]),
            ..opts()
        };
        assert_eq!(run(&doc([0; 48]), &o).unwrap_err().check(), "debug_mode");
    }

    #[test]
    fn any_of_passes_when_one_alternative_matches_fully() {
        let p = PcrPolicy::AnyOf(vec![map(&[(0, 7), (1, 2)]), map(&[(0, 5), (1, 1)])]);
        p.check(&doc([5; 48]).pcrs).unwrap();
    }

    #[test]
    fn any_of_fails_when_each_alternative_misses_one_pcr() {
        let p = PcrPolicy::AnyOf(vec![map(&[(0, 5), (1, 2)]), map(&[(0, 6), (1, 1)])]);
        assert_eq!(
            p.check(&doc([5; 48]).pcrs),
            Err(PolicyError::NoMatch { alternatives: 2 })
        );
        // A PCR the document does not carry never matches.
        let p = PcrPolicy::AnyOf(vec![map(&[(0, 5), (8, 0)])]);
        assert!(p.check(&doc([5; 48]).pcrs).is_err());
    }

    #[test]
    fn empty_policy_and_empty_entry_are_refused() {
        let pcrs = doc([5; 48]).pcrs;
        assert_eq!(
            PcrPolicy::AnyOf(vec![]).check(&pcrs),
            Err(PolicyError::EmptyPolicy)
        );
        assert_eq!(
            PcrPolicy::AnyOf(vec![map(&[(0, 5)]), BTreeMap::new()]).check(&pcrs),
            Err(PolicyError::EmptyEntry)
        );
        PcrPolicy::AcceptAny.check(&pcrs).unwrap();
    }

    #[test]
    fn nonce_must_be_present_and_equal() {
        let d = doc([5; 48]);
        let o = VerifyOptions {
            expected_nonce: Some(vec![9; 32]),
            ..opts()
        };
        run(&d, &o).unwrap();
        let o = VerifyOptions {
            expected_nonce: Some(vec![9; 31]),
            ..opts()
        };
        assert_eq!(run(&d, &o).unwrap_err().check(), "nonce");
        let mut d2 = d.clone();
        d2.nonce = None;
        let o = VerifyOptions {
            expected_nonce: Some(vec![9; 32]),
            ..opts()
        };
        assert!(matches!(run(&d2, &o), Err(VerifyError::NonceMissing)));
    }

    #[test]
    fn max_age_is_enforced_at_now() {
        let d = doc([5; 48]);
        let o = VerifyOptions {
            max_age: Some(Duration::from_secs(60)),
            now: UNIX_EPOCH + Duration::from_millis(T0_MS + 60_000),
            ..opts()
        };
        run(&d, &o).unwrap();
        let o = VerifyOptions {
            now: UNIX_EPOCH + Duration::from_millis(T0_MS + 60_001),
            ..o
        };
        let err = run(&d, &o).unwrap_err();
        assert_eq!(err.check(), "max_age");
        assert!(matches!(
            err,
            VerifyError::TooOld {
                age_ms: 60_001,
                max_age_ms: 60_000
            }
        ));
    }

    #[test]
    fn future_timestamp_beyond_skew_is_refused() {
        let d = doc([5; 48]);
        let at = |ms| VerifyOptions {
            now: UNIX_EPOCH + Duration::from_millis(ms),
            ..opts()
        };
        run(&d, &at(T0_MS - 300_000)).unwrap();
        let err = run(&d, &at(T0_MS - 300_001)).unwrap_err();
        assert_eq!(err.check(), "timestamp");
    }
}

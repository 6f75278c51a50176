//! What a client requires of an enclave before it sends anything: the trust anchor, the accepted
//! measurements (PCRs), freshness and debug mode. A [`Policy`] turns into the
//! [`sealed_attestation::VerifyOptions`] of one verification.
//!
//! Secure by default: the AWS Nitro Root-G1 is the anchor, debug-mode enclaves are refused,
//! documents older than five minutes are refused, and a policy without PCR expectations is an
//! error unless the caller opts out with [`Policy::no_pcr_policy`] in so many words. A mock CA root
//! is trusted only when named with [`Policy::trust_root_pem`] or [`Policy::trust_anchor`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use sealed_attestation::document::MAX_PCRS;
use sealed_attestation::{AnchorError, PcrPolicy, TrustAnchor, VerifyOptions};
use sealed_wire::ModelManifest;

/// Default [`Policy::max_age`]: a document older than this at verification time is refused.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5 * 60);
/// Every PCR is a SHA-384 digest (the document's `digest` is always `SHA384`, nitro-facts §4).
pub const PCR_LEN: usize = 48;

/// Why a policy cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPolicy {
    #[error(
        "no PCR policy: expect at least one PCR value (expect_pcr / --expect-pcr) or opt out \
         explicitly (no_pcr_policy / --no-pcr-policy)"
    )]
    NoPcrPolicy,
    #[error("expected PCR values and no_pcr_policy were both given; choose one")]
    Conflicting,
    #[error("PCR index {index} is out of range (0..{max})")]
    PcrIndex { index: u16, max: usize },
    #[error("PCR{index} value is {len} bytes; PCRs are SHA-384 digests of {PCR_LEN} bytes")]
    PcrLength { index: u16, len: usize },
    #[error("an alternative PCR set lists no PCRs")]
    EmptyAlternative,
    #[error(
        "expected digest of model {model_id:?} is {len} bytes; model digests are SHA-384 ({PCR_LEN} bytes)"
    )]
    ModelDigestLength { model_id: String, len: usize },
    #[error("trust root: {0}")]
    TrustRoot(#[from] AnchorError),
}

/// The accepted PCR set a verified document matched ([`Policy::accepted_as`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedAs {
    /// Position of the set in the policy (0 = the first `expect_pcr` / `or_pcrs` / file entry).
    pub index: usize,
    /// The set's name, for named sets (policy files name every set).
    pub name: Option<String>,
}

/// Builder of what an attested enclave must satisfy. See the module docs for the defaults.
///
/// ```
/// # use sealed_client::Policy;
/// let policy = Policy::new()
///     .expect_pcr(0, vec![0x11; 48])
///     .expect_pcr(1, vec![0x22; 48])
///     // Also accept the next release's image (same kernel, PCR1).
///     .or_pcrs([(0, vec![0x33; 48]), (1, vec![0x22; 48])]);
/// assert!(policy.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct Policy {
    anchor: TrustAnchor,
    /// Alternatives; the first is the one `expect_pcr` fills.
    pcrs: Vec<BTreeMap<u16, Vec<u8>>>,
    /// Name of each alternative (same length as `pcrs`); `None` for sets built from flags.
    names: Vec<Option<String>>,
    accept_any_pcrs: bool,
    max_age: Option<Duration>,
    allow_debug: bool,
    /// Models the attested manifest must list with exactly these SHA-384 digests.
    models: BTreeMap<String, Vec<u8>>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new()
    }
}

impl Policy {
    /// AWS Nitro Root-G1 anchor, no PCR expectations yet (which is an error until some are added
    /// or [`Policy::no_pcr_policy`] is called), [`DEFAULT_MAX_AGE`], debug mode refused.
    pub fn new() -> Policy {
        Policy {
            anchor: TrustAnchor::aws_nitro_root_g1(),
            pcrs: Vec::new(),
            names: Vec::new(),
            accept_any_pcrs: false,
            max_age: Some(DEFAULT_MAX_AGE),
            allow_debug: false,
            models: BTreeMap::new(),
        }
    }

    /// Requires the attested manifest to list `model_id` with SHA-384 `sha384` (of its ONNX bytes).
    /// PCRs pin the enclave's code; this pins the model it serves.
    pub fn expect_model(
        mut self,
        model_id: impl Into<String>,
        sha384: impl Into<Vec<u8>>,
    ) -> Policy {
        self.models.insert(model_id.into(), sha384.into());
        self
    }

    /// Checks an attested manifest against [`Policy::expect_model`]: every expected model must be
    /// listed with exactly the expected digest. Returns the first model that is not.
    pub fn check_manifest(&self, manifest: &ModelManifest) -> Result<(), String> {
        for (model_id, digest) in &self.models {
            let listed = manifest.models.iter().find(|m| &m.model_id == model_id);
            if listed.is_none_or(|m| &m.sha384 != digest) {
                return Err(model_id.clone());
            }
        }
        Ok(())
    }

    /// Trusts `anchor` instead of the AWS root (for example the mock CA in simulation).
    pub fn trust_anchor(mut self, anchor: TrustAnchor) -> Policy {
        self.anchor = anchor;
        self
    }

    /// Trusts the PEM certificate `pem` instead of the AWS root.
    pub fn trust_root_pem(self, pem: &str) -> Result<Policy, InvalidPolicy> {
        Ok(self.trust_anchor(TrustAnchor::from_pem(pem)?))
    }

    /// Requires PCR `index` to equal `value` (48 bytes), in the first accepted PCR set.
    /// Calling it again for the same index replaces the value.
    pub fn expect_pcr(mut self, index: u16, value: impl Into<Vec<u8>>) -> Policy {
        if self.pcrs.is_empty() {
            self.pcrs.push(BTreeMap::new());
            self.names.push(None);
        }
        if let Some(first) = self.pcrs.first_mut() {
            first.insert(index, value.into());
        }
        self
    }

    /// Adds another accepted PCR set: a document passes if it matches any one set completely
    /// (for example the current and the next release of an enclave image).
    pub fn or_pcrs(mut self, pcrs: impl IntoIterator<Item = (u16, Vec<u8>)>) -> Policy {
        self.pcrs.push(pcrs.into_iter().collect());
        self.names.push(None);
        self
    }

    /// [`Policy::or_pcrs`] with a name, which [`Policy::accepted_as`] reports when a document
    /// matches this set (a policy file's `accept` entries, e.g. `v0.3.0`).
    pub fn or_named_pcrs(
        mut self,
        name: impl Into<String>,
        pcrs: impl IntoIterator<Item = (u16, Vec<u8>)>,
    ) -> Policy {
        self.pcrs.push(pcrs.into_iter().collect());
        self.names.push(Some(name.into()));
        self
    }

    /// Which accepted set the PCRs of a verified document match: the first set, in the order
    /// given, whose every PCR is present with exactly that value (the rule of
    /// [`PcrPolicy::AnyOf`]). `None` under [`Policy::no_pcr_policy`] or when no set matches.
    pub fn accepted_as(&self, pcrs: &BTreeMap<u16, Vec<u8>>) -> Option<AcceptedAs> {
        if self.accept_any_pcrs {
            return None;
        }
        self.pcrs
            .iter()
            .enumerate()
            .find(|(_, set)| {
                !set.is_empty()
                    && set
                        .iter()
                        .all(|(index, value)| pcrs.get(index).is_some_and(|v| v == value))
            })
            .map(|(index, _)| AcceptedAs {
                index,
                name: self.names.get(index).cloned().flatten(),
            })
    }

    /// The names of the accepted sets, in order (`None` for unnamed sets).
    pub fn pcr_set_names(&self) -> impl Iterator<Item = Option<&str>> {
        self.names.iter().map(Option::as_deref)
    }

    /// Accepts any measurements. An explicit opt-out for inspecting documents; an attested session
    /// with it proves only that *some* Nitro enclave answered.
    pub fn no_pcr_policy(mut self) -> Policy {
        self.accept_any_pcrs = true;
        self
    }

    /// Refuses documents older than `max_age` at verification time.
    pub fn max_age(mut self, max_age: Duration) -> Policy {
        self.max_age = Some(max_age);
        self
    }

    /// Drops the age check. Only for inspecting recorded documents offline: a live session is
    /// fresh anyway, because the document must carry the session's random nonce.
    pub fn no_max_age(mut self) -> Policy {
        self.max_age = None;
        self
    }

    /// Accepts debug-mode enclaves (PCR0 all zero), whose memory the parent instance can read.
    /// Never for production.
    pub fn allow_debug(mut self, allow: bool) -> Policy {
        self.allow_debug = allow;
        self
    }

    /// The trust anchor in use.
    pub fn anchor(&self) -> &TrustAnchor {
        &self.anchor
    }

    /// Checks that the policy says something definite: PCR values or an explicit opt-out (not
    /// both), indices and lengths that a document can have.
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        match (self.pcrs.is_empty(), self.accept_any_pcrs) {
            (true, false) => return Err(InvalidPolicy::NoPcrPolicy),
            (false, true) => return Err(InvalidPolicy::Conflicting),
            _ => {}
        }
        for (model_id, digest) in &self.models {
            if digest.len() != PCR_LEN {
                return Err(InvalidPolicy::ModelDigestLength {
                    model_id: model_id.clone(),
                    len: digest.len(),
                });
            }
        }
        for set in &self.pcrs {
            if set.is_empty() {
                return Err(InvalidPolicy::EmptyAlternative);
            }
            for (&index, value) in set {
                if usize::from(index) >= MAX_PCRS {
                    return Err(InvalidPolicy::PcrIndex {
                        index,
                        max: MAX_PCRS,
                    });
                }
                if value.len() != PCR_LEN {
                    return Err(InvalidPolicy::PcrLength {
                        index,
                        len: value.len(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The options of one verification at `now`, requiring `expected_nonce` if given.
    pub fn verify_options(
        &self,
        expected_nonce: Option<Vec<u8>>,
        now: SystemTime,
    ) -> Result<VerifyOptions, InvalidPolicy> {
        self.validate()?;
        let pcr_policy = if self.accept_any_pcrs {
            PcrPolicy::AcceptAny
        } else {
            PcrPolicy::AnyOf(self.pcrs.clone())
        };
        Ok(VerifyOptions {
            trust_anchor: self.anchor.clone(),
            pcr_policy,
            expected_nonce,
            max_age: self.max_age,
            allow_debug: self.allow_debug,
            now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway self-signed P-384 root (tests/data/README.md), standing in for a mock CA root.
    const OTHER_ROOT_PEM: &str = include_str!("../tests/data/other-root.pem");

    fn pcr(b: u8) -> Vec<u8> {
        vec![b; PCR_LEN]
    }

    #[test]
    fn expected_models_must_be_listed_with_the_same_digest() {
        let mut manifest = ModelManifest::default();
        manifest.insert("digits".into(), pcr(1));
        manifest.insert("other".into(), pcr(2));
        let p = Policy::new().expect_pcr(0, pcr(9));
        assert_eq!(p.check_manifest(&manifest), Ok(()));
        let p = p.expect_model("digits", pcr(1));
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.check_manifest(&manifest), Ok(()));
        let wrong = p.clone().expect_model("digits", pcr(3));
        assert_eq!(wrong.check_manifest(&manifest), Err("digits".to_string()));
        let missing = p.expect_model("absent", pcr(1));
        assert_eq!(missing.check_manifest(&manifest), Err("absent".to_string()));
        let short = Policy::new()
            .expect_pcr(0, pcr(9))
            .expect_model("digits", vec![1; 32]);
        assert!(matches!(
            short.validate(),
            Err(InvalidPolicy::ModelDigestLength { len: 32, .. })
        ));
    }

    #[test]
    fn defaults_are_aws_root_five_minutes_no_debug_and_no_pcr_policy_is_an_error() {
        let p = Policy::new();
        assert_eq!(p.anchor(), &TrustAnchor::aws_nitro_root_g1());
        assert_eq!(p.validate(), Err(InvalidPolicy::NoPcrPolicy));
        assert_eq!(
            p.verify_options(None, SystemTime::now()).unwrap_err(),
            InvalidPolicy::NoPcrPolicy
        );
        let opts = p
            .expect_pcr(0, pcr(1))
            .verify_options(None, SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(opts.max_age, Some(DEFAULT_MAX_AGE));
        assert!(!opts.allow_debug);
        assert_eq!(opts.trust_anchor, TrustAnchor::aws_nitro_root_g1());
        assert_eq!(opts.expected_nonce, None);
        assert_eq!(opts.now, SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn expect_pcr_fills_one_set_and_or_pcrs_adds_alternatives() {
        let opts = Policy::new()
            .expect_pcr(0, pcr(1))
            .expect_pcr(2, pcr(2))
            .expect_pcr(0, pcr(3))
            .or_pcrs([(0, pcr(4))])
            .verify_options(Some(vec![9; 32]), SystemTime::now())
            .unwrap();
        let PcrPolicy::AnyOf(sets) = opts.pcr_policy else {
            panic!("expected AnyOf");
        };
        assert_eq!(
            sets,
            vec![
                BTreeMap::from([(0, pcr(3)), (2, pcr(2))]),
                BTreeMap::from([(0, pcr(4))]),
            ]
        );
        assert_eq!(opts.expected_nonce, Some(vec![9; 32]));
    }

    #[test]
    fn accepted_as_names_the_first_set_that_matches_completely() {
        let doc = BTreeMap::from([(0, pcr(1)), (1, pcr(2)), (2, pcr(3))]);
        let p = Policy::new()
            .or_named_pcrs("old", [(0, pcr(9)), (1, pcr(2))])
            .or_named_pcrs("new", [(0, pcr(1)), (1, pcr(2))])
            .or_named_pcrs("also", [(0, pcr(1))]);
        assert_eq!(
            p.accepted_as(&doc),
            Some(AcceptedAs {
                index: 1,
                name: Some("new".into())
            })
        );
        assert_eq!(
            p.pcr_set_names().collect::<Vec<_>>(),
            [Some("old"), Some("new"), Some("also")]
        );
        // A PCR the document lacks never matches.
        let p = Policy::new().or_named_pcrs("x", [(0, pcr(1)), (5, pcr(1))]);
        assert_eq!(p.accepted_as(&doc), None);
        // Flag-built sets are unnamed; no_pcr_policy matches no set.
        let p = Policy::new().expect_pcr(2, pcr(3));
        assert_eq!(
            p.accepted_as(&doc),
            Some(AcceptedAs {
                index: 0,
                name: None
            })
        );
        assert_eq!(Policy::new().no_pcr_policy().accepted_as(&doc), None);
    }

    #[test]
    fn or_pcrs_alone_is_a_policy() {
        let p = Policy::new().or_pcrs([(0, pcr(1))]);
        assert!(p.validate().is_ok());
    }

    #[test]
    fn no_pcr_policy_accepts_any_and_conflicts_with_expected_values() {
        let opts = Policy::new()
            .no_pcr_policy()
            .verify_options(None, SystemTime::now())
            .unwrap();
        assert_eq!(opts.pcr_policy, PcrPolicy::AcceptAny);
        assert_eq!(
            Policy::new()
                .no_pcr_policy()
                .expect_pcr(0, pcr(1))
                .validate(),
            Err(InvalidPolicy::Conflicting)
        );
    }

    #[test]
    fn rejects_pcr_values_that_are_not_sha384_sized_or_out_of_range() {
        assert_eq!(
            Policy::new().expect_pcr(0, vec![1; 32]).validate(),
            Err(InvalidPolicy::PcrLength { index: 0, len: 32 })
        );
        assert_eq!(
            Policy::new().expect_pcr(32, pcr(1)).validate(),
            Err(InvalidPolicy::PcrIndex { index: 32, max: 32 })
        );
        assert_eq!(
            Policy::new().expect_pcr(0, pcr(1)).or_pcrs([]).validate(),
            Err(InvalidPolicy::EmptyAlternative)
        );
        assert!(Policy::new().expect_pcr(31, pcr(1)).validate().is_ok());
    }

    #[test]
    fn max_age_debug_and_anchor_are_carried_into_the_options() {
        let anchor = TrustAnchor::from_pem(OTHER_ROOT_PEM).unwrap();
        let opts = Policy::new()
            .trust_anchor(anchor.clone())
            .no_pcr_policy()
            .max_age(Duration::from_secs(7))
            .allow_debug(true)
            .verify_options(None, SystemTime::now())
            .unwrap();
        assert_eq!(opts.max_age, Some(Duration::from_secs(7)));
        assert!(opts.allow_debug);
        assert_eq!(opts.trust_anchor, anchor);
        assert_ne!(anchor, TrustAnchor::aws_nitro_root_g1());
        let opts = Policy::new()
            .no_pcr_policy()
            .no_max_age()
            .verify_options(None, SystemTime::now())
            .unwrap();
        assert_eq!(opts.max_age, None);
    }

    #[test]
    fn trust_root_pem_rejects_text_that_is_not_a_certificate() {
        assert!(matches!(
            Policy::new().trust_root_pem("not a pem"),
            Err(InvalidPolicy::TrustRoot(_))
        ));
        assert!(Policy::new().trust_root_pem(OTHER_ROOT_PEM).is_ok());
    }
}

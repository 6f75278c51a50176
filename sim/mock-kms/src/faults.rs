//! Fault injection: makes the mock KMS slow, failing or rude on purpose, so that tests can check
//! how its clients (the enclave's KMS client above all) behave when KMS misbehaves.
//!
//! A plan is an ordered list of [`FaultRule`]s. For each request the first rule whose operation
//! matches applies; a rule with a count applies to that many matching requests and is then
//! removed, a rule without one stays until [`FaultControl::clear`]. Rules are given at start
//! ([`crate::Config::faults`]) and changed at run time through [`FaultControl`]
//! ([`crate::MockKmsHandle::faults`]).
//!
//! The faults are the ones AWS documents for KMS and its front end (KMS API Reference "Common
//! Errors"): `KMSInternalException` (HTTP 500), `ServiceUnavailable` (HTTP 503),
//! `ThrottlingException` (HTTP 400), plus a connection closed without an answer and a delay
//! before the normal answer. A faulted request has no effect on the key store.
//!
//! Text form ([`FaultRule::from_str`]), one rule, or several separated by commas:
//! `KIND[*COUNT][@OPERATION]` with KIND one of `internal`, `unavailable`, `throttle`, `drop`,
//! `delay:MS`; e.g. `drop*2@Decrypt,throttle*1` or `unavailable` (every request, until cleared).

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Longest delay a rule may ask for: a delay is for timeouts, not for hanging a test forever.
pub const MAX_DELAY: Duration = Duration::from_secs(600);
/// Most rules in a plan.
pub const MAX_RULES: usize = 64;

/// What a faulted request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Waits this long, then answers normally.
    Delay(Duration),
    /// HTTP 500 `KMSInternalException`.
    Internal,
    /// HTTP 503 `ServiceUnavailable` (the AWS front end's answer when a service is overloaded).
    Unavailable,
    /// HTTP 400 `ThrottlingException` ("Rate exceeded").
    Throttling,
    /// The request is read, then the connection is closed without an answer.
    Drop,
}

impl Fault {
    /// The error reply `(status, __type, message)` for the faults that answer with one.
    pub(crate) fn error_reply(self) -> Option<(u16, &'static str, &'static str)> {
        match self {
            Fault::Internal => Some((
                500,
                "KMSInternalException",
                "The request was rejected because an internal exception occurred.",
            )),
            Fault::Unavailable => Some((503, "ServiceUnavailable", "Service Unavailable")),
            Fault::Throttling => Some((400, "ThrottlingException", "Rate exceeded")),
            Fault::Delay(_) | Fault::Drop => None,
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Delay(d) => write!(f, "delay:{}", d.as_millis()),
            Fault::Internal => f.write_str("internal"),
            Fault::Unavailable => f.write_str("unavailable"),
            Fault::Throttling => f.write_str("throttle"),
            Fault::Drop => f.write_str("drop"),
        }
    }
}

/// One rule of a fault plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    pub fault: Fault,
    /// Matching requests still to fault; `None`: every one until the plan is cleared.
    pub count: Option<u64>,
    /// Only requests for this operation (`Decrypt`, `GenerateDataKey`…); `None`: any request.
    pub operation: Option<String>,
}

impl FaultRule {
    /// `fault` for every request until cleared.
    pub fn always(fault: Fault) -> FaultRule {
        FaultRule {
            fault,
            count: None,
            operation: None,
        }
    }

    /// `fault` for the next `count` requests.
    pub fn times(fault: Fault, count: u64) -> FaultRule {
        FaultRule {
            fault,
            count: Some(count),
            operation: None,
        }
    }

    /// Restricts the rule to one operation (the `X-Amz-Target` after `TrentService.`).
    pub fn for_operation(mut self, operation: &str) -> FaultRule {
        self.operation = Some(operation.to_owned());
        self
    }

    fn matches(&self, operation: &str) -> bool {
        self.operation.as_deref().is_none_or(|o| o == operation)
    }
}

/// Why a fault spec was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid fault spec `{spec}`: {reason} (expected KIND[*COUNT][@OPERATION], KIND one of internal, unavailable, throttle, drop, delay:MS)"
)]
pub struct FaultSpecError {
    spec: String,
    reason: &'static str,
}

impl FromStr for FaultRule {
    type Err = FaultSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| FaultSpecError {
            spec: s.chars().take(100).collect(),
            reason,
        };
        let s = s.trim();
        let (rest, operation) = match s.split_once('@') {
            Some((rest, op)) => {
                if op.is_empty() || op.len() > 64 || !op.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Err(bad("the operation must be a KMS operation name"));
                }
                (rest, Some(op.to_owned()))
            }
            None => (s, None),
        };
        let (kind, count) = match rest.split_once('*') {
            Some((kind, n)) => {
                let n: u64 = n.parse().map_err(|_| bad("COUNT must be a number"))?;
                if n == 0 {
                    return Err(bad("COUNT must be at least 1"));
                }
                (kind, Some(n))
            }
            None => (rest, None),
        };
        let fault = match kind {
            "internal" => Fault::Internal,
            "unavailable" => Fault::Unavailable,
            "throttle" => Fault::Throttling,
            "drop" => Fault::Drop,
            _ => match kind.strip_prefix("delay:") {
                Some(ms) => {
                    let ms: u64 = ms.parse().map_err(|_| bad("delay:MS needs a number"))?;
                    let d = Duration::from_millis(ms);
                    if d > MAX_DELAY {
                        return Err(bad("the delay is over 600 s"));
                    }
                    Fault::Delay(d)
                }
                None => return Err(bad("unknown fault kind")),
            },
        };
        Ok(FaultRule {
            fault,
            count,
            operation,
        })
    }
}

impl std::fmt::Display for FaultRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.fault)?;
        if let Some(n) = self.count {
            write!(f, "*{n}")?;
        }
        if let Some(op) = &self.operation {
            write!(f, "@{op}")?;
        }
        Ok(())
    }
}

/// Parses a comma-separated list of rules (an empty string is the empty plan).
pub fn parse_plan(spec: &str) -> Result<Vec<FaultRule>, FaultSpecError> {
    let rules = spec
        .split(',')
        .filter(|r| !r.trim().is_empty())
        .map(FaultRule::from_str)
        .collect::<Result<Vec<_>, _>>()?;
    if rules.len() > MAX_RULES {
        return Err(FaultSpecError {
            spec: spec.chars().take(100).collect(),
            reason: "more than 64 rules",
        });
    }
    Ok(rules)
}

/// Requests seen and faulted since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Every request that reached the handler (faulted or not).
    pub requests: u64,
    /// Requests that got a fault (delays included).
    pub faulted: u64,
}

#[derive(Default)]
struct Plan {
    rules: VecDeque<FaultRule>,
    stats: FaultStats,
}

/// The live fault plan of a running server. Cheap to clone; clones share the plan.
#[derive(Clone, Default)]
pub struct FaultControl(Arc<Mutex<Plan>>);

impl FaultControl {
    pub(crate) fn new(rules: Vec<FaultRule>) -> FaultControl {
        FaultControl(Arc::new(Mutex::new(Plan {
            rules: rules.into(),
            stats: FaultStats::default(),
        })))
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        // Every critical section is a few queue operations that cannot panic halfway.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the plan.
    pub fn set(&self, rules: Vec<FaultRule>) {
        let mut plan = self.plan();
        plan.rules = rules.into();
        tracing::info!(rules = plan.rules.len(), "fault plan replaced");
    }

    /// Replaces the plan with one in text form (see the module docs).
    pub fn set_spec(&self, spec: &str) -> Result<(), FaultSpecError> {
        self.set(parse_plan(spec)?);
        Ok(())
    }

    /// Appends one rule to the plan.
    pub fn push(&self, rule: FaultRule) {
        self.plan().rules.push_back(rule);
    }

    /// Removes every rule: requests are served normally again.
    pub fn clear(&self) {
        self.plan().rules.clear();
        tracing::info!("fault plan cleared");
    }

    /// The rules still pending, in text form (empty when none).
    pub fn spec(&self) -> String {
        let plan = self.plan();
        plan.rules
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn stats(&self) -> FaultStats {
        self.plan().stats
    }

    /// Counts a request for `operation` and returns the fault it gets, if any.
    pub(crate) fn next(&self, operation: &str) -> Option<Fault> {
        let mut plan = self.plan();
        plan.stats.requests = plan.stats.requests.saturating_add(1);
        let index = plan.rules.iter().position(|r| r.matches(operation))?;
        let rule = plan.rules.get_mut(index)?;
        let fault = rule.fault;
        if let Some(n) = rule.count.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                plan.rules.remove(index);
            }
        }
        plan.stats.faulted = plan.stats.faulted.saturating_add(1);
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for spec in [
            "internal",
            "unavailable*3",
            "throttle@Decrypt",
            "drop*2@Decrypt",
            "delay:250*1@GenerateDataKey",
        ] {
            let rule: FaultRule = spec.parse().unwrap();
            assert_eq!(rule.to_string(), spec);
        }
        let plan = parse_plan(" drop*1 , internal*2@Decrypt ,").unwrap();
        assert_eq!(plan.len(), 2);
        assert_eq!(
            plan[1],
            FaultRule::times(Fault::Internal, 2).for_operation("Decrypt")
        );
        assert!(parse_plan("").unwrap().is_empty());
        for bad in [
            "boom",
            "drop*0",
            "drop*x",
            "delay:",
            "delay:600001",
            "drop@",
            "drop@Dec rypt",
            "internal*-1",
        ] {
            assert!(bad.parse::<FaultRule>().is_err(), "{bad}");
        }
        let too_many = vec!["drop"; MAX_RULES + 1].join(",");
        assert!(parse_plan(&too_many).is_err());
    }

    #[test]
    fn rules_apply_in_order_count_down_and_match_operations() {
        let control = FaultControl::new(parse_plan("drop*2@Decrypt,throttle*1").unwrap());
        assert_eq!(control.next("CreateKey"), Some(Fault::Throttling));
        assert_eq!(control.next("CreateKey"), None);
        assert_eq!(control.next("Decrypt"), Some(Fault::Drop));
        assert_eq!(control.spec(), "drop*1@Decrypt");
        assert_eq!(control.next("Decrypt"), Some(Fault::Drop));
        assert_eq!(control.next("Decrypt"), None);
        assert_eq!(
            control.stats(),
            FaultStats {
                requests: 5,
                faulted: 3
            }
        );

        control.push(FaultRule::always(Fault::Unavailable));
        for _ in 0..10 {
            assert_eq!(control.next("Decrypt"), Some(Fault::Unavailable));
        }
        control.clear();
        assert_eq!(control.next("Decrypt"), None);
        assert_eq!(control.spec(), "");
    }
}

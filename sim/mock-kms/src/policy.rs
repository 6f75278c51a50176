//! Key policies: the subset of the IAM policy language KMS key policies use for Nitro key release
//! (IAM User Guide "Policy evaluation logic", "IAM JSON policy elements"; KMS Developer Guide
//! "Condition keys for AWS Nitro Enclaves").
//!
//! Supported: `Version`, `Statement` (object or list) with `Sid`, `Effect` (`Allow`/`Deny`),
//! `Principal` (`"*"`, `{"AWS": arn | [arn] | account id}`), `Action` (`kms:Decrypt`, wildcards
//! such as `kms:*` / `kms:Generate*`), `Resource` (`"*"` or the key ARN, wildcards allowed) and
//! `Condition` with `StringEquals`, `StringNotEquals`, `StringEqualsIgnoreCase`,
//! `StringNotEqualsIgnoreCase`, `StringLike`, `StringNotLike`, each optionally `…IfExists`.
//! Anything else (`NotAction`, `NotPrincipal`, other operators) makes the document malformed, so
//! a policy never means less than it says.
//!
//! Evaluation: an explicit `Deny` wins, then any `Allow`, else implicit deny. A condition key
//! missing from the request context fails a positive operator and satisfies a negated one, as
//! in IAM; so a request without an attestation document fails every
//! `kms:RecipientAttestation:*` `StringEquals*` condition.

use std::collections::BTreeMap;

use serde_json::Value;

/// Most bytes a policy document may have (AWS: 32 KiB).
pub const MAX_POLICY_LEN: usize = 32 * 1024;

/// A parsed, validated key policy.
#[derive(Debug, Clone)]
pub struct Policy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone)]
struct Statement {
    allow: bool,
    principals: Vec<String>,
    actions: Vec<String>,
    resources: Vec<String>,
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone)]
struct Condition {
    op: Op,
    if_exists: bool,
    key: String,
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equals { negated: bool, ignore_case: bool },
    Like { negated: bool },
}

/// The request context a policy is evaluated against.
#[derive(Debug, Clone)]
pub struct RequestContext<'a> {
    pub principal_arn: &'a str,
    pub account_id: &'a str,
    /// `kms:Decrypt` etc.
    pub action: &'a str,
    pub resource_arn: &'a str,
    /// Condition keys with their values (keys compared case-insensitively, as IAM does).
    pub keys: BTreeMap<String, String>,
}

/// Why a policy document was refused (`MalformedPolicyDocumentException`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed policy document: {0}")]
pub struct PolicyError(pub String);

fn bad(msg: impl Into<String>) -> PolicyError {
    PolicyError(msg.into())
}

impl Policy {
    /// Parses and validates a policy document.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        if text.len() > MAX_POLICY_LEN {
            return Err(bad("policy exceeds 32 KiB"));
        }
        let doc: Value = serde_json::from_str(text).map_err(|_| bad("not JSON"))?;
        let obj = doc.as_object().ok_or_else(|| bad("not a JSON object"))?;
        for key in obj.keys() {
            if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
                return Err(bad(format!("unsupported element {key}")));
            }
        }
        let statements = match obj.get("Statement") {
            Some(Value::Array(list)) => list.iter().map(parse_statement).collect(),
            Some(single @ Value::Object(_)) => parse_statement(single).map(|s| vec![s]),
            _ => Err(bad("Statement missing")),
        }?;
        if statements.is_empty() {
            return Err(bad("Statement is empty"));
        }
        Ok(Policy { statements })
    }

    /// The default key policy AWS attaches when `CreateKey` has none: the account may do
    /// everything (KMS Developer Guide "Default key policy").
    pub fn default_text(account_id: &str) -> String {
        serde_json::json!({
            "Version": "2012-10-17",
            "Id": "key-default-1",
            "Statement": [{
                "Sid": "Enable IAM User Permissions",
                "Effect": "Allow",
                "Principal": {"AWS": format!("arn:aws:iam::{account_id}:root")},
                "Action": "kms:*",
                "Resource": "*"
            }]
        })
        .to_string()
    }

    /// True when the policy allows the request (no matching Deny, at least one matching Allow).
    pub fn allows(&self, ctx: &RequestContext<'_>) -> bool {
        let mut allowed = false;
        for st in &self.statements {
            if st.applies(ctx) {
                if !st.allow {
                    return false;
                }
                allowed = true;
            }
        }
        allowed
    }
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(list) if !list.is_empty() => list
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(format!("{what} must be strings")))
            })
            .collect(),
        // Condition values may be booleans or numbers in JSON; IAM compares their text.
        Value::Bool(b) => Ok(vec![b.to_string()]),
        Value::Number(n) => Ok(vec![n.to_string()]),
        _ => Err(bad(format!("{what} must be a string or a list of strings"))),
    }
}

fn parse_statement(v: &Value) -> Result<Statement, PolicyError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("statement is not an object"))?;
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "Sid" | "Effect" | "Principal" | "Action" | "Resource" | "Condition"
        ) {
            return Err(bad(format!("unsupported statement element {key}")));
        }
    }
    let allow = match obj.get("Effect").and_then(Value::as_str) {
        Some("Allow") => true,
        Some("Deny") => false,
        _ => return Err(bad("Effect must be Allow or Deny")),
    };
    let principals = match obj.get("Principal") {
        Some(Value::String(s)) if s == "*" => vec!["*".to_owned()],
        Some(Value::Object(p)) => {
            let mut out = Vec::new();
            for (kind, value) in p {
                if kind != "AWS" {
                    return Err(bad(format!("unsupported principal type {kind}")));
                }
                out.extend(strings(value, "Principal")?);
            }
            out
        }
        _ => return Err(bad("Principal must be \"*\" or {\"AWS\": ...}")),
    };
    let actions = strings(
        obj.get("Action").ok_or_else(|| bad("Action missing"))?,
        "Action",
    )?;
    let resources = strings(
        obj.get("Resource").ok_or_else(|| bad("Resource missing"))?,
        "Resource",
    )?;
    let mut conditions = Vec::new();
    if let Some(cond) = obj.get("Condition") {
        let cond = cond
            .as_object()
            .ok_or_else(|| bad("Condition is not an object"))?;
        for (op_name, block) in cond {
            let (base, if_exists) = match op_name.strip_suffix("IfExists") {
                Some(b) => (b, true),
                None => (op_name.as_str(), false),
            };
            let op = match base {
                "StringEquals" => Op::Equals {
                    negated: false,
                    ignore_case: false,
                },
                "StringNotEquals" => Op::Equals {
                    negated: true,
                    ignore_case: false,
                },
                "StringEqualsIgnoreCase" => Op::Equals {
                    negated: false,
                    ignore_case: true,
                },
                "StringNotEqualsIgnoreCase" => Op::Equals {
                    negated: true,
                    ignore_case: true,
                },
                "StringLike" => Op::Like { negated: false },
                "StringNotLike" => Op::Like { negated: true },
                other => return Err(bad(format!("unsupported condition operator {other}"))),
            };
            let block = block
                .as_object()
                .ok_or_else(|| bad("condition block is not an object"))?;
            for (key, values) in block {
                conditions.push(Condition {
                    op,
                    if_exists,
                    key: key.to_ascii_lowercase(),
                    values: strings(values, "condition values")?,
                });
            }
        }
    }
    Ok(Statement {
        allow,
        principals,
        actions,
        resources,
        conditions,
    })
}

impl Statement {
    fn applies(&self, ctx: &RequestContext<'_>) -> bool {
        let account_root = format!("arn:aws:iam::{}:root", ctx.account_id);
        let in_account = ctx
            .principal_arn
            .starts_with(&format!("arn:aws:iam::{}:", ctx.account_id))
            || ctx
                .principal_arn
                .starts_with(&format!("arn:aws:sts::{}:", ctx.account_id));
        // The account (root ARN or bare id) stands for every principal in it. On AWS this
        // delegates to IAM policies; the mock has none, so it means "anyone in the account".
        // An assumed-role session matches its role's ARN, as on AWS.
        let role_arn = ctx
            .principal_arn
            .strip_prefix("arn:aws:sts::")
            .and_then(|rest| rest.split_once(":assumed-role/"))
            .and_then(|(acct, rest)| {
                let role = rest.split('/').next()?;
                Some(format!("arn:aws:iam::{acct}:role/{role}"))
            });
        let principal_ok = self.principals.iter().any(|p| {
            p == "*"
                || p == ctx.principal_arn
                || role_arn.as_deref() == Some(p.as_str())
                || ((p == &account_root || p == ctx.account_id) && in_account)
        });
        // Actions are case-insensitive in IAM.
        let action_ok = self
            .actions
            .iter()
            .any(|a| wildcard_match(&a.to_ascii_lowercase(), &ctx.action.to_ascii_lowercase()));
        let resource_ok = self
            .resources
            .iter()
            .any(|r| wildcard_match(r, ctx.resource_arn));
        principal_ok && action_ok && resource_ok && self.conditions.iter().all(|c| c.holds(ctx))
    }
}

impl Condition {
    fn holds(&self, ctx: &RequestContext<'_>) -> bool {
        let Some(actual) = ctx
            .keys
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&self.key))
            .map(|(_, v)| v.as_str())
        else {
            // Missing key: `…IfExists` and negated operators are satisfied, others fail.
            return self.if_exists
                || matches!(
                    self.op,
                    Op::Equals { negated: true, .. } | Op::Like { negated: true }
                );
        };
        match self.op {
            Op::Equals {
                negated,
                ignore_case,
            } => {
                let any = self.values.iter().any(|v| {
                    if ignore_case {
                        v.eq_ignore_ascii_case(actual)
                    } else {
                        v == actual
                    }
                });
                any != negated
            }
            Op::Like { negated } => {
                self.values.iter().any(|v| wildcard_match(v, actual)) != negated
            }
        }
    }
}

/// IAM wildcard match: `*` any run of characters, `?` one character.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative glob with one backtrack point (linear-ish, no recursion on input).
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None, 0usize);
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some(pi);
                mark = ti;
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some(s) => {
                    pi = s + 1;
                    mark += 1;
                    ti = mark;
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/k";
    const PCR0: &str = "AB12";

    fn ctx(action: &str, pcr0: Option<&str>) -> RequestContext<'static> {
        let mut keys = BTreeMap::new();
        if let Some(p) = pcr0 {
            keys.insert("kms:RecipientAttestation:PCR0".to_owned(), p.to_owned());
            keys.insert(
                "kms:RecipientAttestation:ImageSha384".to_owned(),
                p.to_owned(),
            );
        }
        RequestContext {
            principal_arn: "arn:aws:iam::111122223333:role/host",
            account_id: "111122223333",
            action: Box::leak(action.to_owned().into_boxed_str()),
            resource_arn: KEY,
            keys,
        }
    }

    fn enclave_policy(op: &str) -> Policy {
        Policy::parse(
            &serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
                     "Action": ["kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"], "Resource": "*"},
                    {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:role/host"},
                     "Action": "kms:Decrypt", "Resource": "*",
                     "Condition": {op: {"kms:RecipientAttestation:PCR0": PCR0.to_ascii_lowercase()}}}
                ]
            })
            .to_string(),
        )
        .unwrap()
    }

    #[test]
    fn attestation_condition_matches_case_insensitively_only_with_ignore_case() {
        let p = enclave_policy("StringEqualsIgnoreCase");
        assert!(p.allows(&ctx("kms:Decrypt", Some(PCR0))));
        assert!(!p.allows(&ctx("kms:Decrypt", Some("CD34"))));
        let strict = enclave_policy("StringEquals");
        assert!(!strict.allows(&ctx("kms:Decrypt", Some(PCR0))));
        assert!(strict.allows(&ctx("kms:Decrypt", Some("ab12"))));
    }

    #[test]
    fn missing_attestation_fails_the_condition() {
        let p = enclave_policy("StringEqualsIgnoreCase");
        assert!(!p.allows(&ctx("kms:Decrypt", None)));
        assert!(p.allows(&ctx("kms:GenerateDataKey", None)));
        assert!(!p.allows(&ctx("kms:PutKeyPolicy", None)));
    }

    #[test]
    fn explicit_deny_wins() {
        let p = Policy::parse(
            r#"{"Statement":[
                {"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"},
                {"Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*",
                 "Condition":{"StringNotEqualsIgnoreCase":{"kms:RecipientAttestation:ImageSha384":"ab12"}}}
            ]}"#,
        )
        .unwrap();
        assert!(p.allows(&ctx("kms:Decrypt", Some("AB12"))));
        assert!(!p.allows(&ctx("kms:Decrypt", Some("ffff"))));
        // No attestation: the negated condition holds, so the Deny applies.
        assert!(!p.allows(&ctx("kms:Decrypt", None)));
        assert!(p.allows(&ctx("kms:Encrypt", None)));
    }

    #[test]
    fn other_principals_and_accounts_are_not_allowed() {
        let p = enclave_policy("StringEqualsIgnoreCase");
        let mut c = ctx("kms:Encrypt", None);
        c.principal_arn = "arn:aws:iam::999999999999:role/host";
        assert!(!p.allows(&c));
        let mut c = ctx("kms:Decrypt", Some(PCR0));
        c.principal_arn = "arn:aws:iam::111122223333:role/other";
        assert!(!p.allows(&c));
    }

    #[test]
    fn rejects_unsupported_or_malformed_documents() {
        for doc in [
            "",
            "[]",
            r#"{"Statement":[]}"#,
            r#"{"Statement":[{"Effect":"Allow","NotAction":"kms:Decrypt","Principal":"*","Resource":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Maybe","Action":"kms:*","Principal":"*","Resource":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Principal":"*","Resource":"*","Condition":{"NumericLessThan":{"a":"1"}}}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Principal":{"Service":"x"},"Resource":"*"}]}"#,
        ] {
            assert!(Policy::parse(doc).is_err(), "{doc}");
        }
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("kms:*", "kms:decrypt"));
        assert!(wildcard_match("kms:generate*", "kms:generatedatakey"));
        assert!(!wildcard_match("kms:generate*", "kms:decrypt"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("arn:*:key/*", KEY));
    }
}

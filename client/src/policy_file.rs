//! The client policy file and the release measurements it is made from.
//!
//! A release publishes `measurements.json`, exactly what `nitro-cli build-enclave` (and
//! `describe-eif`) print; [`Measurements::from_nitro_cli_json`] reads it. Clients pin releases in a
//! policy file (JSON, so that clients in other languages read it without a TOML parser):
//!
//! ```json
//! {
//!   "version": 1,
//!   "accept": [
//!     { "name": "v0.3.0", "pcrs": { "0": "<96 hex>", "1": "<96 hex>", "2": "<96 hex>" } },
//!     { "name": "v0.4.0", "pcrs": { "0": "<96 hex>", "1": "<96 hex>", "2": "<96 hex>" } }
//!   ],
//!   "models": { "digits": "<96 hex sha384>" },
//!   "max_age_secs": 300
//! }
//! ```
//!
//! A document is accepted if ALL PCRs of ANY one set equal its own; [`crate::Policy::accepted_as`]
//! names the set (the first match, in file order). Two sets are how clients roll from one release
//! to the next without a gap (`docs/measurements.md`).
//!
//! What the file cannot say, on purpose: the trust anchor (always the AWS Nitro Root-G1 unless the
//! caller names another root in code or with `--trust-root`), and debug mode (a policy file never
//! accepts a debug-mode enclave). Unknown keys, duplicate keys, duplicate names and malformed
//! values are errors rather than ignored, so that a typo cannot silently weaken the policy.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use sealed_attestation::document::MAX_PCRS;
use sealed_wire::message::valid_model_id;

use crate::policy::{PCR_LEN, Policy};

/// The only policy file format version this build reads and writes.
pub const POLICY_FILE_VERSION: u64 = 1;
/// Largest policy or measurements file read (a policy of 64 sets is about 20 KiB).
pub const MAX_FILE_LEN: u64 = 1024 * 1024;
/// Most accepted sets in one policy file (a rolling upgrade needs two).
pub const MAX_SETS: usize = 64;
/// Most pinned models in one policy file.
pub const MAX_MODELS: usize = 256;
/// Longest set name.
pub const MAX_NAME_LEN: usize = 64;
/// Largest `max_age_secs`: a day (the document's leaf certificate is valid for hours anyway).
pub const MAX_MAX_AGE_SECS: u64 = 24 * 60 * 60;

/// Why a policy file (or measurements file) cannot be read, parsed or changed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("file is larger than {MAX_FILE_LEN} bytes")]
    TooLarge,
    #[error("not a valid policy file: {0}")]
    Json(String),
    #[error(
        "unsupported policy file version {found} (this build reads version {POLICY_FILE_VERSION})"
    )]
    Version { found: String },
    #[error("\"accept\" lists no PCR set; a policy must accept at least one")]
    NoSets,
    #[error("\"accept\" lists {count} sets; at most {MAX_SETS} are allowed")]
    TooManySets { count: usize },
    #[error(
        "set name {name:?} is invalid: expected 1-{MAX_NAME_LEN} characters from A-Z a-z 0-9 . _ -"
    )]
    InvalidName { name: String },
    #[error("set name {name:?} appears twice")]
    DuplicateName { name: String },
    #[error("set {set:?} lists no PCRs")]
    EmptySet { set: String },
    #[error("set {set:?}: PCR index {key:?} is invalid: expected a decimal number 0..{MAX_PCRS}")]
    PcrIndex { set: String, key: String },
    #[error("set {set:?}: PCR{index}: expected {} hex digits (SHA-384), {reason}", PCR_LEN * 2)]
    PcrValue {
        set: String,
        index: u16,
        reason: String,
    },
    #[error("model id {model_id:?} is invalid: expected 1-128 characters from A-Z a-z 0-9 . _ -")]
    ModelId { model_id: String },
    #[error("model {model_id:?}: expected {} hex digits (SHA-384 of the ONNX bytes), {reason}", PCR_LEN * 2)]
    ModelDigest { model_id: String, reason: String },
    #[error("\"models\" lists more than {MAX_MODELS} models")]
    TooManyModels,
    #[error("max_age_secs must be 1..={MAX_MAX_AGE_SECS}, got {value}")]
    MaxAge { value: u64 },
    #[error("a set named {name:?} is already in the policy")]
    NameExists { name: String },
    #[error("no set named {name:?} in the policy")]
    NameNotFound { name: String },
    #[error("removing {name:?} would leave the policy accepting nothing; delete the file instead")]
    LastSet { name: String },
    #[error("measurements: {0}")]
    Measurements(#[from] MeasurementsError),
}

impl PolicyFileError {
    /// A stable name of the error kind, for scripts and JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyFileError::Io { .. } => "io",
            PolicyFileError::TooLarge => "too_large",
            PolicyFileError::Json(_) => "syntax",
            PolicyFileError::Version { .. } => "version",
            PolicyFileError::NoSets
            | PolicyFileError::TooManySets { .. }
            | PolicyFileError::InvalidName { .. }
            | PolicyFileError::DuplicateName { .. }
            | PolicyFileError::EmptySet { .. }
            | PolicyFileError::PcrIndex { .. }
            | PolicyFileError::PcrValue { .. }
            | PolicyFileError::ModelId { .. }
            | PolicyFileError::ModelDigest { .. }
            | PolicyFileError::TooManyModels
            | PolicyFileError::MaxAge { .. } => "invalid",
            PolicyFileError::NameExists { .. } => "name_exists",
            PolicyFileError::NameNotFound { .. } => "name_not_found",
            PolicyFileError::LastSet { .. } => "last_set",
            PolicyFileError::Measurements(_) => "measurements",
        }
    }
}

/// Why a `measurements.json` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeasurementsError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error(
        "expected the output of `nitro-cli build-enclave` / `describe-eif`: an object with \
         \"Measurements\" (or that object itself)"
    )]
    NoMeasurements,
    #[error("HashAlgorithm is {0:?}; only Sha384 measurements are supported")]
    HashAlgorithm(String),
    #[error("{key}: expected {} hex digits (SHA-384)", PCR_LEN * 2)]
    PcrValue { key: String },
    #[error("{key}: not a PCR index 0..{MAX_PCRS}")]
    PcrIndex { key: String },
    #[error("PCR{0} is missing from the measurements")]
    MissingPcr(u16),
}

/// An enclave image's measurements: the PCRs `nitro-cli build-enclave` prints (0, 1, 2, and 8 for
/// a signed image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurements {
    /// PCR index → 48-byte SHA-384 value.
    pub pcrs: BTreeMap<u16, Vec<u8>>,
}

impl Measurements {
    /// Reads nitro-cli's JSON: `{"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": hex,
    /// "PCR1": hex, "PCR2": hex}}`. Other keys (describe-eif adds several) are ignored; the bare
    /// inner object (`jq .Measurements`) is accepted too; hex may be upper or lower case. PCR0,
    /// PCR1 and PCR2 are required: every EIF has them.
    pub fn from_nitro_cli_json(text: &str) -> Result<Measurements, MeasurementsError> {
        if text.len() as u64 > MAX_FILE_LEN {
            return Err(MeasurementsError::Json("larger than 1 MiB".into()));
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| MeasurementsError::Json(e.to_string()))?;
        let outer = value.as_object().ok_or(MeasurementsError::NoMeasurements)?;
        let inner = match outer.get("Measurements") {
            Some(Value::Object(inner)) => inner,
            Some(_) => return Err(MeasurementsError::NoMeasurements),
            None if outer.contains_key("PCR0") => outer,
            None => return Err(MeasurementsError::NoMeasurements),
        };
        if let Some(algorithm) = inner.get("HashAlgorithm") {
            // nitro-cli prints the Rust Debug of its enum with the fields elided: "Sha384 { ... }".
            let ok = algorithm
                .as_str()
                .is_some_and(|a| a.split_whitespace().next() == Some("Sha384"));
            if !ok {
                return Err(MeasurementsError::HashAlgorithm(
                    algorithm
                        .as_str()
                        .unwrap_or("(not a string)")
                        .chars()
                        .take(64)
                        .collect(),
                ));
            }
        }
        let mut pcrs = BTreeMap::new();
        for (key, value) in inner {
            let Some(digits) = key.strip_prefix("PCR") else {
                continue;
            };
            let index = parse_pcr_index(digits)
                .ok_or_else(|| MeasurementsError::PcrIndex { key: key.clone() })?;
            let bytes = value
                .as_str()
                .and_then(|v| decode_sha384(v).ok())
                .ok_or_else(|| MeasurementsError::PcrValue { key: key.clone() })?;
            pcrs.insert(index, bytes);
        }
        for required in [0, 1, 2] {
            if !pcrs.contains_key(&required) {
                return Err(MeasurementsError::MissingPcr(required));
            }
        }
        Ok(Measurements { pcrs })
    }

    /// Reads a measurements file (at most [`MAX_FILE_LEN`] bytes).
    pub fn load(path: &Path) -> Result<Measurements, PolicyFileError> {
        let text = read_bounded(path)?;
        Ok(Measurements::from_nitro_cli_json(&text)?)
    }

    /// The PCRs `indices` as one set. Fails on an index the measurements lack.
    pub fn select(&self, indices: &[u16]) -> Result<BTreeMap<u16, Vec<u8>>, MeasurementsError> {
        indices
            .iter()
            .map(|&i| {
                self.pcrs
                    .get(&i)
                    .map(|v| (i, v.clone()))
                    .ok_or(MeasurementsError::MissingPcr(i))
            })
            .collect()
    }
}

/// One accepted set of measurements, named (a release, e.g. `v0.4.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSet {
    pub name: String,
    /// PCR index → 48-byte value; never empty.
    pub pcrs: BTreeMap<u16, Vec<u8>>,
}

/// A validated client policy file (see the module docs). Build one with [`PolicyFile::new`] or
/// read one with [`PolicyFile::load`] / [`PolicyFile::from_json`]; turn it into a [`Policy`] with
/// [`PolicyFile::to_policy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    accept: Vec<PcrSet>,
    /// Model id → SHA-384 of its ONNX bytes.
    models: BTreeMap<String, Vec<u8>>,
    max_age_secs: Option<u64>,
}

impl PolicyFile {
    /// A policy accepting one set.
    pub fn new(
        name: impl Into<String>,
        pcrs: BTreeMap<u16, Vec<u8>>,
    ) -> Result<PolicyFile, PolicyFileError> {
        let set = PcrSet {
            name: name.into(),
            pcrs,
        };
        check_set(&set)?;
        Ok(PolicyFile {
            accept: vec![set],
            models: BTreeMap::new(),
            max_age_secs: None,
        })
    }

    /// Reads and validates a policy file (at most [`MAX_FILE_LEN`] bytes).
    pub fn load(path: &Path) -> Result<PolicyFile, PolicyFileError> {
        PolicyFile::from_json(&read_bounded(path)?)
    }

    /// Parses and validates a policy file's text.
    pub fn from_json(text: &str) -> Result<PolicyFile, PolicyFileError> {
        if text.len() as u64 > MAX_FILE_LEN {
            return Err(PolicyFileError::TooLarge);
        }
        // The version first, so that a newer file is reported as such rather than as a list of
        // unknown keys.
        let probe: VersionProbe =
            serde_json::from_str(text).map_err(|e| PolicyFileError::Json(e.to_string()))?;
        match probe.version {
            Some(Value::Number(n)) if n.as_u64() == Some(POLICY_FILE_VERSION) => {}
            Some(other) => {
                return Err(PolicyFileError::Version {
                    found: other.to_string().chars().take(32).collect(),
                });
            }
            None => return Err(PolicyFileError::Json("missing field `version`".into())),
        }
        let raw: RawFile =
            serde_json::from_str(text).map_err(|e| PolicyFileError::Json(e.to_string()))?;
        PolicyFile::from_raw(raw)
    }

    fn from_raw(raw: RawFile) -> Result<PolicyFile, PolicyFileError> {
        if raw.accept.is_empty() {
            return Err(PolicyFileError::NoSets);
        }
        if raw.accept.len() > MAX_SETS {
            return Err(PolicyFileError::TooManySets {
                count: raw.accept.len(),
            });
        }
        let mut file = PolicyFile {
            accept: Vec::with_capacity(raw.accept.len()),
            models: BTreeMap::new(),
            max_age_secs: None,
        };
        for raw_set in raw.accept {
            let mut pcrs = BTreeMap::new();
            for (key, value) in raw_set.pcrs.0 {
                let index = parse_pcr_index(&key).ok_or_else(|| PolicyFileError::PcrIndex {
                    set: raw_set.name.clone(),
                    key: key.clone(),
                })?;
                let bytes = decode_sha384(&value).map_err(|reason| PolicyFileError::PcrValue {
                    set: raw_set.name.clone(),
                    index,
                    reason,
                })?;
                pcrs.insert(index, bytes);
            }
            file.push_set(PcrSet {
                name: raw_set.name,
                pcrs,
            })?;
        }
        if let Some(models) = raw.models {
            if models.0.len() > MAX_MODELS {
                return Err(PolicyFileError::TooManyModels);
            }
            for (model_id, digest) in models.0 {
                if !valid_model_id(&model_id) {
                    return Err(PolicyFileError::ModelId { model_id });
                }
                let bytes =
                    decode_sha384(&digest).map_err(|reason| PolicyFileError::ModelDigest {
                        model_id: model_id.clone(),
                        reason,
                    })?;
                file.models.insert(model_id, bytes);
            }
        }
        if let Some(secs) = raw.max_age_secs {
            file.set_max_age_secs(Some(secs))?;
        }
        Ok(file)
    }

    /// The file's text: pretty JSON, PCRs in index order, lower-case hex, a final newline.
    pub fn to_json(&self) -> String {
        let raw = RawFileOut {
            version: POLICY_FILE_VERSION,
            accept: self
                .accept
                .iter()
                .map(|set| RawSetOut {
                    name: &set.name,
                    pcrs: set
                        .pcrs
                        .iter()
                        .map(|(i, v)| (i.to_string(), Value::String(hex::encode(v))))
                        .collect(),
                })
                .collect(),
            models: (!self.models.is_empty()).then(|| {
                self.models
                    .iter()
                    .map(|(id, d)| (id.clone(), Value::String(hex::encode(d))))
                    .collect()
            }),
            max_age_secs: self.max_age_secs,
        };
        // Serialising these plain structs cannot fail; the fallback keeps this panic-free.
        let mut text = serde_json::to_string_pretty(&raw).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Writes the file atomically: a temporary file in the same directory, renamed into place, so
    /// that a client never reads half a policy.
    pub fn save(&self, path: &Path) -> Result<(), PolicyFileError> {
        let io = |source| PolicyFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        tmp.write_all(self.to_json().as_bytes()).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// The accepted sets, in file order.
    pub fn sets(&self) -> &[PcrSet] {
        &self.accept
    }

    /// The pinned models: id → SHA-384.
    pub fn models(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.models
    }

    /// `max_age_secs`, if the file sets one.
    pub fn max_age_secs(&self) -> Option<u64> {
        self.max_age_secs
    }

    /// Appends an accepted set (a new release). Fails on a taken name or an invalid set.
    pub fn add_set(
        &mut self,
        name: impl Into<String>,
        pcrs: BTreeMap<u16, Vec<u8>>,
    ) -> Result<(), PolicyFileError> {
        let set = PcrSet {
            name: name.into(),
            pcrs,
        };
        if self.accept.iter().any(|s| s.name == set.name) {
            return Err(PolicyFileError::NameExists { name: set.name });
        }
        self.push_set(set)
    }

    /// Removes the set `name` (a retired release). The last set cannot be removed: a policy
    /// accepting nothing is not a policy.
    pub fn remove_set(&mut self, name: &str) -> Result<PcrSet, PolicyFileError> {
        let position = self
            .accept
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| PolicyFileError::NameNotFound {
                name: name.to_string(),
            })?;
        if self.accept.len() == 1 {
            return Err(PolicyFileError::LastSet {
                name: name.to_string(),
            });
        }
        Ok(self.accept.remove(position))
    }

    /// Pins `model_id` to `sha384` (the attested manifest must list it with this digest).
    pub fn set_model(
        &mut self,
        model_id: impl Into<String>,
        sha384: Vec<u8>,
    ) -> Result<(), PolicyFileError> {
        let model_id = model_id.into();
        if !valid_model_id(&model_id) {
            return Err(PolicyFileError::ModelId { model_id });
        }
        if sha384.len() != PCR_LEN {
            return Err(PolicyFileError::ModelDigest {
                model_id,
                reason: format!("got {} bytes", sha384.len()),
            });
        }
        if !self.models.contains_key(&model_id) && self.models.len() >= MAX_MODELS {
            return Err(PolicyFileError::TooManyModels);
        }
        self.models.insert(model_id, sha384);
        Ok(())
    }

    /// Sets or clears `max_age_secs` (1..=[`MAX_MAX_AGE_SECS`]).
    pub fn set_max_age_secs(&mut self, secs: Option<u64>) -> Result<(), PolicyFileError> {
        if let Some(value) = secs
            && !(1..=MAX_MAX_AGE_SECS).contains(&value)
        {
            return Err(PolicyFileError::MaxAge { value });
        }
        self.max_age_secs = secs;
        Ok(())
    }

    /// The [`Policy`] this file describes: every set as a named alternative, the pinned models,
    /// `max_age_secs` (else the default), the AWS Nitro Root-G1 anchor, debug mode refused.
    /// Callers that trust another root say so on the result ([`Policy::trust_anchor`]).
    pub fn to_policy(&self) -> Policy {
        let mut policy = Policy::new().allow_debug(false);
        for set in &self.accept {
            policy = policy.or_named_pcrs(set.name.clone(), set.pcrs.clone());
        }
        for (model_id, digest) in &self.models {
            policy = policy.expect_model(model_id.clone(), digest.clone());
        }
        if let Some(secs) = self.max_age_secs {
            policy = policy.max_age(Duration::from_secs(secs));
        }
        policy
    }

    /// [`PolicyFile::to_policy`], consuming the file.
    pub fn into_policy(self) -> Policy {
        self.to_policy()
    }

    fn push_set(&mut self, set: PcrSet) -> Result<(), PolicyFileError> {
        check_set(&set)?;
        if self.accept.iter().any(|s| s.name == set.name) {
            return Err(PolicyFileError::DuplicateName { name: set.name });
        }
        if self.accept.len() >= MAX_SETS {
            return Err(PolicyFileError::TooManySets {
                count: self.accept.len().saturating_add(1),
            });
        }
        self.accept.push(set);
        Ok(())
    }
}

impl Policy {
    /// Reads a policy file ([`PolicyFile::load`]) and returns its [`Policy`].
    pub fn from_file(path: &Path) -> Result<Policy, PolicyFileError> {
        Ok(PolicyFile::load(path)?.into_policy())
    }
}

/// Set names: what a release tag usually looks like, nothing that needs escaping anywhere.
pub fn valid_set_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_set(set: &PcrSet) -> Result<(), PolicyFileError> {
    if !valid_set_name(&set.name) {
        return Err(PolicyFileError::InvalidName {
            name: set.name.chars().take(MAX_NAME_LEN + 1).collect(),
        });
    }
    if set.pcrs.is_empty() {
        return Err(PolicyFileError::EmptySet {
            set: set.name.clone(),
        });
    }
    for (&index, value) in &set.pcrs {
        if usize::from(index) >= MAX_PCRS {
            return Err(PolicyFileError::PcrIndex {
                set: set.name.clone(),
                key: index.to_string(),
            });
        }
        if value.len() != PCR_LEN {
            return Err(PolicyFileError::PcrValue {
                set: set.name.clone(),
                index,
                reason: format!("got {} bytes", value.len()),
            });
        }
    }
    Ok(())
}

/// `"0"`..`"31"`: plain decimal, no sign, no leading zero (so one PCR has one spelling).
fn parse_pcr_index(text: &str) -> Option<u16> {
    let canonical = !text.is_empty()
        && text.len() <= 2
        && text.bytes().all(|b| b.is_ascii_digit())
        && !(text.len() > 1 && text.starts_with('0'));
    let index: u16 = text.parse().ok().filter(|_| canonical)?;
    (usize::from(index) < MAX_PCRS).then_some(index)
}

/// Exactly 96 hex digits, either case.
fn decode_sha384(text: &str) -> Result<Vec<u8>, String> {
    if text.len() != PCR_LEN * 2 {
        return Err(format!("got {} characters", text.chars().count()));
    }
    hex::decode(text).map_err(|e| format!("not hex: {e}"))
}

/// Reads at most one byte more than [`MAX_FILE_LEN`], so an oversized file is refused without
/// being read whole.
fn read_bounded(path: &Path) -> Result<String, PolicyFileError> {
    let io = |source| PolicyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(PolicyFileError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| PolicyFileError::Json("not UTF-8 text".into()))
}

/// Reads only `version`, ignoring everything else.
#[derive(Deserialize)]
struct VersionProbe {
    version: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    // Checked by the probe; declared so that `deny_unknown_fields` accepts the key.
    #[serde(rename = "version")]
    _version: u64,
    accept: Vec<RawSet>,
    #[serde(default)]
    models: Option<UniqueMap>,
    #[serde(default)]
    max_age_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSet {
    name: String,
    pcrs: UniqueMap,
}

#[derive(Serialize)]
struct RawFileOut<'a> {
    version: u64,
    accept: Vec<RawSetOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    models: Option<OrderedMap>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_age_secs: Option<u64>,
}

#[derive(Serialize)]
struct RawSetOut<'a> {
    name: &'a str,
    pcrs: OrderedMap,
}

/// Serialised in insertion order (serde_json's `preserve_order`): PCR "2" before "10".
type OrderedMap = serde_json::Map<String, Value>;

/// A JSON object of strings whose keys must be unique: serde_json would otherwise keep the last
/// of two equal keys silently (`"0"` twice in a set is a typo, not a choice).
struct UniqueMap(Vec<(String, String)>);

/// Bound on the entries read into one map before validation ([`MAX_MODELS`] is the larger).
const MAX_MAP_ENTRIES: usize = MAX_MODELS + 1;

impl<'de> Deserialize<'de> for UniqueMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UniqueVisitor;
        impl<'de> Visitor<'de> for UniqueVisitor {
            type Value = UniqueMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of strings with unique keys")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueMap, A::Error> {
                let mut entries: Vec<(String, String)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, String>()? {
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format!("duplicate key {key:?}")));
                    }
                    if entries.len() >= MAX_MAP_ENTRIES {
                        return Err(de::Error::custom("too many entries"));
                    }
                    entries.push((key, value));
                }
                Ok(UniqueMap(entries))
            }
        }
        deserializer.deserialize_map(UniqueVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_of(b: u8) -> String {
        hex::encode([b; PCR_LEN])
    }

    fn two_sets() -> String {
        format!(
            r#"{{
  "version": 1,
  "accept": [
    {{ "name": "v0.3.0", "pcrs": {{ "0": "{a}", "1": "{b}", "2": "{c}" }} }},
    {{ "name": "v0.4.0", "pcrs": {{ "0": "{d}", "1": "{b}", "2": "{c}" }} }}
  ],
  "models": {{ "digits": "{e}" }},
  "max_age_secs": 120
}}"#,
            a = hex_of(0xa0),
            b = hex_of(0xb1),
            c = hex_of(0xc2),
            d = hex_of(0xd0),
            e = hex_of(0xe0),
        )
    }

    fn err(text: &str) -> PolicyFileError {
        PolicyFile::from_json(text).unwrap_err()
    }

    #[test]
    fn parses_the_contract_format_into_a_policy_with_named_alternatives() {
        let file = PolicyFile::from_json(&two_sets()).unwrap();
        assert_eq!(file.sets().len(), 2);
        assert_eq!(file.sets()[1].name, "v0.4.0");
        assert_eq!(file.sets()[1].pcrs[&0], vec![0xd0; PCR_LEN]);
        assert_eq!(file.models()["digits"], vec![0xe0; PCR_LEN]);
        assert_eq!(file.max_age_secs(), Some(120));

        let policy = file.to_policy();
        assert!(policy.validate().is_ok());
        let opts = policy
            .verify_options(None, std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        assert!(!opts.allow_debug);
        assert_eq!(opts.max_age, Some(Duration::from_secs(120)));
        assert_eq!(
            opts.trust_anchor,
            sealed_attestation::TrustAnchor::aws_nitro_root_g1()
        );
        let doc = BTreeMap::from([
            (0, vec![0xd0; PCR_LEN]),
            (1, vec![0xb1; PCR_LEN]),
            (2, vec![0xc2; PCR_LEN]),
            (3, vec![0; PCR_LEN]),
        ]);
        let accepted = policy.accepted_as(&doc).unwrap();
        assert_eq!(
            (accepted.index, accepted.name.as_deref()),
            (1, Some("v0.4.0"))
        );
        // The same set check the verifier applies.
        opts.pcr_policy.check(&doc).unwrap();
        let mut other = doc.clone();
        other.insert(2, vec![0xc3; PCR_LEN]);
        assert_eq!(policy.accepted_as(&other), None);
        assert!(opts.pcr_policy.check(&other).is_err());
    }

    #[test]
    fn round_trips_through_its_own_output_with_lower_case_hex() {
        let upper = two_sets().replace(&hex_of(0xa0), &hex_of(0xa0).to_uppercase());
        let file = PolicyFile::from_json(&upper).unwrap();
        let text = file.to_json();
        assert!(text.ends_with('\n'));
        assert!(text.contains(&hex_of(0xa0)) && !text.contains(&hex_of(0xa0).to_uppercase()));
        assert_eq!(PolicyFile::from_json(&text).unwrap(), file);
        // Optional fields stay out when unset.
        let minimal = PolicyFile::new("r1", BTreeMap::from([(0, vec![1; PCR_LEN])])).unwrap();
        let text = minimal.to_json();
        assert!(
            !text.contains("models") && !text.contains("max_age_secs"),
            "{text}"
        );
        assert_eq!(PolicyFile::from_json(&text).unwrap(), minimal);
    }

    #[test]
    fn pcrs_are_written_in_numeric_order() {
        let pcrs = BTreeMap::from([(10, vec![1; PCR_LEN]), (2, vec![2; PCR_LEN])]);
        let text = PolicyFile::new("r", pcrs).unwrap().to_json();
        let two = text.find("\"2\"").unwrap();
        let ten = text.find("\"10\"").unwrap();
        assert!(two < ten, "{text}");
    }

    #[test]
    fn refuses_unknown_keys_at_every_level() {
        let top = two_sets().replace("\"max_age_secs\"", "\"max_age_sec\"");
        assert!(matches!(err(&top), PolicyFileError::Json(m) if m.contains("max_age_sec")));
        let set = two_sets().replacen(
            "\"name\": \"v0.3.0\",",
            "\"name\": \"v0.3.0\", \"debug\": true,",
            1,
        );
        assert!(matches!(err(&set), PolicyFileError::Json(m) if m.contains("debug")));
        let allow = two_sets().replace("\"version\": 1,", "\"version\": 1, \"allow_debug\": true,");
        assert_eq!(err(&allow).kind(), "syntax");
        let anchor =
            two_sets().replace("\"version\": 1,", "\"version\": 1, \"trust_root\": \"x\",");
        assert_eq!(err(&anchor).kind(), "syntax");
    }

    #[test]
    fn refuses_other_or_missing_versions() {
        for (version, found) in [("2", "2"), ("0", "0"), ("\"1\"", "\"1\""), ("1.0", "1.0")] {
            let text = two_sets().replace("\"version\": 1", &format!("\"version\": {version}"));
            match err(&text) {
                PolicyFileError::Version { found: f } => assert_eq!(f, found),
                other => panic!("{version}: {other}"),
            }
        }
        // A newer version is reported as such even with keys this build does not know.
        let newer = r#"{"version": 2, "accept": [], "require": {"x": 1}}"#;
        assert!(matches!(err(newer), PolicyFileError::Version { .. }));
        let missing = two_sets().replace("\"version\": 1,", "");
        assert!(matches!(err(&missing), PolicyFileError::Json(m) if m.contains("version")));
        assert_eq!(err("[]").kind(), "syntax");
        assert_eq!(err("not json").kind(), "syntax");
    }

    #[test]
    fn refuses_empty_too_many_and_duplicate_sets() {
        assert!(matches!(
            err(r#"{"version": 1, "accept": []}"#),
            PolicyFileError::NoSets
        ));
        let set = |i: usize| format!(r#"{{"name": "r{i}", "pcrs": {{"0": "{}"}}}}"#, hex_of(1));
        let many: Vec<String> = (0..=MAX_SETS).map(set).collect();
        let text = format!(r#"{{"version": 1, "accept": [{}]}}"#, many.join(","));
        assert!(matches!(
            err(&text),
            PolicyFileError::TooManySets { count: 65 }
        ));
        let max: Vec<String> = (0..MAX_SETS).map(set).collect();
        let text = format!(r#"{{"version": 1, "accept": [{}]}}"#, max.join(","));
        assert_eq!(PolicyFile::from_json(&text).unwrap().sets().len(), MAX_SETS);

        let dup = two_sets().replace("v0.4.0", "v0.3.0");
        assert!(matches!(err(&dup), PolicyFileError::DuplicateName { name } if name == "v0.3.0"));
        let empty = r#"{"version": 1, "accept": [{"name": "e", "pcrs": {}}]}"#;
        assert!(matches!(err(empty), PolicyFileError::EmptySet { .. }));
    }

    #[test]
    fn refuses_bad_names() {
        for name in ["", "has space", "a/b", "ü", &"x".repeat(65)] {
            let text = two_sets().replace("v0.3.0", name);
            assert!(
                matches!(err(&text), PolicyFileError::InvalidName { .. }),
                "{name:?}"
            );
        }
        assert!(valid_set_name(&"x".repeat(64)));
        assert!(valid_set_name("v1.2.3-rc.1_build"));
    }

    #[test]
    fn refuses_bad_pcr_indices_values_and_duplicate_keys() {
        for key in ["32", "-1", "+1", "01", "x", "", "1.0", "99999"] {
            let text = two_sets().replacen("\"1\":", &format!("\"{key}\":"), 1);
            assert!(
                matches!(err(&text), PolicyFileError::PcrIndex { .. }),
                "{key:?}"
            );
        }
        let ok = two_sets().replacen("\"1\":", "\"31\":", 1);
        assert!(PolicyFile::from_json(&ok).is_ok());

        let short = two_sets().replacen(&hex_of(0xa0), &hex::encode([0xa0; 32]), 1);
        assert!(matches!(
            err(&short),
            PolicyFileError::PcrValue { index: 0, .. }
        ));
        let not_hex = two_sets().replacen(&hex_of(0xa0), &"zz".repeat(48), 1);
        assert!(matches!(
            err(&not_hex),
            PolicyFileError::PcrValue { index: 0, .. }
        ));
        let number = two_sets().replacen(&format!("\"{}\"", hex_of(0xa0)), "7", 1);
        assert_eq!(err(&number).kind(), "syntax");

        let dup = two_sets().replacen("\"2\":", "\"0\":", 1);
        assert!(matches!(err(&dup), PolicyFileError::Json(m) if m.contains("duplicate key")));
        let dup_field = two_sets().replace(
            "\"max_age_secs\": 120",
            "\"max_age_secs\": 120, \"max_age_secs\": 0",
        );
        assert!(matches!(err(&dup_field), PolicyFileError::Json(m) if m.contains("duplicate")));
    }

    #[test]
    fn refuses_bad_models_and_max_ages() {
        let bad_id = two_sets().replace("\"digits\"", "\"a/b\"");
        assert!(matches!(err(&bad_id), PolicyFileError::ModelId { .. }));
        let bad_digest = two_sets().replace(&hex_of(0xe0), &hex::encode([0xe0; 32]));
        assert!(matches!(
            err(&bad_digest),
            PolicyFileError::ModelDigest { .. }
        ));
        for (age, ok) in [("0", false), ("1", true), ("86400", true), ("86401", false)] {
            let text = two_sets().replace("120", age);
            assert_eq!(PolicyFile::from_json(&text).is_ok(), ok, "{age}");
        }
        let negative = two_sets().replace("120", "-5");
        assert_eq!(err(&negative).kind(), "syntax");
        let models: Vec<String> = (0..=MAX_MODELS)
            .map(|i| format!(r#""m{i}": "{}""#, hex_of(1)))
            .collect();
        let text = two_sets().replace(
            &format!(r#""digits": "{}""#, hex_of(0xe0)),
            &models.join(","),
        );
        assert!(matches!(
            err(&text),
            PolicyFileError::Json(_) | PolicyFileError::TooManyModels
        ));
    }

    #[test]
    fn refuses_oversized_text_before_parsing() {
        let big = format!("{}{}", two_sets(), " ".repeat(MAX_FILE_LEN as usize));
        assert!(matches!(err(&big), PolicyFileError::TooLarge));
    }

    #[test]
    fn add_and_remove_keep_the_policy_valid() {
        let mut file = PolicyFile::from_json(&two_sets()).unwrap();
        let set = BTreeMap::from([(0, vec![5; PCR_LEN])]);
        assert!(matches!(
            file.add_set("v0.4.0", set.clone()),
            Err(PolicyFileError::NameExists { .. })
        ));
        assert!(matches!(
            file.add_set("bad name", set.clone()),
            Err(PolicyFileError::InvalidName { .. })
        ));
        assert!(matches!(
            file.add_set("v0.5.0", BTreeMap::from([(0, vec![5; 47])])),
            Err(PolicyFileError::PcrValue { .. })
        ));
        file.add_set("v0.5.0", set).unwrap();
        assert_eq!(file.sets().len(), 3);
        assert_eq!(file.remove_set("v0.3.0").unwrap().name, "v0.3.0");
        assert!(matches!(
            file.remove_set("v0.3.0"),
            Err(PolicyFileError::NameNotFound { .. })
        ));
        file.remove_set("v0.4.0").unwrap();
        assert!(matches!(
            file.remove_set("v0.5.0"),
            Err(PolicyFileError::LastSet { .. })
        ));
        let names: Vec<&str> = file.sets().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["v0.5.0"]);
    }

    #[test]
    fn saves_atomically_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.json");
        let file = PolicyFile::from_json(&two_sets()).unwrap();
        file.save(&path).unwrap();
        assert_eq!(PolicyFile::load(&path).unwrap(), file);
        let policy = Policy::from_file(&path).unwrap();
        assert_eq!(policy.pcr_set_names().count(), 2);
        // Only the file itself is left in the directory (no temporary files).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(matches!(
            PolicyFile::load(&dir.path().join("absent.json")),
            Err(PolicyFileError::Io { .. })
        ));
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; MAX_FILE_LEN as usize + 1]).unwrap();
        assert!(matches!(
            PolicyFile::load(&big),
            Err(PolicyFileError::TooLarge)
        ));
    }

    const NITRO_CLI: &str = r#"{
  "Measurements": {
    "HashAlgorithm": "Sha384 { ... }",
    "PCR0": "A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0",
    "PCR1": "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1",
    "PCR2": "c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2"
  }
}"#;

    #[test]
    fn reads_nitro_cli_measurements_with_either_case_and_extra_keys() {
        let m = Measurements::from_nitro_cli_json(NITRO_CLI).unwrap();
        assert_eq!(m.pcrs.len(), 3);
        assert_eq!(m.pcrs[&0], vec![0xa0; PCR_LEN]);
        assert_eq!(m.pcrs[&2], vec![0xc2; PCR_LEN]);
        // describe-eif adds keys around and inside Measurements (PCR8 for a signed image).
        let describe = NITRO_CLI
            .replace(
                "\"Measurements\": {",
                &format!(
                    "\"EifVersion\": 4, \"IsSigned\": true, \"Measurements\": {{ \"PCR8\": \"{}\",",
                    hex_of(8)
                ),
            )
            .replace("\n}", ", \"Metadata\": {\"BuildTime\": \"x\"}\n}");
        let m = Measurements::from_nitro_cli_json(&describe).unwrap();
        assert_eq!(m.pcrs[&8], vec![8; PCR_LEN]);
        assert_eq!(
            m.select(&[0, 8])
                .unwrap()
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            [0, 8]
        );
        assert_eq!(m.select(&[0, 4]), Err(MeasurementsError::MissingPcr(4)));
        // The bare inner object (`jq .Measurements`).
        let inner: Value = serde_json::from_str(NITRO_CLI).unwrap();
        let bare = inner["Measurements"].to_string();
        assert_eq!(
            Measurements::from_nitro_cli_json(&bare).unwrap().pcrs,
            Measurements::from_nitro_cli_json(NITRO_CLI).unwrap().pcrs
        );
    }

    #[test]
    fn refuses_measurements_that_are_not_complete_sha384_pcrs() {
        let no_pcr2 = NITRO_CLI.replace("\"PCR2\"", "\"XPCR2\"");
        assert_eq!(
            Measurements::from_nitro_cli_json(&no_pcr2),
            Err(MeasurementsError::MissingPcr(2))
        );
        let sha256 = NITRO_CLI.replace("Sha384 { ... }", "Sha256 { ... }");
        assert!(matches!(
            Measurements::from_nitro_cli_json(&sha256),
            Err(MeasurementsError::HashAlgorithm(_))
        ));
        let short = NITRO_CLI.replace(&"b1".repeat(48), &"b1".repeat(32));
        assert!(matches!(
            Measurements::from_nitro_cli_json(&short),
            Err(MeasurementsError::PcrValue { key }) if key == "PCR1"
        ));
        let index = NITRO_CLI.replace("\"PCR1\"", "\"PCR40\"");
        assert!(matches!(
            Measurements::from_nitro_cli_json(&index),
            Err(MeasurementsError::PcrIndex { .. })
        ));
        for text in ["[]", "{}", "{\"Measurements\": 1}", "nope"] {
            assert!(Measurements::from_nitro_cli_json(text).is_err(), "{text}");
        }
    }
}

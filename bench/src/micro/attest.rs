//! Client attestation verification: the work `Client::attest` does once the document and manifest
//! have arrived (client/src/session.rs `AttestedEnclave::verify`), timed, beside the ES384
//! verifications it is made of.
//!
//! `sealed_attestation::verify` performs one ES384 verification per link of the certificate path
//! (leaf → cabundle[N-1] → … → cabundle[0]: N links; the pinned root's self-signature is not
//! checked, it is compared byte for byte) plus one over the COSE Sig_structure: N + 1 in all
//! (shared/attestation/src/chain.rs `verify`, lib.rs `verify`). Real AWS documents carry N = 4,
//! the mock CA N = 2.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ciborium::value::Value as Cbor;
use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey};
use p384::elliptic_curve::Generate;
use sealed_attestation::{PcrPolicy, TrustAnchor, VerifyOptions, commitment, cose};
use sealed_crypto::KeyConfig;
use sealed_mock_ca::MockCa;
use sealed_wire::ModelManifest;
use serde_json::{Value, json};

use super::{Budget, Stats, sample_us};

/// The real documents, as named in shared/attestation/tests/data and shared/vectors/nitro.
const REAL_DOCUMENTS: [&str; 3] = [
    "evervault-2022-10-13.cbor",
    "nitrite-2024-09-07.cbor",
    "nitro-validator-2026-01-03.cbor",
];

/// Largest document file read (the verifier's own limit is 16 KiB).
const MAX_DOCUMENT_FILE: u64 = 64 * 1024;

/// Length of the message in the stand-alone ES384 measurement: about a certificate's TBS (the
/// COSE Sig_structure is a few KiB; SHA-384 of the extra bytes is ~2 µs/KiB and lands in the
/// remainder).
const ES384_MESSAGE_LEN: usize = 1024;

/// Where the real documents are, or why they are not there.
pub(super) enum Vectors {
    Found(PathBuf),
    Absent(String),
}

/// The first directory that holds all three real documents: `explicit`, else the repository's
/// test data, else `shared/vectors/nitro` beside the repository.
pub(super) fn locate_vectors(explicit: Option<&Path>) -> Vectors {
    let has_all = |dir: &Path| REAL_DOCUMENTS.iter().all(|f| dir.join(f).is_file());
    if let Some(dir) = explicit {
        return if has_all(dir) {
            Vectors::Found(dir.to_path_buf())
        } else {
            Vectors::Absent(format!(
                "--vectors-dir {} does not hold {}",
                dir.display(),
                REAL_DOCUMENTS.join(", ")
            ))
        };
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        repo.join("shared/attestation/tests/data"),
        repo.join("../shared/vectors/nitro"),
    ];
    for dir in &candidates {
        if has_all(dir) {
            return Vectors::Found(dir.clone());
        }
    }
    Vectors::Absent(format!(
        "real AWS attestation documents not found (looked in {}); pass --vectors-dir",
        candidates
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    ))
}

/// One timed document.
pub(super) struct Case {
    pub name: String,
    pub source: String,
    pub document_bytes: usize,
    /// What the timed closure runs.
    pub steps: &'static str,
    pub es384_verifications: usize,
    pub full_us: Stats,
}

pub(super) struct Report {
    pub es384_us: Stats,
    pub cases: Vec<Case>,
    pub skipped: Vec<String>,
}

pub(super) fn run(vectors: &Vectors, budget: Budget) -> anyhow::Result<Report> {
    let es384_us = Stats::of(&es384_samples(budget)?).context("no ES384 samples")?;
    let mut cases = Vec::new();
    let mut skipped = Vec::new();
    match vectors {
        Vectors::Found(dir) => {
            for file in REAL_DOCUMENTS {
                cases.push(real_case(&dir.join(file), budget)?);
            }
        }
        Vectors::Absent(why) => {
            eprintln!("attestation: {why}; timing the mock-NSM document only");
            skipped.push(why.clone());
        }
    }
    cases.push(mock_case(budget)?);
    Ok(Report {
        es384_us,
        cases,
        skipped,
    })
}

/// One `VerifyingKey::verify` (ES384: SHA-384 of the message, then P-384 ECDSA), fresh key.
fn es384_samples(budget: Budget) -> anyhow::Result<Vec<f64>> {
    let key = SigningKey::try_generate().map_err(|_| anyhow::anyhow!("no OS randomness"))?;
    let message = vec![0x5a; ES384_MESSAGE_LEN];
    let signature: Signature = key.try_sign(&message)?;
    let verifying = *key.verifying_key();
    sample_us(budget.attest_time, budget.attest_min_runs, || {
        verifying
            .verify(black_box(&message), black_box(&signature))
            .map_err(|_| anyhow::anyhow!("ES384 verification failed"))
    })
}

/// The fields the policy for a real document pins: its own timestamp, nonce and PCR0.
struct Seen {
    timestamp_ms: u64,
    nonce: Option<Vec<u8>>,
    pcr0: Vec<u8>,
}

fn peek(document: &[u8]) -> anyhow::Result<Seen> {
    let sign1 = cose::parse(document)?;
    let payload: Cbor = ciborium::de::from_reader(sign1.payload.as_slice())?;
    let Cbor::Map(entries) = payload else {
        anyhow::bail!("payload is not a map");
    };
    let field = |key: &str| {
        entries
            .iter()
            .find(|(k, _)| k.as_text() == Some(key))
            .map(|(_, v)| v)
    };
    let timestamp_ms = match field("timestamp") {
        Some(Cbor::Integer(i)) => u64::try_from(*i).ok(),
        _ => None,
    }
    .context("document has no timestamp")?;
    let nonce = match field("nonce") {
        Some(Cbor::Bytes(b)) => Some(b.clone()),
        _ => None,
    };
    let pcr0 = match field("pcrs") {
        Some(Cbor::Map(pcrs)) => pcrs.iter().find_map(|(k, v)| match (k, v) {
            (Cbor::Integer(i), Cbor::Bytes(b)) if u64::try_from(*i).ok() == Some(0) => {
                Some(b.clone())
            }
            _ => None,
        }),
        _ => None,
    }
    .context("document has no PCR0")?;
    Ok(Seen {
        timestamp_ms,
        nonce,
        pcr0,
    })
}

fn read_document(path: &Path) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| path.display().to_string())?
        .len();
    anyhow::ensure!(
        len <= MAX_DOCUMENT_FILE,
        "{} is larger than {MAX_DOCUMENT_FILE} bytes",
        path.display()
    );
    std::fs::read(path).with_context(|| path.display().to_string())
}

/// A real AWS document, verified one second after its timestamp (inside its leaf's ~3 h
/// validity) against the built-in AWS root, its PCR0 pinned, its nonce expected, a 5-minute age
/// limit: every check a client runs. Its `user_data` is not our commitment, so the commitment
/// and key-configuration steps do not apply.
fn real_case(path: &Path, budget: Budget) -> anyhow::Result<Case> {
    let document = read_document(path)?;
    let seen = peek(&document).with_context(|| path.display().to_string())?;
    let opts = VerifyOptions {
        trust_anchor: TrustAnchor::aws_nitro_root_g1(),
        pcr_policy: PcrPolicy::AnyOf(vec![BTreeMap::from([(0u16, seen.pcr0)])]),
        expected_nonce: seen.nonce,
        max_age: Some(Duration::from_secs(300)),
        allow_debug: false,
        now: UNIX_EPOCH + Duration::from_millis(seen.timestamp_ms + 1000),
    };
    let verified = sealed_attestation::verify(&document, &opts)
        .with_context(|| format!("{} does not verify", path.display()))?;
    let samples = sample_us(budget.attest_time, budget.attest_min_runs, || {
        black_box(sealed_attestation::verify(black_box(&document), &opts)?);
        Ok(())
    })?;
    Ok(Case {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        source: path.display().to_string(),
        document_bytes: document.len(),
        steps: "verify",
        es384_verifications: verified.cabundle.len() + 1,
        full_us: Stats::of(&samples).context("no samples")?,
    })
}

/// A document shaped like the mock NSM's (enclave/src/nsm/mock.rs): a fresh mock CA and leaf,
/// 16 PCRs, our key configuration, the commitment to a one-model manifest, a 32-byte nonce. Timed
/// as the client runs it: verify, then the commitment, then the key configuration.
fn mock_case(budget: Budget) -> anyhow::Result<Case> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let ca = MockCa::generate(now.as_secs())?;
    let leaf = ca.issue_leaf(now.as_secs(), 3 * 3600)?;

    let mut manifest = ModelManifest::default();
    manifest.insert("digits".into(), vec![0xab; 48]);
    let manifest_bytes = manifest.encode()?;
    let key_config = KeyConfig {
        key_id: 1,
        public_key: [0x42; 32],
    };
    let mut nonce = vec![0u8; 32];
    getrandom::fill(&mut nonce).map_err(|_| anyhow::anyhow!("no OS randomness"))?;
    let pcr0 = vec![0x5a; 48];
    let text = |s: &str| Cbor::Text(s.into());
    let pcrs = (0..16u8)
        .map(|i| {
            let value = if i == 0 { pcr0.clone() } else { vec![0; 48] };
            (Cbor::Integer(i.into()), Cbor::Bytes(value))
        })
        .collect();
    let timestamp_ms = u64::try_from(now.as_millis())?;
    let payload = Cbor::Map(vec![
        (
            text("module_id"),
            text("i-mock0000000000000-enc0000000000000000"),
        ),
        (text("digest"), text("SHA384")),
        (text("timestamp"), Cbor::Integer(timestamp_ms.into())),
        (text("pcrs"), Cbor::Map(pcrs)),
        (
            text("certificate"),
            Cbor::Bytes(leaf.certificate_der().to_vec()),
        ),
        (
            text("cabundle"),
            Cbor::Array(leaf.cabundle().into_iter().map(Cbor::Bytes).collect()),
        ),
        (text("public_key"), Cbor::Bytes(key_config.encode())),
        (
            text("user_data"),
            Cbor::Bytes(commitment::user_data(&manifest_bytes)),
        ),
        (text("nonce"), Cbor::Bytes(nonce.clone())),
    ]);
    let mut payload_bytes = Vec::new();
    ciborium::ser::into_writer(&payload, &mut payload_bytes)?;
    let document = leaf.sign_cose_sign1(&payload_bytes)?;

    let opts = VerifyOptions {
        trust_anchor: TrustAnchor::from_pem(&ca.root_pem())?,
        pcr_policy: PcrPolicy::AnyOf(vec![BTreeMap::from([(0u16, pcr0)])]),
        expected_nonce: Some(nonce),
        max_age: Some(Duration::from_secs(300)),
        allow_debug: false,
        now: UNIX_EPOCH + Duration::from_millis(timestamp_ms + 1000),
    };
    let client_checks = || -> anyhow::Result<usize> {
        let verified = sealed_attestation::verify(black_box(&document), &opts)?;
        let manifest = commitment::verify_document(verified.user_data.as_deref(), &manifest_bytes)?;
        let key = KeyConfig::decode(verified.public_key.as_deref().unwrap_or_default())?;
        anyhow::ensure!(key == key_config && manifest.models.len() == 1);
        black_box((manifest, key));
        Ok(verified.cabundle.len())
    };
    let cabundle_len = client_checks().context("the mock document does not verify")?;
    let samples = sample_us(budget.attest_time, budget.attest_min_runs, || {
        client_checks().map(drop)
    })?;
    Ok(Case {
        name: "mock-nsm".into(),
        source: "generated (sealed-mock-ca, fresh CA and leaf)".into(),
        document_bytes: document.len(),
        steps: "verify + commitment + key config",
        es384_verifications: cabundle_len + 1,
        full_us: Stats::of(&samples).context("no samples")?,
    })
}

impl Case {
    /// Median of one ES384 verification × the count; what is left of the median is parsing, CBOR,
    /// X.509 and policy.
    fn split(&self, es384: &Stats) -> (f64, f64) {
        let es = es384.median * self.es384_verifications as f64;
        (es, self.full_us.median - es)
    }
}

pub(super) fn table(r: &Report) -> String {
    let mut out = String::from("## Client attestation verification (one core)\n\n");
    out += &format!(
        "one ES384 verification ({ES384_MESSAGE_LEN}-byte message): median {:.0} µs, p99 {:.0} µs ({} runs)\n\n",
        r.es384_us.median, r.es384_us.p99, r.es384_us.n
    );
    out += "| document | bytes | timed | runs | median µs | p99 µs | ES384 × n | ES384 µs | rest µs | rest % |\n";
    out += "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
    for c in &r.cases {
        let (es, rest) = c.split(&r.es384_us);
        out += &format!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {} | {:.0} | {:.0} | {:.0} |\n",
            c.name,
            c.document_bytes,
            c.steps,
            c.full_us.n,
            c.full_us.median,
            c.full_us.p99,
            c.es384_verifications,
            es,
            rest,
            100.0 * rest / c.full_us.median,
        );
    }
    for s in &r.skipped {
        out += &format!("\nskipped: {s}\n");
    }
    out
}

pub(super) fn json(r: &Report) -> Value {
    json!({
        "es384_verify_us": r.es384_us.json(),
        "es384_message_bytes": ES384_MESSAGE_LEN,
        "documents": r.cases.iter().map(|c| {
            let (es, rest) = c.split(&r.es384_us);
            json!({
                "name": c.name,
                "source": c.source,
                "document_bytes": c.document_bytes,
                "timed": c.steps,
                "full_us": c.full_us.json(),
                "es384_verifications": c.es384_verifications,
                "es384_total_us": super::round3(es),
                "remainder_us": super::round3(rest),
            })
        }).collect::<Vec<_>>(),
        "skipped": r.skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Budget {
        Budget {
            attest_time: Duration::ZERO,
            attest_min_runs: 2,
            unseal_runs: 1,
            load_runs: 1,
        }
    }

    #[test]
    fn mock_document_verifies_with_three_es384() {
        let case = mock_case(tiny()).unwrap();
        // Leaf → intermediate → root (2 links) + the COSE signature.
        assert_eq!(case.es384_verifications, 3);
        assert_eq!(case.full_us.n, 2);
        assert!(case.full_us.median > 0.0);
    }

    #[test]
    fn real_documents_are_found_and_verify_with_five_es384() {
        let Vectors::Found(dir) = locate_vectors(None) else {
            panic!("the repository's attestation test data should be found");
        };
        let case = real_case(&dir.join(REAL_DOCUMENTS[2]), tiny()).unwrap();
        // cabundle = root + 3 intermediates: 4 links, + the COSE signature.
        assert_eq!(case.es384_verifications, 5);
    }

    #[test]
    fn a_wrong_vectors_dir_is_reported_absent() {
        let dir = tempfile::tempdir().unwrap();
        match locate_vectors(Some(dir.path())) {
            Vectors::Absent(why) => assert!(why.contains("does not hold")),
            Vectors::Found(_) => panic!("an empty directory has no documents"),
        }
    }
}

//! The committed corpus, without libFuzzer: every seed (`fuzz/seeds/<target>/`) and every saved
//! crash (`fuzz/regressions/<target>/`) runs through its target, so a fixed bug stays fixed even
//! where only `cargo test` runs. With `SEALED_FUZZ_WRITE_SEEDS=1` the seeds are (re)written
//! first, from `sealed_fuzz::seeds` and the real vectors in the crates' `tests/data`.

use std::path::{Path, PathBuf};

use sealed_fuzz::{TARGETS, run, seeds};

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// With `SEALED_FUZZ_WRITE_SEEDS` set, (re)writes the seeds once, before any test reads them.
fn write_seeds_if_asked() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("SEALED_FUZZ_WRITE_SEEDS").is_none() {
            return;
        }
        let root = fuzz_dir();
        let repo = root.parent().expect("fuzz/ is inside the repository");
        for target in TARGETS {
            let dir = root.join("seeds").join(target);
            std::fs::create_dir_all(&dir).expect("create seed dir");
            let mut all = seeds::generated(target);
            all.extend(seeds::real_vectors(target, repo).expect("read test vectors"));
            for (name, bytes) in all {
                std::fs::write(dir.join(name), bytes).expect("write seed");
            }
        }
    });
}

#[test]
fn seeds_and_regressions_run_clean() {
    write_seeds_if_asked();
    let root = fuzz_dir();
    for target in TARGETS {
        let seeds = files(&root.join("seeds").join(target));
        assert!(
            !seeds.is_empty(),
            "{target}: no seeds (run with SEALED_FUZZ_WRITE_SEEDS=1)"
        );
        for path in seeds
            .iter()
            .chain(&files(&root.join("regressions").join(target)))
        {
            let data = std::fs::read(path).expect("read corpus file");
            assert!(run(target, &data), "{target} is a target");
        }
    }
}

#[test]
fn every_target_has_a_binary() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("Cargo.toml");
    for target in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "{target} has a [[bin]]"
        );
        assert!(
            fuzz_dir()
                .join("fuzz_targets")
                .join(format!("{target}.rs"))
                .is_file()
        );
    }
}

fn seeds_of(target: &str, prefix: &str) -> Vec<Vec<u8>> {
    let out: Vec<Vec<u8>> = files(&fuzz_dir().join("seeds").join(target))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .map(|p| std::fs::read(p).expect("read seed"))
        .collect();
    assert!(!out.is_empty(), "{target}: no {prefix}* seeds");
    out
}

/// The seeds are worth their place: sealed ones open under the targets' fixed keys (so the
/// fuzzer starts behind the tag checks) and the real attestation documents verify at the instant
/// their selector byte picks. If a fixed key or the sealing changes, this fails until the seeds
/// are regenerated.
#[test]
fn seeds_reach_past_authentication() {
    use sealed_fuzz::{MODEL_DATA_KEY, fixed_request, rsa_key, server_key};
    write_seeds_if_asked();
    let key_config = server_key().config().encode();
    for s in seeds_of("sealed_request", "gen-") {
        if s == key_config {
            // The key-config seed (sealed_request also fuzzes KeyConfig::decode).
            continue;
        }
        let (plain, _) = server_key().open_request(&s).expect("request seed opens");
        sealed_wire::InferRequest::decode(&plain).expect("and decodes");
    }
    for s in seeds_of("sealed_response", "gen-") {
        let plain = fixed_request().1.open(&s).expect("response seed opens");
        sealed_wire::InferResponse::decode(&plain).expect("and decodes");
    }
    for s in seeds_of("sealed_model", "gen-") {
        sealed_model::open(&s, &MODEL_DATA_KEY).expect("sealed model seed opens");
    }
    for s in seeds_of("kms_cms", "gen-") {
        let r = sealed_kms::cms::parse(&s).expect("cms seed parses");
        let mut rng = sealed_fuzz::DetRng::new("test");
        sealed_kms::cms::decrypt(&r, rsa_key(), &mut rng).expect("and decrypts");
    }
    for name in ["evervault", "nitrite", "nitro-validator"] {
        let seed = seeds_of("attestation", &format!("real-{name}")).remove(0);
        let (&pick, doc) = seed.split_first().expect("selector byte");
        let now = sealed_fuzz::ATTESTATION_TIMES_MS[usize::from(pick) % 3];
        let opts = sealed_attestation::VerifyOptions {
            trust_anchor: sealed_attestation::TrustAnchor::aws_nitro_root_g1(),
            pcr_policy: sealed_attestation::PcrPolicy::AcceptAny,
            expected_nonce: None,
            max_age: None,
            allow_debug: false,
            now: std::time::UNIX_EPOCH + std::time::Duration::from_millis(now),
        };
        sealed_attestation::verify(doc, &opts).expect("real document verifies");
    }
    for s in seeds_of("policy_file", "gen-").iter().take(2) {
        let text = std::str::from_utf8(s).expect("utf-8");
        sealed_fuzz::policy_file::PolicyFile::from_json(text).expect("policy seed parses");
    }
}

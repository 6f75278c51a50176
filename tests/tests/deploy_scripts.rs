//! The deployment scripts (scripts/build-eif.sh, run-enclave.sh, render-aws-policies.sh,
//! setup-instance.sh) and the enclave Dockerfile, run as an operator would, with stand-ins for the
//! two tools a CI machine lacks: `docker` and `nitro-cli` are replaced by small scripts named
//! FAKE in their text that record their arguments and print a fixed `nitro-cli build-enclave`
//! measurements JSON. Nothing here talks to a network or to AWS: the rendered key policy is
//! checked by the mock KMS on 127.0.0.1, through the real AWS SDK, and with the measurements of the
//! real simulation enclave a sealed model load succeeds while another PCR0 is refused.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha384};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn script(name: &str) -> PathBuf {
    repo().join("scripts").join(name)
}

/// PCRs the fake nitro-cli prints (AWS's format: lower-case hex, HashAlgorithm first): SHA-384 of
/// "fake PCRn (deploy_scripts test)".
const PCR0: &str = "c243133b872ab03b32c3b192c8390ea0870cec61accd8eda7af580911c329c481360c71518afafbb5b9e939175280780";
const PCR1: &str = "c0059dfa12fdfa449704fa8cb11b00a54b94845e659088bfb1e4b420bddb9f6fea6eefcc052ff53a8129511bace8a05d";
const PCR2: &str = "a3104d0e58a6a679b8c6d4b474f7914ee13e614996b571dc96971788926af901e30b67263ba84a534d32edba870a48f9";

fn measurements_json(pcr0: &str, pcr1: &str, pcr2: &str) -> String {
    format!(
        "{{\n  \"Measurements\": {{\n    \"HashAlgorithm\": \"Sha384 {{ ... }}\",\n    \"PCR0\": \"{pcr0}\",\n    \"PCR1\": \"{pcr1}\",\n    \"PCR2\": \"{pcr2}\"\n  }}\n}}\n"
    )
}

/// A directory of fake tools put first on PATH, and the log they append to.
struct Fakes {
    dir: tempfile::TempDir,
}

const FAKE_DOCKER: &str = r#"#!/usr/bin/env bash
# FAKE docker for tests/tests/deploy_scripts.rs: records its arguments and, for `build`, the
# name, mtime and mode of every file in the build context. Builds nothing.
set -euo pipefail
echo "docker $*" >>"$FAKE_LOG"
if [ "$1" = build ]; then
    ctx="${*: -1}"
    for f in "$ctx"/*; do
        echo "context $(basename "$f") $(stat -c '%Y %a' "$f")" >>"$FAKE_LOG"
    done
fi
"#;

const FAKE_NITRO_CLI: &str = r#"#!/usr/bin/env bash
# FAKE nitro-cli for tests/tests/deploy_scripts.rs: records its arguments; build-enclave writes a
# stand-in EIF and prints $FAKE_MEASUREMENTS (nitro-cli's stdout format); describe-enclaves prints
# $FAKE_ENCLAVES or []. Starts nothing.
set -euo pipefail
echo "nitro-cli $*" >>"$FAKE_LOG"
case "$1" in
    --version) echo "Nitro CLI 0.0.0-FAKE" ;;
    build-enclave)
        out=""
        while [ $# -gt 0 ]; do
            if [ "$1" = --output-file ]; then out="$2"; fi
            shift
        done
        echo "Start building the Enclave Image..." >&2
        printf 'FAKE EIF built by the fake nitro-cli\n' >"$out"
        cat "$FAKE_MEASUREMENTS"
        ;;
    describe-enclaves) if [ -n "${FAKE_ENCLAVES:-}" ]; then cat "$FAKE_ENCLAVES"; else echo '[]'; fi ;;
    *) echo '{}' ;;
esac
"#;

const FAKE_SYSTEMCTL: &str = r#"#!/usr/bin/env bash
# FAKE systemctl for tests/tests/deploy_scripts.rs: records its arguments only.
echo "systemctl $*" >>"$FAKE_LOG"
"#;

impl Fakes {
    fn new() -> Fakes {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        for (name, text) in [
            ("docker", FAKE_DOCKER),
            ("nitro-cli", FAKE_NITRO_CLI),
            ("systemctl", FAKE_SYSTEMCTL),
        ] {
            let path = dir.path().join("bin").join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(dir.path().join("log"), "").unwrap();
        let fakes = Fakes { dir };
        fakes.set_measurements(&measurements_json(PCR0, PCR1, PCR2));
        fakes
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn set_measurements(&self, text: &str) {
        std::fs::write(self.path("measurements"), text).unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("log")).unwrap()
    }

    /// Runs a script with the fakes first on PATH.
    fn run(&self, script_name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap()
        );
        let mut cmd = Command::new(script(script_name));
        cmd.args(args)
            .env("PATH", path)
            .env("FAKE_LOG", self.path("log"))
            .env("FAKE_MEASUREMENTS", self.path("measurements"))
            .env_remove("SOURCE_DATE_EPOCH");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

fn assert_fails_with(o: &Output, needle: &str) {
    assert!(!o.status.success(), "unexpected success:\n{}", stdout(o));
    assert!(
        stderr(o).contains(needle),
        "stderr does not mention {needle:?}:\n{}",
        stderr(o)
    );
}

/// A minimal static x86-64 ELF file: a 64-byte ELF header with no program headers (so no
/// PT_INTERP), then `payload`. Enough for build-eif.sh's checks; nothing runs it.
fn static_elf(payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&2u16.to_le_bytes()); // e_type: EXEC
    h.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    h.extend_from_slice(&1u32.to_le_bytes()); // e_version
    h.extend_from_slice(&[0; 24]); // e_entry, e_phoff, e_shoff
    h.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for v in [64u16, 56, 0, 64, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        h.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(h.len(), 64);
    h.extend_from_slice(payload);
    h
}

fn sha384_hex(bytes: &[u8]) -> String {
    hex::encode(Sha384::digest(bytes))
}

fn git(args: &[&str]) -> String {
    let o = Command::new("git")
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap();
    assert_ok(&o);
    stdout(&o).trim().to_string()
}

// ---- Dockerfile -------------------------------------------------------------------------------

#[test]
fn dockerfile_is_scratch_with_only_the_binary_and_the_nitro_command_line() {
    let text = std::fs::read_to_string(repo().join("deploy/enclave/Dockerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], "FROM scratch");
    assert_eq!(lines[1], "COPY sealed-enclave /sealed-enclave");
    // nitro-cli runs Cmd alone when present, so the whole command must be in CMD (exec form).
    let cmd: Vec<String> =
        serde_json::from_str(lines[2].strip_prefix("CMD ").expect("third line is CMD")).unwrap();
    assert_eq!(
        cmd,
        [
            "/sealed-enclave",
            "--listen",
            "vsock:any:5000",
            "--kms-proxy",
            "vsock:3:8000"
        ]
    );
}

// ---- build-eif.sh -----------------------------------------------------------------------------

#[test]
fn build_eif_with_a_binary_writes_measurements_and_release_and_prints_the_pcrs() {
    let fakes = Fakes::new();
    let work = tempfile::tempdir().unwrap();
    let binary = work.path().join("sealed-enclave");
    let image = static_elf(b"stand-in enclave binary");
    std::fs::write(&binary, &image).unwrap();
    let out = work.path().join("out");
    let o = fakes.run(
        "build-eif.sh",
        &[
            "--binary",
            binary.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_ok(&o);

    // PCRs on stdout, one per line.
    assert_eq!(
        stdout(&o),
        format!("PCR0 {PCR0}\nPCR1 {PCR1}\nPCR2 {PCR2}\n")
    );
    // measurements.json is nitro-cli's stdout, byte for byte.
    assert_eq!(
        std::fs::read_to_string(out.join("measurements.json")).unwrap(),
        measurements_json(PCR0, PCR1, PCR2)
    );

    let commit = git(&["rev-parse", "HEAD"]);
    let uri = format!("sealed-enclave:{}", &commit[..12]);
    let eif = std::fs::read(out.join("sealed-enclave.eif")).unwrap();
    let release: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("release.json")).unwrap()).unwrap();
    assert_eq!(release["git_commit"], commit.as_str());
    assert_eq!(release["source_date_epoch"], 1_700_000_000);
    assert_eq!(release["binary_sha384"], sha384_hex(&image).as_str());
    assert_eq!(release["eif_sha384"], sha384_hex(&eif).as_str());
    assert_eq!(release["eif_bytes"], eif.len());
    assert_eq!(release["docker_uri"], uri.as_str());
    assert_eq!(release["nitro_cli"], "Nitro CLI 0.0.0-FAKE");
    assert_eq!(release["target"], "x86_64-unknown-linux-musl");
    // A hand-made ELF has no rustc .comment section.
    assert_eq!(release["toolchain"], "unknown");
    assert_eq!(release["pcrs"]["0"], PCR0);
    assert_eq!(release["pcrs"]["1"], PCR1);
    assert_eq!(release["pcrs"]["2"], PCR2);

    // The build context: exactly the Dockerfile and the binary, mtime = SOURCE_DATE_EPOCH, fixed
    // modes; docker without network; nitro-cli from the image docker just tagged.
    let log = fakes.log();
    let lines: Vec<&str> = log.lines().collect();
    let ctx = out.join("context");
    assert!(
        lines.contains(
            &format!(
                "docker build --network=none --build-arg SOURCE_DATE_EPOCH=1700000000 -t {uri} {}",
                ctx.display()
            )
            .as_str()
        ),
        "{log}"
    );
    assert!(
        lines.contains(&"context Dockerfile 1700000000 644"),
        "{log}"
    );
    assert!(
        lines.contains(&"context sealed-enclave 1700000000 755"),
        "{log}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("context ")).count(),
        2,
        "{log}"
    );
    assert!(
        lines.contains(
            &format!(
                "nitro-cli build-enclave --docker-uri {uri} --output-file {}",
                out.join("sealed-enclave.eif").display()
            )
            .as_str()
        ),
        "{log}"
    );
    assert_eq!(
        std::fs::read(ctx.join("Dockerfile")).unwrap(),
        std::fs::read(repo().join("deploy/enclave/Dockerfile")).unwrap()
    );
    assert_eq!(std::fs::read(ctx.join("sealed-enclave")).unwrap(), image);
}

#[test]
fn build_eif_without_source_date_epoch_uses_the_commit_time() {
    let fakes = Fakes::new();
    let work = tempfile::tempdir().unwrap();
    let binary = work.path().join("bin");
    std::fs::write(&binary, static_elf(b"x")).unwrap();
    let out = work.path().join("out");
    let o = fakes.run(
        "build-eif.sh",
        &[
            "--binary",
            binary.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--docker-uri",
            "sealed-enclave:test",
        ],
        &[],
    );
    assert_ok(&o);
    let epoch = git(&["log", "-1", "--format=%ct", "HEAD"]);
    let release: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("release.json")).unwrap()).unwrap();
    assert_eq!(release["source_date_epoch"].to_string(), epoch);
    assert_eq!(release["docker_uri"], "sealed-enclave:test");
    assert!(
        fakes
            .log()
            .contains(&format!("context sealed-enclave {epoch} 755")),
        "{}",
        fakes.log()
    );
}

#[test]
fn build_eif_refuses_a_dynamically_linked_binary() {
    let fakes = Fakes::new();
    let out = tempfile::tempdir().unwrap();
    // This test's own executable is a dynamically linked ELF (it has a PT_INTERP header).
    let exe = std::env::current_exe().unwrap();
    let o = fakes.run(
        "build-eif.sh",
        &[
            "--binary",
            exe.to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_fails_with(&o, "dynamically linked");
    assert!(!fakes.log().contains("docker build"));
}

#[test]
fn build_eif_refuses_a_file_that_is_not_elf() {
    let fakes = Fakes::new();
    let work = tempfile::tempdir().unwrap();
    let binary = work.path().join("script.sh");
    std::fs::write(&binary, "#!/bin/sh\necho hi\n").unwrap();
    let o = fakes.run(
        "build-eif.sh",
        &[
            "--binary",
            binary.to_str().unwrap(),
            "--out",
            work.path().join("out").to_str().unwrap(),
        ],
        &[],
    );
    assert_fails_with(&o, "not an ELF executable");
}

#[test]
fn build_eif_refuses_measurements_it_cannot_use_and_writes_no_release() {
    let bad_outputs = [
        "Start building...\n".to_string(),
        r#"{"Measurements": {"PCR0": "abc"}}"#.to_string(),
        measurements_json(PCR0, &"0".repeat(96), PCR2),
        measurements_json(&PCR0[..94], PCR1, PCR2),
    ];
    for bad in bad_outputs {
        let fakes = Fakes::new();
        fakes.set_measurements(&bad);
        let work = tempfile::tempdir().unwrap();
        let binary = work.path().join("bin");
        std::fs::write(&binary, static_elf(b"x")).unwrap();
        let out = work.path().join("out");
        let o = fakes.run(
            "build-eif.sh",
            &[
                "--binary",
                binary.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            &[],
        );
        assert_fails_with(&o, "not the expected measurements JSON");
        assert!(!out.join("release.json").exists(), "{bad}");
        assert!(!out.join("measurements.json").exists(), "{bad}");
        assert!(stdout(&o).is_empty(), "printed PCRs for {bad}");
    }
}

#[test]
fn build_eif_rejects_unknown_options_and_explains_itself() {
    let fakes = Fakes::new();
    let help = fakes.run("build-eif.sh", &["--help"], &[]);
    assert_ok(&help);
    assert!(stdout(&help).contains("--binary PATH"));
    let o = fakes.run("build-eif.sh", &["--frobnicate"], &[]);
    assert_fails_with(&o, "unknown argument: --frobnicate");
}

// ---- run-enclave.sh ---------------------------------------------------------------------------

const MIB: u64 = 1024 * 1024;

/// The sizing rule, written independently of the script: 4 x EIF (rounded up to MiB) + models +
/// working set, at least 64, rounded up to an even number of MiB.
fn expected_memory(eif_bytes: u64, models: u64, working_set: u64) -> u64 {
    let need = (4 * eif_bytes).div_ceil(MIB) + models + working_set;
    need.max(64).div_ceil(2) * 2
}

fn sparse_eif(dir: &Path, bytes: u64) -> PathBuf {
    let path = dir.join(format!("image-{bytes}.eif"));
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(bytes).unwrap();
    path
}

fn value<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

#[test]
fn run_enclave_dry_run_sizes_memory_for_several_images_and_models() {
    let fakes = Fakes::new();
    let dir = tempfile::tempdir().unwrap();
    let allocator = dir.path().join("allocator.yaml");
    // (EIF bytes, models MiB, working set MiB or None for the default 512)
    let cases: [(u64, u64, Option<u64>); 6] = [
        (10 * MIB, 100, None),
        (10 * MIB + 1, 0, Some(0)), // 40 MiB + 4 bytes -> 41 -> 64 minimum
        (30 * MIB + 1, 0, Some(0)), // 120 MiB + 4 bytes -> 121 -> rounded to 122
        (1, 0, Some(0)),            // tiny image: the 64 MiB floor
        (250 * MIB, 2048, Some(1024)),
        (123_456_789, 777, Some(333)),
    ];
    for (eif_bytes, models, ws) in cases {
        let eif = sparse_eif(dir.path(), eif_bytes);
        let models_s = models.to_string();
        let ws_s = ws.unwrap_or(512).to_string();
        let mut args = vec![
            "--eif",
            eif.to_str().unwrap(),
            "--models-mib",
            &models_s,
            "--dry-run",
            "--allocator-file",
            allocator.to_str().unwrap(),
        ];
        if ws.is_some() {
            args.extend(["--working-set-mib", &ws_s]);
        }
        let o = fakes.run("run-enclave.sh", &args, &[]);
        assert_ok(&o);
        let out = stdout(&o);
        let want = expected_memory(eif_bytes, models, ws.unwrap_or(512));
        assert_eq!(value(&out, "eif_bytes"), eif_bytes.to_string());
        assert_eq!(value(&out, "memory_mib"), want.to_string(), "{out}");
        assert_eq!(value(&out, "cpu_count"), "2");
        assert!(
            out.lines().any(|l| l
                == format!(
                    "+ nitro-cli run-enclave --eif-path {} --memory {want} --cpu-count 2 --enclave-cid 16 --enclave-name sealed-enclave",
                    eif.display()
                )),
            "{out}"
        );
        // Nothing was run, nothing written.
        assert!(!allocator.exists());
    }
    assert!(fakes.log().is_empty(), "{}", fakes.log());
}

#[test]
fn run_enclave_refuses_when_the_allocator_reserves_too_little() {
    let fakes = Fakes::new();
    let dir = tempfile::tempdir().unwrap();
    let eif = sparse_eif(dir.path(), 10 * MIB);
    let allocator = dir.path().join("allocator.yaml");
    std::fs::write(&allocator, "---\nmemory_mib: 512\ncpu_count: 2\n").unwrap();
    let o = fakes.run(
        "run-enclave.sh",
        &[
            "--eif",
            eif.to_str().unwrap(),
            "--models-mib",
            "100",
            "--allocator-file",
            allocator.to_str().unwrap(),
        ],
        &[],
    );
    assert_fails_with(&o, "--configure-allocator");
    assert!(stderr(&o).contains("memory_mib >= 652"), "{}", stderr(&o));
    assert!(!fakes.log().contains("run-enclave"), "{}", fakes.log());
}

#[test]
fn run_enclave_configures_the_allocator_then_starts_the_enclave() {
    let fakes = Fakes::new();
    let dir = tempfile::tempdir().unwrap();
    let eif = sparse_eif(dir.path(), 10 * MIB);
    let allocator = dir.path().join("allocator.yaml");
    let old = "---\nmemory_mib: 512\ncpu_pool: 2,3\n";
    std::fs::write(&allocator, old).unwrap();
    let o = fakes.run(
        "run-enclave.sh",
        &[
            "--eif",
            eif.to_str().unwrap(),
            "--models-mib",
            "100",
            "--cpu-count",
            "2",
            "--configure-allocator",
            "--allocator-file",
            allocator.to_str().unwrap(),
        ],
        &[],
    );
    assert_ok(&o);
    let written = std::fs::read_to_string(&allocator).unwrap();
    // The allocator's own parser: `key: value` lines after `---`, comments skipped.
    let keys: Vec<&str> = written
        .lines()
        .skip_while(|l| *l != "---")
        .skip(1)
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    assert_eq!(keys, ["memory_mib: 652", "cpu_count: 2"], "{written}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("allocator.yaml.bak")).unwrap(),
        old
    );
    let log = fakes.log();
    let lines: Vec<&str> = log.lines().collect();
    let restart = lines
        .iter()
        .position(|l| *l == "systemctl restart nitro-enclaves-allocator.service")
        .unwrap_or_else(|| panic!("{log}"));
    let run = lines
        .iter()
        .position(|l| {
            *l == format!(
                "nitro-cli run-enclave --eif-path {} --memory 652 --cpu-count 2 --enclave-cid 16 --enclave-name sealed-enclave",
                eif.display()
            )
        })
        .unwrap_or_else(|| panic!("{log}"));
    assert!(restart < run, "{log}");

    // A second run finds the reservation sufficient and leaves it (and the service) alone.
    std::fs::write(fakes.path("log"), "").unwrap();
    let o = fakes.run(
        "run-enclave.sh",
        &[
            "--eif",
            eif.to_str().unwrap(),
            "--models-mib",
            "100",
            "--configure-allocator",
            "--allocator-file",
            allocator.to_str().unwrap(),
        ],
        &[],
    );
    assert_ok(&o);
    assert_eq!(std::fs::read_to_string(&allocator).unwrap(), written);
    assert!(!fakes.log().contains("systemctl"), "{}", fakes.log());
    assert!(fakes.log().contains("nitro-cli run-enclave"));
}

#[test]
fn run_enclave_will_not_start_a_second_enclave_of_the_same_name_unless_told_to_replace_it() {
    let fakes = Fakes::new();
    let dir = tempfile::tempdir().unwrap();
    let eif = sparse_eif(dir.path(), MIB);
    let allocator = dir.path().join("allocator.yaml");
    std::fs::write(&allocator, "---\nmemory_mib: 4096\ncpu_count: 4\n").unwrap();
    let running = dir.path().join("running.json");
    std::fs::write(
        &running,
        r#"[{"EnclaveName": "sealed-enclave", "EnclaveID": "i-0-enc1", "EnclaveCID": 16}]"#,
    )
    .unwrap();
    let args = [
        "--eif",
        eif.to_str().unwrap(),
        "--allocator-file",
        allocator.to_str().unwrap(),
    ];
    let env = [("FAKE_ENCLAVES", running.to_str().unwrap())];
    let o = fakes.run("run-enclave.sh", &args, &env);
    assert_fails_with(&o, "already running");
    assert!(!fakes.log().contains("run-enclave"));

    let mut replace = args.to_vec();
    replace.push("--replace");
    let o = fakes.run("run-enclave.sh", &replace, &env);
    assert_ok(&o);
    let log = fakes.log();
    let term = log
        .find("nitro-cli terminate-enclave --enclave-name sealed-enclave")
        .unwrap_or_else(|| panic!("{log}"));
    let run = log.find("nitro-cli run-enclave").unwrap();
    assert!(term < run, "{log}");
}

#[test]
fn run_enclave_rejects_bad_arguments() {
    let fakes = Fakes::new();
    let dir = tempfile::tempdir().unwrap();
    let eif = sparse_eif(dir.path(), 100 * MIB);
    let e = eif.to_str().unwrap();
    for (args, needle) in [
        (vec!["--models-mib", "1"], "--eif is required"),
        (vec!["--eif", "/nonexistent.eif"], "not found"),
        (vec!["--eif", e, "--models-mib", "-5"], "whole number"),
        (vec!["--eif", e, "--cpu-count", "0"], "at least 1"),
        (vec!["--eif", e, "--enclave-cid", "3"], "reserved"),
        (
            vec!["--eif", e, "--memory-mib", "300", "--dry-run"],
            "below the computed minimum of 912",
        ),
        (vec!["--eif", e, "--bogus"], "unknown argument"),
    ] {
        let o = fakes.run("run-enclave.sh", &args, &[]);
        assert_fails_with(&o, needle);
    }
}

// ---- setup-instance.sh ------------------------------------------------------------------------

#[test]
fn setup_instance_dry_run_lists_the_al2023_steps_and_changes_nothing() {
    let fakes = Fakes::new();
    let o = fakes.run(
        "setup-instance.sh",
        &[
            "--dry-run",
            "--user",
            "operator",
            "--memory-mib",
            "4096",
            "--cpu-count",
            "4",
        ],
        &[],
    );
    assert_ok(&o);
    let out = stdout(&o);
    for line in [
        "+ dnf install -y aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel docker git gcc",
        "+ usermod -aG ne operator",
        "+ usermod -aG docker operator",
        "  memory_mib: 4096",
        "  cpu_count: 4",
        "+ systemctl enable --now nitro-enclaves-allocator.service",
        "+ systemctl enable --now docker",
        "+ runuser -u operator -- bash -c curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain none",
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?}:\n{out}");
    }
    assert!(fakes.log().is_empty(), "{}", fakes.log());
    let o = fakes.run("setup-instance.sh", &["--dry-run", "--user", "x; rm"], &[]);
    assert_fails_with(&o, "not a valid user name");
}

// ---- render-aws-policies.sh -------------------------------------------------------------------

const ACCOUNT: &str = "111122223333";

fn render(measurements: &[&Path], out: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(script("render-aws-policies.sh"));
    for m in measurements {
        cmd.arg("--measurements").arg(m);
    }
    cmd.args([
        "--account",
        ACCOUNT,
        "--instance-role-arn",
        sealed_sim::stack::HOST_ROLE_ARN,
        "--admin-arn",
        sealed_sim::stack::OWNER_ARN,
        "--out",
    ])
    .arg(out)
    .args(extra);
    cmd.output().unwrap()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn attested_statements(policy: &serde_json::Value) -> Vec<&serde_json::Value> {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["Action"] == "kms:Decrypt")
        .collect()
}

#[test]
fn rendered_policies_are_json_with_the_release_pcrs_in_lower_case() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("measurements.json");
    // Upper-case hex and extra keys, as other tools may write them.
    std::fs::write(
        &m,
        format!(
            r#"{{"Measurements": {{"HashAlgorithm": "Sha384 {{ ... }}", "PCR0": "{}", "PCR1": "{}", "PCR2": "{}", "PCR8": "{}"}}, "ImageName": "x"}}"#,
            PCR0.to_uppercase(),
            PCR1,
            PCR2.to_uppercase(),
            "ab".repeat(48)
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = render(&[&m], &out, &[]);
    assert_ok(&o);

    let key = read_json(&out.join("kms-key-policy.json"));
    let decrypt = attested_statements(&key);
    assert_eq!(decrypt.len(), 1);
    let st = decrypt[0];
    assert_eq!(st["Principal"]["AWS"], sealed_sim::stack::HOST_ROLE_ARN);
    let cond = &st["Condition"]["StringEqualsIgnoreCase"];
    assert_eq!(cond["kms:RecipientAttestation:ImageSha384"], PCR0);
    assert_eq!(cond["kms:RecipientAttestation:PCR1"], PCR1);
    assert_eq!(cond["kms:RecipientAttestation:PCR2"], PCR2);
    assert_eq!(cond.as_object().unwrap().len(), 3);
    // The owner administers and seals but never decrypts.
    for s in key["Statement"].as_array().unwrap() {
        if s["Principal"]["AWS"] == sealed_sim::stack::OWNER_ARN {
            assert!(!s["Action"].to_string().contains("Decrypt"), "{s}");
            assert!(!s["Action"].to_string().contains('*'), "{s}");
        }
    }

    let role = read_json(&out.join("instance-role-policy.json"));
    let st = &role["Statement"][0];
    assert_eq!(st["Action"], "kms:Decrypt");
    assert_eq!(st["Resource"], format!("arn:aws:kms:*:{ACCOUNT}:key/*"));
    assert_eq!(
        st["Condition"]["StringEqualsIgnoreCase"]["kms:RecipientAttestation:ImageSha384"],
        PCR0
    );
    let trust = read_json(&out.join("instance-role-trust-policy.json"));
    assert_eq!(
        trust["Statement"][0]["Principal"]["Service"],
        "ec2.amazonaws.com"
    );
    assert_eq!(trust["Statement"][0]["Action"], "sts:AssumeRole");
    for f in [
        "kms-key-policy.json",
        "instance-role-policy.json",
        "instance-role-trust-policy.json",
    ] {
        let text = std::fs::read_to_string(out.join(f)).unwrap();
        assert!(!text.contains("${"), "{f}: {text}");
    }
    assert!(stdout(&o).contains("aws kms create-key"));
}

#[test]
fn two_releases_give_two_attested_statements_for_a_rolling_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.json");
    let new = dir.path().join("new.json");
    let other0 = "11".repeat(48);
    std::fs::write(&old, measurements_json(PCR0, PCR1, PCR2)).unwrap();
    std::fs::write(&new, measurements_json(&other0, PCR1, PCR2)).unwrap();
    let out = dir.path().join("out");
    let key_arn =
        format!("arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab");
    let o = render(&[&old, &new, &old], &out, &["--key-arn", &key_arn]);
    assert_ok(&o);
    let key = read_json(&out.join("kms-key-policy.json"));
    let decrypt = attested_statements(&key);
    assert_eq!(decrypt.len(), 2, "duplicates collapse: {key}");
    let pcr0s: Vec<&str> = decrypt
        .iter()
        .map(|s| {
            s["Condition"]["StringEqualsIgnoreCase"]["kms:RecipientAttestation:ImageSha384"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(pcr0s, [PCR0, other0.as_str()]);
    assert_ne!(decrypt[0]["Sid"], decrypt[1]["Sid"]);
    let role = read_json(&out.join("instance-role-policy.json"));
    assert_eq!(role["Statement"].as_array().unwrap().len(), 2);
    assert_eq!(role["Statement"][0]["Resource"], key_arn.as_str());
}

#[test]
fn render_refuses_bad_accounts_arns_and_measurements() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    std::fs::write(&good, measurements_json(PCR0, PCR1, PCR2)).unwrap();
    let out = dir.path().join("out");
    let run = |m: &Path, account: &str, role: &str, admin: &str| {
        Command::new(script("render-aws-policies.sh"))
            .arg("--measurements")
            .arg(m)
            .args([
                "--account",
                account,
                "--instance-role-arn",
                role,
                "--admin-arn",
                admin,
                "--out",
            ])
            .arg(&out)
            .output()
            .unwrap()
    };
    let role = sealed_sim::stack::HOST_ROLE_ARN;
    let admin = sealed_sim::stack::OWNER_ARN;
    assert_fails_with(&run(&good, "11112222333", role, admin), "12-digit");
    assert_fails_with(
        &run(&good, ACCOUNT, "arn:aws:iam::111122223333:user/bob", admin),
        "IAM role ARN",
    );
    assert_fails_with(
        &run(&good, ACCOUNT, "arn:aws:iam::999999999999:role/r", admin),
        "not 111122223333",
    );
    assert_fails_with(
        &run(&good, ACCOUNT, role, "arn:aws:iam::999999999999:role/owner"),
        "--admin-arn must be in",
    );
    assert_fails_with(&run(&good, ACCOUNT, role, "*"), "--admin-arn must be");
    for (name, text) in [
        ("zero.json", measurements_json(&"0".repeat(96), PCR1, PCR2)),
        ("short.json", measurements_json(PCR0, &PCR1[2..], PCR2)),
        (
            "quote.json",
            measurements_json(PCR0, PCR1, &format!("{}\"", &PCR2[1..])),
        ),
        (
            "missing.json",
            r#"{"Measurements": {"PCR0": "x"}}"#.to_string(),
        ),
        ("notjson.json", "PCR0 abc".to_string()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        assert_fails_with(
            &run(&path, ACCOUNT, role, admin),
            "not a usable measurements.json",
        );
    }
    assert!(!out.join("kms-key-policy.json").exists());
}

/// The rendered key policy, filled from `sealed-sim measure` of the real simulation enclave,
/// drives the mock KMS (real AWS SDK for CreateKey, real enclave for Decrypt with attestation):
/// a model sealed under it loads; under a policy for another PCR0 it is refused.
#[tokio::test]
async fn rendered_key_policy_releases_the_model_key_only_to_the_measured_enclave() {
    use sealed_sim::stack::{SimAws, Stack, StackOptions};

    let tmp = tempfile::tempdir().unwrap();
    let paths = common::paths(tmp.path());
    let bins = paths.bin_dir.clone();
    sealed_sim::stack::write_mock_ca(&paths).unwrap();

    // The release's measurements, as an operator would get them for a simulation build.
    let measured = tmp.path().join("measurements.json");
    let o = Command::new(bins.join("sealed-sim"))
        .args(["measure", "--enclave"])
        .arg(paths.enclave())
        .arg("--out")
        .arg(&measured)
        .output()
        .unwrap();
    assert_ok(&o);
    let mut other: serde_json::Value = read_json(&measured);
    let pcr0 = other["Measurements"]["PCR0"].as_str().unwrap().to_string();
    let flipped = format!(
        "{}{}",
        &pcr0[..95],
        if pcr0.ends_with('0') { "1" } else { "0" }
    );
    other["Measurements"]["PCR0"] = serde_json::Value::String(flipped);
    let other_file = tmp.path().join("other-measurements.json");
    std::fs::write(&other_file, other.to_string()).unwrap();

    let good_dir = tmp.path().join("policies-good");
    assert_ok(&render(&[&measured], &good_dir, &[]));
    let other_dir = tmp.path().join("policies-other");
    assert_ok(&render(&[&other_file], &other_dir, &[]));

    let aws = SimAws::start(&paths).await.unwrap();
    let stack = Stack::start_with(
        &paths,
        StackOptions {
            name: "",
            enclave_binary: paths.enclave(),
            plaintext_models: Vec::new(),
            aws: Some(&aws),
            enclave_args: Vec::new(),
            host_args: Vec::new(),
            host_enclave_socket: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(hex::encode(stack.pcr0), pcr0, "sealed-sim measure PCR0");

    // CreateKey runs the mock's policy parser and lockout check (the owner keeps PutKeyPolicy).
    let kms = aws.owner_kms_client().await.unwrap();
    let mut keys = Vec::new();
    // The other PCR0's key first: a refused load leaves nothing behind, so the same model id
    // can then load under the good key.
    for dir in [&other_dir, &good_dir] {
        let policy = std::fs::read_to_string(dir.join("kms-key-policy.json")).unwrap();
        let created = kms
            .create_key()
            .policy(policy.clone())
            .send()
            .await
            .unwrap();
        let arn = created.key_metadata().unwrap().arn().unwrap().to_string();
        let stored = kms
            .get_key_policy()
            .key_id(&arn)
            .policy_name("default")
            .send()
            .await
            .unwrap();
        let stored: serde_json::Value = serde_json::from_str(stored.policy().unwrap()).unwrap();
        assert_eq!(
            stored,
            serde_json::from_str::<serde_json::Value>(&policy).unwrap()
        );
        keys.push(arn);
    }

    let digits = sealed_sim::assets::Digits::load(&paths.assets).unwrap();
    let admin = stack.admin_url.clone().unwrap();
    let mut results = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let sealed = tmp.path().join(format!("digits-{i}.sealed"));
        let o = tokio::process::Command::new(bins.join("sealed"))
            .env_clear()
            .envs(aws.owner_env())
            .env("AWS_CONFIG_FILE", "/nonexistent/config")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .args(["seal-model", "--model-id", "digits", "--key-id", key])
            .arg("--model")
            .arg(&digits.model)
            .arg("--out")
            .arg(&sealed)
            .arg("--kms-endpoint")
            .arg(aws.kms.endpoint_url())
            .arg("--ca-bundle")
            .arg(&aws.kms.ca_file)
            .output()
            .await
            .unwrap();
        assert_ok(&o);
        let response = reqwest::Client::new()
            .post(format!("{admin}/v1/admin/models"))
            .header("content-type", "application/octet-stream")
            .body(std::fs::read(&sealed).unwrap())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        results.push((status, body));
    }
    stack.stop().await;
    aws.stop().await;

    let (status, body) = &results[0];
    assert_eq!(*status, 403, "{body}");
    assert_eq!(body["error"]["name"], "model_access_denied");
    let (status, body) = &results[1];
    assert_eq!(*status, 200, "{body}");
    assert_eq!(body["model_id"], "digits");
    assert_eq!(body["sha384"], digits.model_sha384.as_str());
}

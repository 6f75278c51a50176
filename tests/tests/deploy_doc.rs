//! docs/deploy.md must not name a command that does not exist: every `scripts/…` it runs is an
//! executable script whose `--help` lists each flag used, every `sealed*` command's subcommand
//! accepts each flag used (checked against the real binaries' `--help`), and anything else is one
//! of the platform tools the page says it uses (the Rust toolchain's `cargo` among them). Also installs the host with scripts/install-host.sh
//! into a scratch root, as the page does on an instance.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Platform tools docs/deploy.md may use besides our scripts and binaries.
const PLATFORM_TOOLS: &[&str] = &[
    "git",
    "curl",
    "systemctl",
    "journalctl",
    "aws",
    "nitro-cli",
    "dnf",
    "cp",
    "cd",
    // The pinned Rust toolchain setup-instance.sh installs (rustup, rust-toolchain.toml).
    "cargo",
];

/// Our binaries, which the test runs from target/debug.
const OUR_BINARIES: &[&str] = &["sealed", "sealed-host", "sealed-enclave", "sealed-sim"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The shell commands of every ```sh block, continuation lines joined, split at `&&`, `;`, `|`.
fn commands(markdown: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_block = !in_block && trimmed == "```sh";
            continue;
        }
        if !in_block || trimmed.starts_with('#') {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let full = std::mem::take(&mut pending);
        for part in full
            .split("&&")
            .flat_map(|p| p.split(';'))
            .flat_map(|p| p.split('|'))
        {
            let words: Vec<String> = part.split_whitespace().map(str::to_string).collect();
            if !words.is_empty() {
                out.push(words);
            }
        }
    }
    assert!(!in_block, "unterminated code block");
    out
}

/// Words up to the first flag: the command and its subcommands.
fn command_path(words: &[String]) -> Vec<String> {
    words
        .iter()
        .take_while(|w| !w.starts_with('-'))
        .cloned()
        .collect()
}

fn flags(words: &[String]) -> Vec<String> {
    words
        .iter()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.split('=').next().unwrap().to_string())
        .collect()
}

fn help_of(program: &Path, args: &[String]) -> String {
    let out = Command::new(program)
        .args(args)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("running {} {:?} --help: {e}", program.display(), args));
    assert!(
        out.status.success(),
        "{} {} --help failed: {}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_command_in_deploy_md_exists() {
    let bin_dir = common::bin_dir();
    let root = repo();
    let page = std::fs::read_to_string(root.join("docs/deploy.md")).unwrap();
    let commands = commands(&page);
    assert!(
        commands.len() > 15,
        "found only {} commands",
        commands.len()
    );
    let mut checked_scripts = 0;
    let mut checked_binaries = 0;
    for mut words in commands {
        if words[0] == "sudo" {
            words.remove(0);
        }
        // Where install-host.sh puts our binaries (sudo's secure_path does not include it).
        let program = words[0].trim_start_matches("/usr/local/bin/").to_string();
        if let Some(script) = program
            .strip_prefix("./")
            .filter(|p| p.starts_with("scripts/"))
        {
            let path = root.join(script);
            let meta = std::fs::metadata(&path)
                .unwrap_or_else(|_| panic!("docs/deploy.md runs {script}, which does not exist"));
            assert!(
                std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0,
                "{script} is not executable"
            );
            let help = help_of(&path, &[]);
            for flag in flags(&words) {
                assert!(
                    help.contains(&flag),
                    "{script} --help does not mention {flag} (used in docs/deploy.md)"
                );
            }
            checked_scripts += 1;
        } else if OUR_BINARIES.contains(&program.as_str()) {
            let path = command_path(&words);
            let help = help_of(&bin_dir.join(&program), &path[1..]);
            for flag in flags(&words) {
                assert!(
                    help.contains(&flag),
                    "`{}` does not accept {flag} (used in docs/deploy.md)",
                    path.join(" ")
                );
            }
            checked_binaries += 1;
        } else {
            assert!(
                PLATFORM_TOOLS.contains(&program.as_str()),
                "docs/deploy.md runs `{program}`, which is neither a script, one of our binaries, \
                 nor a listed platform tool"
            );
        }
    }
    assert!(
        checked_scripts >= 5,
        "only {checked_scripts} script commands"
    );
    assert!(
        checked_binaries >= 4,
        "only {checked_binaries} binary commands"
    );
}

#[test]
fn command_extraction_joins_continuations_and_splits_chains() {
    let md = "text\n```sh\na --x 1 \\\n  --y 2\ncd d && b --z\n# comment\n```\n```json\n{}\n```\n";
    let got = commands(md);
    assert_eq!(
        got,
        vec![
            vec!["a", "--x", "1", "--y", "2"],
            vec!["cd", "d"],
            vec!["b", "--z"]
        ]
    );
    assert_eq!(flags(&got[0]), ["--x", "--y"]);
}

#[test]
fn install_host_fills_the_region_and_keeps_existing_config() {
    let bin_dir = common::bin_dir();
    let root = tempfile::tempdir().unwrap();
    let image = root.path().join("built.eif");
    std::fs::write(&image, b"stand-in for an EIF").unwrap();
    let run = || {
        Command::new(repo().join("scripts/install-host.sh"))
            .args(["--region", "eu-west-1", "--root"])
            .arg(root.path())
            .arg("--binaries")
            .arg(&bin_dir)
            .arg("--eif")
            .arg(&image)
            .args(["--models-mib", "200", "--cpu-count", "4"])
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = root.path();
    for f in [
        "usr/local/bin/sealed-host",
        "usr/local/bin/sealed",
        "etc/systemd/system/sealed-host.service",
        "etc/sealed-inference/host.toml",
        "etc/sealed-inference/vsock-proxy.yaml",
    ] {
        assert!(r.join(f).is_file(), "{f} not installed");
    }
    assert!(r.join("var/lib/sealed-inference/models").is_dir());
    // The enclave's boot unit runs the installed run-enclave.sh on the installed image.
    assert_eq!(
        std::fs::read(r.join("var/lib/sealed-inference/sealed-enclave.eif")).unwrap(),
        b"stand-in for an EIF"
    );
    let unit =
        std::fs::read_to_string(r.join("etc/systemd/system/sealed-enclave.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let script = exec.split_whitespace().next().unwrap();
    let installed = r.join(script.trim_start_matches('/'));
    assert!(installed.is_file(), "{script} not installed");
    let env = std::fs::read_to_string(r.join("etc/sealed-inference/enclave.env")).unwrap();
    for line in [
        "SEALED_ENCLAVE_EIF=/var/lib/sealed-inference/sealed-enclave.eif",
        "SEALED_ENCLAVE_MODELS_MIB=200",
        "SEALED_ENCLAVE_CPU_COUNT=4",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing:\n{env}");
    }
    // Every variable the unit uses is set by the env file, and the installed script accepts the
    // arguments the unit gives it.
    for var in [
        "SEALED_ENCLAVE_EIF",
        "SEALED_ENCLAVE_MODELS_MIB",
        "SEALED_ENCLAVE_CPU_COUNT",
    ] {
        assert!(exec.contains(&format!("${{{var}}}")), "{exec}");
    }
    let help = Command::new(&installed).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in exec.split_whitespace().filter(|w| w.starts_with("--")) {
        assert!(help.contains(flag), "run-enclave.sh does not take {flag}");
    }
    let toml = std::fs::read_to_string(r.join("etc/sealed-inference/host.toml")).unwrap();
    assert!(toml.contains("kms.eu-west-1.amazonaws.com:443"), "{toml}");
    assert!(!toml.contains("us-east-1"), "{toml}");
    let allow = std::fs::read_to_string(r.join("etc/sealed-inference/vsock-proxy.yaml")).unwrap();
    assert!(
        allow.contains("{address: kms.eu-west-1.amazonaws.com, port: 443}"),
        "{allow}"
    );

    // The installed configuration is one the host accepts, as the unit will start it.
    let out = Command::new(bin_dir.join("sealed-host"))
        .arg("--config")
        .arg(r.join("etc/sealed-inference/host.toml"))
        .arg("--check-config")
        .env_remove("SEALED_HOST_CONFIG")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("sealed-host: configuration ok"),
        "{printed}"
    );
    assert!(printed.contains("kms.eu-west-1.amazonaws.com"), "{printed}");
    // And a broken one is refused with the usage exit code.
    std::fs::write(r.join("bad.toml"), "listen = \"nowhere\"\n").unwrap();
    let out = Command::new(bin_dir.join("sealed-host"))
        .arg("--config")
        .arg(r.join("bad.toml"))
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // A second run keeps the operator's edits and writes the shipped version beside them.
    std::fs::write(r.join("etc/sealed-inference/host.toml"), "# edited\n").unwrap();
    let out = run();
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(r.join("etc/sealed-inference/host.toml")).unwrap(),
        "# edited\n"
    );
    assert!(r.join("etc/sealed-inference/host.toml.new").is_file());

    // A bad region is refused before anything is written.
    let out = Command::new(repo().join("scripts/install-host.sh"))
        .args(["--region", "moon; rm -rf /", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

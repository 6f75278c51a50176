//! `docs/threat-model.md` maps every threat to a test or to a stated exclusion. This keeps that map
//! honest: every `file::function` it names must be a test function in that file, every bare file
//! it names must exist, and every threat row must name one or the other.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn doc() -> String {
    std::fs::read_to_string(repo().join("docs/threat-model.md")).unwrap()
}

/// Every backticked span in `text`.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// `path/to/file.rs::name` → (path, Some(name)); `path/to/file.rs` → (path, None).
fn reference(span: &str) -> Option<(&str, Option<&str>)> {
    let (file, name) = match span.split_once("::") {
        Some((f, n)) => (f, Some(n)),
        None => (span, None),
    };
    let is_source = file.ends_with(".rs") || file.ends_with(".sh");
    (is_source && file.contains('/') && !file.contains(' ')).then_some((file, name))
}

/// True if `source` defines `fn name` directly after a test attribute.
fn defines_test(source: &str, name: &str) -> bool {
    let lines: Vec<&str> = source.lines().map(str::trim).collect();
    lines.iter().enumerate().any(|(i, line)| {
        let defines = line.starts_with(&format!("fn {name}("))
            || line.starts_with(&format!("async fn {name}("));
        defines
            && lines[..i]
                .iter()
                .rev()
                .take_while(|l| l.starts_with("#[") || l.starts_with("//"))
                .any(|l| l.starts_with("#[test") || l.starts_with("#[tokio::test"))
    })
}

#[test]
fn every_named_test_exists_and_every_named_file_exists() {
    let doc = doc();
    let mut checked = 0;
    let mut problems = Vec::new();
    for span in code_spans(&doc) {
        let Some((file, name)) = reference(span) else {
            continue;
        };
        let path = repo().join(file);
        let Ok(source) = std::fs::read_to_string(&path) else {
            problems.push(format!("{file}: no such file"));
            continue;
        };
        if let Some(name) = name
            && !defines_test(&source, name)
        {
            problems.push(format!("{file}: no test function `{name}`"));
        }
        checked += 1;
    }
    assert!(
        problems.is_empty(),
        "threat-model.md names what does not exist:\n{}",
        problems.join("\n")
    );
    assert!(
        checked >= 60,
        "only {checked} references found: is the parser blind?"
    );
}

#[test]
fn every_threat_row_names_a_test_or_an_exclusion() {
    let doc = doc();
    let mut rows = 0;
    for line in doc.lines() {
        // Threat rows start with an id such as `| C1 |` or `| H10 |`.
        let Some(id) = line
            .strip_prefix("| ")
            .and_then(|rest| rest.split(" |").next())
        else {
            continue;
        };
        let is_id = id.len() >= 2
            && id.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && id[1..].chars().all(|c| c.is_ascii_digit());
        if !is_id {
            continue;
        }
        rows += 1;
        let names_test = code_spans(line).iter().any(|s| reference(s).is_some());
        let excluded = line.contains("**out of scope") || line.contains("**accepted**");
        assert!(
            names_test || excluded,
            "threat {id} names neither a test nor an exclusion: {line}"
        );
    }
    assert!(rows >= 40, "only {rows} threat rows found");
}

#[test]
fn the_parsers_see_what_they_should() {
    assert_eq!(
        reference("a/b.rs::c"),
        Some(("a/b.rs", Some("c"))),
        "file::function"
    );
    assert_eq!(
        reference("tests/tests/leak.rs"),
        Some(("tests/tests/leak.rs", None))
    );
    assert_eq!(reference("user_data"), None);
    assert!(defines_test("#[tokio::test]\nasync fn x() {}\n", "x"));
    assert!(defines_test("#[test]\n// why\nfn y() {}\n", "y"));
    assert!(!defines_test("fn z() {}\n", "z"), "a helper is not a test");
}

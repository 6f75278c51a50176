//! Crate boundaries, checked on the resolved dependency graph (docs/supply-chain.md "Crate
//! boundaries"): the host relays ciphertext and must not even link code that opens a sealed request
//! or a sealed model; the inference engine and the NSM driver exist only in the enclave.
//!
//! The graph is `cargo metadata --offline --locked`: the workspace's own resolve, features unified
//! across all members as cargo builds them together (so an optional dependency that any member
//! switches on counts for everyone: stricter, never looser, than one package built alone). Each
//! closure follows normal dependencies only, for every target platform: dev-dependencies are not
//! linked into the binary and build-dependencies only run at build time. cargo-deny's `wrappers`
//! (deny.toml) cannot tell dev edges from normal ones; this test can.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// Crates that open sealed requests or sealed models, or hold the primitives to: none of these may
/// be in sealed-host's closure. ring stays allowed: rustls uses it for TLS (aws-smithy-http-client,
/// the IMDS credentials client); the host never receives a sealed-model data key or a request key.
const HOST_FORBIDDEN: &[&str] = &[
    // Request sealing (RFC 9180 HPKE, DHKEM(X25519)).
    "sealed-crypto",
    "hpke",
    "x25519-dalek",
    "curve25519-dalek",
    // Sealed models: the format's opener and its AEAD, and the KMS recipient-key unwrap.
    "sealed-model",
    "sealed-kms",
    "aes-gcm",
    "aes-gcm-siv",
    "aes",
    "ghash",
    "ctr",
    "cbc",
    "chacha20poly1305",
    "chacha20",
    "rsa",
    // Enclave-only.
    "aws-nitro-enclaves-nsm-api",
    "serde_cbor",
];

/// Workspace members allowed to link tract (the engine, and sealed-plan, its optimiser, which
/// only the engine and the bench use). sealed-bench may, for the bare-inference comparison it
/// prints beside the sealed path; it is a simulation tool, never deployed.
const TRACT_ALLOWED: &[&str] = &["sealed-enclave", "sealed-plan", "sealed-bench"];
/// Workspace members allowed to link the NSM driver (and serde_cbor, which only it pulls in).
const NSM_ALLOWED: &[&str] = &["sealed-enclave"];

/// The resolved graph: package id → (name, normal-dependency ids).
struct Graph {
    names: BTreeMap<String, String>,
    normal_deps: BTreeMap<String, Vec<String>>,
    /// Workspace member id → the names of its `bin` targets.
    members: BTreeMap<String, Vec<String>>,
}

impl Graph {
    fn from_metadata(meta: &Value) -> Graph {
        let mut names = BTreeMap::new();
        for p in meta["packages"].as_array().expect("packages") {
            let id = p["id"].as_str().expect("package id").to_owned();
            names.insert(id, p["name"].as_str().expect("package name").to_owned());
        }
        let mut members = BTreeMap::new();
        for id in meta["workspace_members"]
            .as_array()
            .expect("workspace_members")
        {
            let id = id.as_str().expect("member id");
            let package = meta["packages"]
                .as_array()
                .expect("packages")
                .iter()
                .find(|p| p["id"] == id)
                .expect("member package");
            let bins = package["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .filter(|t| {
                    t["kind"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|k| k == "bin"))
                })
                .map(|t| t["name"].as_str().expect("target name").to_owned())
                .collect();
            members.insert(id.to_owned(), bins);
        }
        let mut normal_deps = BTreeMap::new();
        for node in meta["resolve"]["nodes"].as_array().expect("resolve.nodes") {
            let id = node["id"].as_str().expect("node id").to_owned();
            let deps = node["deps"]
                .as_array()
                .expect("node deps")
                .iter()
                .filter(|d| {
                    // `kind` is null for a normal dependency, "dev" or "build" otherwise; one
                    // edge can carry several kinds (e.g. normal on one target, dev on another).
                    d["dep_kinds"]
                        .as_array()
                        .expect("dep_kinds")
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|d| d["pkg"].as_str().expect("dep pkg").to_owned())
                .collect();
            normal_deps.insert(id, deps);
        }
        Graph {
            names,
            normal_deps,
            members,
        }
    }

    fn member_id(&self, name: &str) -> &str {
        self.members
            .keys()
            .find(|id| self.names[*id] == name)
            .unwrap_or_else(|| panic!("{name} is not a workspace member"))
    }

    /// Names of every package reachable from `root` over normal edges, with one shortest path to
    /// each (for the failure message).
    fn closure(&self, root: &str) -> BTreeMap<String, Vec<String>> {
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([(root, vec![self.names[root].clone()])]);
        while let Some((id, path)) = queue.pop_front() {
            if !seen.insert(id) {
                continue;
            }
            out.entry(self.names[id].clone())
                .or_insert_with(|| path.clone());
            for dep in self.normal_deps.get(id).into_iter().flatten() {
                let mut next = path.clone();
                next.push(self.names[dep].clone());
                queue.push_back((dep, next));
            }
        }
        out
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The workspace graph, read once per test binary (cargo metadata takes most of a second).
fn workspace_graph() -> &'static Graph {
    static GRAPH: OnceLock<Graph> = OnceLock::new();
    GRAPH.get_or_init(read_workspace_graph)
}

fn read_workspace_graph() -> Graph {
    // CARGO is set by `cargo test` to the cargo running us (the pinned toolchain's).
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo())
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    Graph::from_metadata(&meta)
}

/// Every (member, forbidden crate, path) where `member`'s closure reaches a crate `forbidden`
/// accepts.
fn violations(
    graph: &Graph,
    members: &[&str],
    forbidden: impl Fn(&str) -> bool,
) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for member in members {
        for (name, path) in graph.closure(graph.member_id(member)) {
            if forbidden(&name) {
                found.push((member.to_string(), name, path.join(" -> ")));
            }
        }
    }
    found
}

fn is_tract(name: &str) -> bool {
    name == "tract" || name.starts_with("tract-")
}

#[test]
fn host_links_nothing_that_opens_requests_or_models() {
    let graph = workspace_graph();
    let found = violations(graph, &["sealed-host"], |n| {
        HOST_FORBIDDEN.contains(&n) || is_tract(n)
    });
    assert!(
        found.is_empty(),
        "sealed-host must not link these (normal dependencies):\n{found:#?}"
    );
}

#[test]
fn only_the_enclave_links_tract_and_the_nsm_driver() {
    let graph = workspace_graph();
    let all: Vec<String> = graph
        .members
        .keys()
        .map(|id| graph.names[id].clone())
        .collect();
    let others = |allowed: &[&str]| -> Vec<&str> {
        all.iter()
            .map(String::as_str)
            .filter(|n| !allowed.contains(n))
            .collect()
    };
    let tract = violations(graph, &others(TRACT_ALLOWED), is_tract);
    assert!(tract.is_empty(), "tract outside the enclave:\n{tract:#?}");
    let nsm = violations(graph, &others(NSM_ALLOWED), |n| {
        n == "aws-nitro-enclaves-nsm-api" || n == "serde_cbor"
    });
    assert!(nsm.is_empty(), "NSM driver outside the enclave:\n{nsm:#?}");
}

/// Positive control on the real graph: the walker does reach the crates the other tests look for,
/// through the members that are supposed to link them. Without this, a walker that found nothing
/// would pass everything above.
#[test]
fn the_enclave_and_client_closures_contain_what_they_must() {
    let graph = workspace_graph();
    let enclave = graph.closure(graph.member_id("sealed-enclave"));
    for needed in [
        "tract-onnx",
        "tract-core",
        "aws-nitro-enclaves-nsm-api",
        "hpke",
        "sealed-crypto",
        "sealed-model",
        "aes-gcm",
        "rsa",
    ] {
        assert!(
            enclave.contains_key(needed),
            "sealed-enclave closure lacks {needed}"
        );
    }
    let client = graph.closure(graph.member_id("sealed-client"));
    assert!(
        client.contains_key("hpke"),
        "sealed-client closure lacks hpke"
    );
    // Every binary the workspace ships is found (the host is one of them).
    let bins: BTreeSet<&str> = graph
        .members
        .values()
        .flatten()
        .map(String::as_str)
        .collect();
    for bin in ["sealed-host", "sealed-enclave", "sealed"] {
        assert!(
            bins.contains(bin),
            "binary {bin} not found in metadata: {bins:?}"
        );
    }
}

/// The walker on a hand-made graph: dev and build edges are not followed, normal ones are,
/// transitively, and an edge that is normal on some target counts.
#[test]
fn closure_follows_normal_edges_only() {
    let meta = serde_json::json!({
        "packages": [
            {"id": "app", "name": "app", "targets": [{"name": "app", "kind": ["bin"]}]},
            {"id": "lib", "name": "lib", "targets": [{"name": "lib", "kind": ["lib"]}]},
            {"id": "deep", "name": "deep", "targets": []},
            {"id": "devonly", "name": "devonly", "targets": []},
            {"id": "buildonly", "name": "buildonly", "targets": []},
            {"id": "mixed", "name": "mixed", "targets": []},
        ],
        "workspace_members": ["app", "lib"],
        "resolve": {"nodes": [
            {"id": "app", "deps": [
                {"pkg": "lib", "dep_kinds": [{"kind": null, "target": null}]},
                {"pkg": "devonly", "dep_kinds": [{"kind": "dev", "target": null}]},
                {"pkg": "buildonly", "dep_kinds": [{"kind": "build", "target": null}]},
                {"pkg": "mixed", "dep_kinds": [
                    {"kind": "dev", "target": null},
                    {"kind": null, "target": "cfg(unix)"}
                ]},
            ]},
            {"id": "lib", "deps": [{"pkg": "deep", "dep_kinds": [{"kind": null, "target": null}]}]},
            {"id": "deep", "deps": []},
            {"id": "devonly", "deps": []},
            {"id": "buildonly", "deps": []},
            {"id": "mixed", "deps": []},
        ]},
    });
    let graph = Graph::from_metadata(&meta);
    let closure = graph.closure(graph.member_id("app"));
    let names: BTreeSet<&str> = closure.keys().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from(["app", "lib", "deep", "mixed"]));
    assert_eq!(closure["deep"], ["app", "lib", "deep"]);
    let found = violations(&graph, &["app"], |n| n == "deep" || n == "devonly");
    assert_eq!(
        found,
        [(
            "app".to_owned(),
            "deep".to_owned(),
            "app -> lib -> deep".to_owned()
        )]
    );
    assert_eq!(graph.members[graph.member_id("app")], ["app"]);
}

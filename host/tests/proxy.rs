//! The KMS proxy: allowlist parsing (AWS's own default file and broken ones), refusal, and byte
//! forwarding from a Unix socket to a TCP server on 127.0.0.1. No test resolves a real host name:
//! the resolver is a table, and remotes are loopback addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sealed_host::proxy::{
    AllowedRemote, Allowlist, AllowlistError, ProxyConfig, ProxySpec, Resolve, spawn,
};
use sealed_transport::Endpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};

const AWS_DEFAULT: &str = include_str!("data/vsock-proxy.yaml");

/// A resolver over a fixed table that counts lookups; unknown names fail like NXDOMAIN.
#[derive(Default)]
struct Table {
    names: HashMap<&'static str, Vec<IpAddr>>,
    lookups: AtomicUsize,
    asked: Mutex<Vec<String>>,
}

impl Table {
    fn with(entries: &[(&'static str, &str)]) -> Table {
        let mut t = Table::default();
        for (name, ip) in entries {
            t.names.entry(name).or_default().push(ip.parse().unwrap());
        }
        t
    }
}

impl Resolve for Table {
    async fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.asked.lock().unwrap().push(host.to_string());
        self.names
            .get(host)
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such name"))
    }
}

#[tokio::test]
async fn reads_the_aws_default_allowlist() {
    let list = Allowlist::parse(AWS_DEFAULT).unwrap();
    assert_eq!(list.entries.len(), 50);
    assert_eq!(
        list.entries[0],
        AllowedRemote {
            address: "kms.us-east-2.amazonaws.com".into(),
            port: 443
        }
    );
    assert!(list.entries.iter().all(|e| e.port == 443));
    assert!(
        list.entries
            .iter()
            .any(|e| e.address == "kms-fips.us-gov-west-1.amazonaws.com")
    );

    // A listed name matches by name: no DNS lookup at all.
    let table = Table::default();
    list.check("kms.us-east-1.amazonaws.com", 443, &table)
        .await
        .unwrap();
    list.check("KMS.eu-west-1.amazonaws.com", 443, &table)
        .await
        .unwrap();
    assert_eq!(table.lookups.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn loads_the_allowlist_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vsock-proxy.yaml");
    std::fs::write(&path, AWS_DEFAULT).unwrap();
    assert_eq!(Allowlist::load(&path).await.unwrap().entries.len(), 50);
    assert!(matches!(
        Allowlist::load(&dir.path().join("missing.yaml")).await,
        Err(AllowlistError::Read { .. })
    ));
    let big = dir.path().join("big.yaml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(sealed_host::proxy::MAX_ALLOWLIST_LEN as u64 + 1)
        .unwrap();
    assert!(matches!(
        Allowlist::load(&big).await,
        Err(AllowlistError::TooLarge { .. })
    ));
}

#[test]
fn accepts_block_style_extra_keys_and_an_empty_list() {
    let list = Allowlist::parse(
        "# simulation\nallowlist:\n  - address: localhost\n    port: 4443\n    comment: mock KMS\n",
    )
    .unwrap();
    assert_eq!(
        list.entries,
        [AllowedRemote {
            address: "localhost".into(),
            port: 4443
        }]
    );
    assert!(
        Allowlist::parse("allowlist: []\n")
            .unwrap()
            .entries
            .is_empty()
    );
}

#[test]
fn refuses_malformed_allowlists() {
    type Expect = fn(&AllowlistError) -> bool;
    let cases: &[(&str, Expect)] = &[
        ("allowlist: [", |e| matches!(e, AllowlistError::Yaml(_))),
        ("", |e| matches!(e, AllowlistError::NoAllowlist)),
        ("- {address: a, port: 1}\n", |e| {
            matches!(e, AllowlistError::NoAllowlist)
        }),
        ("allowlist: {address: a, port: 1}\n", |e| {
            matches!(e, AllowlistError::NoAllowlist)
        }),
        ("allowlists:\n- {address: a, port: 1}\n", |e| {
            matches!(e, AllowlistError::NoAllowlist)
        }),
        ("allowlist:\n- {address: a}\n", |e| {
            matches!(e, AllowlistError::BadEntry { index: 0, .. })
        }),
        (
            "allowlist:\n- {address: a, port: 1}\n- {port: 443}\n",
            |e| matches!(e, AllowlistError::BadEntry { index: 1, .. }),
        ),
        ("allowlist:\n- {address: a, port: '443'}\n", |e| {
            matches!(e, AllowlistError::BadEntry { .. })
        }),
        // vsock-proxy casts with `as u16`, so 65979 would silently become 443; we refuse.
        ("allowlist:\n- {address: a, port: 65979}\n", |e| {
            matches!(e, AllowlistError::BadEntry { .. })
        }),
        ("allowlist:\n- {address: a, port: 0}\n", |e| {
            matches!(e, AllowlistError::BadEntry { .. })
        }),
        ("allowlist:\n- {address: 443, port: 443}\n", |e| {
            matches!(e, AllowlistError::BadEntry { .. })
        }),
        ("allowlist:\n- {address: 'a b/c', port: 443}\n", |e| {
            matches!(e, AllowlistError::BadEntry { .. })
        }),
        ("allowlist:\n- kms.us-east-1.amazonaws.com:443\n", |e| {
            matches!(e, AllowlistError::BadEntry { .. })
        }),
        (
            "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nallowlist: []\n",
            |e| matches!(e, AllowlistError::Alias),
        ),
    ];
    for (text, expected) in cases {
        let err = Allowlist::parse(text).unwrap_err();
        assert!(expected(&err), "{text:?} gave {err:?}");
    }
}

#[tokio::test]
async fn refuses_remotes_that_are_not_allowlisted() {
    let list = Allowlist::parse(AWS_DEFAULT).unwrap();
    // No entry on this port: refused without any lookup.
    let table = Table::default();
    let err = list
        .check("kms.us-east-1.amazonaws.com", 8443, &table)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AllowlistError::NotAllowed { port: 8443, .. }),
        "{err}"
    );
    assert_eq!(table.lookups.load(Ordering::SeqCst), 0);

    // Right port, unlisted name that does not resolve: refused.
    let err = list.check("evil.example", 443, &table).await.unwrap_err();
    assert!(matches!(err, AllowlistError::NotAllowed { .. }), "{err}");

    // Right port, unlisted name resolving to an address no listed name has: refused.
    let table = Table::with(&[
        ("evil.example", "192.0.2.66"),
        ("kms.us-east-1.amazonaws.com", "192.0.2.10"),
    ]);
    assert!(list.check("evil.example", 443, &table).await.is_err());
}

#[tokio::test]
async fn matches_by_resolved_address_like_vsock_proxy() {
    let list = Allowlist::parse("allowlist:\n- {address: kms.sim.internal, port: 4443}\n").unwrap();
    let table = Table::with(&[
        ("kms.sim.internal", "127.0.0.1"),
        ("localhost", "127.0.0.1"),
        ("localhost", "::1"),
    ]);
    list.check("localhost", 4443, &table).await.unwrap();
    assert_eq!(
        *table.asked.lock().unwrap(),
        ["localhost", "kms.sim.internal"]
    );
    assert!(list.check("localhost", 443, &table).await.is_err());
}

// --- forwarding -----------------------------------------------------------------------------

fn unix_spec(dir: &tempfile::TempDir, port: u16) -> (ProxySpec, std::path::PathBuf) {
    let path = dir.path().join("kms.sock");
    let spec: ProxySpec = format!("unix:{}=127.0.0.1:{port}", path.display())
        .parse()
        .unwrap();
    assert_eq!(spec.listen, Endpoint::Unix(path.clone()));
    (spec, path)
}

/// A server that reads until the client half-closes, then answers with the bytes reversed and
/// closes. Reports how many bytes it read.
async fn reverse_server() -> (u16, tokio::sync::mpsc::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                tx.send(got.len()).await.unwrap();
                got.reverse();
                s.write_all(&got).await.unwrap();
                s.shutdown().await.unwrap();
            });
        }
    });
    (port, rx)
}

/// A server that echoes every read back at once, until the client closes.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn forwards_bytes_both_ways_and_passes_half_close_on() {
    let (port, mut seen) = reverse_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (spec, path) = unix_spec(&dir, port);
    let proxy = spawn(spec, ProxyConfig::default()).unwrap();

    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut client = UnixStream::connect(&path).await.unwrap();
    client.write_all(&payload).await.unwrap();
    // The client's end of stream must reach the server, which only then answers.
    client.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
        .await
        .expect("the proxy did not close after the server did")
        .unwrap();
    assert_eq!(seen.recv().await, Some(payload.len()));
    let mut expected = payload.clone();
    expected.reverse();
    assert_eq!(answer, expected);
    assert_eq!(proxy.accepted(), 1);

    // The relay task ends once both sides have closed.
    for _ in 0..100 {
        if proxy.open() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.open(), 0);
}

#[tokio::test]
async fn serves_several_connections_at_once() {
    let port = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (spec, path) = unix_spec(&dir, port);
    let _proxy = spawn(spec, ProxyConfig::default()).unwrap();
    let mut clients = Vec::new();
    for i in 0..5u8 {
        let mut c = UnixStream::connect(&path).await.unwrap();
        c.write_all(&[i; 1000]).await.unwrap();
        clients.push(c);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut back = [0u8; 1000];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(back, [i as u8; 1000]);
    }
}

#[tokio::test]
async fn closes_connections_over_the_limit() {
    let port = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (spec, path) = unix_spec(&dir, port);
    let config = ProxyConfig {
        max_connections: 1,
        ..ProxyConfig::default()
    };
    let proxy = spawn(spec, config).unwrap();
    let mut first = UnixStream::connect(&path).await.unwrap();
    first.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    first.read_exact(&mut back).await.unwrap();

    let mut second = UnixStream::connect(&path).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(10), second.read(&mut buf))
        .await
        .expect("an over-limit connection must be closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(proxy.refused(), 1);

    // The first is unaffected.
    first.write_all(b"pong").await.unwrap();
    first.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"pong");
}

#[tokio::test]
async fn closes_an_idle_connection() {
    let port = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (spec, path) = unix_spec(&dir, port);
    let config = ProxyConfig {
        idle_timeout: Duration::from_millis(200),
        ..ProxyConfig::default()
    };
    let _proxy = spawn(spec, config).unwrap();
    let mut client = UnixStream::connect(&path).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
        .await
        .expect("an idle connection must be closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn closes_the_client_when_the_remote_is_down() {
    // A port with nothing listening: bind, learn the port, close.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let (spec, path) = unix_spec(&dir, port);
    let _proxy = spawn(spec, ProxyConfig::default()).unwrap();
    let mut client = UnixStream::connect(&path).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
}

//! The host's HTTP limits over real TCP on 127.0.0.x against a fake enclave: slowloris headers,
//! oversized headers, connection and in-flight bounds (per client and in total), slow uploads and
//! idle keep-alive connections; and that normal requests pass after each of them.
//!
//! Different clients are told apart by source address: Linux routes all of 127.0.0.0/8 to the
//! loopback interface, so binding a client socket to 127.0.0.2 makes it a second client.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::{Action, FakeEnclave, canned};
use sealed_host::supervisor::HostState;
use sealed_host::{EnclavePool, HttpLimits, PoolConfig};
use sealed_wire::{EnclaveRequest, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// Upper bound for anything the host should do "promptly" in these tests; failures, not figures.
const PATIENCE: Duration = Duration::from_secs(15);

/// The host API with `limits` and `http_timeout` over a pool to `fake`.
struct LimitedHost {
    addr: SocketAddr,
    state: Arc<HostState>,
    task: JoinHandle<()>,
}

impl LimitedHost {
    async fn start(
        fake: &FakeEnclave,
        pool: PoolConfig,
        http_timeout: Duration,
        limits: HttpLimits,
    ) -> Self {
        let _ = fake;
        let pool = Arc::new(EnclavePool::start(pool));
        assert!(pool.wait_connected(Duration::from_secs(5)).await);
        let state = Arc::new(HostState::new(pool));
        state.mark_started();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                sealed_host::serve_state(
                    listener,
                    state,
                    http_timeout,
                    limits,
                    std::future::pending(),
                )
                .await
                .unwrap();
            }
        });
        LimitedHost { addr, state, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A reqwest client whose connections come from 127.0.0.`n`.
    fn client(&self, n: u8) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
            .build()
            .unwrap()
    }

    /// A raw TCP connection from 127.0.0.`n`.
    async fn connect(&self, n: u8) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, n], 0))).unwrap();
        socket.connect(self.addr).await.unwrap()
    }

    fn rejected(&self, reason: &str) -> u64 {
        let text = self.state.metrics.encode();
        let prefix = format!("sealed_host_rejected_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    /// A normal request from 127.0.0.`n` succeeds.
    async fn assert_serves(&self, n: u8) {
        let r = self
            .client(n)
            .post(self.url("/v1/infer"))
            .body(b"normal".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"lamron");
        let r = self
            .client(n)
            .get(self.url(&format!("/v1/attestation?nonce={}", "00".repeat(32))))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

impl Drop for LimitedHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads until the peer closes (or resets) the connection, within [`PATIENCE`]; returns what came.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the host did not close the connection");
    out
}

/// Reads one HTTP/1.1 response with a content-length from a kept-alive connection.
async fn read_response(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut data = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if data.len() >= end + 4 + len {
                    let status = head[9..12].parse().unwrap();
                    return (status, data[end + 4..end + 4 + len].to_vec());
                }
            }
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before a whole response: {:?}",
                String::from_utf8_lossy(&data)
            );
            data.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("no response")
}

/// (status, error name) of a raw response.
fn status_and_error(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{text}"));
    let status = head[9..12].parse().unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{text}"));
    (status, v["error"]["name"].as_str().unwrap().to_string())
}

async fn error_of(r: reqwest::Response) -> (u16, String) {
    let (status, code, name) = common::error_of(r).await;
    let want = match name.as_str() {
        "too_many_requests" => ErrorCode::TooManyRequests,
        "busy" => ErrorCode::Busy,
        other => panic!("unexpected error {other}"),
    };
    assert_eq!(code, want.as_u16());
    (status, name)
}

#[tokio::test]
async fn slowloris_connections_are_closed_at_the_header_timeout() {
    let fake = FakeEnclave::canned().await;
    let limits = HttpLimits {
        header_timeout: Duration::from_secs(1),
        ..HttpLimits::default()
    };
    let host = LimitedHost::start(
        &fake,
        PoolConfig::new(fake.endpoint.clone()),
        Duration::from_secs(30),
        limits,
    )
    .await;

    // Headers trickled one byte at a time, forever.
    let mut slow = host.connect(1).await;
    slow.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let drip = async {
        for _ in 0..1000 {
            if slow.write_all(b"X").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(PATIENCE, drip)
        .await
        .expect("the host kept a slowloris connection open");
    // A connection that never sends anything.
    let mut silent = host.connect(1).await;
    assert!(read_until_closed(&mut silent).await.is_empty());
    // On a kept-alive connection, the timer starts with the next request's first byte.
    let mut keep = host.connect(1).await;
    keep.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut keep).await.0, 200);
    keep.write_all(b"GET /v1/health HTTP/1.1\r\n")
        .await
        .unwrap();
    assert!(read_until_closed(&mut keep).await.is_empty());

    assert!(
        host.rejected("header_timeout") >= 3,
        "{}",
        host.state.metrics.encode()
    );
    host.assert_serves(1).await;
}

#[tokio::test]
async fn oversized_headers_get_431_and_the_limit_is_configurable() {
    let fake = FakeEnclave::canned().await;
    let host = LimitedHost::start(
        &fake,
        PoolConfig::new(fake.endpoint.clone()),
        Duration::from_secs(30),
        HttpLimits::default(),
    )
    .await;
    let client = host.client(1);
    let big = "a".repeat(20 * 1024);
    let r = client
        .get(host.url("/v1/health"))
        .header("x-big", &big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    // A long request line counts too.
    let r = client
        .get(host.url(&format!("/v1/health?{big}")))
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 414 | 431), "{}", r.status());
    // Well under the limit: served.
    let r = client
        .get(host.url("/v1/health"))
        .header("x-big", &big[..4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(host.rejected("header_too_large") >= 2);
    host.assert_serves(1).await;

    let roomy = LimitedHost::start(
        &fake,
        PoolConfig::new(fake.endpoint.clone()),
        Duration::from_secs(30),
        HttpLimits {
            max_header_bytes: 64 * 1024,
            ..HttpLimits::default()
        },
    )
    .await;
    let r = client
        .get(roomy.url("/v1/health"))
        .header("x-big", &big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn connections_are_bounded_per_client_and_in_total() {
    let fake = FakeEnclave::canned().await;
    let limits = HttpLimits {
        max_connections: 3,
        max_connections_per_client: 2,
        header_timeout: Duration::from_secs(60),
        ..HttpLimits::default()
    };
    let host = LimitedHost::start(
        &fake,
        PoolConfig::new(fake.endpoint.clone()),
        Duration::from_secs(30),
        limits,
    )
    .await;
    let request = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

    // Two idle connections from client 1 hold its share.
    let a1 = host.connect(1).await;
    let a2 = host.connect(1).await;
    let mut a3 = host.connect(1).await;
    a3.write_all(request).await.unwrap();
    let refused = read_until_closed(&mut a3).await;
    assert_eq!(
        status_and_error(&refused),
        (429, "too_many_requests".into())
    );
    assert!(
        String::from_utf8_lossy(&refused)
            .to_ascii_lowercase()
            .contains("retry-after: 1")
    );

    // Client 2 still gets in: its own count is zero. That fills the host.
    let b1 = host.connect(2).await;
    // Accepted in connection order, so b1 holds the last slot when c1 arrives.
    let mut c1 = host.connect(3).await;
    c1.write_all(request).await.unwrap();
    let refused = read_until_closed(&mut c1).await;
    assert_eq!(status_and_error(&refused), (503, "busy".into()));
    // Client 1, over its own bound as well, hears 429.
    let mut a4 = host.connect(1).await;
    a4.write_all(request).await.unwrap();
    assert_eq!(status_and_error(&read_until_closed(&mut a4).await).0, 429);

    assert_eq!(host.rejected("connections_per_client"), 2);
    assert_eq!(host.rejected("connections_total"), 1);

    // Closing connections gives their slots back.
    drop((a1, a2, b1));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut probe = host.connect(3).await;
        probe.write_all(request).await.unwrap();
        let raw = read_until_closed(&mut probe).await;
        if raw.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slots never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    host.assert_serves(1).await;
    host.assert_serves(2).await;
}

#[tokio::test]
async fn in_flight_requests_are_bounded_per_client_and_in_total() {
    // "hang" is never answered; the pool's timeout (5 s) ends those requests with 504 later,
    // which gives their slots back for the last part of the test.
    let fake = FakeEnclave::start(Arc::new(|req| match req {
        EnclaveRequest::Infer { sealed } if sealed == b"hang" => Action::Ignore,
        other => canned(other),
    }))
    .await;
    let limits = HttpLimits {
        max_in_flight: 3,
        max_in_flight_per_client: 2,
        ..HttpLimits::default()
    };
    let pool = PoolConfig {
        request_timeout: Duration::from_secs(5),
        ..PoolConfig::new(fake.endpoint.clone())
    };
    let host = Arc::new(LimitedHost::start(&fake, pool, Duration::from_secs(30), limits).await);
    let hang = |n: u8| {
        let client = host.client(n);
        let url = host.url("/v1/infer");
        tokio::spawn(async move {
            client
                .post(url)
                .body(b"hang".to_vec())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let wait_requests = |want: usize| {
        let fake = &fake;
        async move {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while fake.requests() < want {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "requests never reached the enclave"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };

    let held: Vec<_> = (0..2).map(|_| hang(1)).collect();
    wait_requests(2).await;
    // Client 1 is at its bound: inference and attestation are refused without reaching the enclave.
    let c1 = host.client(1);
    let r = c1
        .post(host.url("/v1/infer"))
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(error_of(r).await, (429, "too_many_requests".into()));
    let r = c1
        .get(host.url(&format!("/v1/attestation?nonce={}", "00".repeat(32))))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (429, "too_many_requests".into()));
    assert_eq!(fake.requests(), 2);
    // Routes that hold nothing in the enclave stay open to it.
    assert_eq!(
        c1.get(host.url("/v1/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c1.get(host.url("/livez")).send().await.unwrap().status(),
        200
    );

    // Client 2 fills the last slot; client 3 then finds the host full.
    let more = hang(2);
    wait_requests(4).await; // the health check above went to the enclave too
    let r = host
        .client(3)
        .post(host.url("/v1/infer"))
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (503, "busy".into()));
    assert_eq!(host.rejected("in_flight_per_client"), 2);
    assert_eq!(host.rejected("in_flight_total"), 1);

    for task in held.into_iter().chain([more]) {
        assert_eq!(task.await.unwrap(), 504);
    }
    host.assert_serves(1).await;
    host.assert_serves(3).await;
}

#[tokio::test]
async fn a_slow_upload_is_cut_at_the_request_deadline() {
    let fake = FakeEnclave::canned().await;
    let host = LimitedHost::start(
        &fake,
        PoolConfig::new(fake.endpoint.clone()),
        Duration::from_secs(1),
        HttpLimits::default(),
    )
    .await;
    let mut slow = host.connect(1).await;
    slow.write_all(
        b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    // Keep trickling: the deadline, not silence, must end it.
    let (reader, mut writer) = slow.into_split();
    let drip = tokio::spawn(async move {
        while writer.write_all(b"z").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut reader = reader;
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the host kept a slow upload open");
    drip.abort();
    assert_eq!(status_and_error(&raw), (504, "timeout".into()));
    assert_eq!(
        fake.requests(),
        0,
        "a partial body never reaches the enclave"
    );
    assert_eq!(host.rejected("request_deadline"), 1);
    host.assert_serves(1).await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let fake = FakeEnclave::canned().await;
    let limits = HttpLimits {
        idle_timeout: Duration::from_secs(1),
        ..HttpLimits::default()
    };
    let host = LimitedHost::start(
        &fake,
        PoolConfig::new(fake.endpoint.clone()),
        Duration::from_secs(30),
        limits,
    )
    .await;
    let mut conn = host.connect(1).await;
    for _ in 0..3 {
        conn.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(
            read_response(&mut conn).await.0,
            200,
            "kept alive between requests"
        );
    }
    assert!(read_until_closed(&mut conn).await.is_empty());
    // Not counted as a rejection: closing an idle connection is routine.
    assert_eq!(host.rejected("header_timeout"), 0);
    assert!(
        host.state
            .metrics
            .encode()
            .contains("sealed_host_http_connections 0")
    );
    host.assert_serves(1).await;
}

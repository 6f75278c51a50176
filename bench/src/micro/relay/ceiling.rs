//! The relay ceiling: what this machine's socket copies allow in the relay's topology, without the
//! host and without HTTP, to judge the host's relay MB/s against.
//!
//! A minimal forwarder sits where `sealed-host` sits: a child process (this binary re-executed,
//! see [`FORWARDER_ENV`]) with a TCP listener on 127.0.0.1 and one connection to the same
//! stand-in enclave over a Unix socket, opened with `sealed_transport::connect` (so with the same
//! 4 MiB socket buffers the host asks for; TCP keeps the kernel's defaults, as the host's does).
//! Per message:
//! 1. the client writes an 8-byte big-endian length and the payload (one `write_all` of one
//!    prebuilt buffer);
//! 2. the forwarder reads the payload straight into one buffer it reuses for every message, behind
//!    room for the frame header and the `Infer` envelope prefix, and writes the frame in one
//!    `write_frame_in_place` (the host's own way of sending an inference);
//! 3. the stand-in (the same code the host is measured against) checks the bytes and answers
//!    `Infer` with them;
//! 4. the forwarder reads the answer frame into the same buffer, finds the sealed bytes
//!    (`infer_envelope_range`), writes their length just in front of them and sends both in one
//!    write; the client reads them into a reused buffer.
//!
//! So the ceiling pays every kernel copy the host's path pays (TCP in, Unix socket out, Unix
//! socket back, TCP out) and the same process boundaries, and nothing else: no HTTP parsing or
//! framing on either side, no user-space copy in the forwarder, no allocation per message, one
//! thread in the forwarder, no request routing, limits or metrics.
//!
//! It is a baseline, not a proven upper bound: on the 2-core VM of issue 6 the host measured
//! 1.0–1.13× its MB/s at 1–16 MiB (reading the TCP side in 64 or 256 KiB steps, or running the
//! forwarder on a multi-threaded runtime, did not change that beyond the noise). A ratio near or
//! above 1 says that what is left is the kernel's copies and scheduling and the bench's own
//! client and stand-in, not the host's HTTP or its copy.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sealed_transport::{BoxRead, BoxWrite, Endpoint};
use sealed_wire::frame::HEADER_LEN;
use sealed_wire::limits::{MAX_FRAME_LEN, MAX_SEALED_MESSAGE_LEN};
use sealed_wire::message::{infer_envelope_prefix, infer_envelope_range};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Set (to the stand-in's socket path) in the environment of the re-executed bench binary: its
/// `micro --relay-only` then runs the forwarder instead of the benchmark. An environment variable
/// rather than a subcommand keeps the forwarder inside the relay module.
pub(super) const FORWARDER_ENV: &str = "SEALED_BENCH_INTERNAL_RELAY_FORWARDER";

/// The line the forwarder prints once it listens, followed by its address.
pub(super) const LISTENING: &str = "relay forwarder listening on ";

/// The client's length prefix.
const LEN_PREFIX: usize = 8;

/// Longest `Infer` envelope prefix (RFC 8949 §3: a 15-byte map head and a byte-string head of at
/// most 9 bytes), as the host reserves it.
const MAX_INFER_PREFIX_LEN: usize = 24;

/// Room in front of the payload in the forwarder's buffer: frame header and envelope prefix.
const FRONT: usize = HEADER_LEN + MAX_INFER_PREFIX_LEN;

/// The forwarder process: serves clients on 127.0.0.1 until its stdin closes (the parent's end of
/// the pipe, so the forwarder does not outlive the benchmark) or the stand-in goes away.
pub(super) fn forwarder_main(stand_in: PathBuf) -> Result<std::convert::Infallible> {
    std::thread::spawn(|| {
        // EOF or an error alike: the parent is gone.
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let enclave = sealed_transport::connect(&Endpoint::Unix(stand_in)).await?;
        println!("{LISTENING}{}", listener.local_addr()?);
        forward(listener, enclave).await?;
        bail!("the forwarder stopped")
    })
}

/// Accepts clients one after another and relays their messages through `enclave`. Returns on an
/// error of the enclave side; a client that sends a bad length or goes away is dropped.
pub(super) async fn forward(listener: TcpListener, enclave: (BoxRead, BoxWrite)) -> Result<()> {
    let (mut er, mut ew) = enclave;
    // The one buffer: header room ‖ envelope prefix ‖ payload on the way in, the whole answer
    // frame body on the way back (an answer longer than it is refused).
    let mut buf = vec![0u8; FRONT + MAX_SEALED_MESSAGE_LEN];
    let mut request_id = 0u64;
    loop {
        let (mut tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        loop {
            let mut len = [0u8; LEN_PREFIX];
            if tcp.read_exact(&mut len).await.is_err() {
                break;
            }
            // Bounded before use: 1..=the largest sealed message, as the host accepts.
            let Some(len) = usize::try_from(u64::from_be_bytes(len))
                .ok()
                .filter(|l| (1..=MAX_SEALED_MESSAGE_LEN).contains(l))
            else {
                break;
            };
            let Some(payload) = buf.get_mut(FRONT..FRONT + len) else {
                break;
            };
            if tcp.read_exact(payload).await.is_err() {
                break;
            }
            let prefix = infer_envelope_prefix(len);
            let start = FRONT - HEADER_LEN - prefix.len().min(MAX_INFER_PREFIX_LEN);
            buf.get_mut(start + HEADER_LEN..FRONT)
                .context("envelope prefix longer than reserved")?
                .copy_from_slice(&prefix);
            request_id += 1;
            let frame = buf
                .get_mut(start..FRONT + len)
                .context("frame outside the buffer")?;
            sealed_transport::write_frame_in_place(&mut ew, request_id, frame).await?;

            let header = sealed_transport::read_header(&mut er, MAX_FRAME_LEN)
                .await?
                .context("the stand-in enclave closed the connection")?;
            if header.request_id != request_id {
                bail!(
                    "the stand-in answered request {} to request {request_id}",
                    header.request_id
                );
            }
            let body = buf
                .get_mut(..header.body_len)
                .context("the stand-in's answer is longer than the forwarder's buffer")?;
            er.read_exact(body).await?;
            // A sealed answer goes back behind its length; anything else (an error response) as
            // length 0, which the client reports.
            let answer = match infer_envelope_range(body) {
                Some(range) if range.start >= LEN_PREFIX => {
                    let from = range.start - LEN_PREFIX;
                    let out = body
                        .get_mut(from..range.end)
                        .context("answer range outside the frame")?;
                    out[..LEN_PREFIX].copy_from_slice(&(range.len() as u64).to_be_bytes());
                    &*out
                }
                _ => &[0u8; LEN_PREFIX][..],
            };
            if tcp.write_all(answer).await.is_err() {
                break;
            }
        }
    }
}

/// The client's end: one TCP connection to the forwarder and a buffer for answers.
pub(super) struct Client {
    tcp: TcpStream,
    answer: Vec<u8>,
}

impl Client {
    pub(super) async fn connect(addr: &str) -> Result<Client> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to the relay forwarder at {addr}"))?;
        // As reqwest's client and the host's listener do.
        tcp.set_nodelay(true)?;
        Ok(Client {
            tcp,
            answer: vec![0; MAX_SEALED_MESSAGE_LEN],
        })
    }

    /// Sends `message` (from [`message`]) and reads the answer; returns the round trip and the
    /// answer, or `None` if the forwarder reported that the stand-in did not answer with sealed
    /// bytes.
    pub(super) async fn round_trip(&mut self, message: &[u8]) -> Result<(Duration, Option<&[u8]>)> {
        let t = Instant::now();
        self.tcp.write_all(message).await?;
        let mut len = [0u8; LEN_PREFIX];
        self.tcp
            .read_exact(&mut len)
            .await
            .context("the relay forwarder closed the connection")?;
        let len = usize::try_from(u64::from_be_bytes(len))?;
        if len == 0 {
            return Ok((t.elapsed(), None));
        }
        let answer = self
            .answer
            .get_mut(..len)
            .with_context(|| format!("the relay forwarder announced {len} bytes"))?;
        self.tcp.read_exact(answer).await?;
        Ok((t.elapsed(), Some(answer)))
    }
}

/// The client's message for `payload`: its length (8 bytes, big-endian) and the payload.
pub(super) fn message(payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(LEN_PREFIX + payload.len());
    m.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use sealed_transport::Listener;
    use tokio::sync::mpsc;

    use super::super::{Expect, payload, stand_in};
    use super::*;

    /// A stand-in enclave, a forwarder task on it and the stand-in's expectations and reports.
    async fn setup() -> (
        tempfile::TempDir,
        String,
        Arc<Expect>,
        mpsc::UnboundedReceiver<Result<Duration, String>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("enclave.sock");
        let listener = Listener::bind(&Endpoint::Unix(socket.clone())).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let expect = Arc::new(Expect {
            payload: Mutex::new(Arc::new(Vec::new())),
            report: tx,
        });
        tokio::spawn(stand_in(listener, expect.clone()));
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap().to_string();
        let enclave = sealed_transport::connect(&Endpoint::Unix(socket))
            .await
            .unwrap();
        tokio::spawn(forward(tcp, enclave));
        (dir, addr, expect, rx)
    }

    #[tokio::test]
    async fn relays_payloads_through_the_stand_in_and_back() {
        let (_dir, addr, expect, mut reports) = setup().await;
        let mut client = Client::connect(&addr).await.unwrap();
        // Sizes on both sides of the envelope's length encodings, and the largest message.
        for (bytes, tag) in [(1, 1), (300, 2), (70_000, 3), (MAX_SEALED_MESSAGE_LEN, 4)] {
            let p = payload(bytes, tag);
            *expect.payload.lock().unwrap() = p.clone();
            let (_, answer) = client.round_trip(&message(&p)).await.unwrap();
            assert_eq!(answer, Some(p.as_slice()), "{bytes} B");
            assert!(reports.recv().await.unwrap().is_ok(), "{bytes} B");
        }
    }

    #[tokio::test]
    async fn a_corrupted_relay_is_reported_not_answered() {
        let (_dir, addr, expect, mut reports) = setup().await;
        let mut client = Client::connect(&addr).await.unwrap();
        // The stand-in expects other bytes than the client sends: it answers with an error,
        // which the forwarder passes on as length 0.
        *expect.payload.lock().unwrap() = payload(1000, 1);
        let (_, answer) = client
            .round_trip(&message(&payload(1000, 2)))
            .await
            .unwrap();
        assert_eq!(answer, None);
        let report = reports.recv().await.unwrap().unwrap_err();
        assert!(report.contains("differ"), "{report}");
    }

    #[tokio::test]
    async fn a_bad_length_drops_the_client_and_the_forwarder_serves_the_next() {
        let (_dir, addr, expect, mut reports) = setup().await;
        for len in [0u64, MAX_SEALED_MESSAGE_LEN as u64 + 1, u64::MAX] {
            let mut client = Client::connect(&addr).await.unwrap();
            let err = client.round_trip(&len.to_be_bytes()).await.unwrap_err();
            assert!(err.to_string().contains("closed"), "{len}: {err:#}");
        }
        let mut client = Client::connect(&addr).await.unwrap();
        let p = payload(4096, 5);
        *expect.payload.lock().unwrap() = p.clone();
        let (_, answer) = client.round_trip(&message(&p)).await.unwrap();
        assert_eq!(answer, Some(p.as_slice()));
        assert!(reports.recv().await.unwrap().is_ok());
    }

    #[test]
    fn messages_carry_their_length_in_front() {
        assert_eq!(message(&[7, 8, 9]), [0, 0, 0, 0, 0, 0, 0, 3, 7, 8, 9]);
        assert_eq!(message(&[]), [0; LEN_PREFIX]);
    }
}

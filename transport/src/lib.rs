//! Frame I/O for the host↔enclave link. The framing itself (length, limit, request id) is the
//! sans-IO code in `sealed-wire`; this crate only moves those frames over a stream, so that vsock on
//! Nitro and Unix sockets in simulation share every byte of protocol logic.
//!
//! It does not interpret frame bodies. It never opens an AF_VSOCK socket unless an
//! [`Endpoint::Vsock`] is configured explicitly.
//!
//! # Layout
//! - [`Endpoint`]: `unix:/path` or `vsock:CID:PORT`, parsed from configuration.
//! - [`read_frame`] / [`write_frame`]: one frame over any `AsyncRead`/`AsyncWrite`.
//! - [`Listener`] / [`connect`]: bind or connect an endpoint, yielding boxed stream halves.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

use std::io::IoSlice;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll, ready};

use sealed_wire::frame::{self, Frame, FrameError, FrameHeader, HEADER_LEN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Boxed read half of a connection.
pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
/// Boxed write half of a connection.
pub type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid endpoint {0:?}: expected unix:/PATH or vsock:CID:PORT")]
    InvalidEndpoint(String),
}

/// Where the host↔enclave link lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket path (simulation).
    Unix(PathBuf),
    /// A vsock address (Nitro). The enclave listens on `VMADDR_CID_ANY`; the host connects to the
    /// enclave's CID.
    Vsock { cid: u32, port: u32 },
}

impl FromStr for Endpoint {
    type Err = TransportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TransportError::InvalidEndpoint(s.to_string());
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("vsock:") {
            let (cid, port) = rest.split_once(':').ok_or_else(bad)?;
            let cid = if cid == "any" {
                tokio_vsock::VMADDR_CID_ANY
            } else {
                cid.parse().map_err(|_| bad())?
            };
            return Ok(Endpoint::Vsock {
                cid,
                port: port.parse().map_err(|_| bad())?,
            });
        }
        Err(bad())
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
        }
    }
}

/// Reads one frame. Returns `Ok(None)` on a clean end of stream between frames. The announced
/// length is checked against `max` before the body buffer is allocated.
pub async fn read_frame<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    max: u32,
) -> Result<Option<Frame>, TransportError> {
    match read_header(r, max).await? {
        Some(header) => read_body(r, header).await.map(Some),
        None => Ok(None),
    }
}

/// Reads and checks a frame header; `Ok(None)` on a clean end of stream. Lets a server reserve
/// memory for the body (whose length is now known and bounded) before reading it.
pub async fn read_header<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    max: u32,
) -> Result<Option<FrameHeader>, TransportError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let rest = header.get_mut(filled..).ok_or(TransportError::Truncated)?;
        let n = r.read(rest).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(TransportError::Truncated)
            };
        }
        filled += n;
    }
    Ok(Some(frame::decode_header(&header, max)?))
}

/// The first reservation for a frame body, and the floor of every later one.
const FIRST_BODY_RESERVATION: usize = 256 * 1024;
/// Each reservation for a frame body is at most this many times the bytes already received.
const BODY_GROWTH: usize = 8;

/// Reads the body announced by `header`. The buffer grows as bytes arrive rather than being sized
/// up front, so a peer that announces a large frame and stalls holds no large allocation: at any
/// time the buffer is at most `8 × bytes received + 512 KiB`. Growing by ×8 (rather than a `Vec`'s
/// ×2) and reading each stage to its end before reserving the next keeps the regrowth copies under
/// 1/7 of the body (16 MiB: 256 KiB → 2 MiB → 16 MiB, 2.25 MiB copied, against ~16 MiB when
/// doubling from 64 KiB) and the reallocations to two.
pub async fn read_body<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    header: FrameHeader,
) -> Result<Frame, TransportError> {
    let want = header.body_len;
    let mut body = Vec::new();
    while body.len() < want {
        let mut stage = want.min(
            body.len()
                .saturating_mul(BODY_GROWTH)
                .max(FIRST_BODY_RESERVATION),
        );
        // A small tail joins this stage rather than costing a reallocation of its own (a 16 MiB
        // sealed message is 16 MiB plus a 20-byte envelope).
        if want - stage < FIRST_BODY_RESERVATION {
            stage = want;
        }
        let step = stage - body.len();
        body.reserve_exact(step);
        // With the capacity reserved exactly, tokio's `read_to_end` fills it without growing it
        // (it probes for the end with a small stack read once the buffer is full).
        let got = (&mut *r).take(step as u64).read_to_end(&mut body).await?;
        if got != step {
            return Err(TransportError::Truncated);
        }
    }
    Ok(Frame {
        request_id: header.request_id,
        body,
    })
}

/// Writes one frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    request_id: u64,
    body: &[u8],
) -> Result<(), TransportError> {
    let header = frame::encode_header(request_id, body.len())?;
    write_pieces(w, &header, &[], body).await?;
    w.flush().await?;
    Ok(())
}

/// Writes one frame whose body is `head ‖ body` and flushes it, without joining the two into one
/// buffer: a relay writes a small envelope prefix and a large payload it already holds. See
/// [`write_pieces`] for how many writes that takes.
pub async fn write_frame_parts<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    request_id: u64,
    head: &[u8],
    body: &[u8],
) -> Result<(), TransportError> {
    let header = frame::encode_header(request_id, head.len().saturating_add(body.len()))?;
    write_pieces(w, &header, head, body).await?;
    w.flush().await?;
    Ok(())
}

/// Bodies up to this size are copied behind the header on a stream without vectored writes, so
/// that the frame is one write: a sealed answer is hundreds of bytes to tens of KiB.
const JOIN_LIMIT: usize = 64 * 1024;

/// Writes `header ‖ head ‖ body` as one frame (see [`poll_write_parts`] for how many writes).
async fn write_pieces<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    header: &[u8],
    head: &[u8],
    body: &[u8],
) -> std::io::Result<()> {
    let mut written = 0;
    std::future::poll_fn(|cx| poll_write_parts(w, cx, [header, head, body], &mut written)).await
}

/// Writes `parts` (one frame: header, envelope, body) from byte `*written` on, advancing
/// `*written` as the stream takes them; short writes continue where they stopped. A frame written
/// in pieces by separate writes reaches a reader already waiting on the socket as separate
/// wake-ups: the enclave's answers went out as header ‖ envelope and then the sealed bytes, and
/// the host's reader woke, read 30 bytes, went back to sleep and woke again for the rest
/// (`strace`, docs/performance.md round 16). On a stream with vectored writes (Unix sockets) the
/// three pieces go to one `writev(2)`; on one without (tokio-vsock's halves write one slice per
/// call) what is left of the header and head is joined, with the body too when at most
/// [`JOIN_LIMIT`] bytes of it are left. The joined copy may hold a frame's contents (an upload's
/// credentials, say), so it is wiped once written.
fn poll_write_parts<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    cx: &mut Context<'_>,
    parts: [&[u8]; 3],
    written: &mut usize,
) -> Poll<std::io::Result<()>> {
    let total = parts.iter().map(|p| p.len()).sum::<usize>();
    while *written < total {
        let mut rest = parts.map(IoSlice::new);
        let mut rest: &mut [IoSlice<'_>] = &mut rest;
        IoSlice::advance_slices(&mut rest, *written);
        let left = total - *written;
        let n = if w.is_write_vectored() {
            ready!(Pin::new(&mut *w).poll_write_vectored(cx, rest))?
        } else {
            // `rest` ends with the body; what precedes it is the rest of header and head.
            let (body, front) = match rest.split_last() {
                Some((body, front)) => (&**body, front),
                None => (&[][..], &[][..]),
            };
            let front_len = left - body.len();
            if front_len == 0 {
                ready!(Pin::new(&mut *w).poll_write(cx, body))?
            } else {
                let join_body = body.len() <= JOIN_LIMIT;
                let mut joined =
                    Vec::with_capacity(front_len + if join_body { body.len() } else { 0 });
                for piece in front {
                    joined.extend_from_slice(piece);
                }
                if join_body {
                    joined.extend_from_slice(body);
                }
                let polled = Pin::new(&mut *w).poll_write(cx, &joined);
                sealed_wire::wipe::wipe(&mut joined);
                ready!(polled)?
            }
        };
        if n == 0 {
            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        // A writer that claims more than it was given is broken; refuse rather than let
        // `advance_slices` panic on it.
        if n > left {
            return Poll::Ready(Err(std::io::Error::other(
                "writer reported more bytes than it was given",
            )));
        }
        *written += n;
    }
    Poll::Ready(Ok(()))
}

/// One frame to send, `header ‖ head ‖ body`, owned, with how much of it is already on the
/// stream. It lets a thread outside the runtime (an enclave inference worker) put its answer on
/// the connection itself when the stream takes it at once ([`OutFrame::try_write`]), instead of
/// waking a writer task to do it; whatever the stream could not take is finished by the writer
/// task ([`OutFrame::write_rest`]), before any other frame.
pub struct OutFrame {
    header: [u8; HEADER_LEN],
    head: Vec<u8>,
    body: Vec<u8>,
    written: usize,
    flushed: bool,
}

impl std::fmt::Debug for OutFrame {
    // Sizes only: the body may be anything the connection carries.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutFrame")
            .field("len", &self.len())
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl OutFrame {
    /// Frame `request_id` with body `head ‖ body`.
    pub fn new(request_id: u64, head: Vec<u8>, body: Vec<u8>) -> Result<OutFrame, FrameError> {
        let header = frame::encode_header(request_id, head.len().saturating_add(body.len()))?;
        Ok(OutFrame {
            header,
            head,
            body,
            written: 0,
            flushed: false,
        })
    }

    /// Bytes of the whole frame, header included.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.head.len() + self.body.len()
    }

    /// Always false: a frame has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Bytes already written. A frame with some but not all of its bytes written must be finished
    /// before any other frame goes on the same stream.
    pub fn written(&self) -> usize {
        self.written
    }

    fn poll_rest<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        w: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let parts = [&self.header[..], &self.head, &self.body];
        ready!(poll_write_parts(w, cx, parts, &mut self.written))?;
        if !self.flushed {
            ready!(Pin::new(&mut *w).poll_flush(cx))?;
            self.flushed = true;
        }
        Poll::Ready(Ok(()))
    }

    /// Writes as much of the frame as `w` takes now, never waiting: `Ok(true)` once all of it is
    /// written and flushed, `Ok(false)` when the stream would block (finish with
    /// [`OutFrame::write_rest`], which then owes the stream's readiness a real waker). Callable
    /// from any thread; the caller must hold the stream exclusively.
    pub fn try_write<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        w: &mut W,
    ) -> std::io::Result<bool> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.poll_rest(w, &mut cx) {
            Poll::Ready(Ok(())) => Ok(true),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Ok(false),
        }
    }

    /// Writes what is left of the frame and flushes it.
    pub async fn write_rest<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        w: &mut W,
    ) -> std::io::Result<()> {
        std::future::poll_fn(|cx| self.poll_rest(w, cx)).await
    }
}

/// Writes one frame that the caller built in one buffer, `frame` = room for the header (its first
/// [`HEADER_LEN`] bytes, overwritten here) ‖ body, and flushes it: a relay that assembled the body
/// behind a header-sized gap sends the whole frame in one write, without copying the body.
pub async fn write_frame_in_place<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    request_id: u64,
    frame: &mut [u8],
) -> Result<(), TransportError> {
    let short = || {
        TransportError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "frame buffer shorter than a frame header",
        ))
    };
    let body_len = frame.len().checked_sub(HEADER_LEN).ok_or_else(short)?;
    let header = frame::encode_header(request_id, body_len)?;
    frame
        .get_mut(..HEADER_LEN)
        .ok_or_else(short)?
        .copy_from_slice(&header);
    w.write_all(frame).await?;
    w.flush().await?;
    Ok(())
}

/// Socket buffer size asked for on Unix connections (each direction).
const UNIX_SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Raises a Unix socket's buffers from the default (`net.core.wmem_default`, 208 KiB) so that a
/// multi-megabyte frame crosses in a few writes instead of one wakeup of each side per ~200 KiB
/// (unix(7): a stream socket's sender blocks on its own SO_SNDBUF). The kernel caps the value at
/// `net.core.wmem_max` / `rmem_max` (socket(7)); a refusal leaves the default, which only costs
/// speed. vsock has its own buffer setting and is left as it is.
fn tune_unix(s: &tokio::net::UnixStream) {
    let sock = socket2::SockRef::from(s);
    let _ = sock.set_send_buffer_size(UNIX_SOCKET_BUFFER);
    let _ = sock.set_recv_buffer_size(UNIX_SOCKET_BUFFER);
}

/// A bound listener on either transport.
pub enum Listener {
    Unix(tokio::net::UnixListener),
    Vsock(tokio_vsock::VsockListener),
}

impl Listener {
    /// Binds an endpoint. A stale Unix socket file at the path is removed first.
    pub fn bind(endpoint: &Endpoint) -> Result<Self, TransportError> {
        match endpoint {
            Endpoint::Unix(path) => {
                if path.exists() {
                    std::fs::remove_file(path)?;
                }
                Ok(Listener::Unix(tokio::net::UnixListener::bind(path)?))
            }
            Endpoint::Vsock { cid, port } => Ok(Listener::Vsock(tokio_vsock::VsockListener::bind(
                tokio_vsock::VsockAddr::new(*cid, *port),
            )?)),
        }
    }

    /// Accepts one connection, split into halves.
    pub async fn accept(&self) -> Result<(BoxRead, BoxWrite), TransportError> {
        match self {
            Listener::Unix(l) => {
                let (s, _) = l.accept().await?;
                tune_unix(&s);
                let (r, w) = s.into_split();
                Ok((Box::pin(r), Box::pin(w)))
            }
            Listener::Vsock(l) => {
                let (s, _) = l.accept().await?;
                let (r, w) = s.into_split();
                Ok((Box::pin(r), Box::pin(w)))
            }
        }
    }
}

/// Connects to an endpoint, split into halves.
pub async fn connect(endpoint: &Endpoint) -> Result<(BoxRead, BoxWrite), TransportError> {
    match endpoint {
        Endpoint::Unix(path) => {
            let s = tokio::net::UnixStream::connect(path).await?;
            tune_unix(&s);
            let (r, w) = s.into_split();
            Ok((Box::pin(r), Box::pin(w)))
        }
        Endpoint::Vsock { cid, port } => {
            let s =
                tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, *port)).await?;
            let (r, w) = s.into_split();
            Ok((Box::pin(r), Box::pin(w)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_over_a_unix_socket_pair() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (_, mut aw) = a.into_split();
        let (mut br, _) = b.into_split();
        write_frame(&mut aw, 7, b"hello").await.unwrap();
        write_frame(&mut aw, 8, b"").await.unwrap();
        drop(aw);
        let f = read_frame(&mut br, 1024).await.unwrap().unwrap();
        assert_eq!((f.request_id, f.body.as_slice()), (7, &b"hello"[..]));
        let f = read_frame(&mut br, 1024).await.unwrap().unwrap();
        assert_eq!((f.request_id, f.body.len()), (8, 0));
        assert!(read_frame(&mut br, 1024).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_frame_written_in_parts_reads_back_as_one_body() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (_, mut aw) = a.into_split();
        let (mut br, _) = b.into_split();
        write_frame_parts(&mut aw, 9, b"head-", b"and body")
            .await
            .unwrap();
        write_frame_parts(&mut aw, 10, b"", b"").await.unwrap();
        drop(aw);
        let f = read_frame(&mut br, 1024).await.unwrap().unwrap();
        assert_eq!(
            (f.request_id, f.body.as_slice()),
            (9, &b"head-and body"[..])
        );
        let f = read_frame(&mut br, 1024).await.unwrap().unwrap();
        assert_eq!((f.request_id, f.body.len()), (10, 0));
        assert!(read_frame(&mut br, 1024).await.unwrap().is_none());
    }

    /// A writer that records each call and takes at most `max` bytes per call, vectored or not,
    /// and `room` bytes in all: then it would block (`Pending`) until `room` is raised.
    struct Recording {
        out: Vec<u8>,
        calls: usize,
        max: usize,
        room: usize,
        vectored: bool,
        overclaim: bool,
    }

    impl Recording {
        fn new(max: usize, vectored: bool) -> Recording {
            Recording {
                out: Vec::new(),
                calls: 0,
                max,
                room: usize::MAX,
                vectored,
                overclaim: false,
            }
        }
    }

    impl AsyncWrite for Recording {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            if self.room == 0 {
                return std::task::Poll::Pending;
            }
            self.calls += 1;
            let mut room = self.max.min(self.room);
            let mut taken = 0;
            let bufs = if self.vectored {
                bufs
            } else {
                // What tokio's default does: the first non-empty slice only.
                let first = bufs.iter().position(|b| !b.is_empty()).unwrap_or(0);
                &bufs[first..bufs.len().min(first + 1)]
            };
            for b in bufs {
                let n = b.len().min(room);
                self.out.extend_from_slice(&b[..n]);
                room -= n;
                taken += n;
            }
            self.room -= taken;
            if self.overclaim {
                taken += 1;
            }
            std::task::Poll::Ready(Ok(taken))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn expected_frame(id: u64, body: &[u8]) -> Vec<u8> {
        let mut v = frame::encode_header(id, body.len()).unwrap().to_vec();
        v.extend_from_slice(body);
        v
    }

    /// How many write calls `head ‖ body` took as frame `id` on a fresh recording writer (the
    /// bytes are checked against the frame they must be).
    async fn written_in_parts(vectored: bool, id: u64, head: &[u8], body: &[u8]) -> usize {
        let mut w = Recording::new(usize::MAX, vectored);
        write_frame_parts(&mut w, id, head, body).await.unwrap();
        assert_eq!(w.out, expected_frame(id, &[head, body].concat()));
        w.calls
    }

    #[tokio::test]
    async fn a_small_frame_is_one_write_with_or_without_vectored_writes() {
        for vectored in [true, false] {
            assert_eq!(
                written_in_parts(vectored, 3, b"head", &[9u8; 1000]).await,
                1
            );
            let mut w = Recording::new(usize::MAX, vectored);
            write_frame(&mut w, 4, b"whole").await.unwrap();
            assert_eq!((w.calls, w.out), (1, expected_frame(4, b"whole")));
        }
        // A large body is not copied when the stream has no vectored writes: header and head,
        // then the body.
        let big = vec![5u8; JOIN_LIMIT + 1];
        assert_eq!(written_in_parts(false, 5, b"h", &big).await, 2);
        assert_eq!(written_in_parts(true, 6, b"h", &big).await, 1);
    }

    #[tokio::test]
    async fn short_and_unvectored_writes_still_deliver_every_byte() {
        for vectored in [true, false] {
            for max in [1, 5, 13, 64] {
                let mut w = Recording::new(max, vectored);
                write_frame_parts(&mut w, 5, b"", b"only a body")
                    .await
                    .unwrap();
                write_frame_parts(&mut w, 6, b"prefix:", b"").await.unwrap();
                write_frame_parts(&mut w, 7, b"", b"").await.unwrap();
                let mut want = expected_frame(5, b"only a body");
                want.extend(expected_frame(6, b"prefix:"));
                want.extend(expected_frame(7, b""));
                assert_eq!(w.out, want, "max {max}, vectored {vectored}");
            }
        }
    }

    #[tokio::test]
    async fn a_writer_that_overclaims_is_an_error_not_a_panic() {
        let mut w = Recording::new(4, true);
        w.overclaim = true;
        assert!(matches!(
            write_frame_parts(&mut w, 1, b"ab", b"cd").await,
            Err(TransportError::Io(_))
        ));
    }

    #[tokio::test]
    async fn an_out_frame_the_stream_cannot_take_at_once_is_finished_where_it_stopped() {
        let body: Vec<u8> = (0..JOIN_LIMIT as u32 + 300).map(|i| i as u8).collect();
        for vectored in [true, false] {
            for room in [0, 1, 7, HEADER_LEN + 4, 5000, usize::MAX] {
                let mut w = Recording::new(usize::MAX, vectored);
                w.room = room;
                let mut f = OutFrame::new(11, b"head".to_vec(), body.clone()).unwrap();
                assert_eq!(f.len(), HEADER_LEN + 4 + body.len());
                let done = f.try_write(&mut w).unwrap();
                assert_eq!(done, room == usize::MAX, "room {room}");
                assert_eq!(f.written(), room.min(f.len()));
                assert_eq!(w.out.len(), f.written());
                w.room = usize::MAX;
                f.write_rest(&mut w).await.unwrap();
                assert_eq!(w.out, expected_frame(11, &[&b"head"[..], &body].concat()));
                // Finished: nothing more is written.
                assert!(f.try_write(&mut w).unwrap());
                assert_eq!(w.out.len(), f.len());
            }
        }
    }

    #[test]
    fn an_out_frame_goes_on_a_socket_from_a_thread_outside_the_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (mut aw, mut br) = rt.block_on(async {
            let (a, b) = tokio::net::UnixStream::pair().unwrap();
            let (_, aw) = a.into_split();
            let (br, _) = b.into_split();
            (aw, br)
        });
        // A plain thread, as an inference worker is: one small frame goes at once; then frames
        // until the socket is full, the last of which is left part-written.
        let (mut aw, unfinished, last) = std::thread::spawn(move || {
            let mut small = OutFrame::new(1, b"h".to_vec(), b"answer".to_vec()).unwrap();
            assert!(small.try_write(&mut aw).unwrap());
            let mut id = 2;
            loop {
                let mut f = OutFrame::new(id, Vec::new(), vec![id as u8; 100_000]).unwrap();
                if !f.try_write(&mut aw).unwrap() {
                    return (aw, f, id);
                }
                id += 1;
            }
        })
        .join()
        .unwrap();
        let mut sent = Vec::new();
        rt.block_on(async {
            let writer = tokio::spawn(async move {
                let mut unfinished = unfinished;
                unfinished.write_rest(&mut aw).await.unwrap();
                drop(aw);
            });
            let f = read_frame(&mut br, 1 << 20).await.unwrap().unwrap();
            assert_eq!((f.request_id, f.body.as_slice()), (1, &b"hanswer"[..]));
            while let Some(f) = read_frame(&mut br, 1 << 20).await.unwrap() {
                assert_eq!(f.body, vec![f.request_id as u8; 100_000]);
                sent.push(f.request_id);
            }
            writer.await.unwrap();
        });
        assert_eq!(sent, (2..=last).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn large_bodies_read_back_whole_across_growth_stages() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (_, mut aw) = a.into_split();
        let (mut br, _) = b.into_split();
        // Sizes around the stage boundaries (256 KiB, 2 MiB) and a tail that joins a stage.
        let sizes = [
            FIRST_BODY_RESERVATION - 1,
            FIRST_BODY_RESERVATION + 1,
            FIRST_BODY_RESERVATION * 2,
            FIRST_BODY_RESERVATION * BODY_GROWTH + 20,
            3 * 1024 * 1024 + 7,
        ];
        let bodies: Vec<Vec<u8>> = sizes
            .iter()
            .map(|&n| (0..n).map(|i| (i % 251) as u8).collect())
            .collect();
        let writer = {
            let bodies = bodies.clone();
            tokio::spawn(async move {
                for (id, body) in bodies.iter().enumerate() {
                    write_frame(&mut aw, id as u64, body).await.unwrap();
                }
            })
        };
        for (id, body) in bodies.iter().enumerate() {
            let f = read_frame(&mut br, u32::MAX).await.unwrap().unwrap();
            assert_eq!(f.request_id, id as u64);
            assert!(f.body == *body, "body {id} of {} bytes differs", body.len());
        }
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_body_cut_off_between_growth_stages_is_truncated() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (_, mut aw) = a.into_split();
        let (mut br, _) = b.into_split();
        let announced = FIRST_BODY_RESERVATION * 4;
        let header = frame::encode_header(1, announced).unwrap();
        let sent = vec![7u8; FIRST_BODY_RESERVATION + 5];
        let writer = tokio::spawn(async move {
            aw.write_all(&header).await.unwrap();
            aw.write_all(&sent).await.unwrap();
        });
        assert!(matches!(
            read_frame(&mut br, u32::MAX).await,
            Err(TransportError::Truncated)
        ));
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_frame_written_in_place_reads_back() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (_, mut aw) = a.into_split();
        let (mut br, _) = b.into_split();
        let mut buf = vec![0xee; HEADER_LEN];
        buf.extend_from_slice(b"in place");
        write_frame_in_place(&mut aw, 11, &mut buf).await.unwrap();
        let mut empty = [0u8; HEADER_LEN];
        write_frame_in_place(&mut aw, 12, &mut empty).await.unwrap();
        assert!(
            write_frame_in_place(&mut aw, 13, &mut [0u8; HEADER_LEN - 1])
                .await
                .is_err()
        );
        drop(aw);
        let f = read_frame(&mut br, 1024).await.unwrap().unwrap();
        assert_eq!((f.request_id, f.body.as_slice()), (11, &b"in place"[..]));
        let f = read_frame(&mut br, 1024).await.unwrap().unwrap();
        assert_eq!((f.request_id, f.body.len()), (12, 0));
        assert!(read_frame(&mut br, 1024).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn rejects_oversized_frame_before_reading_its_body() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (_, mut aw) = a.into_split();
        let (mut br, _) = b.into_split();
        write_frame(&mut aw, 1, &[0u8; 100]).await.unwrap();
        let err = read_frame(&mut br, 50).await.unwrap_err();
        assert!(matches!(
            err,
            TransportError::Frame(FrameError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn reports_truncated_frame() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (_, mut aw) = a.into_split();
        let (mut br, _) = b.into_split();
        let header = frame::encode_header(1, 10).unwrap();
        aw.write_all(&header).await.unwrap();
        aw.write_all(b"abc").await.unwrap();
        drop(aw);
        assert!(matches!(
            read_frame(&mut br, 1024).await,
            Err(TransportError::Truncated)
        ));
    }

    #[test]
    fn parses_endpoints() {
        assert_eq!(
            "unix:/tmp/e.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/tmp/e.sock".into())
        );
        assert_eq!(
            "vsock:16:5000".parse::<Endpoint>().unwrap(),
            Endpoint::Vsock {
                cid: 16,
                port: 5000
            }
        );
        assert!("tcp:1.2.3.4:5".parse::<Endpoint>().is_err());
        assert!("vsock:x:1".parse::<Endpoint>().is_err());
    }
}

//! The floor of the sealed path's added time per request (issue 6): what a digits-sized request
//! costs at the least beyond bare inference.
//!
//! Timed in-process, each step on its own, median µs over N runs:
//! - HPKE: seal the request (client), open it (enclave), seal the response (enclave), open the
//!   response (client) — `sealed-crypto` exactly as the stack calls it, on the CBOR of one
//!   f32 [1, 64] `InferRequest` and a digits-shaped `InferResponse`;
//! - frame round trip: one small frame each way over a Unix socket pair with `sealed-transport`
//!   (the host↔enclave hop, both directions);
//! - HTTP round trip: one POST with a small body and its small answer over a 127.0.0.1 HTTP/1.1
//!   keep-alive connection (reqwest client; a minimal HTTP/1.1 responder on a tokio TCP socket).
//!
//! `floor_us` is their sum: the sealed path cannot add less than that per request. The same
//! floor is also measured for a larger request, one f32 row of [`ROW_LEN`] values each way (the
//! `large` model's shapes, 10 kB), under `"larger"`: a model with inputs of that size is judged
//! against it (`sealed-bench targets`), since more bytes mean more AES-GCM and copying. Measurements
//! print nothing; the caller prints the JSON.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use getrandom::rand_core::UnwrapErr;
use sealed_crypto::{
    PreparedRequest, REQUEST_OVERHEAD, REQUEST_PREFIX_LEN, ServerKey, seal_request,
};
use sealed_wire::{InferRequest, InferResponse, NamedTensor, Tensor};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Median and 99th percentile, µs, of `samples` (sorted here).
fn stats(samples: &mut [Duration]) -> Value {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    json!({ "median_us": at(0.5), "p99_us": at(0.99), "runs": samples.len() })
}

fn median_us(v: &Value) -> f64 {
    v.get("median_us").and_then(Value::as_f64).unwrap_or(0.0)
}

/// Values of the larger floor's request and response row (f32 [1, 2560]: `large`'s shapes).
pub const ROW_LEN: usize = 2560;

/// An `InferRequest` of one f32 [1, `len`] input, CBOR-encoded as the client encodes it.
fn request_of(model_id: &str, len: usize) -> Result<Vec<u8>> {
    let input: Vec<f32> = (0..len).map(|i| (i % 17) as f32).collect();
    Ok(InferRequest {
        request_id: [7; 16],
        sent_at_ms: 1_700_000_000_000,
        model_id: model_id.into(),
        inputs: vec![NamedTensor {
            name: "input".into(),
            tensor: Tensor::from_f32(vec![1, len as u64], &input)?,
        }],
    }
    .encode()?)
}

/// A digits-sized request and response, CBOR-encoded as the client and enclave encode them.
fn digits_messages() -> Result<(Vec<u8>, Vec<u8>)> {
    let request = request_of("digits", 64)?;
    let response = InferResponse::Ok {
        outputs: vec![
            NamedTensor {
                name: "probabilities".into(),
                tensor: Tensor::from_f32(vec![1, 10], &[0.1; 10])?,
            },
            NamedTensor {
                name: "label".into(),
                tensor: Tensor::from_i64(vec![1], &[3])?,
            },
        ],
    }
    .encode()?;
    Ok((request, response))
}

/// One f32 [1, [`ROW_LEN`]] row each way, as for `large`.
fn row_messages() -> Result<(Vec<u8>, Vec<u8>)> {
    let request = request_of("large", ROW_LEN)?;
    let output: Vec<f32> = (0..ROW_LEN).map(|i| (i % 13) as f32 * 0.5).collect();
    let response = InferResponse::Ok {
        outputs: vec![NamedTensor {
            name: "output".into(),
            tensor: Tensor::from_f32(vec![1, ROW_LEN as u64], &output)?,
        }],
    }
    .encode()?;
    Ok((request, response))
}

/// The four HPKE steps of one request, each timed on its own.
fn hpke(runs: usize, request: &[u8], response: &[u8]) -> Result<Value> {
    let mut rng = UnwrapErr(getrandom::SysRng);
    let key = ServerKey::generate(1, &mut rng);
    let config = key.config();
    let mut times: [Vec<Duration>; 4] = Default::default();
    // The client SDK's own order since round 16: the setup made while the previous request is
    // on the wire, then the seal with it. Shown beside the floor, not in it (the floor counts a
    // whole seal, setup included, whenever it happens).
    let mut ahead: [Vec<Duration>; 2] = Default::default();
    for _ in 0..runs {
        let t = Instant::now();
        let (sealed, opener) = seal_request(&config, request, &mut rng)?;
        let seal_request_t = t.elapsed();

        let t = Instant::now();
        let (plaintext, sealer) = key
            .open_request(&sealed)
            .map_err(|_| anyhow::anyhow!("open_request failed"))?;
        let open_request_t = t.elapsed();
        if plaintext.as_slice() != request {
            bail!("opened request differs");
        }

        let t = Instant::now();
        let sealed_response = sealer.seal(response, &mut rng)?;
        let seal_response_t = t.elapsed();

        let t = Instant::now();
        let opened = opener
            .open(&sealed_response)
            .map_err(|_| anyhow::anyhow!("open response failed"))?;
        let open_response_t = t.elapsed();
        if opened.as_slice() != response {
            bail!("opened response differs");
        }
        for (v, d) in times.iter_mut().zip([
            seal_request_t,
            open_request_t,
            seal_response_t,
            open_response_t,
        ]) {
            v.push(d);
        }

        let t = Instant::now();
        let prepared = PreparedRequest::new(&config, &mut rng)?;
        let setup_t = t.elapsed();
        // Timed with the buffer it fills, as `seal_request` above makes its own.
        let t = Instant::now();
        let mut buf = Vec::with_capacity(REQUEST_OVERHEAD + request.len());
        buf.resize(REQUEST_PREFIX_LEN, 0);
        buf.extend_from_slice(request);
        let opener_ahead = prepared.seal_in_place(&mut buf)?;
        let sealed_ahead_t = t.elapsed();
        drop(opener_ahead);
        ahead[0].push(setup_t);
        ahead[1].push(sealed_ahead_t);
    }
    let [setup, sealed_ahead] = &mut ahead;
    let (setup, sealed_ahead) = (stats(setup), stats(sealed_ahead));
    let [a, b, c, d] = &mut times;
    let (a, b, c, d) = (stats(a), stats(b), stats(c), stats(d));
    let total = median_us(&a) + median_us(&b) + median_us(&c) + median_us(&d);
    Ok(json!({
        "request_bytes": request.len(),
        "response_bytes": response.len(),
        "seal_request": a,
        "open_request": b,
        "seal_response": c,
        "open_response": d,
        "total_median_us": total,
        "setup_ahead": setup,
        "seal_request_set_up_ahead": sealed_ahead,
    }))
}

/// A frame of `body_len` bytes to a peer that answers it with the same, over a Unix socket pair
/// (the host↔enclave hop).
async fn frame_round_trip(runs: usize, body_len: usize) -> Result<Value> {
    let (a, b) = tokio::net::UnixStream::pair()?;
    let (mut ar, mut aw) = a.into_split();
    let (mut br, mut bw) = b.into_split();
    let echo = tokio::spawn(async move {
        while let Ok(Some(frame)) = sealed_transport::read_frame(&mut br, 1 << 20).await {
            if sealed_transport::write_frame(&mut bw, frame.request_id, &frame.body)
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let body = vec![0x5a; body_len];
    let mut samples = Vec::with_capacity(runs);
    for id in 0..runs as u64 {
        let t = Instant::now();
        sealed_transport::write_frame(&mut aw, id, &body).await?;
        let frame = sealed_transport::read_frame(&mut ar, 1 << 20)
            .await?
            .context("peer closed")?;
        samples.push(t.elapsed());
        if frame.request_id != id || frame.body != body {
            bail!("frame echo differs");
        }
    }
    drop(aw);
    echo.abort();
    let mut v = stats(&mut samples);
    v["frame_body_bytes"] = json!(body.len());
    Ok(v)
}

/// A minimal HTTP/1.1 keep-alive responder: reads a request head and its Content-Length body,
/// answers 200 with a fixed small body. Enough for a round-trip floor; not a server.
async fn http_responder(listener: tokio::net::TcpListener, answer: Vec<u8>) {
    while let Ok((mut socket, _)) = listener.accept().await {
        let answer = answer.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(8192);
            let mut chunk = [0u8; 8192];
            loop {
                // Head.
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let body_len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + body_len {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                buf.drain(..head_end + body_len);
                let mut out = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
                    answer.len()
                )
                .into_bytes();
                out.extend_from_slice(&answer);
                if socket.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// One POST of `body_len` bytes and its answer of `answer_len` over a 127.0.0.1 keep-alive
/// connection.
async fn http_round_trip(runs: usize, body_len: usize, answer_len: usize) -> Result<Value> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let answer = vec![0xa5; answer_len];
    let server = tokio::spawn(http_responder(listener, answer.clone()));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()?;
    let url = format!("http://{addr}/v1/infer");
    let body = vec![0x5a; body_len];
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let response = client
            .post(&url)
            .header("content-type", "application/octet-stream")
            .body(body.clone())
            .send()
            .await?;
        let got = response.bytes().await?;
        samples.push(t.elapsed());
        if got.as_ref() != answer.as_slice() {
            bail!("HTTP answer differs");
        }
    }
    server.abort();
    let mut v = stats(&mut samples);
    v["request_body_bytes"] = json!(body.len());
    Ok(v)
}

/// The sealed request and response lengths of `request` and `response` (HPKE's envelope and tag).
fn sealed_lens(request: &[u8], response: &[u8]) -> Result<(usize, usize)> {
    let mut rng = UnwrapErr(getrandom::SysRng);
    let key = ServerKey::generate(1, &mut rng);
    let (sealed, _) = seal_request(&key.config(), request, &mut rng)?;
    let (_, sealer) = key
        .open_request(&sealed)
        .map_err(|_| anyhow::anyhow!("open_request failed"))?;
    Ok((sealed.len(), sealer.seal(response, &mut rng)?.len()))
}

/// One floor: the HPKE steps on `messages`, a frame round trip of `frame_len` bytes each way, an
/// HTTP round trip of `http` (request, answer) bytes.
fn floor_of(
    runtime: &tokio::runtime::Runtime,
    (warmup, runs): (usize, usize),
    (request, response): &(Vec<u8>, Vec<u8>),
    frame_len: usize,
    (body_len, answer_len): (usize, usize),
) -> Result<Value> {
    let _ = hpke(warmup, request, response)?;
    let hpke = hpke(runs, request, response)?;
    let (frame, http) = runtime.block_on(async {
        let _ = frame_round_trip(warmup, frame_len).await?;
        let frame = frame_round_trip(runs, frame_len).await?;
        let _ = http_round_trip(warmup, body_len, answer_len).await?;
        let http = http_round_trip(runs, body_len, answer_len).await?;
        Ok::<_, anyhow::Error>((frame, http))
    })?;
    let hpke_us = hpke
        .get("total_median_us")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    // Two hops host↔enclave (request and answer) are one frame round trip.
    let floor = hpke_us + median_us(&frame) + median_us(&http);
    Ok(json!({
        "hpke": hpke,
        "frame_round_trip": frame,
        "http_round_trip": http,
        "floor_us": floor,
    }))
}

/// Times the floor components (see the module docs). `quick` runs fewer iterations.
pub fn measure(quick: bool) -> Result<Value> {
    let counts = if quick { (20, 200) } else { (200, 2000) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The digits floor with the small fixed bodies it has always had (a sealed digits request is
    // ~430 bytes, its answer ~200).
    let mut floor = floor_of(&runtime, counts, &digits_messages()?, 400, (400, 200))?;
    floor["what"] = json!(
        "least added time per sealed digits request: 4 HPKE steps + one Unix-socket frame round trip + one 127.0.0.1 HTTP/1.1 keep-alive round trip (medians)"
    );
    // The same for one f32 row each way, with bodies of the sealed messages' own lengths.
    let row = row_messages()?;
    let (sealed_request, sealed_response) = sealed_lens(&row.0, &row.1)?;
    let mut larger = floor_of(
        &runtime,
        counts,
        &row,
        sealed_request.max(sealed_response),
        (sealed_request, sealed_response),
    )?;
    larger["what"] = json!(format!(
        "the same for one f32 [1, {ROW_LEN}] input and output (sealed request {sealed_request} B, answer {sealed_response} B)"
    ));
    floor["larger"] = json!([larger]);
    Ok(floor)
}

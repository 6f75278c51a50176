//! "The host learns nothing" (docs/threat-model.md H1, V1, E3, L1): per-run random sentinels go
//! into a client's inputs and into a sealed model; the test then searches everything the host
//! could hold or emit — its logs at `debug` (and the enclave's, which leave through the host), its
//! `/metrics`, both directions of the host↔enclave link (recorded by a relay this test puts
//! between them), and the host process's memory through `/proc/PID/mem` — for the sentinels in
//! raw, hex and base64 form.
//!
//! Positive controls keep the test honest: the same memory scanner must find a sentinel planted in
//! a process this test starts, the relay recording must hold the frames the run must have caused
//! (sealed upload, attestation, one `Infer` each way per request), the logs must hold `DEBUG`
//! lines, and the sealed inferences must give the expected label for a real digit next to the
//! sentinel row.

mod common;

use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::bin_dir;
use sealed_client::{Client, Policy, npy};
use sealed_sim::assets::Digits;
use sealed_sim::stack::{Paths, SimAws, Stack, StackOptions};
use sealed_wire::frame::FrameDecoder;
use sealed_wire::limits::MAX_FRAME_LEN;
use sealed_wire::{EnclaveRequest, EnclaveResponse, NamedTensor, Tensor};
use sha2::{Digest, Sha384};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Sealed inferences the run makes (each carries the input sentinel).
const INFERENCES: usize = 6;
/// Digits model input width (8×8 pixels).
const PIXELS: usize = 64;

// ---------------------------------------------------------------------------------------------
// Sentinels and the forms they are searched in.

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).unwrap();
    b
}

/// 32 random bytes that are also 8 finite little-endian f32 values (bit 30 of each word cleared:
/// the exponent stays below 255, so no NaN/Inf; |x| < 2), so they travel as tensor data as is.
fn input_sentinel() -> [u8; 32] {
    let mut s = random::<32>();
    for word in s.chunks_mut(4) {
        word[3] &= 0xbf;
    }
    s
}

/// 32 random ASCII alphanumerics: an ONNX `doc_string` is a protobuf `string`, which decoders
/// require to be UTF-8.
fn model_sentinel() -> [u8; 32] {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    random::<32>().map(|b| ALPHABET[usize::from(b) % ALPHABET.len()])
}

/// RFC 4648 §4 (standard) or §5 (URL-safe) base64 without padding.
fn base64(bytes: &[u8], url_safe: bool) -> Vec<u8> {
    let alphabet: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = Vec::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize]);
        }
    }
    out
}

/// The byte strings that reveal `sentinel`: raw, lower/upper hex, and standard and URL-safe
/// base64 at each of the three alignments it can have inside a longer encoded buffer (only the
/// characters that depend on the sentinel's bits alone).
fn forms(sentinel: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        ("raw".to_string(), sentinel.to_vec()),
        ("hex".to_string(), hex::encode(sentinel).into_bytes()),
        ("HEX".to_string(), hex::encode_upper(sentinel).into_bytes()),
    ];
    for url_safe in [false, true] {
        for shift in 0..3usize {
            let mut padded = vec![0u8; shift];
            padded.extend_from_slice(sentinel);
            let encoded = base64(&padded, url_safe);
            // Characters made of sentinel bits only: from ceil(8·shift/6) to
            // floor(8·(shift+len)/6) exclusive.
            let first = (8 * shift).div_ceil(6);
            let end = 8 * (shift + sentinel.len()) / 6;
            let name = format!("base64{}+{shift}", if url_safe { "url" } else { "" });
            out.push((name, encoded[first..end].to_vec()));
        }
    }
    out
}

struct Needle {
    what: &'static str,
    forms: Vec<(String, Vec<u8>)>,
}

impl Needle {
    fn new(what: &'static str, sentinel: &[u8]) -> Needle {
        Needle {
            what,
            forms: forms(sentinel),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Anchor width of the sampled search.
const ANCHOR: usize = 8;

/// A multi-pattern search fast enough for hundreds of MiB in an unoptimised test build: every
/// 8-byte substring of every form is indexed; the haystack is probed only every `stride` bytes,
/// where `stride` = shortest form − 7, so any occurrence covers at least one probe.
struct Index<'a> {
    forms: Vec<(&'static str, &'a str, &'a [u8])>,
    anchors: std::collections::HashMap<u64, Vec<(usize, usize)>>,
    stride: usize,
    longest: usize,
}

impl<'a> Index<'a> {
    fn new(needles: &'a [Needle]) -> Index<'a> {
        let forms: Vec<_> = needles
            .iter()
            .flat_map(|n| {
                n.forms
                    .iter()
                    .map(|(f, b)| (n.what, f.as_str(), b.as_slice()))
            })
            .collect();
        let shortest = forms.iter().map(|f| f.2.len()).min().unwrap();
        assert!(shortest >= ANCHOR);
        let mut anchors = std::collections::HashMap::<u64, Vec<(usize, usize)>>::new();
        for (i, (_, _, bytes)) in forms.iter().enumerate() {
            for off in 0..=bytes.len() - ANCHOR {
                anchors
                    .entry(anchor(&bytes[off..]))
                    .or_default()
                    .push((i, off));
            }
        }
        Index {
            longest: forms.iter().map(|f| f.2.len()).max().unwrap(),
            forms,
            anchors,
            stride: shortest - ANCHOR + 1,
        }
    }

    /// Every (sentinel, form) found in `hay`, as text without the sentinel itself.
    fn hits(&self, hay: &[u8]) -> Vec<String> {
        let mut found = std::collections::BTreeSet::new();
        let mut i = 0;
        while i + ANCHOR <= hay.len() {
            if let Some(candidates) = self.anchors.get(&anchor(&hay[i..])) {
                for &(form, off) in candidates {
                    let (what, name, bytes) = self.forms[form];
                    if let Some(start) = i.checked_sub(off)
                        && hay[start..].starts_with(bytes)
                    {
                        found.insert(format!("{what} sentinel ({name}) at offset {start}"));
                    }
                }
            }
            i += self.stride;
        }
        found.into_iter().collect()
    }
}

fn anchor(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..ANCHOR].try_into().unwrap())
}

fn hits(hay: &[u8], needles: &[Needle]) -> Vec<String> {
    Index::new(needles).hits(hay)
}

// ---------------------------------------------------------------------------------------------
// Process memory scanner.

struct MemScan {
    regions: usize,
    bytes: u64,
    /// Readable mappings that could not be read (EIO on special mappings such as [vvar], or
    /// EPERM), with the reason.
    skipped: Vec<String>,
    hits: Vec<String>,
}

/// Reads every readable mapping of `pid` through `/proc/PID/mem` and searches it. Err if the
/// process's memory cannot be opened at all (no ptrace access).
fn scan_memory(pid: u32, needles: &[Needle]) -> std::io::Result<MemScan> {
    const CHUNK: usize = 1 << 20;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem"))?;
    let index = Index::new(needles);
    let overlap = index.longest - 1;
    let mut scan = MemScan {
        regions: 0,
        bytes: 0,
        skipped: Vec::new(),
        hits: Vec::new(),
    };
    let mut buf = vec![0u8; CHUNK + overlap];
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with('r') {
            continue;
        }
        let name = line.split_whitespace().nth(5).unwrap_or("[anon]");
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        scan.regions += 1;
        // `carry` bytes of the previous chunk stay at the front so a match across chunks is seen.
        let mut carry = 0usize;
        let mut at = start;
        while at < end {
            let want = CHUNK.min((end - at) as usize);
            match mem.read_at(&mut buf[carry..carry + want], at) {
                Ok(0) => break,
                Ok(n) => {
                    let window = &buf[..carry + n];
                    for h in index.hits(window) {
                        scan.hits
                            .push(format!("{h} in {name} {range} near {at:#x}"));
                    }
                    scan.bytes += n as u64;
                    at += n as u64;
                    let keep = overlap.min(carry + n);
                    buf.copy_within(carry + n - keep..carry + n, 0);
                    carry = keep;
                }
                Err(e) => {
                    scan.skipped.push(format!("{name} {range}: {e}"));
                    break;
                }
            }
        }
    }
    Ok(scan)
}

// ---------------------------------------------------------------------------------------------
// Recording relay between the host and the enclave.

#[derive(Default)]
struct Recording {
    /// Host → enclave bytes, one entry per connection.
    to_enclave: Vec<Arc<Mutex<Vec<u8>>>>,
    /// Enclave → host bytes, one entry per connection.
    to_host: Vec<Arc<Mutex<Vec<u8>>>>,
}

async fn pump(
    mut from: tokio::net::unix::OwnedReadHalf,
    mut to: tokio::net::unix::OwnedWriteHalf,
    log: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        log.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Accepts the host's connections on `listen` and forwards each to `enclave`, recording both ways.
fn start_relay(listen: &Path, enclave: PathBuf) -> Arc<Mutex<Recording>> {
    let listener = UnixListener::bind(listen).unwrap();
    let recording = Arc::new(Mutex::new(Recording::default()));
    let rec = recording.clone();
    tokio::spawn(async move {
        while let Ok((host_side, _)) = listener.accept().await {
            let Ok(enclave_side) = UnixStream::connect(&enclave).await else {
                continue;
            };
            let up = Arc::new(Mutex::new(Vec::new()));
            let down = Arc::new(Mutex::new(Vec::new()));
            {
                let mut r = rec.lock().unwrap();
                r.to_enclave.push(up.clone());
                r.to_host.push(down.clone());
            }
            let (hr, hw) = host_side.into_split();
            let (er, ew) = enclave_side.into_split();
            tokio::spawn(pump(hr, ew, up));
            tokio::spawn(pump(er, hw, down));
        }
    });
    recording
}

/// Decodes one direction's recorded bytes into frame bodies.
fn frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut decoder = FrameDecoder::new(MAX_FRAME_LEN);
    decoder.push(bytes);
    let mut out = Vec::new();
    while let Some(frame) = decoder.next_frame().unwrap() {
        out.push(frame.body);
    }
    assert_eq!(
        decoder.buffered(),
        0,
        "a partial frame was left in the recording"
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Wrappers that capture a child's output while keeping its pid (exec).

/// A bash script that appends the child's stderr to `err`, copies its stdout to `out` (still
/// passing it on to the stack, which waits for the ready line), sets the log level, and execs the
/// real binary so the pid the stack reports is the binary's own.
fn wrapper(dir: &Path, name: &str, real: &Path, out: &Path, err: &Path, log: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    let script = format!(
        "#!/usr/bin/env bash\nexec 2>>'{err}' > >(exec tee -a '{out}')\nexport RUST_LOG='{log}'\nexec '{real}' \"$@\"\n",
        err = err.display(),
        out = out.display(),
        real = real.display(),
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------

/// The digits model with a `doc_string` (ModelProto field 6, wire type 2) appended: protobuf
/// decoders accept fields in any order and keep the last value of a repeated scalar field.
fn model_with_doc_string(onnx: &[u8], doc: &[u8; 32]) -> Vec<u8> {
    let mut out = onnx.to_vec();
    out.push(6 << 3 | 2);
    out.push(32);
    out.extend_from_slice(doc);
    out
}

/// A [2, 64] batch: row 0 a real held-out digit (its label is known), row 1 the input sentinel
/// followed by the same digit's remaining pixels.
fn batch(digit: &[f32], sentinel: &[u8; 32]) -> Tensor {
    let mut data = Vec::with_capacity(2 * PIXELS * 4);
    for x in digit {
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.extend_from_slice(sentinel);
    for x in &digit[sentinel.len() / 4..] {
        data.extend_from_slice(&x.to_le_bytes());
    }
    Tensor::new(sealed_wire::DType::F32, vec![2, PIXELS as u64], data).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_scanner_finds_forms_of_a_sentinel_and_nothing_else() {
    let s = random::<32>();
    let needles = [Needle::new("s", &s)];
    let mut blob = random::<300>().to_vec();
    assert!(hits(&blob, &needles).is_empty());
    // Base64 of a longer buffer with the sentinel at every alignment is found.
    for shift in 0..3 {
        let mut inner = random::<10>()[..shift].to_vec();
        inner.extend_from_slice(&s);
        inner.extend_from_slice(&random::<5>());
        for url_safe in [false, true] {
            let encoded = base64(&inner, url_safe);
            assert!(!hits(&encoded, &needles).is_empty(), "shift {shift}");
        }
    }
    blob.extend_from_slice(hex::encode_upper(s).as_bytes());
    assert_eq!(hits(&blob, &needles).len(), 1);
    // RFC 4648 §10 test vectors.
    assert_eq!(base64(b"foobar", false), b"Zm9vYmFy");
    assert_eq!(base64(b"fooba", false), b"Zm9vYmE");
    assert_eq!(base64(&[0xfb, 0xff], true), b"-_8");
}

#[tokio::test]
async fn the_host_learns_nothing_of_inputs_or_models() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().to_path_buf();
    let real_bins = bin_dir();
    let wrap_dir = work.join("bin");
    let logs: Vec<PathBuf> = ["host.out", "host.err", "enclave.out", "enclave.err"]
        .iter()
        .map(|n| work.join(n))
        .collect();
    let host_wrapper = wrapper(
        &wrap_dir,
        "sealed-host",
        &real_bins.join("sealed-host"),
        &logs[0],
        &logs[1],
        "debug",
    );
    let enclave_wrapper = wrapper(
        &wrap_dir,
        "sealed-enclave",
        &real_bins.join("sealed-enclave"),
        &logs[2],
        &logs[3],
        "debug",
    );
    assert_eq!(host_wrapper, wrap_dir.join("sealed-host"));
    let paths = Paths {
        bin_dir: wrap_dir,
        assets: sealed_sim::assets::default_dir(),
        workdir: work.clone(),
        child_log: "debug".to_string(),
    };
    let digits = Digits::load(&paths.assets).unwrap();
    // The enclave's mock NSM measures the binary it runs (the real one, after exec).
    let pcr0 = sealed_sim::stack::measure(&real_bins.join("sealed-enclave")).unwrap();

    let input_s = input_sentinel();
    let model_s = model_sentinel();
    let needles = [
        Needle::new("input", &input_s),
        Needle::new("model", &model_s),
    ];

    // The model with the sentinel, sealed with the model owner's CLI against the mock KMS.
    sealed_sim::stack::write_mock_ca(&paths).unwrap();
    let aws = SimAws::start(&paths).await.unwrap();
    let onnx = model_with_doc_string(&std::fs::read(&digits.model).unwrap(), &model_s);
    let model_sha384 = Sha384::digest(&onnx).to_vec();
    let model_file = work.join("leaky.onnx");
    std::fs::write(&model_file, &onnx).unwrap();
    let kms = aws.owner_kms_client().await.unwrap();
    let key = kms
        .create_key()
        .policy(sealed_sim::stack::key_policy(&pcr0))
        .send()
        .await
        .unwrap();
    let key_arn = key.key_metadata().unwrap().arn().unwrap().to_string();
    let sealed_file = work.join("leaky.sealed");
    let seal = tokio::process::Command::new(real_bins.join("sealed"))
        .env_clear()
        .envs(aws.owner_env())
        .env("AWS_CONFIG_FILE", "/nonexistent/config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["seal-model", "--model-id", "leaky", "--key-id", &key_arn])
        .arg("--model")
        .arg(&model_file)
        .arg("--out")
        .arg(&sealed_file)
        .arg("--kms-endpoint")
        .arg(aws.kms.endpoint_url())
        .arg("--ca-bundle")
        .arg(&aws.kms.ca_file)
        .output()
        .await
        .unwrap();
    assert!(
        seal.status.success(),
        "seal-model failed: {}",
        String::from_utf8_lossy(&seal.stderr)
    );
    let sealed = std::fs::read(&sealed_file).unwrap();
    assert!(
        hits(&onnx, &needles[1..]).len() == 1,
        "the sentinel is in the plaintext model"
    );
    assert!(
        hits(&sealed, &needles).is_empty(),
        "the sealed file holds a sentinel"
    );

    // The stack, with the relay in between and metrics on.
    let enclave_socket = work.join("enclave.sock");
    let relay_socket = work.join("relay.sock");
    let recording = start_relay(&relay_socket, enclave_socket.clone());
    let metrics_url = format!("http://127.0.0.1:{}/metrics", free_port());
    let stack = Stack::start_with(
        &paths,
        StackOptions {
            name: "",
            enclave_binary: enclave_wrapper,
            plaintext_models: Vec::new(),
            aws: Some(&aws),
            enclave_args: Vec::new(),
            host_args: vec![
                "--metrics-listen".into(),
                metrics_url
                    .trim_start_matches("http://")
                    .trim_end_matches("/metrics")
                    .into(),
            ],
            host_enclave_socket: Some(relay_socket),
        },
    )
    .await
    .unwrap();
    assert_eq!(stack.enclave_socket(), enclave_socket);

    let admin = stack.admin_url.clone().unwrap();
    let http = reqwest::Client::new();
    let upload = http
        .post(format!("{admin}/v1/admin/models"))
        .header("content-type", "application/octet-stream")
        .body(sealed.clone())
        .send()
        .await
        .unwrap();
    let status = upload.status().as_u16();
    let body: serde_json::Value = upload.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["sha384"],
        hex::encode(&model_sha384),
        "tract loaded the model with the doc_string"
    );

    // Sealed inferences carrying the input sentinel, on the attested model.
    let pem = std::fs::read_to_string(&stack.root_pem).unwrap();
    let policy = Policy::new()
        .trust_root_pem(&pem)
        .unwrap()
        .expect_pcr(0, pcr0.to_vec())
        .expect_model("leaky", model_sha384.clone());
    let session = Client::new(&stack.host_url, policy)
        .unwrap()
        .attest()
        .await
        .unwrap();
    for i in 0..INFERENCES {
        let example = &digits.examples[i % digits.examples.len()];
        let pixels = npy::read_file(&example.file).unwrap().to_f32().unwrap();
        let outputs = session
            .infer(
                "leaky",
                vec![NamedTensor {
                    name: "input".into(),
                    tensor: batch(&pixels[..PIXELS], &input_s),
                }],
            )
            .await
            .unwrap();
        let label = outputs.iter().find(|o| o.name == "label").unwrap();
        let labels = label.tensor.to_i64().unwrap();
        assert_eq!(labels.len(), 2);
        assert_eq!(labels[0], example.predicted_labels[0], "{example:?}");
    }

    // /metrics.
    let metrics = http.get(&metrics_url).send().await.unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    let metrics = metrics.bytes().await.unwrap();
    assert!(
        String::from_utf8_lossy(&metrics).contains("sealed_host"),
        "the metrics page has the host's metrics"
    );
    assert_eq!(
        hits(&metrics, &needles),
        Vec::<String>::new(),
        "in /metrics"
    );

    // The host's memory, after the run, while it is still up. Positive control first: a process
    // this test starts holds a (different) sentinel raw and hex- and base64-encoded in its
    // environment, and the scanner must find all three.
    let control_s = random::<32>().map(|b| b.max(1));
    let control = [Needle::new("control", &control_s)];
    let mut planted = std::process::Command::new("sleep")
        .arg("60")
        .env("LEAK_CONTROL_RAW", std::ffi::OsStr::from_bytes(&control_s))
        .env("LEAK_CONTROL_HEX", hex::encode(control_s))
        .env(
            "LEAK_CONTROL_B64",
            String::from_utf8(base64(&control_s, false)).unwrap(),
        )
        .spawn()
        .unwrap();
    let control_scan = scan_memory(planted.id(), &control);
    let host_pid = stack.host_pid().unwrap();
    let host_scan = scan_memory(host_pid, &needles);
    let _ = planted.kill();
    let _ = planted.wait();
    match (control_scan, host_scan) {
        (Ok(control_scan), Ok(host_scan)) => {
            let all = control_scan.hits.join("\n");
            for form in ["(raw)", "(hex)", "(base64+0)"] {
                assert!(all.contains(form), "control {form} not found:\n{all}");
            }
            println!(
                "host memory: {} readable regions, {} bytes read, {} skipped: {:?}",
                host_scan.regions,
                host_scan.bytes,
                host_scan.skipped.len(),
                host_scan.skipped
            );
            assert!(
                host_scan.bytes > 1 << 20,
                "too little of the host's memory was read"
            );
            assert_eq!(host_scan.hits, Vec::<String>::new(), "in the host's memory");
        }
        (Err(e), _) | (_, Err(e))
            if matches!(e.kind(), ErrorKind::PermissionDenied) || e.raw_os_error() == Some(1) =>
        {
            println!("SKIPPED the memory scan: /proc/PID/mem is not readable here ({e})");
        }
        (Err(e), _) | (_, Err(e)) => panic!("reading process memory: {e}"),
    }

    // The link, both ways: only the frames the run must cause, and no sentinel in any byte.
    let (up, down) = {
        let r = recording.lock().unwrap();
        let join = |v: &Vec<Arc<Mutex<Vec<u8>>>>| {
            v.iter()
                .map(|c| c.lock().unwrap().clone())
                .collect::<Vec<_>>()
        };
        (join(&r.to_enclave), join(&r.to_host))
    };
    assert!(!up.is_empty(), "the host never connected through the relay");
    let mut requests = std::collections::BTreeMap::<&str, usize>::new();
    for conn in &up {
        assert_eq!(hits(conn, &needles), Vec::<String>::new(), "host → enclave");
        for body in frames(conn) {
            let kind = match EnclaveRequest::decode(&body).unwrap() {
                EnclaveRequest::Infer { .. } => "infer",
                EnclaveRequest::Attestation { .. } => "attestation",
                EnclaveRequest::LoadSealedModelBegin { .. } => "begin",
                EnclaveRequest::LoadSealedModelChunk { .. } => "chunk",
                EnclaveRequest::LoadSealedModelEnd { .. } => "end",
                _ => "other",
            };
            *requests.entry(kind).or_default() += 1;
        }
    }
    let mut responses = std::collections::BTreeMap::<&str, usize>::new();
    for conn in &down {
        assert_eq!(hits(conn, &needles), Vec::<String>::new(), "enclave → host");
        for body in frames(conn) {
            let kind = match EnclaveResponse::decode(&body).unwrap() {
                EnclaveResponse::Infer { .. } => "infer",
                EnclaveResponse::Attestation { .. } => "attestation",
                EnclaveResponse::ModelLoaded(_) => "loaded",
                EnclaveResponse::Error(_) => "error",
                _ => "other",
            };
            *responses.entry(kind).or_default() += 1;
        }
    }
    println!("relay: requests {requests:?}, responses {responses:?}");
    assert_eq!(requests.get("infer"), Some(&INFERENCES));
    assert_eq!(responses.get("infer"), Some(&INFERENCES));
    assert_eq!(requests.get("begin"), Some(&1));
    assert_eq!(requests.get("end"), Some(&1));
    assert!(requests.get("chunk").is_some_and(|&n| n >= 1));
    assert_eq!(responses.get("loaded"), Some(&1));
    assert!(requests.get("attestation").is_some_and(|&n| n >= 1));
    assert!(responses.get("attestation").is_some_and(|&n| n >= 1));
    assert_eq!(responses.get("error"), None);
    // The sealed model file crossed the link: its chunks are in the recording as sent.
    let all_up: Vec<u8> = up.concat();
    let tail = &sealed[sealed.len() - 64..];
    assert!(
        find(&all_up, tail).is_some(),
        "the sealed file's last bytes crossed the link"
    );

    // Logs, once both processes are gone and every line is written.
    stack.stop().await;
    aws.stop().await;
    // tee exits at EOF once the host is gone; give it a moment to flush its last write.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut debug_lines = 0;
    for log in &logs {
        let text = std::fs::read(log).unwrap();
        assert_eq!(
            hits(&text, &needles),
            Vec::<String>::new(),
            "in {}",
            log.display()
        );
        debug_lines += String::from_utf8_lossy(&text).matches("DEBUG").count();
    }
    let host_out = std::fs::read_to_string(&logs[0]).unwrap();
    assert!(
        host_out.contains("sealed-host listening on"),
        "host stdout was captured"
    );
    assert!(debug_lines > 0, "the logs were not at debug level");
    println!("logs: {debug_lines} DEBUG lines searched");
}

//! AWS Signature Version 4 for KMS JSON 1.1 calls: signing (client) and verification (the mock
//! KMS), sans-IO (AWS General Reference, "Signature Version 4 signing process"; nitro-facts.md §3.2).
//!
//! What it does:
//! - [`sign_kms_request`]: the headers of a signed `POST /` KMS call, computed by the `aws-sigv4`
//!   crate (the SDK's own signer), so the enclave signs exactly as the AWS SDKs do.
//! - [`parse_authorization`] and [`verify`]: a server-side check of a received request. The
//!   canonical request is rebuilt from the request as received, over the headers the client
//!   listed in `SignedHeaders` only, then signed with the credential's secret and compared in
//!   constant time. Both directions are tested against the AWS signing test suite
//!   (`tests/data/sigv4/`).
//!
//! What it does not do: choose the time (callers pass it, and [`check_clock_skew`] is separate),
//! look up secrets (the verifier's caller maps the access key id to its secret and checks any
//! session token), query-string (presigned) signatures, SigV4a, chunked payload signing or the
//! S3 single-encoding rules. Nothing here touches a socket or the clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign as sigv4_sign};
use aws_sigv4::sign::v4;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::api::CONTENT_TYPE;

/// The SigV4 algorithm name (the only one accepted).
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The signing name of KMS in the credential scope.
pub const KMS_SERVICE: &str = "kms";
/// Largest `Authorization` header the verifier parses. Real ones are ~250 bytes plus the
/// signed-header list.
pub const MAX_AUTHORIZATION_LEN: usize = 4096;
/// Most headers a signature may cover; KMS SDK requests sign fewer than ten.
pub const MAX_SIGNED_HEADERS: usize = 64;
/// AWS refuses requests whose `X-Amz-Date` is more than 15 minutes from its clock
/// ("Signature expired" / "Signature not yet current").
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Credentials used to sign one request. Borrowed so the caller keeps ownership (and zeroizing)
/// of the secret.
pub struct SigningCredentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
}

impl std::fmt::Debug for SigningCredentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.map(|_| "<redacted>"))
            .finish()
    }
}

/// Signing or verification failure. Stable, secret-free messages.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SigV4Error {
    /// A signing input (host, region, target, credentials) is empty or has characters that cannot
    /// appear in an HTTP header.
    #[error("invalid signing input: {0}")]
    InvalidInput(&'static str),
    /// The `aws-sigv4` signer refused the request.
    #[error("signing failed")]
    SigningFailed,
    /// No `Authorization` header.
    #[error("request is not signed (no Authorization header)")]
    MissingAuthorization,
    /// The `Authorization` header is not `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
    #[error("malformed Authorization header: {0}")]
    MalformedAuthorization(&'static str),
    /// `X-Amz-Date` (or `Date`) is missing or not `YYYYMMDD'T'HHMMSS'Z'`.
    #[error("missing or malformed X-Amz-Date")]
    MalformedDate,
    /// The credential scope does not match the request date, the expected region or service.
    #[error("credential scope mismatch: {0}")]
    ScopeMismatch(&'static str),
    /// A header required to be signed (`host`, the date) is not in `SignedHeaders`.
    #[error("required header not signed: {0}")]
    RequiredHeaderNotSigned(&'static str),
    /// A header named in `SignedHeaders` is absent from the request.
    #[error("signed header missing from request")]
    SignedHeaderMissing,
    /// `x-amz-content-sha256` was sent but does not match the body.
    #[error("x-amz-content-sha256 does not match the body")]
    PayloadHashMismatch,
    /// The request's time is too far from the verifier's clock.
    #[error("signature expired or not yet current (clock skew > {max_secs} s)")]
    ClockSkew { max_secs: u64 },
    /// The signature does not match.
    #[error("signature does not match")]
    SignatureMismatch,
}

/// Signs `POST /` of a KMS JSON 1.1 call (nitro-facts §3.2). `host` is the Host header value
/// (with ":port" when not 443), `target` e.g. "TrentService.Decrypt". Returns every header to send,
/// lowercase names: host, content-type (application/x-amz-json-1.1), x-amz-target, x-amz-date,
/// x-amz-security-token (if a token), authorization.
pub fn sign_kms_request(
    creds: &SigningCredentials<'_>,
    region: &str,
    host: &str,
    target: &str,
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(&'static str, String)>, SigV4Error> {
    check_header_value(host, "host")?;
    check_header_value(target, "target")?;
    check_scope_part(region, "region")?;
    let base = [
        ("host", host),
        ("content-type", CONTENT_TYPE),
        ("x-amz-target", target),
    ];
    let signed = sign_request(
        creds,
        &SignParams {
            region,
            service: KMS_SERVICE,
            method: "POST",
            uri: "/",
            headers: &base,
            body,
            content_sha256_header: false,
            time,
        },
    )?;
    let mut out: Vec<(&'static str, String)> = vec![
        ("host", host.to_owned()),
        ("content-type", CONTENT_TYPE.to_owned()),
        ("x-amz-target", target.to_owned()),
    ];
    out.extend(signed);
    Ok(out)
}

/// Inputs of the general signer behind [`sign_kms_request`], for any method, path and service
/// (the AWS test-suite cases run through it).
#[derive(Debug, Clone, Copy)]
pub struct SignParams<'a> {
    pub region: &'a str,
    pub service: &'a str,
    pub method: &'a str,
    /// Path and query, already percent-encoded as sent.
    pub uri: &'a str,
    /// Headers to sign (besides those the signer adds), as sent.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    /// Add and sign `x-amz-content-sha256` (the suite's `sign_body`; S3 style).
    pub content_sha256_header: bool,
    pub time: SystemTime,
}

/// Signs a request with header-based SigV4. Returns the headers the signer adds
/// (`x-amz-date`, `x-amz-security-token` when a token, `x-amz-content-sha256` when asked,
/// `authorization` last), lowercase names. `host` must be among `p.headers`.
pub fn sign_request(
    creds: &SigningCredentials<'_>,
    p: &SignParams<'_>,
) -> Result<Vec<(&'static str, String)>, SigV4Error> {
    if !p
        .headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("host") && !v.is_empty())
    {
        return Err(SigV4Error::InvalidInput("host"));
    }
    check_header_value(creds.access_key_id, "access key id")?;
    check_header_value(creds.secret_access_key, "secret access key")?;
    if let Some(token) = creds.session_token {
        check_header_value(token, "session token")?;
    }
    let identity = Credentials::new(
        creds.access_key_id,
        creds.secret_access_key,
        creds.session_token.map(str::to_owned),
        None,
        "sealed-kms",
    )
    .into();
    let mut settings = SigningSettings::default();
    if p.content_sha256_header {
        settings.payload_checksum_kind = aws_sigv4::http_request::PayloadChecksumKind::XAmzSha256;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(p.region)
        .name(p.service)
        .time(p.time)
        .settings(settings)
        .build()
        .map_err(|_| SigV4Error::SigningFailed)?
        .into();
    let request = SignableRequest::new(
        p.method,
        p.uri,
        p.headers.iter().copied(),
        SignableBody::Bytes(p.body),
    )
    .map_err(|_| SigV4Error::SigningFailed)?;
    let (instructions, _signature) = sigv4_sign(request, &params)
        .map_err(|_| SigV4Error::SigningFailed)?
        .into_parts();
    let (headers, _query) = instructions.into_parts();
    let mut out = Vec::with_capacity(headers.len());
    for h in headers {
        // Header names from aws-sigv4 are static lowercase constants; keep the authorization last
        // so callers can log the others' names in order without special cases.
        out.push((h.name(), h.value().to_owned()));
    }
    out.sort_by_key(|(name, _)| *name == "authorization");
    Ok(out)
}

fn check_header_value(value: &str, what: &'static str) -> Result<(), SigV4Error> {
    if value.is_empty()
        || !value
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return Err(SigV4Error::InvalidInput(what));
    }
    Ok(())
}

fn check_scope_part(value: &str, what: &'static str) -> Result<(), SigV4Error> {
    if value.is_empty()
        || value.len() > 64
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(SigV4Error::InvalidInput(what));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Verification (server side).

/// The parsed `Authorization` header (SigV4 "Add the signature to the HTTP request").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD` from the credential scope.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lowercase header names, in the order sent (AWS requires them sorted; we check).
    pub signed_headers: Vec<String>,
    /// Lowercase hex, 64 characters.
    pub signature: String,
}

impl Authorization {
    /// `date/region/service/aws4_request`.
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/service/aws4_request,
/// SignedHeaders=host;x-amz-date, Signature=<64 hex>`. Components may come in any order,
/// separated by commas with optional spaces.
pub fn parse_authorization(value: &str) -> Result<Authorization, SigV4Error> {
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(SigV4Error::MalformedAuthorization("too long"));
    }
    let rest = value
        .strip_prefix(ALGORITHM)
        .ok_or(SigV4Error::MalformedAuthorization("algorithm"))?;
    if !rest.starts_with(' ') {
        return Err(SigV4Error::MalformedAuthorization("algorithm"));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim_matches(' ');
        let (key, val) = part
            .split_once('=')
            .ok_or(SigV4Error::MalformedAuthorization("component"))?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return Err(SigV4Error::MalformedAuthorization("component")),
        };
        if slot.replace(val).is_some() {
            return Err(SigV4Error::MalformedAuthorization("duplicate component"));
        }
    }
    let credential = credential.ok_or(SigV4Error::MalformedAuthorization("Credential"))?;
    let signed_headers =
        signed_headers.ok_or(SigV4Error::MalformedAuthorization("SignedHeaders"))?;
    let signature = signature.ok_or(SigV4Error::MalformedAuthorization("Signature"))?;

    // Credential = AKID/date/region/service/aws4_request; the access key id has no '/'.
    let mut scope = credential.split('/');
    let (Some(akid), Some(date), Some(region), Some(service), Some("aws4_request"), None) = (
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
    ) else {
        return Err(SigV4Error::MalformedAuthorization("Credential"));
    };
    if akid.is_empty()
        || date.len() != 8
        || !date.bytes().all(|b| b.is_ascii_digit())
        || region.is_empty()
        || service.is_empty()
    {
        return Err(SigV4Error::MalformedAuthorization("Credential"));
    }

    let names: Vec<String> = signed_headers.split(';').map(str::to_owned).collect();
    if names.is_empty() || names.len() > MAX_SIGNED_HEADERS {
        return Err(SigV4Error::MalformedAuthorization("SignedHeaders"));
    }
    let well_formed = names.iter().all(|n| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase() && b != b';')
    });
    // Sorted and unique, as the canonical request requires (SigV4 step 5).
    let sorted = names.windows(2).all(|w| matches!(w, [a, b] if a < b));
    if !well_formed || !sorted {
        return Err(SigV4Error::MalformedAuthorization("SignedHeaders"));
    }
    if signature.len() != 64
        || !signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(SigV4Error::MalformedAuthorization("Signature"));
    }
    Ok(Authorization {
        access_key_id: akid.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers: names,
        signature: signature.to_owned(),
    })
}

/// A received request, as the verifier needs it.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedRequest<'a> {
    pub method: &'a str,
    /// The request-target path as received (percent-encoded), e.g. `/`.
    pub path: &'a str,
    /// The raw query string without `?` (empty when none).
    pub query: &'a str,
    /// Every header as received (any case, repeated names allowed, values as bytes on the wire).
    pub headers: &'a [(&'a str, &'a [u8])],
    pub body: &'a [u8],
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The request time from `X-Amz-Date`.
    pub time: SystemTime,
    /// The canonical request that was signed (for diagnostics and the test suite).
    pub canonical_request: String,
    /// The string to sign.
    pub string_to_sign: String,
}

/// Verifies `request` against the already-parsed `auth` and the secret for
/// `auth.access_key_id`, for `region` and `service`. Checks, in order: the scope's region and
/// service, `host` and `x-amz-date` are signed, the date parses and matches the scope date,
/// any `x-amz-content-sha256` matches the body, then the signature (constant time).
/// Clock skew is the caller's ([`check_clock_skew`]) since the clock is not ours to read.
pub fn verify(
    request: &ReceivedRequest<'_>,
    auth: &Authorization,
    secret_access_key: &str,
    region: &str,
    service: &str,
) -> Result<Verified, SigV4Error> {
    if auth.region != region {
        return Err(SigV4Error::ScopeMismatch("region"));
    }
    if auth.service != service {
        return Err(SigV4Error::ScopeMismatch("service"));
    }
    let signs = |name: &str| auth.signed_headers.iter().any(|h| h == name);
    if !signs("host") {
        return Err(SigV4Error::RequiredHeaderNotSigned("host"));
    }
    // The request time comes from X-Amz-Date, or Date if that is absent (SigV4 "Handling dates").
    let (date_header, date_value) = match header_values(request.headers, "x-amz-date").next() {
        Some(v) => ("x-amz-date", v),
        None => (
            "date",
            header_values(request.headers, "date")
                .next()
                .ok_or(SigV4Error::MalformedDate)?,
        ),
    };
    if !signs(date_header) {
        return Err(SigV4Error::RequiredHeaderNotSigned("x-amz-date"));
    }
    let amz_date = std::str::from_utf8(date_value).map_err(|_| SigV4Error::MalformedDate)?;
    let time = parse_amz_date(amz_date)?;
    if amz_date.get(..8) != Some(auth.date.as_str()) {
        return Err(SigV4Error::ScopeMismatch("date"));
    }

    let body_hash = hex_lower(&Sha256::digest(request.body));
    if let Some(sent) = header_values(request.headers, "x-amz-content-sha256").next() {
        // KMS signs the body itself; an S3-style header must at least agree with it.
        if sent != body_hash.as_bytes() {
            return Err(SigV4Error::PayloadHashMismatch);
        }
    }

    let canonical_request = canonical_request(request, &auth.signed_headers, &body_hash)?;
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        auth.scope(),
        hex_lower(&Sha256::digest(canonical_request.as_bytes()))
    );
    let key = v4::generate_signing_key(secret_access_key, time, region, service);
    let expected = v4::calculate_signature(key, string_to_sign.as_bytes());
    if !constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        return Err(SigV4Error::SignatureMismatch);
    }
    Ok(Verified {
        time,
        canonical_request,
        string_to_sign,
    })
}

/// Refuses a request time more than `max_skew` away from `now` (AWS: 15 minutes).
pub fn check_clock_skew(
    request_time: SystemTime,
    now: SystemTime,
    max_skew: Duration,
) -> Result<(), SigV4Error> {
    let skew = match now.duration_since(request_time) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if skew > max_skew {
        return Err(SigV4Error::ClockSkew {
            max_secs: max_skew.as_secs(),
        });
    }
    Ok(())
}

/// Builds the canonical request (SigV4 "Create a canonical request") over `signed_headers`.
fn canonical_request(
    request: &ReceivedRequest<'_>,
    signed_headers: &[String],
    body_hash: &str,
) -> Result<String, SigV4Error> {
    let mut out = String::with_capacity(512);
    out.push_str(request.method);
    out.push('\n');
    out.push_str(&canonical_uri(request.path));
    out.push('\n');
    out.push_str(&canonical_query(request.query));
    out.push('\n');
    for name in signed_headers {
        let mut values = header_values(request.headers, name).peekable();
        if values.peek().is_none() {
            return Err(SigV4Error::SignedHeaderMissing);
        }
        out.push_str(name);
        out.push(':');
        // Repeated headers join with ',' in the order received; each value is trimmed and its
        // runs of whitespace (including obs-fold line breaks) collapse to one space.
        let mut first = true;
        for value in values {
            if !first {
                out.push(',');
            }
            first = false;
            let text = String::from_utf8_lossy(value);
            let mut words = text
                .split([' ', '\t', '\r', '\n'])
                .filter(|w| !w.is_empty());
            if let Some(w) = words.next() {
                out.push_str(w);
            }
            for w in words {
                out.push(' ');
                out.push_str(w);
            }
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(body_hash);
    Ok(out)
}

fn header_values<'a>(
    headers: &'a [(&'a str, &'a [u8])],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// Canonical URI for non-S3 services: the path with dot segments removed and repeated slashes
/// collapsed, each segment percent-encoded once more ("double encoding"), `/` when empty.
fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len() + 8);
    for seg in &segments {
        out.push('/');
        uri_encode(seg.as_bytes(), &mut out);
    }
    if out.is_empty() || (path.ends_with('/') && !segments.is_empty()) {
        out.push('/');
    }
    out
}

/// Canonical query: each name and value percent-decoded then re-encoded with the SigV4 rules,
/// sorted by name then value; a name without `=` gets an empty value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let mut ek = String::new();
            let mut ev = String::new();
            uri_encode(&percent_decode(k), &mut ek);
            uri_encode(&percent_decode(v), &mut ev);
            (ek, ev)
        })
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// SigV4 URI encoding: every byte except the unreserved set `A-Za-z0-9-._~` as `%XX` (upper hex).
fn uri_encode(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(hex_digit(b >> 4).to_ascii_uppercase());
            out.push(hex_digit(b & 0x0f).to_ascii_uppercase());
        }
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|c| char::from(*c).to_digit(16)),
                bytes.get(i + 2).and_then(|c| char::from(*c).to_digit(16)),
            )
        {
            // h, l < 16, so the byte fits.
            out.push(u8::try_from(h * 16 + l).unwrap_or(0));
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    out
}

/// Parses `YYYYMMDD'T'HHMMSS'Z'` (ISO 8601 basic, UTC).
pub fn parse_amz_date(s: &str) -> Result<SystemTime, SigV4Error> {
    let b = s.as_bytes();
    if b.len() != 16 || b.get(8) != Some(&b'T') || b.get(15) != Some(&b'Z') {
        return Err(SigV4Error::MalformedDate);
    }
    let num = |range: std::ops::Range<usize>| -> Result<u32, SigV4Error> {
        let digits = s.get(range).ok_or(SigV4Error::MalformedDate)?;
        if !digits.bytes().all(|c| c.is_ascii_digit()) {
            return Err(SigV4Error::MalformedDate);
        }
        digits.parse().map_err(|_| SigV4Error::MalformedDate)
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(SigV4Error::MalformedDate);
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + u64::from(hour * 3600 + minute * 60 + second);
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 for a valid date from 1970 on (H. Hinnant, "days_from_civil").
fn days_from_civil(year: u32, month: u32, day: u32) -> u64 {
    let y = u64::from(if month <= 2 { year - 1 } else { year });
    let era = y / 400;
    let yoe = y - era * 400;
    let m = u64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + u64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn hex_lower(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(hex_digit(b >> 4));
        s.push(hex_digit(b & 0x0f));
    }
    s
}

/// Lowercase hex digit of a nibble (`n < 16`).
fn hex_digit(n: u8) -> char {
    char::from_digit(u32::from(n & 0x0f), 16).unwrap_or('0')
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> SigningCredentials<'static> {
        SigningCredentials {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token: None,
        }
    }

    #[test]
    fn kms_request_has_contract_headers_and_verifies() {
        let time = UNIX_EPOCH + Duration::from_secs(1_463_517_635);
        let body = br#"{"KeyId":"k"}"#;
        let headers = sign_kms_request(
            &SigningCredentials {
                session_token: Some("tok"),
                ..creds()
            },
            "us-west-2",
            "localhost:8443",
            "TrentService.Decrypt",
            body,
            time,
        )
        .unwrap();
        let names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "host",
                "content-type",
                "x-amz-target",
                "x-amz-date",
                "x-amz-security-token",
                "authorization"
            ]
        );
        assert_eq!(headers[3].1, "20160517T204035Z");
        let auth = parse_authorization(&headers[5].1).unwrap();
        assert_eq!(auth.scope(), "20160517/us-west-2/kms/aws4_request");
        assert_eq!(
            auth.signed_headers,
            [
                "content-type",
                "host",
                "x-amz-date",
                "x-amz-security-token",
                "x-amz-target"
            ]
        );
        let wire: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        let req = ReceivedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &wire,
            body,
        };
        let ok = verify(&req, &auth, creds().secret_access_key, "us-west-2", "kms").unwrap();
        assert_eq!(ok.time, time);
        assert_eq!(
            verify(&req, &auth, "wrong", "us-west-2", "kms"),
            Err(SigV4Error::SignatureMismatch)
        );
        let tampered = ReceivedRequest {
            body: br#"{"KeyId":"j"}"#,
            ..req
        };
        assert_eq!(
            verify(
                &tampered,
                &auth,
                creds().secret_access_key,
                "us-west-2",
                "kms"
            ),
            Err(SigV4Error::SignatureMismatch)
        );
        assert_eq!(
            verify(&req, &auth, creds().secret_access_key, "us-east-1", "kms"),
            Err(SigV4Error::ScopeMismatch("region"))
        );
    }

    #[test]
    fn rejects_bad_signing_inputs() {
        let t = UNIX_EPOCH;
        for (region, host, target) in [
            ("", "h", "t"),
            ("us-east-1", "", "t"),
            ("us-east-1", "h\r\nx: y", "t"),
            ("us/east", "h", "t"),
        ] {
            assert!(matches!(
                sign_kms_request(&creds(), region, host, target, b"", t),
                Err(SigV4Error::InvalidInput(_))
            ));
        }
    }

    #[test]
    fn parses_amz_dates() {
        assert_eq!(
            parse_amz_date("20150830T123600Z").unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_440_938_160)
        );
        assert_eq!(
            parse_amz_date("20240229T000000Z").unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_709_164_800)
        );
        for bad in [
            "20150830T123600",
            "2015083OT123600Z",
            "20150230T000000Z",
            "20151301T000000Z",
            "20150830T243600Z",
            "+0150830T123600Z",
            "",
        ] {
            assert_eq!(parse_amz_date(bad), Err(SigV4Error::MalformedDate), "{bad}");
        }
    }

    #[test]
    fn rejects_malformed_authorization() {
        let good = "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        assert!(parse_authorization(good).is_ok());
        for bad in [
            "AWS4-HMAC-SHA512 Credential=AKID/20150830/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/kms, SignedHeaders=host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/kms/aws4_request, SignedHeaders=x-amz-date;host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=5FA00FA31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/kms/aws4_request, SignedHeaders=host",
            "AWS4-HMAC-SHA256 Credential=A/20150830/us-east-1/kms/aws4_request, Credential=B/20150830/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ] {
            assert!(
                matches!(
                    parse_authorization(bad),
                    Err(SigV4Error::MalformedAuthorization(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn clock_skew_is_symmetric() {
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let skew = MAX_CLOCK_SKEW;
        assert!(check_clock_skew(t, t + skew, skew).is_ok());
        assert!(check_clock_skew(t + skew, t, skew).is_ok());
        assert!(check_clock_skew(t, t + skew + Duration::from_secs(1), skew).is_err());
        assert!(check_clock_skew(t + skew + Duration::from_secs(1), t, skew).is_err());
    }
}

//! The `sealed` command line: argument definitions and the logic of each command. `main.rs` only
//! parses, runs and maps the result to an exit code.
//!
//! Exit codes: 0 success; 1 verification failure (printed as `verification failed: <check>:
//! <message>`) or any other failure (network, host, inference, files); 2 usage errors (clap's own,
//! and a policy that says nothing: no `--expect-pcr`, `--policy` or `--no-pcr-policy`); 3 a policy
//! file (`--policy`) or measurements file that cannot be read or is invalid. `seal-model` adds
//! codes 3–7 so that scripts can tell its failures apart ([`SEAL_MODEL_EXIT_CODES`]).
//!
//! The flags build one accepted PCR set (repeating `--expect-pcr` adds PCRs to that set); a policy
//! file (`--policy`, `sealed policy …`) holds several named sets, and the verified summary names
//! the one that matched (`accepted_as`).

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use sealed_attestation::VerifiedDocument;
use sealed_client::kms::{self, KmsClientConfig, KmsError};
use sealed_client::npy;
use sealed_client::policy_file::{Measurements, PolicyFile, PolicyFileError};
use sealed_client::seal::{self, SealError, SealRequest, SealSummary};
use sealed_client::{Client, ClientError, InvalidPolicy, Policy};
use sealed_wire::limits::MAX_ATTESTATION_DOC_LEN;
use sealed_wire::{DType, ModelManifest, NamedTensor, Tensor};

/// How many values of each output tensor `infer` prints.
const PRINT_VALUES: usize = 20;

#[derive(Debug, Parser)]
#[command(
    name = "sealed",
    version,
    about = "Sealed Inference client: verify AWS Nitro attestation documents, attest a host's \
             enclave, and run encrypted inferences.",
    after_help = "Exit codes: 0 success, 1 verification or other failure, 2 usage error, \
                  3 invalid or unreadable policy/measurements file \
                  (seal-model: see `sealed seal-model --help`)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Verify an attestation document file offline and print its content as JSON.
    Verify(VerifyArgs),
    /// Fetch a fresh attestation from a host, verify it, and print it with the model manifest.
    Attest(AttestArgs),
    /// Attest the host's enclave, then run a model on .npy inputs through the sealed channel.
    Infer(InferArgs),
    /// Seal an ONNX model with a fresh AWS KMS data key, for loading into an enclave.
    #[command(long_about = SEAL_MODEL_ABOUT, after_long_help = SEAL_MODEL_EXIT_CODES)]
    SealModel(SealModelArgs),
    /// Create, change, show and check client policy files (named accepted PCR sets).
    #[command(subcommand, after_long_help = POLICY_EXIT_CODES)]
    Policy(PolicyCommand),
}

/// Exit codes of `sealed policy`.
pub const POLICY_EXIT_CODES: &str = "\
Exit codes:
  0  done (check: the file is valid and, with --document/--host, a set matched)
  1  check: the document or host failed verification (no set matched, bad signature…), or the
     host could not be reached
  2  usage: bad arguments, --out exists, set name taken or not found, last set
  3  the policy file or measurements file cannot be read or is invalid";

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Write a new policy file accepting one release's measurements.
    Create(PolicyCreateArgs),
    /// Add a release's measurements to a policy file as another accepted set.
    Add(PolicyAddArgs),
    /// Remove an accepted set (a retired release) from a policy file.
    Remove(PolicyRemoveArgs),
    /// Print a policy file, validated and normalised.
    Show(PolicyShowArgs),
    /// Validate a policy file; with --document or --host, verify an enclave against it and print
    /// which set it matched.
    Check(PolicyCheckArgs),
}

/// Where a new set's PCRs come from.
#[derive(Debug, Args)]
pub struct MeasurementsArgs {
    /// measurements.json of the release: the output of `nitro-cli build-enclave` or
    /// `describe-eif` (or `sealed-sim measure`).
    #[arg(long, value_name = "FILE")]
    pub measurements: PathBuf,
    /// Name of the accepted set, e.g. the release tag: 1-64 characters from A-Z a-z 0-9 . _ -
    #[arg(long, value_name = "NAME", value_parser = parse_set_name)]
    pub name: String,
    /// Which PCRs of the measurements the set pins (comma-separated).
    #[arg(long, value_name = "N,N,…", value_delimiter = ',', default_value = "0,1,2",
          value_parser = parse_pcr_index_arg)]
    pub pcrs: Vec<u16>,
}

#[derive(Debug, Args)]
pub struct PolicyCreateArgs {
    #[command(flatten)]
    pub measurements: MeasurementsArgs,
    /// Where to write the policy file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Refuse attestation documents older than SECONDS (max_age_secs; default: the client's,
    /// 300 for live attestation).
    #[arg(long, value_name = "SECONDS")]
    pub max_age: Option<u64>,
    /// Pin a model: the attested manifest must list ID with SHA-384 HEX. Repeatable.
    #[arg(long = "expect-model", value_name = "ID=HEX", value_parser = parse_model)]
    pub expect_model: Vec<ModelArg>,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PolicyAddArgs {
    /// The policy file to change (rewritten atomically).
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    #[command(flatten)]
    pub measurements: MeasurementsArgs,
}

#[derive(Debug, Args)]
pub struct PolicyRemoveArgs {
    /// The policy file to change (rewritten atomically).
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Name of the set to remove.
    #[arg(long, value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct PolicyShowArgs {
    /// The policy file.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
}

#[derive(Debug, Args)]
pub struct PolicyCheckArgs {
    /// The policy file.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Verify this attestation document (raw COSE_Sign1 bytes) against the policy.
    #[arg(long, value_name = "FILE", conflicts_with = "host")]
    pub document: Option<PathBuf>,
    /// Attest this sealed-host's enclave against the policy (http:// only in this build).
    #[arg(long, value_name = "URL")]
    pub host: Option<String>,
    /// Trust this PEM root certificate instead of the AWS Nitro Enclaves Root-G1 (for example the
    /// mock CA root in simulation).
    #[arg(long, value_name = "PEM")]
    pub trust_root: Option<PathBuf>,
    /// With --document: verify as of this time (RFC 3339) instead of now.
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339, requires = "document")]
    pub at: Option<OffsetDateTime>,
    /// Refuse documents older than SECONDS (default: the file's max_age_secs; with --document
    /// and no max_age_secs, no limit; with --host, 300).
    #[arg(long, value_name = "SECONDS")]
    pub max_age: Option<u64>,
}

fn parse_set_name(s: &str) -> Result<String, String> {
    if sealed_client::policy_file::valid_set_name(s) {
        Ok(s.to_string())
    } else {
        Err("expected 1-64 characters from A-Z a-z 0-9 . _ -".to_string())
    }
}

fn parse_pcr_index_arg(s: &str) -> Result<u16, String> {
    let index: u16 = s
        .trim()
        .parse()
        .map_err(|_| format!("PCR index {s:?} is not a number"))?;
    if usize::from(index) < sealed_attestation::document::MAX_PCRS {
        Ok(index)
    } else {
        Err(format!("PCR index {index} is out of range (0..32)"))
    }
}

const SEAL_MODEL_ABOUT: &str = "\
Seal an ONNX model with a fresh AWS KMS data key, for loading into an enclave.

Asks KMS for a data key (GenerateDataKey, KeySpec AES_256) under --key-id, encrypts the model \
with it in the sealed-model format (AES-256-GCM chunks; the header carries the model id, the key \
ARN, the key's CiphertextBlob, the model's size and SHA-384), and wipes the key. Only a caller \
that KMS lets Decrypt the CiphertextBlob can open the file: write the key policy so that only \
the enclave's measurements may (kms:RecipientAttestation:ImageSha384 or :PCR0).

The model is read twice (hash, then seal) chunk by chunk, so memory stays small for any size up \
to 8 GiB. The result goes to a temporary file next to --out and is renamed into place only when \
complete. On success, a JSON summary is printed to stdout: model_id, out, kms_key_id, \
plaintext_len, sealed_len, sha384 (hex, of the ONNX bytes: what attestations and \
`--expect-model` name), chunk_size. A progress bar is drawn on stderr when it is a terminal.

Credentials come from the standard AWS sources, in order: AWS_ACCESS_KEY_ID / \
AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN; the shared files ~/.aws/credentials and ~/.aws/config \
(AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE) with --profile or AWS_PROFILE; web identity; ECS; \
and the EC2 instance role through IMDSv2. The region is --region, else the key ARN's region, else \
AWS_REGION or the profile's.

Example:
  sealed seal-model --model digits.onnx --model-id digits \\
      --key-id arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab \\
      --out digits.sealed

Against the simulation's mock KMS:
  sealed seal-model --model digits.onnx --model-id digits --key-id <ARN> --out digits.sealed \\
      --kms-endpoint https://127.0.0.1:<PORT> --ca-bundle <TLS-DIR>/kms-ca.pem";

/// Exit codes of `sealed seal-model`.
pub const SEAL_MODEL_EXIT_CODES: &str = "\
Exit codes:
  0  sealed
  1  internal failure
  2  usage: bad model id, key id, chunk size, endpoint URL, CA bundle or region; --out exists
  3  the model cannot be read or the output cannot be written (or the model changed meanwhile)
  4  no AWS credentials, or KMS rejected them (unknown key id, bad signature, expired token)
  5  access denied by the key policy or IAM policy (AccessDeniedException)
  6  KMS unreachable, timed out or unavailable (network, TLS, throttling, 5xx)
  7  the KMS key cannot be used (not found, disabled, wrong usage) or another KMS error";

#[derive(Debug, Args)]
pub struct SealModelArgs {
    /// The ONNX model to seal.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Model id recorded in the sealed header: 1-128 characters from A-Z a-z 0-9 . _ -
    #[arg(long, value_name = "ID", value_parser = parse_model_id)]
    pub model_id: String,
    /// KMS key: key id, key ARN, alias name (alias/NAME) or alias ARN. A key ARN also gives the
    /// region.
    #[arg(long, value_name = "KEY")]
    pub key_id: String,
    /// Where to write the sealed model.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// KMS endpoint (https:// only), instead of https://kms.REGION.amazonaws.com.
    #[arg(long, value_name = "URL", env = "AWS_ENDPOINT_URL_KMS")]
    pub kms_endpoint: Option<String>,
    /// AWS region (default: the key ARN's region, else AWS_REGION or the profile's).
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Trust only the CA certificates in this PEM file for the KMS endpoint (instead of the
    /// system roots), e.g. the mock KMS CA in simulation.
    #[arg(long, value_name = "PEM", env = "AWS_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
    /// Plaintext bytes per encrypted chunk: a number with an optional K or M suffix (KiB, MiB),
    /// from 4K to 16M.
    #[arg(long, value_name = "N", value_parser = parse_chunk_size,
          default_value_t = sealed_model::DEFAULT_CHUNK_SIZE)]
    pub chunk_size: u32,
    /// Profile of the shared AWS config and credentials files.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

fn parse_model_id(s: &str) -> Result<String, String> {
    if sealed_wire::message::valid_model_id(s) {
        Ok(s.to_string())
    } else {
        Err("expected 1-128 characters from A-Z a-z 0-9 . _ -".to_string())
    }
}

/// `N`, `NK` or `NM` (KiB / MiB), within the format's chunk bounds.
fn parse_chunk_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1024,
        "m" | "mib" => 1024 * 1024,
        _ => {
            return Err(format!(
                "unknown unit {unit:?}: use a number of bytes, or K / M"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 1048576, 256K or 1M"))?;
    let bytes = n.saturating_mul(multiplier);
    let (min, max) = (sealed_model::MIN_CHUNK_SIZE, sealed_model::MAX_CHUNK_SIZE);
    match u32::try_from(bytes) {
        Ok(size) if (min..=max).contains(&size) => Ok(size),
        _ => Err(format!("chunk size must be {min}..={max} bytes (4K..16M)")),
    }
}

/// What the enclave must satisfy.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Trust this PEM root certificate instead of the AWS Nitro Enclaves Root-G1 (for example the
    /// mock CA root in simulation).
    #[arg(long, value_name = "PEM")]
    pub trust_root: Option<PathBuf>,
    /// Require PCR N to equal HEX (48 bytes, 96 hex digits). Repeat for several PCRs.
    #[arg(long = "expect-pcr", value_name = "N=HEX", value_parser = parse_pcr)]
    pub expect_pcr: Vec<PcrArg>,
    /// Accept the PCR sets of this policy file (see `sealed policy`): the enclave must match all
    /// PCRs of one named set, which the output names as `accepted_as`. Its models and
    /// max_age_secs apply too; debug-mode enclaves are always refused.
    #[arg(long = "policy", value_name = "FILE",
          conflicts_with_all = ["expect_pcr", "no_pcr_policy", "allow_debug"])]
    pub policy_file: Option<PathBuf>,
    /// Accept any PCR values (explicit opt-out: proves only that some Nitro enclave signed).
    #[arg(long, conflicts_with = "expect_pcr")]
    pub no_pcr_policy: bool,
    /// Accept debug-mode enclaves (PCR0 all zero). Never for production.
    #[arg(long)]
    pub allow_debug: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The attestation document (raw COSE_Sign1 bytes).
    #[arg(long, value_name = "FILE")]
    pub document: PathBuf,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Verify as of this time (RFC 3339, e.g. 2024-09-07T15:00:00Z) instead of now.
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub at: Option<OffsetDateTime>,
    /// Require the document's nonce to equal HEX.
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    pub nonce: Option<HexBytes>,
    /// Refuse documents older than SECONDS at the verification time (default: the policy
    /// file's max_age_secs, else no age limit when verifying a recorded document).
    #[arg(long, value_name = "SECONDS")]
    pub max_age: Option<u64>,
}

#[derive(Debug, Args)]
pub struct HostArgs {
    /// Base URL of the sealed-host (http:// only in this build).
    #[arg(long, value_name = "URL")]
    pub host: String,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Refuse documents older than SECONDS [default: the policy file's max_age_secs, else 300].
    #[arg(long, value_name = "SECONDS")]
    pub max_age: Option<u64>,
    /// Require the attested manifest to list model ID with SHA-384 HEX (of its ONNX bytes).
    /// Repeat for several models.
    #[arg(long = "expect-model", value_name = "ID=HEX", value_parser = parse_model)]
    pub expect_model: Vec<ModelArg>,
}

/// `--expect-model ID=HEX`.
#[derive(Debug, Clone)]
pub struct ModelArg {
    pub model_id: String,
    pub sha384: Vec<u8>,
}

fn parse_model(s: &str) -> Result<ModelArg, String> {
    let (id, digest) = s
        .split_once('=')
        .ok_or_else(|| "expected ID=HEX (the model's SHA-384)".to_string())?;
    if !sealed_wire::message::valid_model_id(id) {
        return Err(format!("{id:?} is not a valid model id"));
    }
    let sha384 = hex::decode(digest.trim()).map_err(|e| format!("model {id} digest: {e}"))?;
    Ok(ModelArg {
        model_id: id.to_string(),
        sha384,
    })
}

#[derive(Debug, Args)]
pub struct AttestArgs {
    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Debug, Args)]
pub struct InferArgs {
    #[command(flatten)]
    pub host: HostArgs,
    /// Model id, as listed in the attested manifest.
    #[arg(long, value_name = "ID")]
    pub model: String,
    /// An input tensor: NAME=FILE.npy. Repeat for several inputs.
    #[arg(long, value_name = "NAME=FILE", value_parser = parse_input, required = true)]
    pub input: Vec<InputArg>,
    /// Write each output to DIR/NAME.npy.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// `--expect-pcr N=HEX`.
#[derive(Debug, Clone)]
pub struct PcrArg {
    pub index: u16,
    pub value: Vec<u8>,
}

/// `--input NAME=FILE`.
#[derive(Debug, Clone)]
pub struct InputArg {
    pub name: String,
    pub path: PathBuf,
}

/// Bytes given as hex (a newtype, so that clap does not read `Vec<u8>` as a list of values).
#[derive(Debug, Clone)]
pub struct HexBytes(pub Vec<u8>);

fn parse_pcr(s: &str) -> Result<PcrArg, String> {
    let (index, value) = s
        .split_once('=')
        .ok_or_else(|| "expected N=HEX, e.g. 0=7fb5c55b…".to_string())?;
    let index: u16 = index
        .trim()
        .parse()
        .map_err(|_| format!("PCR index {index:?} is not a number"))?;
    let value = hex::decode(value.trim()).map_err(|e| format!("PCR{index} value: {e}"))?;
    Ok(PcrArg { index, value })
}

fn parse_hex(s: &str) -> Result<HexBytes, String> {
    hex::decode(s.trim())
        .map(HexBytes)
        .map_err(|e| e.to_string())
}

fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| format!("expected an RFC 3339 time like 2024-09-07T15:00:00Z: {e}"))
}

fn parse_input(s: &str) -> Result<InputArg, String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok(InputArg {
            name: name.to_string(),
            path: PathBuf::from(path),
        }),
        _ => Err("expected NAME=FILE.npy".to_string()),
    }
}

/// Why a command failed; [`CliError::exit_code`] maps it to the process exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("verification failed: {check}: {message}")]
    Verification { check: String, message: String },
    #[error("{0}")]
    Failed(String),
    /// A failure with its own exit code (`seal-model`, [`SEAL_MODEL_EXIT_CODES`]).
    #[error("{message}")]
    Exit { code: u8, message: String },
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Verification { .. } | CliError::Failed(_) => 1,
            CliError::Exit { code, .. } => *code,
        }
    }
}

/// Exit code of a `seal-model` failure ([`SEAL_MODEL_EXIT_CODES`]).
pub fn seal_exit_code(e: &SealError) -> u8 {
    match e {
        SealError::InvalidModelId(_)
        | SealError::InvalidKeyId(_)
        | SealError::InvalidChunkSize { .. }
        | SealError::OutputExists { .. }
        | SealError::OutputIsInput { .. } => 2,
        SealError::ReadModel { .. }
        | SealError::NotAFile { .. }
        | SealError::ModelTooLarge { .. }
        | SealError::ModelChanged
        | SealError::WriteOutput { .. } => 3,
        SealError::Kms(k) => kms_exit_code(k),
        SealError::Format(_) | SealError::Random(_) | SealError::Task(_) => 1,
    }
}

fn kms_exit_code(e: &KmsError) -> u8 {
    match e.kind() {
        "config" => 2,
        "credentials" => 4,
        "access_denied" => 5,
        "unreachable" => 6,
        _ => 7,
    }
}

impl From<SealError> for CliError {
    fn from(e: SealError) -> Self {
        CliError::Exit {
            code: seal_exit_code(&e),
            message: format!("seal-model: {e}"),
        }
    }
}

impl From<PolicyFileError> for CliError {
    fn from(e: PolicyFileError) -> Self {
        match e {
            PolicyFileError::NameExists { .. }
            | PolicyFileError::NameNotFound { .. }
            | PolicyFileError::LastSet { .. } => CliError::Usage(e.to_string()),
            other => CliError::Exit {
                code: 3,
                message: other.to_string(),
            },
        }
    }
}

impl From<InvalidPolicy> for CliError {
    fn from(e: InvalidPolicy) -> Self {
        match e {
            InvalidPolicy::NoPcrPolicy => CliError::Usage(
                "no PCR policy: pass --expect-pcr N=HEX (repeatable) or --policy FILE with the \
                 measurements you trust, or --no-pcr-policy to accept any enclave"
                    .to_string(),
            ),
            other => CliError::Usage(other.to_string()),
        }
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        let verification = |check: &str, message: String| CliError::Verification {
            check: check.to_string(),
            message,
        };
        match e {
            ClientError::Verification(v) => verification(v.check(), v.to_string()),
            ClientError::Commitment(c) => verification(c.check(), c.to_string()),
            ClientError::NoPublicKey | ClientError::KeyConfig(_) => {
                verification("key_config", e.to_string())
            }
            ClientError::Policy(p) => CliError::from(p),
            ClientError::InvalidUrl { .. } => CliError::Usage(e.to_string()),
            other => CliError::Failed(other.to_string()),
        }
    }
}

/// Runs one command, printing its result to stdout.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Verify(args) => {
            let summary = verify(&args)?;
            print_json(&summary);
        }
        Command::Attest(args) => {
            let summary = attest(&args).await?;
            print_json(&summary);
        }
        Command::Infer(args) => infer(&args).await?,
        Command::SealModel(args) => {
            let summary = seal_model(&args).await?;
            print_json(&seal_summary_json(&summary, &args.out));
        }
        Command::Policy(command) => {
            let out = policy_command(&command).await?;
            print_json(&out);
        }
    }
    Ok(())
}

/// `sealed seal-model`: check the request, build the KMS client, seal.
pub async fn seal_model(args: &SealModelArgs) -> Result<SealSummary, CliError> {
    let request = SealRequest {
        model: &args.model,
        out: &args.out,
        model_id: &args.model_id,
        key_id: &args.key_id,
        chunk_size: args.chunk_size,
        overwrite: args.force,
    };
    // File and argument mistakes first: they should not cost a credentials lookup.
    seal::check_request(&request)?;
    let region = args
        .region
        .as_deref()
        .or_else(|| kms::region_from_key_arn(&args.key_id));
    let client = kms::sdk_client_with(KmsClientConfig {
        endpoint: args.kms_endpoint.as_deref().filter(|e| !e.is_empty()),
        region,
        ca_bundle: args
            .ca_bundle
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty()),
        profile: args.profile.as_deref(),
        credentials: None,
    })
    .await
    .map_err(SealError::from)?;
    let progress = progress_bar();
    let result = seal::seal_model_file(&client, &request, progress.clone()).await;
    progress.finish_and_clear();
    let summary = result?;
    eprintln!(
        "sealed {} ({} bytes) into {} ({} bytes) under {}",
        summary.model_id,
        summary.plaintext_len,
        args.out.display(),
        summary.sealed_len,
        summary.kms_key_id
    );
    Ok(summary)
}

/// Phase ("hashing", "sealing"), bar, bytes done of the model size, rate, time left.
const PROGRESS_TEMPLATE: &str =
    "{msg:8} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";

/// A byte progress bar on stderr when stderr is a terminal; otherwise a hidden one.
fn progress_bar() -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar =
        indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(PROGRESS_TEMPLATE) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The JSON printed by `seal-model`.
pub fn seal_summary_json(summary: &SealSummary, out: &Path) -> Value {
    json!({
        "model_id": summary.model_id,
        "out": out.display().to_string(),
        "kms_key_id": summary.kms_key_id,
        "plaintext_len": summary.plaintext_len,
        "sealed_len": summary.sealed_len,
        "sha384": hex::encode(summary.sha384),
        "chunk_size": summary.chunk_size,
    })
}

fn print_json(value: &Value) {
    // A `Value` always serialises; fall back to compact output rather than fail.
    print_line(&serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

/// Prints a line to stdout. A closed pipe (`sealed verify … | head`) is not an error worth a
/// panic: the reader has what it wanted.
fn print_line(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// Builds the policy from the flags. The age limit is `max_age_flag`, else the policy file's
/// `max_age_secs`, else `default_max_age`; `None` drops the age check.
fn build_policy(
    args: &PolicyArgs,
    max_age_flag: Option<Duration>,
    default_max_age: Option<Duration>,
) -> Result<Policy, CliError> {
    let (mut policy, file_max_age) = match &args.policy_file {
        Some(path) => {
            let file = load_policy_file(path)?;
            (
                file.to_policy(),
                file.max_age_secs().map(Duration::from_secs),
            )
        }
        None => (Policy::new().allow_debug(args.allow_debug), None),
    };
    if let Some(path) = &args.trust_root {
        policy = with_trust_root(policy, path)?;
    }
    for pcr in &args.expect_pcr {
        policy = policy.expect_pcr(pcr.index, pcr.value.clone());
    }
    if args.no_pcr_policy {
        policy = policy.no_pcr_policy();
    }
    policy = match max_age_flag.or(file_max_age).or(default_max_age) {
        Some(age) => policy.max_age(age),
        None => policy.no_max_age(),
    };
    policy.validate()?;
    Ok(policy)
}

fn with_trust_root(policy: Policy, path: &Path) -> Result<Policy, CliError> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("--trust-root {}: {e}", path.display())))?;
    policy
        .trust_root_pem(&pem)
        .map_err(|e| CliError::Usage(format!("--trust-root {}: {e}", path.display())))
}

fn load_policy_file(path: &Path) -> Result<PolicyFile, CliError> {
    PolicyFile::load(path).map_err(|e| policy_file_error(path, e))
}

/// A policy file error, naming the file (I/O errors name it already).
fn policy_file_error(path: &Path, e: PolicyFileError) -> CliError {
    let named = !matches!(e, PolicyFileError::Io { .. });
    match CliError::from(e) {
        CliError::Exit { code, message } if named => CliError::Exit {
            code,
            message: format!("policy file {}: {message}", path.display()),
        },
        other => other,
    }
}

/// `sealed verify`: offline verification of a document file.
pub fn verify(args: &VerifyArgs) -> Result<Value, CliError> {
    let policy = build_policy(&args.policy, args.max_age.map(Duration::from_secs), None)?;
    let nonce = args.nonce.as_ref().map(|n| n.0.clone());
    verify_document_file(&args.document, &policy, nonce, args.at)
}

/// Verifies a recorded document against `policy` as of `at` (default now) and summarises it.
fn verify_document_file(
    path: &Path,
    policy: &Policy,
    nonce: Option<Vec<u8>>,
    at: Option<OffsetDateTime>,
) -> Result<Value, CliError> {
    let now = at.map_or_else(SystemTime::now, SystemTime::from);
    let opts = policy.verify_options(nonce, now)?;
    let document = read_document(path)?;
    let verified = sealed_attestation::verify(&document, &opts)
        .map_err(|e| CliError::from(ClientError::from(e)))?;
    Ok(summary(&verified, policy))
}

/// Reads at most one byte more than the largest document, so an oversized file is refused
/// without being read whole.
fn read_document(path: &Path) -> Result<Vec<u8>, CliError> {
    let failed =
        |e: std::io::Error| CliError::Failed(format!("--document {}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(failed)?;
    let mut bytes = Vec::new();
    file.take(MAX_ATTESTATION_DOC_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() > MAX_ATTESTATION_DOC_LEN {
        return Err(CliError::Failed(format!(
            "--document {}: larger than {MAX_ATTESTATION_DOC_LEN} bytes, not an attestation document",
            path.display()
        )));
    }
    Ok(bytes)
}

fn hex_or_null(bytes: Option<&[u8]>) -> Value {
    bytes.map_or(Value::Null, |b| Value::String(hex::encode(b)))
}

fn rfc3339_of_ms(ms: u64) -> String {
    i128::from(ms)
        .checked_mul(1_000_000)
        .and_then(|nanos| OffsetDateTime::from_unix_timestamp_nanos(nanos).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "out of range".to_string())
}

/// The JSON summary of a verified document.
pub fn summary(doc: &VerifiedDocument, policy: &Policy) -> Value {
    let pcrs: serde_json::Map<String, Value> = doc
        .pcrs
        .iter()
        .map(|(index, value)| (index.to_string(), Value::String(hex::encode(value))))
        .collect();
    json!({
        "module_id": doc.module_id,
        "timestamp_ms": doc.timestamp_ms,
        "timestamp": rfc3339_of_ms(doc.timestamp_ms),
        "digest": doc.digest,
        "pcrs": pcrs,
        "public_key": hex_or_null(doc.public_key.as_deref()),
        "user_data": hex_or_null(doc.user_data.as_deref()),
        "nonce": hex_or_null(doc.nonce.as_deref()),
        "trust_anchor_sha256": hex::encode(policy.anchor().sha256_fingerprint()),
        "accepted_as": accepted_as_json(doc, policy),
    })
}

/// The name of the accepted set the document matched; null for a flag-built (unnamed) set and
/// under --no-pcr-policy.
fn accepted_as_json(doc: &VerifiedDocument, policy: &Policy) -> Value {
    policy
        .accepted_as(&doc.pcrs)
        .and_then(|a| a.name)
        .map_or(Value::Null, Value::String)
}

fn manifest_json(manifest: &ModelManifest) -> Value {
    Value::Array(
        manifest
            .models
            .iter()
            .map(|m| json!({ "model_id": m.model_id, "sha384": hex::encode(&m.sha384) }))
            .collect(),
    )
}

/// Age limit of a live attestation when neither the flag nor a policy file sets one.
const DEFAULT_LIVE_MAX_AGE: Duration = sealed_client::policy::DEFAULT_MAX_AGE;

fn client(args: &HostArgs) -> Result<Client, CliError> {
    let mut policy = build_policy(
        &args.policy,
        args.max_age.map(Duration::from_secs),
        Some(DEFAULT_LIVE_MAX_AGE),
    )?;
    for m in &args.expect_model {
        policy = policy.expect_model(m.model_id.clone(), m.sha384.clone());
    }
    policy.validate()?;
    Ok(Client::new(&args.host, policy)?)
}

/// `sealed attest`: fetch, verify, print.
pub async fn attest(args: &AttestArgs) -> Result<Value, CliError> {
    let client = client(&args.host)?;
    attest_with(&client).await
}

/// Attests `client`'s host and summarises the document with the manifest.
async fn attest_with(client: &Client) -> Result<Value, CliError> {
    let session = client.attest().await?;
    let mut out = summary(session.document(), client.policy());
    if let Value::Object(map) = &mut out {
        map.insert("manifest".into(), manifest_json(session.manifest()));
    }
    Ok(out)
}

/// `sealed infer`: read inputs, attest, run, print and optionally save outputs.
pub async fn infer(args: &InferArgs) -> Result<(), CliError> {
    // Inputs first: a typo in a path should not cost an attestation round trip.
    let mut inputs = Vec::with_capacity(args.input.len());
    for input in &args.input {
        let tensor = npy::read_file(&input.path)
            .map_err(|e| CliError::Failed(format!("input {}: {e}", input.path.display())))?;
        inputs.push(NamedTensor {
            name: input.name.clone(),
            tensor,
        });
    }
    let client = client(&args.host)?;
    let session = client.attest().await?;
    let accepted = session
        .accepted_as()
        .and_then(|a| a.name.as_deref())
        .map_or_else(String::new, |name| format!(", accepted as {name}"));
    eprintln!(
        "attested enclave {} (PCR0 {}{accepted}), models: {}",
        session.document().module_id,
        session
            .document()
            .pcrs
            .get(&0)
            .map_or_else(|| "absent".to_string(), hex::encode),
        session.models().collect::<Vec<_>>().join(", ")
    );
    let outputs = session.infer(&args.model, inputs).await?;
    for output in &outputs {
        print_line(&describe_output(output));
    }
    if let Some(dir) = &args.out {
        write_outputs(dir, &outputs)?;
    }
    Ok(())
}

/// `sealed policy …`: the JSON each subcommand prints.
pub async fn policy_command(command: &PolicyCommand) -> Result<Value, CliError> {
    match command {
        PolicyCommand::Create(args) => policy_create(args),
        PolicyCommand::Add(args) => policy_add(args),
        PolicyCommand::Remove(args) => policy_remove(args),
        PolicyCommand::Show(args) => Ok(policy_json(&load_policy_file(&args.policy)?)),
        PolicyCommand::Check(args) => policy_check(args).await,
    }
}

/// The set `args` describes, from its measurements file.
fn set_from_measurements(args: &MeasurementsArgs) -> Result<BTreeMap<u16, Vec<u8>>, CliError> {
    let named = |e: PolicyFileError| match e {
        PolicyFileError::Io { .. } => CliError::Exit {
            code: 3,
            message: e.to_string(),
        },
        other => CliError::Exit {
            code: 3,
            message: format!("--measurements {}: {other}", args.measurements.display()),
        },
    };
    let measurements = Measurements::load(&args.measurements).map_err(named)?;
    if args.pcrs.is_empty() {
        return Err(CliError::Usage("--pcrs lists no PCR".to_string()));
    }
    measurements
        .select(&args.pcrs)
        .map_err(|e| named(PolicyFileError::Measurements(e)))
}

fn save_policy(file: &PolicyFile, path: &Path) -> Result<(), CliError> {
    file.save(path)
        .map_err(|e| CliError::Failed(format!("writing the policy file: {e}")))
}

fn policy_create(args: &PolicyCreateArgs) -> Result<Value, CliError> {
    if !args.force && args.out.exists() {
        return Err(CliError::Usage(format!(
            "--out {} exists; pass --force to replace it",
            args.out.display()
        )));
    }
    let pcrs = set_from_measurements(&args.measurements)?;
    let usage = |e: PolicyFileError| CliError::Usage(e.to_string());
    let mut file = PolicyFile::new(args.measurements.name.clone(), pcrs).map_err(usage)?;
    file.set_max_age_secs(args.max_age).map_err(usage)?;
    for m in &args.expect_model {
        file.set_model(m.model_id.clone(), m.sha384.clone())
            .map_err(usage)?;
    }
    save_policy(&file, &args.out)?;
    Ok(changed_json(
        &file,
        &args.out,
        "added",
        &args.measurements.name,
    ))
}

fn policy_add(args: &PolicyAddArgs) -> Result<Value, CliError> {
    let mut file = load_policy_file(&args.policy)?;
    let pcrs = set_from_measurements(&args.measurements)?;
    file.add_set(args.measurements.name.clone(), pcrs)?;
    save_policy(&file, &args.policy)?;
    Ok(changed_json(
        &file,
        &args.policy,
        "added",
        &args.measurements.name,
    ))
}

fn policy_remove(args: &PolicyRemoveArgs) -> Result<Value, CliError> {
    let mut file = load_policy_file(&args.policy)?;
    file.remove_set(&args.name)?;
    save_policy(&file, &args.policy)?;
    Ok(changed_json(&file, &args.policy, "removed", &args.name))
}

/// `{"policy": path, "<action>": name, "accept": [names]}`.
fn changed_json(file: &PolicyFile, path: &Path, action: &str, name: &str) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("policy".into(), json!(path.display().to_string()));
    out.insert(action.into(), json!(name));
    out.insert("accept".into(), set_names_json(file));
    Value::Object(out)
}

fn set_names_json(file: &PolicyFile) -> Value {
    Value::Array(file.sets().iter().map(|s| json!(s.name)).collect())
}

/// The validated file as JSON, in the file's own format.
fn policy_json(file: &PolicyFile) -> Value {
    serde_json::from_str(&file.to_json()).unwrap_or(Value::Null)
}

async fn policy_check(args: &PolicyCheckArgs) -> Result<Value, CliError> {
    let file = load_policy_file(&args.policy)?;
    let mut out = json!({
        "policy": args.policy.display().to_string(),
        "valid": true,
        "accept": set_names_json(&file),
    });
    if args.document.is_none() && args.host.is_none() {
        return Ok(out);
    }
    let mut policy = file.to_policy();
    if let Some(path) = &args.trust_root {
        policy = with_trust_root(policy, path)?;
    }
    let default_max_age = args.host.as_ref().map(|_| DEFAULT_LIVE_MAX_AGE);
    policy = match args
        .max_age
        .map(Duration::from_secs)
        .or(file.max_age_secs().map(Duration::from_secs))
        .or(default_max_age)
    {
        Some(age) => policy.max_age(age),
        None => policy.no_max_age(),
    };
    let verified = match (&args.document, &args.host) {
        (Some(document), _) => verify_document_file(document, &policy, None, args.at)?,
        (None, Some(host)) => attest_with(&Client::new(host, policy)?).await?,
        (None, None) => return Ok(out),
    };
    if let Value::Object(map) = &mut out {
        let accepted_as = verified.get("accepted_as").cloned().unwrap_or(Value::Null);
        map.insert("accepted_as".into(), accepted_as);
        map.insert("attestation".into(), verified);
    }
    Ok(out)
}

/// `name: dtype [shape] = [v0, v1, …]`, at most [`PRINT_VALUES`] values.
pub fn describe_output(output: &NamedTensor) -> String {
    let t = &output.tensor;
    let shape: Vec<String> = t.shape().iter().map(u64::to_string).collect();
    let values = format_values(t, PRINT_VALUES);
    let more = t.len().saturating_sub(PRINT_VALUES as u64);
    let suffix = if more > 0 {
        format!(", … ({more} more)")
    } else {
        String::new()
    };
    format!(
        "{}: {} [{}] = [{}{suffix}]",
        output.name,
        t.dtype(),
        shape.join(", "),
        values.join(", ")
    )
}

/// The first `limit` values of a tensor as text.
fn format_values(t: &Tensor, limit: usize) -> Vec<String> {
    let size = t.dtype().size();
    t.data()
        .chunks_exact(size)
        .take(limit)
        .map(|b| {
            let mut le = [0u8; 8];
            for (dst, src) in le.iter_mut().zip(b) {
                *dst = *src;
            }
            let u = u64::from_le_bytes(le);
            // Sign-extend from the element width.
            let shift = 64 - 8 * size as u32;
            let i = ((u << shift) as i64) >> shift;
            match t.dtype() {
                DType::F16 => f16_to_f32(u as u16).to_string(),
                DType::F32 => f32::from_bits(u as u32).to_string(),
                DType::F64 => f64::from_bits(u).to_string(),
                DType::I8 | DType::I16 | DType::I32 | DType::I64 => i.to_string(),
                DType::U8 | DType::U16 | DType::U32 | DType::U64 => u.to_string(),
                DType::Bool => (u != 0).to_string(),
            }
        })
        .collect()
}

/// IEEE 754 binary16 → binary32 (exact: every half value is a float value).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((h >> 10) & 0x1f);
    let mantissa = f32::from(h & 0x3ff);
    match exponent {
        0 => sign * mantissa * 2f32.powi(-24),
        31 if mantissa == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + mantissa / 1024.0) * 2f32.powi(e - 15),
    }
}

/// A file name for an output: the enclave names outputs, and a name must not escape `dir`.
fn output_file_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() || safe.starts_with('.') {
        format!("output_{safe}.npy")
    } else {
        format!("{safe}.npy")
    }
}

fn write_outputs(dir: &Path, outputs: &[NamedTensor]) -> Result<(), CliError> {
    let failed =
        |e: &dyn std::fmt::Display| CliError::Failed(format!("--out {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(|e| failed(&e))?;
    let mut seen = HashSet::new();
    let mut files = BTreeMap::new();
    for output in outputs {
        let file = output_file_name(&output.name);
        if !seen.insert(file.clone()) {
            return Err(failed(&format!(
                "two outputs map to the same file name {file}"
            )));
        }
        files.insert(file, &output.tensor);
    }
    for (file, tensor) in files {
        let path = dir.join(&file);
        npy::write_file(&path, tensor).map_err(|e| failed(&e))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_pcr_flags_and_rejects_bad_ones() {
        let p = parse_pcr("0=00ff").unwrap();
        assert_eq!((p.index, p.value), (0, vec![0, 0xff]));
        assert!(parse_pcr("0").is_err());
        assert!(parse_pcr("x=00").is_err());
        assert!(parse_pcr("0=0g").is_err());
        assert!(parse_pcr("70000=00").is_err());
    }

    #[test]
    fn parses_inputs_as_name_equals_path() {
        let i = parse_input("input=a=b.npy").unwrap();
        assert_eq!(
            (i.name.as_str(), i.path.as_path()),
            ("input", Path::new("a=b.npy"))
        );
        assert!(parse_input("input").is_err());
        assert!(parse_input("=x.npy").is_err());
        assert!(parse_input("x=").is_err());
    }

    #[test]
    fn policy_without_pcr_flags_is_a_usage_error_naming_both_flags() {
        let args = PolicyArgs {
            trust_root: None,
            expect_pcr: vec![],
            policy_file: None,
            no_pcr_policy: false,
            allow_debug: false,
        };
        let err = build_policy(&args, None, None).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let msg = err.to_string();
        assert!(
            msg.contains("--expect-pcr") && msg.contains("--no-pcr-policy"),
            "{msg}"
        );
    }

    #[test]
    fn client_errors_map_to_exit_codes() {
        let v = CliError::from(ClientError::from(
            sealed_attestation::VerifyError::Signature,
        ));
        assert_eq!(v.exit_code(), 1);
        assert!(
            v.to_string()
                .starts_with("verification failed: signature: ")
        );
        let u = CliError::from(
            Client::new("https://x.test", Policy::new().no_pcr_policy()).unwrap_err(),
        );
        assert_eq!(u.exit_code(), 2);
        let f = CliError::from(ClientError::Inference {
            code: sealed_wire::ErrorCode::InputMismatch,
            message: "bad".into(),
        });
        assert_eq!(f.exit_code(), 1);
        assert!(matches!(f, CliError::Failed(_)));
    }

    #[test]
    fn formats_the_first_values_of_every_dtype() {
        let t = Tensor::from_f32(vec![2], &[0.5, -1.25]).unwrap();
        assert_eq!(format_values(&t, 20), ["0.5", "-1.25"]);
        let t = Tensor::from_i64(vec![2], &[-3, i64::MAX]).unwrap();
        assert_eq!(format_values(&t, 20), ["-3", "9223372036854775807"]);
        let t = Tensor::new(DType::I8, vec![2], vec![0xff, 0x7f]).unwrap();
        assert_eq!(format_values(&t, 20), ["-1", "127"]);
        let t = Tensor::new(DType::I16, vec![1], vec![0x00, 0x80]).unwrap();
        assert_eq!(format_values(&t, 20), ["-32768"]);
        let t = Tensor::new(DType::U16, vec![1], vec![0x00, 0x80]).unwrap();
        assert_eq!(format_values(&t, 20), ["32768"]);
        let t = Tensor::new(DType::U64, vec![1], vec![0xff; 8]).unwrap();
        assert_eq!(format_values(&t, 20), [u64::MAX.to_string()]);
        let t = Tensor::new(DType::Bool, vec![2], vec![1, 0]).unwrap();
        assert_eq!(format_values(&t, 20), ["true", "false"]);
        let t = Tensor::from_f64(vec![1], &[0.1]).unwrap();
        assert_eq!(format_values(&t, 20), ["0.1"]);
        let t = Tensor::from_u8(vec![30], &[7; 30]).unwrap();
        assert_eq!(format_values(&t, 20).len(), 20);
    }

    #[test]
    fn converts_half_floats_exactly() {
        for (bits, value) in [
            (0x3c00u16, 1.0f32),
            (0x3e00, 1.5),
            (0xc000, -2.0),
            (0x7bff, 65504.0),
            (0x0001, 2f32.powi(-24)),
            (0x0000, 0.0),
            (0x7c00, f32::INFINITY),
            (0xfc00, f32::NEG_INFINITY),
        ] {
            assert_eq!(f16_to_f32(bits), value, "{bits:#06x}");
        }
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn describes_outputs_with_shape_and_a_count_of_the_rest() {
        let t = Tensor::from_i32(vec![5, 5], &[1; 25]).unwrap();
        let s = describe_output(&NamedTensor {
            name: "label".into(),
            tensor: t,
        });
        assert!(s.starts_with("label: i32 [5, 5] = [1, 1,"), "{s}");
        assert!(s.ends_with(", … (5 more)]"), "{s}");
        let t = Tensor::from_f32(vec![], &[2.5]).unwrap();
        let s = describe_output(&NamedTensor {
            name: "y".into(),
            tensor: t,
        });
        assert_eq!(s, "y: f32 [] = [2.5]");
    }

    #[test]
    fn output_file_names_cannot_escape_the_directory() {
        assert_eq!(output_file_name("probabilities"), "probabilities.npy");
        assert_eq!(
            output_file_name("../../etc/passwd"),
            "output_.._.._etc_passwd.npy"
        );
        assert_eq!(output_file_name("a/b"), "a_b.npy");
        assert_eq!(output_file_name(""), "output_.npy");
        assert_eq!(output_file_name(".hidden"), "output_.hidden.npy");
    }

    #[test]
    fn writes_outputs_and_refuses_colliding_names() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let t = Tensor::from_i64(vec![2], &[1, 2]).unwrap();
        let outputs = vec![NamedTensor {
            name: "label".into(),
            tensor: t.clone(),
        }];
        write_outputs(&out, &outputs).unwrap();
        assert_eq!(npy::read_file(&out.join("label.npy")).unwrap(), t);
        let clash = vec![
            NamedTensor {
                name: "a/b".into(),
                tensor: t.clone(),
            },
            NamedTensor {
                name: "a_b".into(),
                tensor: t,
            },
        ];
        assert!(write_outputs(&out, &clash).is_err());
    }

    #[test]
    fn chunk_sizes_parse_with_units_and_bounds() {
        assert_eq!(parse_chunk_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_chunk_size("1M"), Ok(1 << 20));
        assert_eq!(parse_chunk_size("256k"), Ok(256 << 10));
        assert_eq!(parse_chunk_size("4KiB"), Ok(4096));
        assert_eq!(parse_chunk_size("16M"), Ok(16 << 20));
        for bad in [
            "",
            "1",
            "4095",
            "17M",
            "1G",
            "x",
            "1.5M",
            "99999999999999999999999M",
        ] {
            assert!(parse_chunk_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn progress_template_is_valid() {
        assert!(indicatif::ProgressStyle::with_template(PROGRESS_TEMPLATE).is_ok());
    }

    #[test]
    fn seal_model_ids_are_checked_by_the_parser() {
        assert_eq!(parse_model_id("digits-v1.2_x"), Ok("digits-v1.2_x".into()));
        assert!(parse_model_id("").is_err());
        assert!(parse_model_id("a/b").is_err());
        assert!(parse_model_id(&"x".repeat(300)).is_err());
    }

    #[test]
    fn seal_failures_map_to_distinct_exit_codes() {
        use sealed_client::kms::classify_service_error;
        let code = |e: SealError| CliError::from(e).exit_code();
        assert_eq!(code(SealError::InvalidModelId("x y".into())), 2);
        assert_eq!(code(SealError::Kms(KmsError::NoRegion)), 2);
        assert_eq!(
            code(SealError::ReadModel {
                path: "m.onnx".into(),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            }),
            3
        );
        assert_eq!(
            code(SealError::Kms(KmsError::NoCredentials {
                detail: String::new()
            })),
            4
        );
        let denied = classify_service_error(Some("AccessDeniedException"), Some("no"));
        let e = CliError::from(SealError::Kms(denied));
        assert_eq!(e.exit_code(), 5);
        assert!(
            e.to_string().starts_with("seal-model: KMS denied access"),
            "{e}"
        );
        assert_eq!(
            code(SealError::Kms(KmsError::Unreachable {
                endpoint: "https://127.0.0.1:1".into(),
                detail: "connection refused".into(),
            })),
            6
        );
        assert_eq!(
            code(SealError::Kms(classify_service_error(
                Some("NotFoundException"),
                None
            ))),
            7
        );
    }

    #[test]
    fn rfc3339_of_ms_keeps_milliseconds() {
        assert_eq!(rfc3339_of_ms(1_725_719_859_545), "2024-09-07T14:37:39.545Z");
        assert_eq!(rfc3339_of_ms(0), "1970-01-01T00:00:00Z");
    }
}

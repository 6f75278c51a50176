//! End to end, sealed models: the model owner seals with the `sealed seal-model` CLI (real AWS SDK
//! against the mock KMS), the operator uploads through the host's admin API, the enclave gets the
//! data key from KMS by attesting, and clients run verified, sealed inference on it.

mod common;

use common::bin_dir;
use std::path::Path;

use sealed_client::{Client, Policy, npy};
use sealed_sim::assets::Digits;
use sealed_sim::stack::{Paths, SimAws, Stack, StackOptions};
use sealed_wire::NamedTensor;
use tokio::process::Command;

struct Sim {
    paths: Paths,
    aws: Option<SimAws>,
    stack: Option<Stack>,
    digits: Digits,
    _tmp: tempfile::TempDir,
}

impl Sim {
    async fn start() -> Sim {
        let tmp = tempfile::tempdir().unwrap();
        let paths = common::paths(tmp.path());
        let digits = Digits::load(&paths.assets).unwrap();
        sealed_sim::stack::write_mock_ca(&paths).unwrap();
        let mut sim = Sim {
            paths,
            aws: None,
            stack: None,
            digits,
            _tmp: tmp,
        };
        sim.start_aws_and_stack().await;
        sim
    }

    async fn start_aws_and_stack(&mut self) {
        let aws = SimAws::start(&self.paths).await.unwrap();
        let stack = Stack::start_with(
            &self.paths,
            StackOptions {
                name: "",
                enclave_binary: self.paths.enclave(),
                plaintext_models: Vec::new(),
                aws: Some(&aws),
                enclave_args: Vec::new(),
                host_args: Vec::new(),
                host_enclave_socket: None,
            },
        )
        .await
        .unwrap();
        self.aws = Some(aws);
        self.stack = Some(stack);
    }

    async fn stop_aws_and_stack(&mut self) {
        if let Some(s) = self.stack.take() {
            s.stop().await;
        }
        if let Some(a) = self.aws.take() {
            a.stop().await;
        }
    }

    fn aws(&self) -> &SimAws {
        self.aws.as_ref().unwrap()
    }

    fn stack(&self) -> &Stack {
        self.stack.as_ref().unwrap()
    }

    /// A key whose policy lets the host role decrypt only for an enclave measuring `pcr0`.
    async fn create_key(&self, pcr0: &[u8; 48]) -> String {
        let kms = self.aws().owner_kms_client().await.unwrap();
        let out = kms
            .create_key()
            .policy(sealed_sim::stack::key_policy(pcr0))
            .send()
            .await
            .unwrap();
        out.key_metadata().unwrap().arn().unwrap().to_string()
    }

    /// Runs `sealed seal-model` as the model owner; returns its JSON summary. Async: the mock
    /// KMS it talks to runs on this test's runtime.
    async fn seal_with_cli(&self, key_arn: &str, out: &Path) -> serde_json::Value {
        let aws = self.aws();
        let output = Command::new(bin_dir().join("sealed"))
            .env_clear()
            .envs(aws.owner_env())
            // No shared config files and no IMDS: only the environment's credentials count.
            .env("AWS_CONFIG_FILE", "/nonexistent/config")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .args(["seal-model", "--model-id", "digits", "--key-id", key_arn])
            .arg("--model")
            .arg(&self.digits.model)
            .arg("--out")
            .arg(out)
            .arg("--kms-endpoint")
            .arg(aws.kms.endpoint_url())
            .arg("--ca-bundle")
            .arg(&aws.kms.ca_file)
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "seal-model failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// POSTs a sealed file to the admin API: (HTTP status, JSON body).
    async fn upload(&self, body: Vec<u8>) -> (u16, serde_json::Value) {
        let admin = self.stack().admin_url.clone().unwrap();
        let response = reqwest::Client::new()
            .post(format!("{admin}/v1/admin/models"))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    fn policy(&self) -> Policy {
        let pem = std::fs::read_to_string(&self.stack().root_pem).unwrap();
        Policy::new()
            .trust_root_pem(&pem)
            .unwrap()
            .expect_pcr(0, self.stack().pcr0.to_vec())
    }

    /// The model ids the enclave attests to.
    async fn attested_models(&self) -> Vec<String> {
        let client = Client::new(&self.stack().host_url, self.policy()).unwrap();
        let session = client.attest().await.unwrap();
        session.models().map(str::to_string).collect()
    }

    /// Verified, sealed inference on every bundled example gives the plaintext model's outputs.
    async fn assert_serves_the_models_outputs(&self) {
        let client = Client::new(
            &self.stack().host_url,
            self.policy()
                .expect_model("digits", hex::decode(&self.digits.model_sha384).unwrap()),
        )
        .unwrap();
        let session = client.attest().await.unwrap();
        let expected = expected_outputs();
        for example in &self.digits.examples {
            let tensor = npy::read_file(&example.file).unwrap();
            let outputs = session
                .infer(
                    "digits",
                    vec![NamedTensor {
                        name: "input".into(),
                        tensor,
                    }],
                )
                .await
                .unwrap();
            let label = outputs.iter().find(|o| o.name == "label").unwrap();
            assert_eq!(label.tensor.to_i64().unwrap(), example.predicted_labels);
            let probs = outputs.iter().find(|o| o.name == "probabilities").unwrap();
            let name = example.file.file_name().unwrap().to_str().unwrap();
            let want: Vec<f32> = expected["inputs"][name]["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|row| row.as_array().unwrap().clone())
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let got = probs.tensor.to_f32().unwrap();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{name}: {g} vs {w}");
            }
        }
    }

    async fn stop(mut self) {
        self.stop_aws_and_stack().await;
    }
}

fn expected_outputs() -> serde_json::Value {
    let text =
        std::fs::read_to_string(sealed_sim::assets::default_dir().join("digits/expected.json"))
            .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn error_name(body: &serde_json::Value) -> String {
    body["error"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_model_sealed_with_the_cli_loads_through_the_host_and_gives_the_plaintext_models_outputs()
{
    let sim = Sim::start().await;
    let key = sim.create_key(&sim.stack().pcr0).await;
    let sealed = sim.paths.workdir.join("digits.sealed");
    let summary = sim.seal_with_cli(&key, &sealed).await;
    assert_eq!(summary["sha384"], sim.digits.model_sha384.as_str());
    assert_eq!(summary["kms_key_id"], key.as_str());

    // The sealed file does not contain the model in the clear.
    let model = std::fs::read(&sim.digits.model).unwrap();
    let file = std::fs::read(&sealed).unwrap();
    let probe = &model[model.len() / 2..model.len() / 2 + 32];
    assert!(!file.windows(probe.len()).any(|w| w == probe));

    let (status, body) = sim.upload(file).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model_id"], "digits");
    assert_eq!(body["sha384"], sim.digits.model_sha384.as_str());
    sim.assert_serves_the_models_outputs().await;
    sim.stop().await;
}

#[tokio::test]
async fn a_key_policy_naming_another_pcr0_denies_the_key_and_nothing_is_loaded() {
    let sim = Sim::start().await;
    let mut other = sim.stack().pcr0;
    other[47] ^= 0x80;
    let key = sim.create_key(&other).await;
    let sealed = sim.paths.workdir.join("digits.sealed");
    sim.seal_with_cli(&key, &sealed).await;
    let (status, body) = sim.upload(std::fs::read(&sealed).unwrap()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_name(&body), "model_access_denied");
    assert!(sim.attested_models().await.is_empty());
    sim.stop().await;
}

#[tokio::test]
async fn every_flipped_bit_and_every_truncation_is_rejected_and_the_good_file_still_loads() {
    let sim = Sim::start().await;
    let key = sim.create_key(&sim.stack().pcr0).await;
    let sealed = sim.paths.workdir.join("digits.sealed");
    sim.seal_with_cli(&key, &sealed).await;
    let file = std::fs::read(&sealed).unwrap();
    let header_len = sealed_model::header_total_len(&file).unwrap();

    // Positions spread over the whole file: magic, header length, CBOR header (model id, key
    // id, CiphertextBlob, sizes, digest, nonce prefix), every chunk's body and tag, the last byte.
    let mut positions: Vec<usize> = vec![0, 7, 8, 11, file.len() - 1, file.len() - 16];
    positions.extend((12..header_len).step_by((header_len / 12).max(1)));
    positions.extend((header_len..file.len()).step_by(((file.len() - header_len) / 12).max(1)));
    for &pos in &positions {
        let mut bad = file.clone();
        bad[pos] ^= 0x04;
        let (status, body) = sim.upload(bad).await;
        assert_ne!(status, 200, "bit flip at {pos} was accepted");
        if pos >= header_len {
            assert_eq!(error_name(&body), "model_corrupt", "flip at {pos}: {body}");
        }
    }
    for cut in [
        1,
        11,
        12,
        header_len - 1,
        header_len,
        header_len + 100,
        file.len() - 1,
    ] {
        let (status, body) = sim.upload(file[..cut].to_vec()).await;
        assert_ne!(status, 200, "truncation to {cut} bytes was accepted");
        assert_eq!(error_name(&body), "model_corrupt", "cut at {cut}: {body}");
    }
    assert!(sim.attested_models().await.is_empty());

    let (status, body) = sim.upload(file).await;
    assert_eq!(status, 200, "{body}");
    sim.assert_serves_the_models_outputs().await;
    sim.stop().await;
}

#[tokio::test]
async fn a_model_sealed_before_a_kms_restart_opens_after_it() {
    let mut sim = Sim::start().await;
    let key = sim.create_key(&sim.stack().pcr0).await;
    let sealed = sim.paths.workdir.join("digits.sealed");
    sim.seal_with_cli(&key, &sealed).await;
    // Mock KMS, IMDS, enclave and host all go down; the key survives in the KMS state file.
    sim.stop_aws_and_stack().await;
    sim.start_aws_and_stack().await;
    let (status, body) = sim.upload(std::fs::read(&sealed).unwrap()).await;
    assert_eq!(status, 200, "{body}");
    sim.assert_serves_the_models_outputs().await;
    sim.stop().await;
}

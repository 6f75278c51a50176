//! Shared by the end-to-end test binaries.

// Every test binary compiles this module (`mod common;`) and each uses only part of it, so what one
// binary leaves unused is not dead code.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sealed_client::{Client, Policy, Session};
use sealed_sim::assets::Digits;
use sealed_sim::stack::{ModelFile, Paths, SimAws, Stack, StackOptions};
use sealed_wire::{NamedTensor, Tensor};

/// target/debug, where cargo put the binaries (the test runs from target/debug/deps).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    for bin in ["sealed-enclave", "sealed-host", "sealed"] {
        assert!(
            dir.join(bin).is_file(),
            "{} missing: run ./scripts/test.sh (it builds the simulation binaries first)",
            dir.join(bin).display()
        );
    }
    dir
}

/// The test binaries, the bundled assets and `workdir`, children logging at `warn`.
pub fn paths(workdir: &Path) -> Paths {
    Paths {
        bin_dir: bin_dir(),
        assets: sealed_sim::assets::default_dir(),
        workdir: workdir.to_path_buf(),
        child_log: "warn".to_string(),
    }
}

/// `tensor` as the digits model's one input, `input`.
pub fn input(tensor: Tensor) -> Vec<NamedTensor> {
    vec![NamedTensor {
        name: "input".to_string(),
        tensor,
    }]
}

/// A running simulation stack in its own temporary work directory: a fresh mock CA, the enclave
/// and the host with the bundled digits model loaded as `digits`, and with
/// [`Sim::start_with_aws`] the simulated AWS (mock KMS, mock IMDS, admin API).
///
/// No `Drop`: a test may move `stack` out to stop it. Fields drop in order, so the children are
/// killed before the work directory is removed.
pub struct Sim {
    pub stack: Stack,
    pub aws: Option<SimAws>,
    pub digits: Digits,
    pub paths: Paths,
    _tmp: tempfile::TempDir,
}

impl Sim {
    /// Without AWS; `enclave_args` and `host_args` go after the ones the stack sets.
    pub async fn start(enclave_args: &[&str], host_args: &[&str]) -> Sim {
        Sim::launch(false, enclave_args, host_args).await
    }

    /// With the simulated AWS; the arguments as for [`Sim::start`].
    pub async fn start_with_aws(enclave_args: &[&str], host_args: &[&str]) -> Sim {
        Sim::launch(true, enclave_args, host_args).await
    }

    async fn launch(with_aws: bool, enclave_args: &[&str], host_args: &[&str]) -> Sim {
        let tmp = tempfile::tempdir().unwrap();
        let paths = paths(tmp.path());
        let digits = Digits::load(&paths.assets).unwrap();
        sealed_sim::stack::write_mock_ca(&paths).unwrap();
        let aws = if with_aws {
            Some(SimAws::start(&paths).await.unwrap())
        } else {
            None
        };
        let stack = Stack::start_with(
            &paths,
            StackOptions {
                name: "",
                enclave_binary: paths.enclave(),
                plaintext_models: vec![ModelFile {
                    id: "digits".to_string(),
                    path: digits.model.clone(),
                }],
                aws: aws.as_ref(),
                enclave_args: enclave_args.iter().map(|a| a.to_string()).collect(),
                host_args: host_args.iter().map(|a| a.to_string()).collect(),
                host_enclave_socket: None,
            },
        )
        .await
        .unwrap();
        Sim {
            stack,
            aws,
            digits,
            paths,
            _tmp: tmp,
        }
    }

    /// The simulated AWS (panics when started without it).
    pub fn aws(&self) -> &SimAws {
        self.aws.as_ref().expect("started with Sim::start_with_aws")
    }

    /// Trusts this stack's mock CA root and expects its enclave's PCR0.
    pub fn policy(&self) -> Policy {
        let pem = std::fs::read_to_string(&self.stack.root_pem).unwrap();
        Policy::new()
            .trust_root_pem(&pem)
            .unwrap()
            .expect_pcr(0, self.stack.pcr0.to_vec())
    }

    /// An attested session with the host under [`Sim::policy`].
    pub async fn session(&self) -> Session {
        Client::new(&self.stack.host_url, self.policy())
            .unwrap()
            .attest()
            .await
            .unwrap()
    }

    /// Stops the host and enclave, then the simulated AWS.
    pub async fn stop(self) {
        self.stack.stop().await;
        if let Some(aws) = self.aws {
            aws.stop().await;
        }
    }
}

//! `sealed-bench micro`: attestation verification beside its ES384 verifications, and sealed-model
//! unseal throughput (docs/performance.md). Owned by H3 this round; skeleton only.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("sealed-bench micro is not implemented yet")
}

//! `sealed-bench compare`: bare tract vs the sealed path vs the plain-HTTP path (docs/performance.md).
//! Owned by H2 this round; skeleton only.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("sealed-bench compare is not implemented yet")
}

/// `sealed-bench bare-rss`: a child process that holds one model in bare tract and reports its
/// peak RSS.
#[derive(clap::Args)]
pub struct BareRssArgs {}

pub fn bare_rss(_args: BareRssArgs) -> anyhow::Result<()> {
    anyhow::bail!("sealed-bench bare-rss is not implemented yet")
}

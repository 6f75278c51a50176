//! `sealed-bench`: load generation and benchmarks against the simulation (being built; see
//! README "Benchmarks").

fn main() -> anyhow::Result<()> {
    anyhow::bail!("sealed-bench: no subcommand is implemented yet")
}

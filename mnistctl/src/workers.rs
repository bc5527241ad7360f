//! `mnistctl workers`: placeholder until the coordinator client lands.

use crate::cli::Global;

#[derive(Debug, clap::Args)]
pub struct WorkersArgs {}

pub fn run(_args: WorkersArgs, _global: &Global) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

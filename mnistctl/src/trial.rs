//! `mnistctl trial`: placeholder until the coordinator client lands.

use crate::cli::Global;

#[derive(Debug, clap::Subcommand)]
pub enum TrialCmd {
    /// List.
    List,
}

pub fn run(_cmd: TrialCmd, _global: &Global) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

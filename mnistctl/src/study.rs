//! `mnistctl study`: placeholder until the coordinator client lands.

use crate::cli::Global;

#[derive(Debug, clap::Subcommand)]
pub enum StudyCmd {
    /// List.
    List,
}

pub fn run(_cmd: StudyCmd, _global: &Global) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

//! `mnistctl`: the command-line interface.
//!
//! One binary for everything a user does by hand:
//! - `train`, `predict`, `doctor`: a single training run, inference and an
//!   environment check, on this machine (the seed's `main.py` and
//!   `inference.py`);
//! - `tune`: a whole study on this machine, with an embedded coordinator and
//!   one local worker per device (the seed's `tune.py`);
//! - `study`, `trial`, `workers`: a client of a running coordinator.
//!
//! Errors are reported once, at this edge, with `anyhow`; the exit code is 1
//! for a failed command, 2 for bad usage (clap), and 130 when Ctrl-C cut
//! `tune`'s final MLflow wait short.

mod cli;
mod client;
mod doctor;
mod logging;
mod mlflow;
mod output;
mod predict;
mod study;
mod train;
mod tune;
mod trial;
mod workers;

use clap::{CommandFactory, FromArgMatches};

fn main() {
    let matches = cli::Cli::command().get_matches();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // A global flag the chosen command does not read is a mistake, not a no-op.
    if let Some(msg) = cli::unused_global_flag(&cli.command, &matches) {
        cli::Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, msg)
            .exit();
    }
    match &cli.command {
        // `tune` logs above its progress bar.
        cli::Command::Tune(_) => tune::init_logging(cli.global.verbose),
        _ => logging::init(cli.global.verbose),
    }
    let result = match cli.command {
        cli::Command::Train(args) => train::run(args),
        cli::Command::Predict(args) => predict::run(args),
        cli::Command::Doctor(args) => doctor::run(args, &cli.global),
        cli::Command::Study { cmd } => study::run(cmd, &cli.global),
        cli::Command::Trial { cmd } => trial::run(cmd, &cli.global),
        cli::Command::Workers(args) => workers::run(args, &cli.global),
        cli::Command::Tune(args) => tune::run(args),
        cli::Command::Mlflow { cmd } => mlflow::run(cmd),
    };
    if let Err(err) = result {
        if let Some(why) = err.downcast_ref::<tune::Interrupted>() {
            eprintln!("interrupted: {why}");
            std::process::exit(130);
        }
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

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
//! `tune` short (its trials, or its final MLflow wait).

/// `println!` for this crate's output. A reader that went away (`mnistctl
/// study list | head -1`) ends the command quietly with exit 0, as it does
/// for other Unix tools, where std's `println!` panics on the broken pipe;
/// another write error (a full disk) is an error, exit 1.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::stdout_failed(e)
        }
    }};
}

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

use std::io::Write as _;

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
        // (A closed stderr loses the message, not the exit code.)
        if let Some(why) = err.downcast_ref::<tune::Interrupted>() {
            let _ = writeln!(std::io::stderr(), "interrupted: {why}");
            std::process::exit(130);
        }
        let _ = writeln!(std::io::stderr(), "error: {}", mnist_common::logging::error_chain(err.as_ref()));
        std::process::exit(1);
    }
}

/// See `println!` above.
fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    let _ = writeln!(std::io::stderr(), "error: writing to standard output: {e}");
    std::process::exit(1)
}

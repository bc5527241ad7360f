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

/// `println!` for this crate's output. Once the reader has gone away
/// (`mnistctl study list | head -1`), further output is dropped and the
/// command carries on (a training run still logs to MLflow, `tune` still
/// delivers), where std's `println!` panics on the broken pipe; `study
/// watch` then ends. Another write error (a full disk) is reported once and
/// makes the exit code 1.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if !$crate::stdout_gone() {
            if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
                $crate::stdout_failed(e)
            }
        }
    }};
}

/// `print!` with the same rules as `println!` above.
macro_rules! print {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if !$crate::stdout_gone() {
            if let Err(e) = write!(std::io::stdout(), $($arg)*) {
                $crate::stdout_failed(e)
            }
        }
    }};
}

/// `eprintln!` that never panics: a closed stderr (the terminal or ssh
/// session is gone) loses the message, not the command.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
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

use std::sync::atomic::{AtomicBool, Ordering};

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
            eprintln!("interrupted: {why}");
            std::process::exit(130);
        }
        eprintln!("error: {}", mnist_common::logging::error_chain(err.as_ref()));
        std::process::exit(1);
    }
    if STDOUT_FAILED.load(Ordering::Relaxed) {
        std::process::exit(1);
    }
}

/// Standard output can no longer be written (see `println!` above).
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
/// ... for another reason than a reader that left: the exit code is 1.
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Whether standard output is gone; commands that only print (`study
/// watch`) stop then.
fn stdout_gone() -> bool {
    STDOUT_GONE.load(Ordering::Relaxed)
}

/// See `println!` above.
fn stdout_failed(e: std::io::Error) {
    if !STDOUT_GONE.swap(true, Ordering::Relaxed) && e.kind() != std::io::ErrorKind::BrokenPipe {
        STDOUT_FAILED.store(true, Ordering::Relaxed);
        eprintln!("error: writing to standard output: {e}; the rest of the output is dropped");
    }
}

//! The top-level command line: global options and the subcommand list.

use clap::{Parser, Subcommand, ValueEnum};

/// Train, tune and serve an MNIST CNN; drive a distributed tuning cluster.
#[derive(Debug, Parser)]
#[command(name = "mnistctl", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every subcommand.
#[derive(Debug, clap::Args)]
pub struct Global {
    /// Address of the coordinator (for study, trial and workers commands).
    #[arg(long, global = true, env = "MNISTCTL_COORDINATOR", default_value = "http://127.0.0.1:50051")]
    pub coordinator: String,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// More logging (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table for people.
    Table,
    /// JSON for programs.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train the CNN once and write the model, metrics and plots (the seed's main.py).
    Train(crate::train::TrainArgs),
    /// Predict digits with a trained model, from test-set indices or PNG files.
    Predict(crate::predict::PredictArgs),
    /// Check libtorch, CUDA, cuDNN, the devices and the data set.
    Doctor(crate::doctor::DoctorArgs),
    /// Manage studies on a coordinator.
    Study {
        #[command(subcommand)]
        cmd: crate::study::StudyCmd,
    },
    /// Enqueue and inspect trials.
    Trial {
        #[command(subcommand)]
        cmd: crate::trial::TrialCmd,
    },
    /// List the connected workers, their devices and current trials.
    Workers(crate::workers::WorkersArgs),
    /// Tune on this machine: an embedded coordinator and a local worker per device (the seed's tune.py).
    Tune(crate::tune::TuneArgs),
    /// Deliver or inspect the MLflow outbox of a study database or a training run.
    Mlflow {
        #[command(subcommand)]
        cmd: crate::mlflow::MlflowCmd,
    },
}

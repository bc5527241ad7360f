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

impl Command {
    /// The subcommand's name as typed.
    fn name(&self) -> &'static str {
        match self {
            Command::Train(_) => "train",
            Command::Predict(_) => "predict",
            Command::Doctor(_) => "doctor",
            Command::Study { .. } => "study",
            Command::Trial { .. } => "trial",
            Command::Workers(_) => "workers",
            Command::Tune(_) => "tune",
            Command::Mlflow { .. } => "mlflow",
        }
    }
}

/// The message for a global flag given on the command line to a command that
/// does not read it (`--coordinator` outside `study`, `trial` and `workers`;
/// `--output` outside those and `doctor`); `None` if there is none. Values from
/// the environment (`MNISTCTL_COORDINATOR`) are not flagged.
pub fn unused_global_flag(command: &Command, matches: &clap::ArgMatches) -> Option<String> {
    let given = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(clap::parser::ValueSource::CommandLine)
        )
    };
    let client = matches!(
        command,
        Command::Study { .. } | Command::Trial { .. } | Command::Workers(_)
    );
    let name = command.name();
    if given("coordinator") && !client {
        let why = match command {
            Command::Tune(_) => " (it runs its own coordinator in this process)",
            _ => " (it does not talk to a coordinator)",
        };
        return Some(format!(
            "--coordinator is not used by `mnistctl {name}`{why}; leave it out"
        ));
    }
    if given("output") && matches!(command, Command::Study { cmd: crate::study::StudyCmd::Export { .. } }) {
        return Some("--output/-o is not used by `mnistctl study export`: choose its format with --format csv|json".into());
    }
    if given("output") && !client && !matches!(command, Command::Doctor(_)) {
        return Some(format!(
            "--output/-o is not used by `mnistctl {name}` (only study, trial, workers and \
             doctor print tables or JSON); leave it out"
        ));
    }
    None
}

//! What `mnistctl tune` shows while it runs: a progress bar (trials finished
//! of n_trials, the best value so far, the latest epoch report) fed by the
//! study's event stream, one line per finished trial, and a log writer that
//! prints tracing output above the bar instead of through it.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use indicatif::ProgressBar;
use mnist_proto::v1 as pb;
use tracing_subscriber::EnvFilter;

use crate::output::{fmt_num, opt_num, trial_state};

/// The bar the log writer prints around (set while the bar is shown).
static BAR: OnceLock<Mutex<Option<ProgressBar>>> = OnceLock::new();

fn bar_slot() -> &'static Mutex<Option<ProgressBar>> {
    BAR.get_or_init(|| Mutex::new(None))
}

/// A tracing writer: each log line goes to stderr above the progress bar.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = bar_slot().lock().unwrap_or_else(|p| p.into_inner()).clone();
        match bar {
            Some(b) if !b.is_hidden() => b.suspend(|| std::io::stderr().write_all(buf))?,
            _ => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Logging for `tune`: on a terminal with a bar, the worker's and the
/// coordinator's per-epoch chatter is left out (warnings still show); in
/// logs everything at info. `-v` and RUST_LOG as everywhere.
pub fn init_logging(verbose: u8) {
    let default = match (verbose, mnist_common::progress::bars_enabled()) {
        (0, true) => "warn,mnistctl=info",
        (0, false) => "info",
        (1, _) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        .with_ansi(mnist_common::progress::bars_enabled())
        .with_target(false)
        .try_init();
}

/// The live display of one study.
pub struct Progress {
    bar: ProgressBar,
    metric: String,
    best: String,
    running: u32,
    latest: String,
}

impl Progress {
    /// A bar for `study`, starting from its current counts.
    pub fn new(study: &pb::Study) -> Progress {
        let spec = study.spec.clone().unwrap_or_default();
        let c = study.counts.unwrap_or_default();
        let bar = mnist_common::progress::bar(
            u64::from(spec.n_trials),
            "{prefix} [{bar:30}] {pos}/{len} trials {elapsed_precise} | {msg}",
        );
        bar.set_prefix(study.name.clone());
        bar.set_position(u64::from(c.complete + c.pruned + c.fail));
        *bar_slot().lock().unwrap_or_else(|p| p.into_inner()) = Some(bar.clone());
        let mut p = Progress { bar, metric: spec.metric, best: String::new(), running: c.running, latest: String::new() };
        p.best = p.best_text(study.best_trial.as_ref().and_then(|t| t.value), study.best_trial.as_ref().map(|t| t.number));
        p.redraw();
        p
    }

    fn best_text(&self, v: Option<f64>, n: Option<u64>) -> String {
        match (v, n) {
            (Some(v), Some(n)) => format!("best {} {} (#{n})", self.metric, fmt_num(v)),
            _ => "no complete trial yet".into(),
        }
    }

    fn redraw(&self) {
        let mut msg = format!("{} | {} running", self.best, self.running);
        if !self.latest.is_empty() {
            msg.push_str(" | ");
            msg.push_str(&self.latest);
        }
        self.bar.set_message(msg);
    }

    /// A line above the bar (or a log line when there is no bar).
    fn line(&self, text: String) {
        if self.bar.is_hidden() {
            tracing::info!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    /// Updates from one event; true when the study ended.
    pub fn event(&mut self, ev: &pb::StudyEvent) -> bool {
        use pb::EventKind::*;
        let kind = pb::EventKind::try_from(ev.kind).unwrap_or(Unspecified);
        let c = ev.counts.unwrap_or_default();
        self.running = c.running;
        self.bar.set_position(u64::from(c.complete + c.pruned + c.fail));
        self.best = self.best_text(ev.best_value, ev.best_trial_number);
        let n = ev.trial_number.unwrap_or(0);
        match kind {
            TrialReported => {
                self.latest = format!("#{n} epoch {}: {}", ev.step.map(|s| s + 1).unwrap_or(0), opt_num(ev.value));
            }
            TrialCompleted | TrialPruned => {
                let test = ev.metrics.get("test_accuracy").map(|a| format!(", test_accuracy {}", fmt_num(*a))).unwrap_or_default();
                self.line(format!(
                    "trial #{n} {}: {} {}{test} | {}",
                    trial_state(ev.trial_state),
                    self.metric,
                    opt_num(ev.value),
                    self.best
                ));
            }
            TrialFailed => self.line(format!("trial #{n} FAIL: {}", ev.message)),
            TrialRequeued => self.line(format!("trial #{n} re-queued: {}", ev.message)),
            _ => {}
        }
        self.redraw();
        matches!(kind, StudyCompleted | StudyStopped | StudyDeleted)
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
        *bar_slot().lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

//! Progress bars that appear only when stderr is a terminal.
//!
//! Long work (downloads, training epochs, tuning studies) shows an `indicatif`
//! bar on a terminal; in logs and CI the bar is hidden and the caller's
//! `tracing` events carry the same information.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// True when progress bars should be drawn (stderr is a terminal and
/// `MNIST_NO_PROGRESS` is unset).
pub fn bars_enabled() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("MNIST_NO_PROGRESS").is_none()
}

/// A bar with `len` steps and the given template, hidden when bars are off.
pub fn bar(len: u64, template: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if bars_enabled() {
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        pb.set_style(style);
    } else {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb
}

/// A byte-counting bar for downloads.
pub fn bytes_bar(len: Option<u64>, name: &str) -> ProgressBar {
    let pb = bar(
        len.unwrap_or(0),
        "{msg:28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    );
    pb.set_message(name.to_string());
    pb
}

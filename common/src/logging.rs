//! Logging set-up shared by the binaries: `tracing` to stderr, filtered by
//! `RUST_LOG` or a verbosity count, in colour only on a terminal (redirected
//! logs, files and journald stay plain text).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter for `verbose` `-v` flags: info, debug, then trace.
pub fn default_filter(verbose: u8) -> &'static str {
    match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    }
}

/// Installs the global subscriber writing to stderr; `RUST_LOG` overrides
/// `default`. A second call does nothing.
///
/// A log line that cannot be written (stderr closed: the terminal or ssh
/// session that started the process is gone, a `| head` reader exited) is
/// dropped quietly. The default would report it with `eprintln!`, which
/// panics on the same closed stderr, inside whatever task was logging.
pub fn init_stderr(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .log_internal_errors(false)
        .try_init();
}

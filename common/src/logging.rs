//! Logging set-up shared by the binaries: `tracing` to stderr, filtered by
//! `RUST_LOG` or a verbosity count, in colour only on a terminal (redirected
//! logs, files and journald stay plain text); and the one-line text of an
//! error with its causes, for the binaries' final message.

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

/// An error and its causes on one line, `a: b: c`, leaving out a cause whose
/// text the line already holds (many of our messages name their cause
/// inline, with advice after it, and also keep it as the `source`).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum E {
        #[error("reading f: the data is corrupt ({source}); delete it")]
        Inline { source: std::io::Error },
        #[error("loading the model")]
        Wrapped { source: std::io::Error },
    }

    #[test]
    fn causes_are_named_once() {
        let io = || std::io::Error::other("unexpected end of file");
        assert_eq!(error_chain(&E::Inline { source: io() }), "reading f: the data is corrupt (unexpected end of file); delete it");
        assert_eq!(error_chain(&E::Wrapped { source: io() }), "loading the model: unexpected end of file");
    }
}

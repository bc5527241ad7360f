//! Logging set-up: `tracing` to stderr, filtered by RUST_LOG or -v.

/// Install the global subscriber. `verbose` counts -v flags.
pub fn init(verbose: u8) {
    mnist_common::logging::init_stderr(mnist_common::logging::default_filter(verbose));
}

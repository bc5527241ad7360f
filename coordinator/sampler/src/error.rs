//! Error types of the crate: what went wrong with a search space, a sample or a
//! sampler/pruner configuration, worded so that a person can act on it.

use thiserror::Error;

/// A problem with a search space, a distribution or a parameter value.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SpaceError {
    /// `low` is not strictly below `high`.
    #[error("parameter `{name}`: low ({low}) must be less than high ({high})")]
    LowNotBelowHigh { name: String, low: f64, high: f64 },
    /// `low > high` (a single-valued range `low == high` is allowed only when read from Optuna).
    #[error("parameter `{name}`: low ({low}) must not exceed high ({high})")]
    LowAboveHigh { name: String, low: f64, high: f64 },
    /// A bound or step is NaN or infinite.
    #[error("parameter `{name}`: {what} must be a finite number, got {value}")]
    NonFinite {
        name: String,
        what: &'static str,
        value: f64,
    },
    /// Finite bounds whose difference is not (it overflows to infinity).
    #[error("parameter `{name}`: the range [{low}, {high}] is too wide (high - low overflows); narrow it, or use log=true for a range over many decades")]
    RangeTooWide { name: String, low: f64, high: f64 },
    /// Log scale with a non-positive lower bound.
    #[error(
        "parameter `{name}`: log=true needs low > 0 (and low >= 1 for integers), got low={low}"
    )]
    LogNonPositive { name: String, low: f64 },
    /// Log scale together with a step.
    #[error("parameter `{name}`: log=true cannot be combined with a step (use step = 1 for integers, or drop the step)")]
    LogWithStep { name: String },
    /// A step that is zero or negative.
    #[error("parameter `{name}`: step must be > 0, got {step}")]
    NonPositiveStep { name: String, step: f64 },
    /// A step that does not divide `high - low`.
    #[error("parameter `{name}`: step {step} does not divide the range [{low}, {high}]; pick high = low + k*step")]
    StepDoesNotDivide {
        name: String,
        low: f64,
        high: f64,
        step: f64,
    },
    /// A categorical parameter without choices.
    #[error("parameter `{name}`: a categorical parameter needs at least one choice")]
    EmptyChoices { name: String },
    /// The same choice listed twice.
    #[error("parameter `{name}`: choice {choice} is listed more than once")]
    DuplicateChoice { name: String, choice: String },
    /// The same parameter name twice.
    #[error("parameter `{name}` is defined more than once")]
    DuplicateName { name: String },
    /// A search space without parameters.
    #[error("the search space has no parameters")]
    EmptySpace,
    /// A value that cannot be represented in a distribution.
    #[error("value {value} is not valid for {distribution}: {reason}")]
    InvalidValue {
        value: String,
        distribution: String,
        reason: String,
    },
    /// A malformed TOML/JSON document or distribution entry.
    #[error("cannot parse {format}: {message}")]
    Parse {
        format: &'static str,
        message: String,
    },
}

/// A problem while sampling a new trial.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SampleError {
    /// Every grid point has been evaluated; the study should stop.
    #[error("the grid is exhausted: all {n_points} grid points have been evaluated")]
    GridExhausted { n_points: usize },
    /// The grid sampler cannot enumerate a parameter.
    #[error("grid sampler: {0}")]
    Grid(String),
    /// The search space is invalid.
    #[error(transparent)]
    Space(#[from] SpaceError),
}

/// A problem with a sampler or pruner configuration.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConfigError {
    #[error("invalid {component} option `{option}`: {message}")]
    Invalid {
        component: &'static str,
        option: &'static str,
        message: String,
    },
    #[error("cannot parse configuration JSON: {0}")]
    Parse(String),
}

//! Samplers and pruners for the MNIST tuning coordinator: pure Rust, no I/O.
//!
//! * [`space`]: search spaces (float / int / categorical), the TOML/JSON user
//!   format, and Optuna's `distribution_json` both ways.
//! * [`trial`]: the study history as samplers and pruners see it.
//! * [`sampler`]: the [`Sampler`](sampler::Sampler) trait with random, grid and
//!   TPE (after Optuna 5.0's `TPESampler`), and enqueued fixed parameters.
//! * [`pruner`]: the [`Pruner`](pruner::Pruner) trait with none, median /
//!   percentile, successive halving (ASHA) and Hyperband.
//! * [`config`]: serialisable [`SamplerConfig`] / [`PrunerConfig`].
//!
//! Everything is deterministic: a suggestion is a pure function of the seed, the
//! trials, the trial number and the space, so a restarted coordinator needs no
//! saved sampler state.

pub mod config;
pub mod error;
pub mod pruner;
mod pyjson;
pub mod rng;
pub mod sampler;
pub mod space;
pub mod trial;

pub use config::{PrunerConfig, SamplerConfig};
pub use error::{ConfigError, SampleError, SpaceError};
pub use pruner::{HyperbandPruner, MedianPruner, NopPruner, PercentilePruner, Pruner, SuccessiveHalvingPruner};
pub use sampler::{GridSampler, RandomSampler, Sampler, TpeConfig, TpeSampler};
pub use space::{Choice, Distribution, SearchSpace};
pub use trial::{Direction, FrozenTrial, TrialState};

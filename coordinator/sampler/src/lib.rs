//! Samplers and pruners for the MNIST tuning coordinator: pure Rust, no I/O.
//!
//! * [`space`]: search spaces (float / int / categorical), the TOML/JSON user
//!   format, and Optuna's `distribution_json` both ways.
//! * [`trial`]: the study history as samplers and pruners see it.
//! * [`sampler`]: the [`Sampler`] trait with random, grid and
//!   TPE (after Optuna 5.0's `TPESampler`), and enqueued fixed parameters.
//! * [`pruner`]: the [`Pruner`] trait with none, median /
//!   percentile, successive halving (ASHA) and Hyperband.
//! * [`config`]: serialisable [`SamplerConfig`] / [`PrunerConfig`].
//!
//! Everything is deterministic: a suggestion is a pure function of the seed, the
//! trials, the trial number and the space, so a restarted coordinator needs no
//! saved sampler state.
//!
//! # Using it from the coordinator
//!
//! * Store the study's [`SamplerConfig`] / [`PrunerConfig`] as JSON; rebuild with
//!   `build()` whenever needed (they hold no state).
//! * **ask**: if [`sampler::first_waiting_trial`] returns an enqueued trial, serve
//!   it (mark it RUNNING) and fill its missing parameters with
//!   [`sampler::suggest`]`(.., Some(&fixed))`; otherwise call
//!   [`Sampler::sample_with`](sampler::Sampler::sample_with) with the study's
//!   [`sampler::SamplerCache`] and every trial of the study (RUNNING trials
//!   included: TPE's constant liar needs them) and store the returned internal
//!   values with their distributions on the new RUNNING trial. Keep one cache
//!   per study; it only saves rereading finished trials (the result is what
//!   [`Sampler::sample`](sampler::Sampler::sample) returns).
//!   Convert to user values with [`Distribution::to_external`]; store
//!   [`Distribution::to_optuna_json`] in `distribution_json`.
//! * A grid sampler returns [`SampleError::GridExhausted`] when every point has
//!   finished; [`Sampler::is_exhausted`](sampler::Sampler::is_exhausted) tells it
//!   after a tell, so the study can stop as Optuna's does.
//! * **report**: after storing an intermediate value, call
//!   [`Pruner::decide`](pruner::Pruner::decide) with the trial, the whole study
//!   and the study's [`PrunerState`] (one per study, kept between calls); store
//!   the decision's rung values on the trial ([`FrozenTrial::rungs`]; in the
//!   database as Optuna's `completed_rung_{rung}` trial system attributes).
//! * A COMPLETE trial whose value is NaN is treated as failed (Optuna marks it FAIL).

pub mod config;
pub mod error;
pub mod pruner;
pub mod pyjson;
pub mod rng;
pub mod sampler;
pub mod space;
pub mod trial;

pub use config::{PrunerConfig, SamplerConfig};
pub use error::{ConfigError, SampleError, SpaceError};
pub use pruner::{
    Decision, HyperbandPruner, MedianPruner, NopPruner, PercentilePruner, Pruner, PrunerState,
    SuccessiveHalvingPruner,
};
pub use sampler::{GridSampler, RandomSampler, Sampler, TpeConfig, TpeSampler};
pub use space::{Choice, Distribution, SearchSpace};
pub use trial::{Direction, FrozenTrial, TrialState};

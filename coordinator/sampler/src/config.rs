//! Serialisable sampler and pruner choices, so the coordinator can store a
//! study's configuration as JSON and rebuild the same sampler/pruner after a
//! restart. The JSON names the kind in `"name"` and lists its options beside it;
//! options left out take Optuna's defaults:
//!
//! ```json
//! {"name": "tpe", "seed": 42, "n_startup_trials": 10}
//! {"name": "random", "seed": 1}
//! {"name": "grid", "seed": 0, "grid": {"optimizer": ["adam", "sgd"]}}
//! {"name": "median", "n_startup_trials": 5, "n_warmup_steps": 2}
//! {"name": "successive_halving", "min_resource": 1, "reduction_factor": 4}
//! {"name": "hyperband", "min_resource": 1, "max_resource": 27, "study_name": "mnist"}
//! {"name": "nop"}
//! ```

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::pruner::{
    HyperbandPruner, MedianPruner, NopPruner, PercentilePruner, Pruner, SuccessiveHalvingPruner,
};
use crate::sampler::{GridSampler, RandomSampler, Sampler, TpeConfig, TpeSampler};

/// The most EI candidates TPE accepts: every suggestion draws and scores
/// this many points, so a larger count only costs memory and time.
pub const MAX_EI_CANDIDATES: usize = 100_000;

/// Which sampler a study uses, with its options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum SamplerConfig {
    Random {
        #[serde(default)]
        seed: u64,
    },
    Grid(GridSampler),
    Tpe(TpeConfig),
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig::Tpe(TpeConfig::default())
    }
}

fn invalid(
    component: &'static str,
    option: &'static str,
    message: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        component,
        option,
        message: message.into(),
    }
}

impl SamplerConfig {
    /// Parses the JSON form.
    pub fn from_json(s: &str) -> Result<Self, ConfigError> {
        serde_json::from_str(s).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Checks the options and builds the sampler.
    pub fn build(&self) -> Result<Box<dyn Sampler>, ConfigError> {
        Ok(match self {
            SamplerConfig::Random { seed } => Box::new(RandomSampler::new(*seed)),
            SamplerConfig::Grid(g) => Box::new(g.clone()),
            SamplerConfig::Tpe(c) => {
                if !(1..=MAX_EI_CANDIDATES).contains(&c.n_ei_candidates) {
                    return Err(invalid(
                        "tpe sampler",
                        "n_ei_candidates",
                        format!(
                            "must be between 1 and {MAX_EI_CANDIDATES} (Optuna's default is 24), got {}",
                            c.n_ei_candidates
                        ),
                    ));
                }
                if !(c.prior_weight.is_finite() && c.prior_weight >= 0.0) {
                    return Err(invalid(
                        "tpe sampler",
                        "prior_weight",
                        format!("must be a finite number >= 0, got {}", c.prior_weight),
                    ));
                }
                Box::new(TpeSampler::new(*c))
            }
        })
    }
}

/// Which pruner a study uses, with its options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum PrunerConfig {
    #[default]
    Nop,
    Median(MedianPruner),
    Percentile(PercentilePruner),
    SuccessiveHalving(SuccessiveHalvingPruner),
    Hyperband(HyperbandPruner),
}

impl PrunerConfig {
    /// Parses the JSON form.
    pub fn from_json(s: &str) -> Result<Self, ConfigError> {
        serde_json::from_str(s).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Checks the options and builds the pruner.
    pub fn build(&self) -> Result<Box<dyn Pruner>, ConfigError> {
        Ok(match self {
            PrunerConfig::Nop => Box::new(NopPruner),
            PrunerConfig::Median(m) => {
                if m.interval_steps < 1 {
                    return Err(invalid(
                        "median pruner",
                        "interval_steps",
                        "must be at least 1",
                    ));
                }
                if m.n_min_trials < 1 {
                    return Err(invalid(
                        "median pruner",
                        "n_min_trials",
                        "must be at least 1",
                    ));
                }
                Box::new(*m)
            }
            PrunerConfig::Percentile(p) => {
                if !(0.0..=100.0).contains(&p.percentile) {
                    return Err(invalid(
                        "percentile pruner",
                        "percentile",
                        format!("must be in [0, 100], got {}", p.percentile),
                    ));
                }
                if p.interval_steps < 1 {
                    return Err(invalid(
                        "percentile pruner",
                        "interval_steps",
                        "must be at least 1",
                    ));
                }
                if p.n_min_trials < 1 {
                    return Err(invalid(
                        "percentile pruner",
                        "n_min_trials",
                        "must be at least 1",
                    ));
                }
                Box::new(*p)
            }
            PrunerConfig::SuccessiveHalving(s) => {
                if s.min_resource == Some(0) {
                    return Err(invalid(
                        "successive halving pruner",
                        "min_resource",
                        "must be at least 1 (or left out for auto)",
                    ));
                }
                if s.reduction_factor < 2 {
                    return Err(invalid(
                        "successive halving pruner",
                        "reduction_factor",
                        "must be at least 2",
                    ));
                }
                if s.bootstrap_count > 0 && s.min_resource.is_none() {
                    return Err(invalid(
                        "successive halving pruner",
                        "bootstrap_count",
                        "needs an explicit min_resource",
                    ));
                }
                Box::new(*s)
            }
            PrunerConfig::Hyperband(h) => {
                if h.min_resource < 1 {
                    return Err(invalid(
                        "hyperband pruner",
                        "min_resource",
                        "must be at least 1",
                    ));
                }
                if h.reduction_factor < 2 {
                    return Err(invalid(
                        "hyperband pruner",
                        "reduction_factor",
                        "must be at least 2",
                    ));
                }
                if let Some(m) = h.max_resource {
                    if m < h.min_resource {
                        return Err(invalid(
                            "hyperband pruner",
                            "max_resource",
                            format!("must be >= min_resource ({})", h.min_resource),
                        ));
                    }
                }
                if h.bootstrap_count > 0 && h.max_resource.is_none() {
                    return Err(invalid(
                        "hyperband pruner",
                        "bootstrap_count",
                        "needs an explicit max_resource",
                    ));
                }
                Box::new(h.clone())
            }
        })
    }
}

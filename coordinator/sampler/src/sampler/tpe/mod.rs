//! Tree-structured Parzen Estimator, following Optuna 5.0's `TPESampler`
//! (multivariate, constant liar, `n_startup_trials=10`, `n_ei_candidates=24`,
//! gamma `min(ceil(0.1 n), 25)`, Optuna's weight ramp, prior weight 1, magic clip).

mod history;
mod fastexp;
mod kept;
pub mod parzen;
mod sampler;
mod score;
mod split;
pub mod truncnorm;

pub use history::TpeHistory;
pub use kept::KeptAbove;
pub use split::KeptSplit;
pub use sampler::{gamma, split_trials, TpeConfig, TpeSampler};

//! The study history as the samplers and pruners see it: trials with their state,
//! objective value, parameters (Optuna's internal representation) and per-step
//! intermediate values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::space::Distribution;

/// Whether the objective is minimised or maximised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Minimize,
    Maximize,
}

/// A trial's life-cycle state, as in Optuna.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialState {
    /// Asked and being evaluated.
    Running,
    /// Enqueued with fixed parameters, not yet asked.
    Waiting,
    /// Finished with a value.
    Complete,
    /// Stopped early by a pruner.
    Pruned,
    /// Failed (no value).
    Fail,
}

impl TrialState {
    /// Complete, pruned or failed.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TrialState::Complete | TrialState::Pruned | TrialState::Fail
        )
    }
}

/// A snapshot of one trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrozenTrial {
    /// 0-based trial number within the study.
    pub number: u64,
    pub state: TrialState,
    /// The objective value (COMPLETE trials).
    pub value: Option<f64>,
    /// Parameter values in Optuna's internal representation (categorical: index).
    pub params: BTreeMap<String, f64>,
    /// The distribution each parameter was drawn from.
    pub distributions: BTreeMap<String, Distribution>,
    /// Reported intermediate values, step -> value.
    pub intermediate_values: BTreeMap<u64, f64>,
    /// The values successive halving recorded at the rungs this trial completed,
    /// rung -> value: Optuna's `completed_rung_{rung}` trial system attributes.
    /// A pruner's [`Decision`](crate::pruner::Decision) says what to add.
    #[serde(default)]
    pub rungs: BTreeMap<u32, f64>,
}

impl FrozenTrial {
    /// A trial with no parameters and no reports.
    pub fn new(number: u64, state: TrialState) -> Self {
        FrozenTrial {
            number,
            state,
            value: None,
            params: BTreeMap::new(),
            distributions: BTreeMap::new(),
            intermediate_values: BTreeMap::new(),
            rungs: BTreeMap::new(),
        }
    }

    /// The largest reported step (Optuna's `last_step`), whatever order reports came in.
    pub fn last_step(&self) -> Option<u64> {
        self.intermediate_values.keys().next_back().copied()
    }

    /// A COMPLETE trial whose value is usable (not missing, not NaN). Optuna marks a
    /// trial whose objective returned NaN as FAIL; we treat such records the same way.
    pub fn is_complete_with_value(&self) -> bool {
        self.state == TrialState::Complete && self.value.is_some_and(|v| !v.is_nan())
    }
}

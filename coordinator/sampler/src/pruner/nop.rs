//! The pruner that never prunes.

use serde::{Deserialize, Serialize};

use super::{Decision, Pruner, PrunerState};
use crate::trial::{Direction, FrozenTrial};

/// Never prunes (Optuna's `NopPruner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NopPruner;

impl Pruner for NopPruner {
    fn decide(
        &self,
        _trial: &FrozenTrial,
        _all: &[FrozenTrial],
        _direction: Direction,
        _state: &mut PrunerState,
    ) -> Decision {
        Decision::keep()
    }
}

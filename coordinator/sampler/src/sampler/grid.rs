//! Exhaustive grid search. Grid points are the Cartesian product of every
//! parameter's values (given explicitly, or enumerated from categorical, int and
//! stepped float distributions), visited in a seeded random order as Optuna's
//! `GridSampler` does. Which points are done is read from the trials' parameters,
//! so the sampler is stateless; when every point has finished, sampling returns
//! [`SampleError::GridExhausted`]. The enumerated grid (up to
//! [`MAX_GRID_POINTS`] points, with its visiting order) is kept in the study's
//! [`SamplerCache`] between suggestions rather than rebuilt for each.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Sampler, SamplerCache};
use crate::error::SampleError;
use crate::rng::{trial_rng, uniform01, Rng};
use crate::space::{Choice, Distribution, SearchSpace};
use crate::trial::{Direction, FrozenTrial, TrialState};

/// Upper bound on the number of grid points.
pub const MAX_GRID_POINTS: usize = 10_000_000;

/// Grid search over a search space.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridSampler {
    /// Seed of the visiting order.
    #[serde(default)]
    pub seed: u64,
    /// Explicit values (external representation) per parameter. When absent, values
    /// are enumerated from the distributions; a continuous float then needs values here.
    #[serde(default)]
    pub grid: Option<BTreeMap<String, Vec<Choice>>>,
}

/// The enumerated grid: per parameter (sorted by name) its internal values.
pub(crate) struct Grid {
    names: Vec<String>,
    values: Vec<Vec<f64>>,
    /// Per parameter: each value's bits (`-0.0` as `0.0`) -> its index.
    index: Vec<HashMap<u64, usize>>,
    n_points: usize,
    /// `order[i]` = the point (mixed-radix index) visited as grid id `i`.
    order: Vec<usize>,
    /// Inverse of `order`.
    position: Vec<usize>,
}

impl std::fmt::Debug for Grid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grid").field("names", &self.names).field("n_points", &self.n_points).finish()
    }
}

/// A built grid kept in a study's [`SamplerCache`], with what it was built
/// from (a different sampler or space rebuilds it).
#[derive(Debug, Clone)]
pub(crate) struct GridCache {
    sampler: GridSampler,
    space: SearchSpace,
    grid: Arc<Grid>,
}

/// A value's key in [`Grid::index`]: its bits, with `-0.0` as `0.0`.
fn value_key(x: f64) -> u64 {
    (x + 0.0).to_bits()
}

fn shuffle(v: &mut [usize], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = ((uniform01(rng) * (i + 1) as f64) as usize).min(i);
        v.swap(i, j);
    }
}

impl GridSampler {
    pub fn new(seed: u64) -> Self {
        GridSampler { seed, grid: None }
    }

    /// A grid sampler with explicit values per parameter.
    pub fn with_grid(seed: u64, grid: BTreeMap<String, Vec<Choice>>) -> Self {
        GridSampler {
            seed,
            grid: Some(grid),
        }
    }

    fn values_for(&self, name: &str, d: &Distribution) -> Result<Vec<f64>, SampleError> {
        if let Some(g) = &self.grid {
            let vals = g.get(name).ok_or_else(|| {
                SampleError::Grid(format!(
                    "parameter `{name}` is in the search space but has no grid values"
                ))
            })?;
            if vals.is_empty() {
                return Err(SampleError::Grid(format!(
                    "parameter `{name}` has an empty list of grid values"
                )));
            }
            let mut out = Vec::with_capacity(vals.len());
            let mut seen = HashSet::with_capacity(vals.len());
            for v in vals {
                let x = d.to_internal(v)?;
                if seen.insert(value_key(x)) {
                    out.push(x);
                }
            }
            return Ok(out);
        }
        let too_many = || {
            SampleError::Grid(format!(
                "parameter `{name}` has more than {MAX_GRID_POINTS} values"
            ))
        };
        match d {
            Distribution::Categorical { choices } => {
                Ok((0..choices.len()).map(|i| i as f64).collect())
            }
            Distribution::Int {
                low, high, step, ..
            } => {
                let n = ((*high as i128 - *low as i128) / *step as i128 + 1) as u128;
                if n > MAX_GRID_POINTS as u128 {
                    return Err(too_many());
                }
                Ok((0..n as i64).map(|k| (*low + k * *step) as f64).collect())
            }
            Distribution::Float {
                low,
                high,
                step: Some(s),
                ..
            } => {
                let k = ((high - low) / s + 1e-8).floor();
                if !(0.0..MAX_GRID_POINTS as f64).contains(&k) {
                    return Err(too_many());
                }
                Ok((0..=k as usize)
                    .map(|i| (low + i as f64 * s).min(*high))
                    .collect())
            }
            Distribution::Float {
                step: None,
                low,
                high,
                ..
            } => {
                if low == high {
                    Ok(vec![*low])
                } else {
                    Err(SampleError::Grid(format!(
                        "parameter `{name}` is a continuous float; give its grid values explicitly (or a step)"
                    )))
                }
            }
        }
    }

    fn build(&self, space: &SearchSpace) -> Result<Grid, SampleError> {
        // Every public entry builds the grid; an unchecked space (a step of 0,
        // say) must give an error here, not a division by zero below.
        super::check_space(space)?;
        if let Some(g) = &self.grid {
            if let Some(extra) = g.keys().find(|k| space.get(k).is_none()) {
                return Err(SampleError::Grid(format!(
                    "grid parameter `{extra}` is not in the search space"
                )));
            }
        }
        let mut params: Vec<(&str, &Distribution)> = space.params().collect();
        params.sort_by(|a, b| a.0.cmp(b.0));
        let mut names = Vec::new();
        let mut values = Vec::new();
        let mut n_points: usize = 1;
        for (name, d) in params {
            let v = self.values_for(name, d)?;
            n_points = n_points
                .checked_mul(v.len())
                .filter(|n| *n <= MAX_GRID_POINTS)
                .ok_or_else(|| {
                    SampleError::Grid(format!("the grid has more than {MAX_GRID_POINTS} points"))
                })?;
            names.push(name.to_string());
            values.push(v);
        }
        let mut order: Vec<usize> = (0..n_points).collect();
        shuffle(&mut order, &mut trial_rng(self.seed, u64::MAX, 2));
        let mut position = vec![0; n_points];
        for (i, p) in order.iter().enumerate() {
            position[*p] = i;
        }
        let index = values
            .iter()
            .map(|vals| vals.iter().enumerate().map(|(i, x)| (value_key(*x), i)).collect())
            .collect();
        Ok(Grid {
            names,
            values,
            index,
            n_points,
            order,
            position,
        })
    }

    /// The grid for `space`, from `cache` when it was built there for this
    /// sampler and space.
    fn cached(&self, cache: &mut SamplerCache, space: &SearchSpace) -> Result<Arc<Grid>, SampleError> {
        if let Some(c) = &cache.grid {
            if c.sampler == *self && c.space == *space {
                return Ok(c.grid.clone());
            }
        }
        let grid = Arc::new(self.build(space)?);
        cache.grid = Some(GridCache {
            sampler: self.clone(),
            space: space.clone(),
            grid: grid.clone(),
        });
        Ok(grid)
    }

    /// Grid id of a trial's parameters, if they are a grid point.
    fn grid_id(grid: &Grid, t: &FrozenTrial) -> Option<usize> {
        let mut idx = 0usize;
        for ((name, vals), index) in grid.names.iter().zip(&grid.values).zip(&grid.index) {
            let v = t.params.get(name)?;
            // Exactly a grid value (the usual case), else within rounding of one.
            let k = match index.get(&value_key(*v)) {
                Some(k) => *k,
                None => vals
                    .iter()
                    .position(|x| (x - v).abs() <= 1e-12 * x.abs().max(1.0))?,
            };
            idx = idx * vals.len() + k;
        }
        Some(grid.position[idx])
    }

    /// Suggests for `trial_number` on a built grid.
    fn sample_on(
        &self,
        grid: &Grid,
        trials: &[FrozenTrial],
        trial_number: u64,
    ) -> Result<BTreeMap<String, f64>, SampleError> {
        let (finished, running) = Self::status(grid, trials, Some(trial_number));
        let free = |i: usize| !finished[i] && !running[i];
        let id = if (trial_number as usize) < grid.n_points && free(trial_number as usize) {
            trial_number as usize
        } else {
            let mut candidates: Vec<usize> = (0..grid.n_points).filter(|i| free(*i)).collect();
            if candidates.is_empty() {
                // Every point has started: re-serve one still running, as Optuna does.
                candidates = (0..grid.n_points).filter(|i| !finished[*i]).collect();
            }
            if candidates.is_empty() {
                return Err(SampleError::GridExhausted {
                    n_points: grid.n_points,
                });
            }
            let mut rng = trial_rng(self.seed, trial_number, 2);
            candidates[((uniform01(&mut rng) * candidates.len() as f64) as usize)
                .min(candidates.len() - 1)]
        };
        let mut point = grid.order[id];
        let mut out = BTreeMap::new();
        for (name, vals) in grid.names.iter().zip(&grid.values).rev() {
            out.insert(name.clone(), vals[point % vals.len()]);
            point /= vals.len();
        }
        Ok(out)
    }

    /// (finished, running) flags per grid id.
    fn status(grid: &Grid, trials: &[FrozenTrial], skip: Option<u64>) -> (Vec<bool>, Vec<bool>) {
        let mut finished = vec![false; grid.n_points];
        let mut running = vec![false; grid.n_points];
        for t in trials.iter().filter(|t| Some(t.number) != skip) {
            if let Some(id) = Self::grid_id(grid, t) {
                if t.state.is_finished() {
                    finished[id] = true;
                } else if t.state == TrialState::Running {
                    running[id] = true;
                }
            }
        }
        (finished, running)
    }

    /// True when every grid point has a finished trial (the study should stop);
    /// an error when the grid cannot be built from the space.
    pub fn check_exhausted(
        &self,
        space: &SearchSpace,
        trials: &[FrozenTrial],
    ) -> Result<bool, SampleError> {
        let grid = self.build(space)?;
        let (finished, _) = Self::status(&grid, trials, None);
        Ok(finished.iter().all(|f| *f))
    }

    /// Number of grid points for a space.
    pub fn n_points(&self, space: &SearchSpace) -> Result<usize, SampleError> {
        Ok(self.build(space)?.n_points)
    }
}

impl Sampler for GridSampler {
    fn is_exhausted(&self, space: &SearchSpace, trials: &[FrozenTrial]) -> bool {
        self.check_exhausted(space, trials).unwrap_or(false)
    }

    fn sample(
        &self,
        space: &SearchSpace,
        trials: &[FrozenTrial],
        _direction: Direction,
        trial_number: u64,
    ) -> Result<BTreeMap<String, f64>, SampleError> {
        let grid = self.build(space)?;
        self.sample_on(&grid, trials, trial_number)
    }

    fn sample_with(
        &self,
        cache: &mut SamplerCache,
        space: &SearchSpace,
        trials: &[FrozenTrial],
        _direction: Direction,
        trial_number: u64,
    ) -> Result<BTreeMap<String, f64>, SampleError> {
        let grid = self.cached(cache, space)?;
        self.sample_on(&grid, trials, trial_number)
    }
}

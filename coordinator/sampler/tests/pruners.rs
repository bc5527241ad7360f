//! Pruner decisions on hand-built histories, checked against Optuna's documented
//! rules, plus property tests: random histories against a direct statement of the
//! median rule, and independence from the order in which reports and trials arrive.

use mnist_sampler::{
    Direction, FrozenTrial, HyperbandPruner, MedianPruner, NopPruner, PercentilePruner, Pruner,
    PrunerConfig, PrunerState, SamplerConfig, SuccessiveHalvingPruner, TrialState,
};
use proptest::prelude::*;

fn trial(number: u64, state: TrialState, values: &[(u64, f64)]) -> FrozenTrial {
    let mut t = FrozenTrial::new(number, state);
    for (s, v) in values {
        t.intermediate_values.insert(*s, *v);
    }
    if state == TrialState::Complete {
        t.value = values.last().map(|x| x.1);
    }
    t
}

/// `t` with the rung values it recorded (as successive halving stores them).
fn with_rungs(mut t: FrozenTrial, rungs: &[(u32, f64)]) -> FrozenTrial {
    t.rungs.extend(rungs.iter().copied());
    t
}

/// Replays reports `(trial, step, value, finish)` through `p` as the
/// coordinator does (storing each decision's rung values; `finish` completes
/// the trial with that value after its report); returns each decision.
fn replay(
    p: &dyn Pruner,
    reports: &[(u64, u64, f64, bool)],
    direction: Direction,
) -> (Vec<bool>, Vec<FrozenTrial>) {
    let mut trials: Vec<FrozenTrial> = Vec::new();
    let mut state = PrunerState::default();
    let mut out = Vec::new();
    for &(n, step, value, finish) in reports {
        if trials.len() <= n as usize {
            trials.resize_with(n as usize + 1, || FrozenTrial::new(0, TrialState::Running));
            for (i, t) in trials.iter_mut().enumerate() {
                t.number = i as u64;
            }
        }
        trials[n as usize].intermediate_values.insert(step, value);
        let d = p.decide(&trials[n as usize], &trials, direction, &mut state);
        trials[n as usize].rungs.extend(d.rungs);
        if d.prune {
            trials[n as usize].state = TrialState::Pruned;
        } else if finish {
            trials[n as usize].state = TrialState::Complete;
            trials[n as usize].value = Some(value);
        }
        out.push(d.prune);
    }
    (out, trials)
}

fn completed(n: u64, per_step: impl Fn(u64, u64) -> f64, steps: u64) -> Vec<FrozenTrial> {
    (0..n)
        .map(|i| {
            trial(
                i,
                TrialState::Complete,
                &(0..steps).map(|s| (s, per_step(i, s))).collect::<Vec<_>>(),
            )
        })
        .collect()
}

#[test]
fn median_pruner_follows_the_documented_rules() {
    let p = MedianPruner::default(); // n_startup_trials = 5
                                     // Completed trials report 0..5 at every step: the median at a step is 2.
    let mut all = completed(5, |i, _| i as f64, 10);
    let worse = trial(10, TrialState::Running, &[(0, 2.5)]);
    let better = trial(11, TrialState::Running, &[(0, 1.5)]);
    let equal = trial(12, TrialState::Running, &[(0, 2.0)]);
    assert!(p.should_prune(&worse, &all, Direction::Minimize));
    assert!(!p.should_prune(&better, &all, Direction::Minimize));
    assert!(
        !p.should_prune(&equal, &all, Direction::Minimize),
        "equal to the median is kept"
    );
    // Maximize flips the comparison.
    assert!(!p.should_prune(&worse, &all, Direction::Maximize));
    assert!(p.should_prune(&better, &all, Direction::Maximize));
    // The trial's *best* value so far is compared, not its latest.
    let recovered = trial(13, TrialState::Running, &[(0, 0.5), (1, 9.0)]);
    assert!(!p.should_prune(&recovered, &all, Direction::Minimize));
    // Fewer than n_startup_trials complete trials: never prune.
    all.pop();
    assert!(!p.should_prune(&worse, &all, Direction::Minimize));
    // Pruned and running trials do not count as completed.
    all.push(trial(4, TrialState::Pruned, &[(0, 4.0)]));
    assert!(!p.should_prune(&worse, &all, Direction::Minimize));
    // All-NaN reports are pruned once startup is over.
    let all = completed(5, |i, _| i as f64, 10);
    let nan = trial(20, TrialState::Running, &[(0, f64::NAN)]);
    assert!(p.should_prune(&nan, &all, Direction::Minimize));
    // No report yet: nothing to decide.
    assert!(!p.should_prune(
        &trial(21, TrialState::Running, &[]),
        &all,
        Direction::Minimize
    ));
}

#[test]
fn median_pruner_warmup_interval_and_min_trials() {
    let all = completed(6, |i, _| i as f64, 20);
    let p = MedianPruner {
        n_startup_trials: 0,
        n_warmup_steps: 3,
        interval_steps: 4,
        n_min_trials: 1,
    };
    let bad = |steps: &[u64]| {
        trial(
            30,
            TrialState::Running,
            &steps.iter().map(|s| (*s, 100.0)).collect::<Vec<_>>(),
        )
    };
    // Warm-up: steps < 3 are never pruned.
    assert!(!p.should_prune(&bad(&[0, 1, 2]), &all, Direction::Minimize));
    // Step 3 is the first pruning step; steps 4..6 are inside the interval already checked.
    assert!(p.should_prune(&bad(&[0, 1, 2, 3]), &all, Direction::Minimize));
    assert!(!p.should_prune(&bad(&[0, 1, 2, 3, 4]), &all, Direction::Minimize));
    assert!(!p.should_prune(&bad(&[3, 6]), &all, Direction::Minimize));
    assert!(p.should_prune(&bad(&[3, 7]), &all, Direction::Minimize));
    // A report that skipped the checkpoint (6 -> 9) is checked at 9.
    assert!(p.should_prune(&bad(&[6, 9]), &all, Direction::Minimize));
    // n_min_trials: need that many completed trials with a value at the step.
    let few = vec![
        trial(0, TrialState::Complete, &[(0, 1.0), (5, 1.0)]),
        trial(1, TrialState::Complete, &[(0, 1.0)]),
    ];
    let p = MedianPruner {
        n_startup_trials: 0,
        n_warmup_steps: 0,
        interval_steps: 1,
        n_min_trials: 2,
    };
    assert!(p.should_prune(
        &trial(9, TrialState::Running, &[(0, 5.0)]),
        &few,
        Direction::Minimize
    ));
    assert!(!p.should_prune(
        &trial(9, TrialState::Running, &[(5, 5.0)]),
        &few,
        Direction::Minimize
    ));
}

#[test]
fn percentile_pruner_interpolates_like_numpy() {
    // Completed values at step 0: 0, 1, 2, 3, 4 -> 25th percentile = 1.0, 10th = 0.4.
    let all = completed(5, |i, _| i as f64, 1);
    let p = PercentilePruner {
        percentile: 10.0,
        n_startup_trials: 0,
        ..PercentilePruner::default()
    };
    assert!(p.should_prune(
        &trial(9, TrialState::Running, &[(0, 0.41)]),
        &all,
        Direction::Minimize
    ));
    assert!(!p.should_prune(
        &trial(9, TrialState::Running, &[(0, 0.4)]),
        &all,
        Direction::Minimize
    ));
    // Maximize uses the (100 - p)th percentile: 3.6.
    assert!(p.should_prune(
        &trial(9, TrialState::Running, &[(0, 3.59)]),
        &all,
        Direction::Maximize
    ));
    assert!(!p.should_prune(
        &trial(9, TrialState::Running, &[(0, 3.6)]),
        &all,
        Direction::Maximize
    ));
}

#[test]
fn successive_halving_rungs_and_promotion() {
    // min_resource 1, eta 2: rungs at steps 1, 2, 4, 8, ...
    let p = SuccessiveHalvingPruner {
        min_resource: Some(1),
        reduction_factor: 2,
        min_early_stopping_rate: 0,
        bootstrap_count: 0,
    };
    // The competitors are the values trials recorded at each rung.
    let others = vec![
        with_rungs(
            trial(0, TrialState::Complete, &[(1, 1.0), (2, 1.0), (4, 1.0)]),
            &[(0, 1.0), (1, 1.0), (2, 1.0)],
        ),
        with_rungs(
            trial(1, TrialState::Complete, &[(1, 2.0), (2, 2.0), (4, 2.0)]),
            &[(0, 2.0), (1, 2.0), (2, 2.0)],
        ),
        with_rungs(trial(2, TrialState::Pruned, &[(1, 3.0)]), &[(0, 3.0)]),
    ];
    // Step 0 is before the first rung.
    assert!(!p.should_prune(
        &trial(9, TrialState::Running, &[(0, 99.0)]),
        &others,
        Direction::Minimize
    ));
    // At rung 0 the competitors are 1, 2, 3 and us: promotable if within the best
    // len/eta = 2 values.
    assert!(!p.should_prune(
        &trial(9, TrialState::Running, &[(0, 9.0), (1, 2.0)]),
        &others,
        Direction::Minimize
    ));
    assert!(p.should_prune(
        &trial(9, TrialState::Running, &[(0, 9.0), (1, 2.5)]),
        &others,
        Direction::Minimize
    ));
    // Between rungs (step 3) there is nothing to decide.
    assert!(!p.should_prune(
        &with_rungs(
            trial(9, TrialState::Running, &[(1, 1.5), (2, 1.5), (3, 50.0)]),
            &[(0, 1.5), (1, 1.5)]
        ),
        &others,
        Direction::Minimize
    ));
    // A decision records the value at every rung it reaches, the one it is
    // pruned at included, and none above it.
    let mut state = PrunerState::default();
    let d = p.decide(
        &trial(9, TrialState::Running, &[(4, 1.5)]),
        &others,
        Direction::Minimize,
        &mut state,
    );
    assert_eq!((d.prune, d.rungs), (true, vec![(0, 1.5), (1, 1.5)]));
    let d = p.decide(
        &trial(9, TrialState::Running, &[(4, 0.5)]),
        &others,
        Direction::Minimize,
        &mut state,
    );
    assert_eq!((d.prune, d.rungs), (false, vec![(0, 0.5), (1, 0.5), (2, 0.5)]));
    // A report that jumps over several rungs is checked at each of them.
    assert!(p.should_prune(
        &trial(9, TrialState::Running, &[(4, 2.5)]),
        &others,
        Direction::Minimize
    ));
    // Maximize: the largest values are promoted.
    assert!(!p.should_prune(
        &trial(9, TrialState::Running, &[(1, 2.5)]),
        &others,
        Direction::Maximize
    ));
    assert!(p.should_prune(
        &trial(9, TrialState::Running, &[(1, 1.5)]),
        &others,
        Direction::Maximize
    ));
    // NaN at a rung is pruned.
    assert!(p.should_prune(
        &trial(9, TrialState::Running, &[(1, f64::NAN)]),
        &others,
        Direction::Minimize
    ));
    // Auto min_resource waits for a completed trial.
    let auto = SuccessiveHalvingPruner::default();
    assert!(!auto.should_prune(
        &trial(9, TrialState::Running, &[(1, 9.0)]),
        &[],
        Direction::Minimize
    ));
}

#[test]
fn trials_pruned_below_a_rung_do_not_compete_there() {
    // Optuna 5.0.0 on the same reports (eta 2, rungs at steps 1, 2, 4, 8)
    // prunes trial 3 at step 2: at rung 1 it competes with trial 0 only, since
    // trials 1 and 2 jumped to step 4 but were pruned at rung 0.
    let p = SuccessiveHalvingPruner {
        min_resource: Some(1),
        reduction_factor: 2,
        ..SuccessiveHalvingPruner::default()
    };
    let reports = [
        (0, 1, 1.0, false),
        (0, 2, 1.0, false),
        (0, 4, 1.0, true),
        (1, 4, 10.0, false),
        (2, 4, 11.0, false),
        (3, 1, 0.5, false),
        (3, 2, 5.0, false),
    ];
    let (decisions, trials) = replay(&p, &reports, Direction::Minimize);
    assert_eq!(decisions, [false, false, false, true, true, false, true]);
    assert_eq!(trials[1].rungs.keys().collect::<Vec<_>>(), [&0]);
    assert_eq!(trials[3].rungs.values().collect::<Vec<_>>(), [&0.5, &5.0]);
}

#[test]
fn auto_resources_are_fixed_at_their_first_estimate() {
    // Auto min_resource: estimated at the first decision after a trial
    // completed (trial 0, 250 steps: 250 / 100 = 2), so rungs are at steps 2,
    // 8, 32, 128 for the rest of the study, even after a 450-step trial
    // completes (a new estimate, 4, would put the first rung at step 4).
    let p = SuccessiveHalvingPruner::default();
    let reports = [
        (0, 250, 1.0, true),
        (1, 450, 1.0, true),
        (2, 2, 5.0, false),
    ];
    let (decisions, trials) = replay(&p, &reports, Direction::Minimize);
    assert_eq!(trials[1].rungs.len(), 4, "rungs at 2, 8, 32, 128");
    // Trial 2 reaches rung 0 at step 2 and loses there to trial 1's 1.0.
    assert_eq!(decisions, [false, false, true]);
    assert_eq!(trials[2].rungs.keys().collect::<Vec<_>>(), [&0]);
    // Hyperband: the first completed trial fixes max_resource = 51, hence 4
    // brackets; a 120-step trial later does not make it 5.
    let h = HyperbandPruner {
        study_name: "s".into(),
        ..HyperbandPruner::default()
    };
    let mut state = PrunerState::default();
    let short = trial(0, TrialState::Complete, &[(50, 1.0)]);
    let long = trial(1, TrialState::Complete, &[(120, 1.0)]);
    let me = trial(2, TrialState::Running, &[(1, 1.0)]);
    h.decide(&me, std::slice::from_ref(&short), Direction::Minimize, &mut state);
    assert_eq!(state.max_resource, Some(51));
    h.decide(&me, &[short, long], Direction::Minimize, &mut state);
    assert_eq!(state.max_resource, Some(51));
    assert_eq!(h.budgets(51).len(), 4);
    assert_eq!(h.budgets(121).len(), 5);
}

#[test]
fn hyperband_brackets_follow_optuna() {
    let h = HyperbandPruner {
        max_resource: Some(27),
        study_name: "fixture-study".into(),
        ..HyperbandPruner::default()
    };
    // n_brackets = floor(log3(27)) + 1 = 4; budgets ceil(4 * 3^s / (s + 1)) for s = 3..0.
    assert_eq!(h.budgets(27), vec![27, 12, 6, 4]);
    let b: Vec<usize> = (0..8).map(|n| h.bracket_of(&h.budgets(27), n)).collect();
    assert!(b.iter().all(|x| *x < 4));
    assert!(!NopPruner.should_prune(
        &trial(0, TrialState::Running, &[(0, f64::NAN)]),
        &[],
        Direction::Minimize
    ));
}

#[test]
fn configs_round_trip_through_json() {
    for json in [
        r#"{"name":"tpe","seed":42}"#,
        r#"{"name":"random","seed":1}"#,
        r#"{"name":"grid","seed":0,"grid":{"optimizer":["adam","sgd"]}}"#,
    ] {
        let c = SamplerConfig::from_json(json).unwrap();
        assert_eq!(SamplerConfig::from_json(&c.to_json()).unwrap(), c);
        assert!(c.build().is_ok());
    }
    let tpe = SamplerConfig::from_json(r#"{"name":"tpe"}"#).unwrap();
    assert_eq!(tpe, SamplerConfig::default());
    assert!(
        SamplerConfig::from_json(r#"{"name":"tpe","n_ei_candidates":0}"#)
            .unwrap()
            .build()
            .is_err()
    );
    assert!(SamplerConfig::from_json(r#"{"name":"cmaes"}"#).is_err());
    for json in [
        r#"{"name":"nop"}"#,
        r#"{"name":"median","n_warmup_steps":2}"#,
        r#"{"name":"percentile","percentile":25.0}"#,
        r#"{"name":"successive_halving","min_resource":1,"reduction_factor":4}"#,
        r#"{"name":"hyperband","max_resource":27,"study_name":"s"}"#,
    ] {
        let c = PrunerConfig::from_json(json).unwrap();
        assert_eq!(PrunerConfig::from_json(&c.to_json()).unwrap(), c);
        assert!(c.build().is_ok(), "{json}");
    }
    for bad in [
        r#"{"name":"percentile","percentile":120.0}"#,
        r#"{"name":"median","interval_steps":0}"#,
        r#"{"name":"successive_halving","reduction_factor":1}"#,
        r#"{"name":"hyperband","min_resource":10,"max_resource":5}"#,
    ] {
        let e = PrunerConfig::from_json(bad)
            .unwrap()
            .build()
            .err()
            .expect("rejected");
        assert!(e.to_string().contains("must"), "{e}");
    }
}

/// The median rule as Optuna documents it, stated directly.
fn median_reference(
    p: &MedianPruner,
    t: &FrozenTrial,
    all: &[FrozenTrial],
    dir: Direction,
) -> bool {
    let done: Vec<&FrozenTrial> = all
        .iter()
        .filter(|x| x.state == TrialState::Complete)
        .collect();
    if done.is_empty() || (done.len() as u64) < p.n_startup_trials {
        return false;
    }
    let Some(step) = t.intermediate_values.keys().max().copied() else {
        return false;
    };
    if step < p.n_warmup_steps {
        return false;
    }
    let checkpoint =
        (step - p.n_warmup_steps) / p.interval_steps * p.interval_steps + p.n_warmup_steps;
    if t.intermediate_values
        .keys()
        .any(|s| *s != step && *s >= checkpoint)
    {
        return false;
    }
    let own: Vec<f64> = t
        .intermediate_values
        .values()
        .copied()
        .filter(|v| !v.is_nan())
        .collect();
    if own.is_empty() {
        return true;
    }
    let best = if dir == Direction::Minimize {
        own.iter().copied().fold(f64::INFINITY, f64::min)
    } else {
        own.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    };
    let mut at: Vec<f64> = done
        .iter()
        .filter_map(|x| x.intermediate_values.get(&step).copied())
        .filter(|v| !v.is_nan())
        .collect();
    if at.len() < p.n_min_trials as usize || at.is_empty() {
        return false;
    }
    at.sort_by(f64::total_cmp);
    let n = at.len();
    let median = if n % 2 == 1 {
        at[n / 2]
    } else {
        (at[n / 2 - 1] + at[n / 2]) / 2.0
    };
    if dir == Direction::Minimize {
        best > median
    } else {
        best < median
    }
}

fn arb_history() -> impl Strategy<Value = (Vec<FrozenTrial>, FrozenTrial)> {
    let t = (
        prop::sample::select(vec![
            TrialState::Complete,
            TrialState::Complete,
            TrialState::Pruned,
            TrialState::Running,
        ]),
        prop::collection::btree_map(0u64..12, -5.0f64..5.0, 0..8),
    );
    (
        prop::collection::vec(t, 0..15),
        prop::collection::btree_map(0u64..12, -5.0f64..5.0, 1..6),
    )
        .prop_map(|(ts, own)| {
            let all = ts
                .into_iter()
                .enumerate()
                .map(|(i, (state, iv))| {
                    let mut t = FrozenTrial::new(i as u64, state);
                    t.intermediate_values = iv;
                    t
                })
                .collect();
            let mut me = FrozenTrial::new(100, TrialState::Running);
            me.intermediate_values = own;
            (all, me)
        })
        .prop_map(|(mut all, me): (Vec<FrozenTrial>, FrozenTrial)| {
            // Rung values as a study would have stored them (each trial at
            // the rungs of eta 2 its reports passed, the value where it first
            // passed each), so that successive halving has competitors.
            for t in &mut all {
                let mut rung = 0u32;
                for (s, v) in &t.intermediate_values {
                    while rung < 8 && (1u64 << rung) <= *s {
                        t.rungs.insert(rung, *v);
                        rung += 1;
                    }
                }
            }
            (all, me)
        })
}

proptest! {
    #[test]
    fn median_matches_the_documented_rule((all, me) in arb_history(), startup in 0u64..4, warmup in 0u64..4,
                                          interval in 1u64..4, min_trials in 1u64..3, maximize in any::<bool>()) {
        let p = MedianPruner { n_startup_trials: startup, n_warmup_steps: warmup, interval_steps: interval, n_min_trials: min_trials };
        let dir = if maximize { Direction::Maximize } else { Direction::Minimize };
        prop_assert_eq!(p.should_prune(&me, &all, dir), median_reference(&p, &me, &all, dir));
    }

    #[test]
    fn decisions_do_not_depend_on_arrival_order((all, me) in arb_history(), maximize in any::<bool>(), rot in 0usize..15) {
        let dir = if maximize { Direction::Maximize } else { Direction::Minimize };
        let mut shuffled = all.clone();
        if !shuffled.is_empty() {
            let k = rot % shuffled.len();
            shuffled.rotate_left(k);
            shuffled.reverse();
        }
        // (A trial's own reports are a map keyed by step, so the order they
        // arrived in leaves no trace; what can differ is the trial list's order.)
        let pruners: Vec<Box<dyn Pruner>> = vec![
            Box::new(MedianPruner { n_startup_trials: 1, ..MedianPruner::default() }),
            Box::new(SuccessiveHalvingPruner { min_resource: Some(1), reduction_factor: 2, ..SuccessiveHalvingPruner::default() }),
            Box::new(SuccessiveHalvingPruner::default()),
            Box::new(HyperbandPruner { max_resource: Some(9), ..HyperbandPruner::default() }),
            Box::new(HyperbandPruner::default()),
        ];
        for p in &pruners {
            prop_assert_eq!(p.should_prune(&me, &all, dir), p.should_prune(&me, &shuffled, dir));
        }
    }
}

#[test]
fn extreme_pruner_settings_do_not_panic() {
    let t = trial(3, TrialState::Running, &[(0, 1.0), (u64::MAX - 1, 2.0)]);
    let all = completed(4, |i, s| (i + s) as f64, 3);
    let pruners: Vec<Box<dyn Pruner>> = vec![
        Box::new(HyperbandPruner {
            max_resource: Some(u64::MAX),
            reduction_factor: 2,
            ..HyperbandPruner::default()
        }),
        Box::new(HyperbandPruner {
            min_resource: 0,
            max_resource: Some(1),
            reduction_factor: 0,
            ..HyperbandPruner::default()
        }),
        Box::new(SuccessiveHalvingPruner {
            min_resource: Some(u64::MAX),
            reduction_factor: u64::MAX,
            min_early_stopping_rate: u32::MAX,
            bootstrap_count: u64::MAX,
        }),
        Box::new(MedianPruner {
            n_startup_trials: 0,
            n_warmup_steps: u64::MAX,
            interval_steps: 0,
            n_min_trials: 0,
        }),
        Box::new(PercentilePruner {
            percentile: f64::NAN,
            n_startup_trials: 0,
            n_warmup_steps: 0,
            interval_steps: 0,
            n_min_trials: 0,
        }),
    ];
    for p in &pruners {
        for dir in [Direction::Minimize, Direction::Maximize] {
            let _ = p.should_prune(&t, &all, dir);
        }
    }
}

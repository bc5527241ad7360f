//! Property tests of the samplers: samples lie in their space (respecting step,
//! int and log), there is no panic and no NaN on degenerate histories, and
//! sampling is deterministic under a seed.

use std::collections::BTreeMap;

use mnist_sampler::sampler::{suggest, SamplerCache};
use mnist_sampler::{
    Choice, Direction, Distribution, FrozenTrial, GridSampler, RandomSampler, Sampler, SearchSpace,
    TpeConfig, TpeSampler, TrialState,
};
use proptest::prelude::*;

fn arb_distribution() -> impl Strategy<Value = Distribution> {
    prop_oneof![
        // continuous float
        (-1e3f64..1e3, 1e-3f64..1e3).prop_map(|(low, w)| Distribution::Float {
            low,
            high: low + w,
            log: false,
            step: None
        }),
        // log float
        (1e-6f64..1e2, 1.5f64..1e4).prop_map(|(low, f)| Distribution::Float {
            low,
            high: low * f,
            log: true,
            step: None
        }),
        // stepped float
        (
            -100i32..100,
            1u32..60,
            prop::sample::select(vec![0.5f64, 0.25, 0.1, 2.0, 0.05])
        )
            .prop_map(|(l, k, step)| {
                let low = l as f64 * step;
                Distribution::Float {
                    low,
                    high: low + k as f64 * step,
                    log: false,
                    step: Some(step),
                }
            }),
        // int with step
        (-1000i64..1000, 1i64..200, 1i64..10).prop_map(|(low, k, step)| Distribution::Int {
            low,
            high: low + k * step,
            log: false,
            step
        }),
        // log int
        (1i64..100, 1i64..5000).prop_map(|(low, w)| Distribution::Int {
            low,
            high: low + w,
            log: true,
            step: 1
        }),
        // categorical (a single choice too)
        (1usize..6).prop_map(|n| Distribution::Categorical {
            choices: (0..n).map(|i| Choice::Str(format!("c{i}"))).collect()
        }),
    ]
}

fn arb_space() -> impl Strategy<Value = SearchSpace> {
    prop::collection::vec(arb_distribution(), 1..6).prop_map(|ds| {
        let mut s = SearchSpace::new();
        for (i, d) in ds.into_iter().enumerate() {
            s.push(format!("p{i}"), d);
        }
        s
    })
}

/// How the objective values of a generated history look.
#[derive(Debug, Clone, Copy)]
enum Values {
    Normal,
    AllNan,
    AllInf,
    AllNegInf,
    Identical,
    NanAndInf,
}

fn arb_values() -> impl Strategy<Value = Values> {
    prop::sample::select(vec![
        Values::Normal,
        Values::AllNan,
        Values::AllInf,
        Values::AllNegInf,
        Values::Identical,
        Values::NanAndInf,
    ])
}

/// A history of `n` trials drawn by the random sampler, with mixed states.
fn history(space: &SearchSpace, n: usize, values: Values, seed: u64) -> Vec<FrozenTrial> {
    let rs = RandomSampler::new(seed);
    let dists: BTreeMap<String, Distribution> = space
        .params()
        .map(|(n, d)| (n.to_string(), d.clone()))
        .collect();
    (0..n as u64)
        .map(|i| {
            let params = rs
                .sample(space, &[], Direction::Minimize, i)
                .expect("random sampling works");
            let h = (i.wrapping_mul(2654435761) ^ seed) % 10;
            let state = match h {
                0 => TrialState::Pruned,
                1 => TrialState::Running,
                2 => TrialState::Fail,
                3 => TrialState::Waiting,
                _ => TrialState::Complete,
            };
            let v = match values {
                Values::Normal => params.values().map(|x| x.sin()).sum::<f64>(),
                Values::AllNan => f64::NAN,
                Values::AllInf => f64::INFINITY,
                Values::AllNegInf => f64::NEG_INFINITY,
                Values::Identical => 1.0,
                Values::NanAndInf => {
                    if i % 2 == 0 {
                        f64::NAN
                    } else {
                        f64::INFINITY
                    }
                }
            };
            let mut t = FrozenTrial::new(i, state);
            t.params = params;
            t.distributions = dists.clone();
            if state == TrialState::Complete {
                t.value = Some(v);
            }
            if state == TrialState::Pruned || h == 5 {
                for step in 0..(i % 4) {
                    t.intermediate_values.insert(
                        step * 3,
                        if i % 3 == 0 {
                            f64::NAN
                        } else {
                            v + step as f64
                        },
                    );
                }
            }
            t
        })
        .collect()
}

fn check_in_space(space: &SearchSpace, p: &BTreeMap<String, f64>) -> Result<(), TestCaseError> {
    prop_assert_eq!(p.len(), space.len());
    for (name, d) in space.params() {
        let v = *p
            .get(name)
            .ok_or_else(|| TestCaseError::fail(format!("missing {name}")))?;
        prop_assert!(v.is_finite(), "{} = {} is not finite", name, v);
        prop_assert!(d.contains(v), "{} = {} is outside {}", name, v, d);
        if let Distribution::Int { .. } = d {
            prop_assert_eq!(v.fract(), 0.0);
        }
        if let Distribution::Float { log: true, low, .. } = d {
            prop_assert!(v >= *low && v > 0.0);
        }
    }
    Ok(())
}

fn tpe(seed: u64, multivariate: bool, constant_liar: bool) -> TpeSampler {
    TpeSampler::new(TpeConfig {
        seed,
        multivariate,
        constant_liar,
        ..TpeConfig::default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn samples_lie_in_the_space(space in arb_space(), n in 0usize..60, values in arb_values(), seed in any::<u64>(),
                                maximize in any::<bool>(), mv in any::<bool>(), cl in any::<bool>()) {
        let trials = history(&space, n, values, seed);
        let direction = if maximize { Direction::Maximize } else { Direction::Minimize };
        let samplers: Vec<Box<dyn Sampler>> = vec![Box::new(RandomSampler::new(seed)), Box::new(tpe(seed, mv, cl))];
        for s in &samplers {
            let p = s.sample(&space, &trials, direction, n as u64).map_err(|e| TestCaseError::fail(e.to_string()))?;
            check_in_space(&space, &p)?;
        }
    }

    #[test]
    fn tpe_is_deterministic_and_ignores_trial_order(space in arb_space(), n in 0usize..40, seed in any::<u64>()) {
        let trials = history(&space, n, Values::Normal, seed);
        let s = tpe(seed, true, true);
        let a = s.sample(&space, &trials, Direction::Minimize, n as u64).unwrap();
        let b = s.sample(&space, &trials, Direction::Minimize, n as u64).unwrap();
        prop_assert_eq!(&a, &b);
        let mut reversed = trials.clone();
        reversed.reverse();
        let c = s.sample(&space, &reversed, Direction::Minimize, n as u64).unwrap();
        prop_assert_eq!(&a, &c);
        // The trial being sampled is ignored if it is already in the list.
        let mut with_self = trials.clone();
        with_self.push(FrozenTrial::new(n as u64, TrialState::Running));
        let d = s.sample(&space, &with_self, Direction::Minimize, n as u64).unwrap();
        prop_assert_eq!(&a, &d);
        let r = RandomSampler::new(seed);
        prop_assert_eq!(r.sample(&space, &trials, Direction::Minimize, 7).unwrap(), r.sample(&space, &[], Direction::Minimize, 7).unwrap());
    }

    #[test]
    fn a_kept_cache_gives_the_fresh_suggestion(space in arb_space(), n in 0usize..45, seed in any::<u64>(),
                                               order in any::<u64>(), maximize in any::<bool>(), mv in any::<bool>(),
                                               cl in any::<bool>()) {
        // A study as the coordinator runs it: trials are asked (RUNNING), some are
        // requeued (WAITING, parameters cleared), then finish in a shuffled order;
        // one cache is kept throughout and must always agree with a fresh sampler,
        // also when the trial being sampled is one of the finished ones and when
        // the space changes.
        let template = history(&space, n, Values::Normal, seed);
        let direction = if maximize { Direction::Maximize } else { Direction::Minimize };
        let s = tpe(seed, mv, cl);
        let mut cache = SamplerCache::default();
        let mut trials: Vec<FrozenTrial> = Vec::new();
        let mut open: Vec<usize> = Vec::new();
        let mut x = order | 1;
        let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
        let mut check = |trials: &[FrozenTrial], space: &SearchSpace, number: u64| -> Result<(), TestCaseError> {
            let fresh = s.sample(space, trials, direction, number).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let kept = s.sample_with(&mut cache, space, trials, direction, number).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(fresh, kept);
            Ok(())
        };
        for t in &template {
            let mut running = t.clone();
            running.state = TrialState::Running;
            running.value = None;
            running.intermediate_values.clear();
            trials.push(running);
            open.push(trials.len() - 1);
            check(&trials, &space, trials.len() as u64)?;
            while !open.is_empty() && next() % 3 == 0 {
                let i = open.swap_remove((next() % open.len() as u64) as usize);
                if next() % 5 == 0 {
                    trials[i].state = TrialState::Waiting;
                    trials[i].params.clear();
                    trials[i].distributions.clear();
                    check(&trials, &space, i as u64)?;
                    trials[i].state = TrialState::Running;
                    trials[i].params = template[i].params.clone();
                    trials[i].distributions = template[i].distributions.clone();
                    open.push(i);
                } else {
                    let done = &template[i];
                    let state = if matches!(done.state, TrialState::Running | TrialState::Waiting) { TrialState::Complete } else { done.state };
                    trials[i].state = state;
                    trials[i].value = if state == TrialState::Complete { Some(done.value.unwrap_or(i as f64 * 0.1)) } else { None };
                    trials[i].intermediate_values = done.intermediate_values.clone();
                    check(&trials, &space, trials.len() as u64)?;
                    check(&trials, &space, i as u64)?;
                }
            }
        }
        let mut space2 = space.clone();
        space2.push("late", Distribution::Float { low: 0.0, high: 1.0, log: false, step: None });
        check(&trials, &space2, trials.len() as u64)?;
        check(&trials, &space, trials.len() as u64)?;
    }

    #[test]
    fn new_parameter_halfway_and_changed_ranges(space in arb_space(), n in 12usize..50, seed in any::<u64>()) {
        // The first half of the trials did not have `late`; then `late` appears, and
        // `p0` changed its range.
        let mut trials = history(&space, n, Values::Normal, seed);
        let late = Distribution::Float { low: 0.0, high: 1.0, log: false, step: None };
        let mut space2 = space.clone();
        space2.push("late", late.clone());
        for t in trials.iter_mut().skip(n / 2) {
            t.params.insert("late".into(), (t.number as f64 * 0.37).fract());
            t.distributions.insert("late".into(), late.clone());
        }
        for t in trials.iter_mut().take(n / 3) {
            if let Some(v) = t.params.get_mut("p0") { *v = *v * 3.0 + 1e6; }
        }
        let p = tpe(seed, true, true).sample(&space2, &trials, Direction::Minimize, n as u64).unwrap();
        check_in_space(&space2, &p)?;
        let p = tpe(seed, false, true).sample(&space2, &trials, Direction::Maximize, n as u64).unwrap();
        check_in_space(&space2, &p)?;
    }

    #[test]
    fn grid_visits_every_point_once(seed in any::<u64>(), a in 1i64..5, k in 1usize..4, step in 1u32..4) {
        let mut space = SearchSpace::new();
        space.push("a", Distribution::Int { low: 0, high: a, log: false, step: 1 });
        space.push("c", Distribution::Categorical { choices: (0..k).map(|i| Choice::Int(i as i64)).collect() });
        space.push("f", Distribution::Float { low: 0.0, high: step as f64 * 0.5, log: false, step: Some(0.5) });
        let g = GridSampler::new(seed);
        let total = g.n_points(&space).unwrap();
        prop_assert_eq!(total, (a as usize + 1) * k * (step as usize + 1));
        let mut trials: Vec<FrozenTrial> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut cache = SamplerCache::default();
        for i in 0..total as u64 {
            prop_assert!(!g.check_exhausted(&space, &trials).unwrap());
            let p = g.sample(&space, &trials, Direction::Minimize, i).unwrap();
            // The grid kept in the study's cache gives the same point.
            let kept = g.sample_with(&mut cache, &space, &trials, Direction::Minimize, i).unwrap();
            prop_assert_eq!(&kept, &p);
            check_in_space(&space, &p)?;
            let key: Vec<u64> = p.values().map(|v| v.to_bits()).collect();
            prop_assert!(seen.insert(key), "grid point repeated");
            let mut t = FrozenTrial::new(i, if i % 3 == 0 { TrialState::Running } else { TrialState::Complete });
            t.params = p;
            t.value = Some(0.0);
            trials.push(t);
        }
        // All started: a running point is served again until all are finished.
        if trials.iter().any(|t| t.state == TrialState::Running) {
            prop_assert!(!g.check_exhausted(&space, &trials).unwrap());
            prop_assert!(g.sample(&space, &trials, Direction::Minimize, total as u64).is_ok());
        }
        for t in trials.iter_mut() { t.state = TrialState::Complete; }
        prop_assert!(g.check_exhausted(&space, &trials).unwrap());
        prop_assert!(Sampler::is_exhausted(&g, &space, &trials));
        let exhausted = matches!(
            g.sample(&space, &trials, Direction::Minimize, total as u64),
            Err(mnist_sampler::SampleError::GridExhausted { .. })
        );
        prop_assert!(exhausted);
    }
}

fn small_space() -> SearchSpace {
    SearchSpace::from_json_str(
        r#"{"x": {"type": "float", "low": -5, "high": 5},
            "lr": {"type": "float", "low": 1e-5, "high": 1, "log": true},
            "n": {"type": "int", "low": 1, "high": 1000, "log": true},
            "k": {"type": "int", "low": 0, "high": 20, "step": 4},
            "d": {"type": "float", "low": 0, "high": 1, "step": 0.1},
            "c": {"type": "categorical", "choices": ["a", "b", "c"]}}"#,
    )
    .unwrap()
}

#[test]
fn degenerate_histories_give_valid_samples() {
    let space = small_space();
    let dists: BTreeMap<String, Distribution> = space
        .params()
        .map(|(n, d)| (n.to_string(), d.clone()))
        .collect();
    let s = tpe(3, true, true);
    let check = |trials: &[FrozenTrial], what: &str| {
        for dir in [Direction::Minimize, Direction::Maximize] {
            let p = s
                .sample(&space, trials, dir, 1_000_000)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(p.len(), space.len(), "{what}");
            for (name, d) in space.params() {
                assert!(
                    p[name].is_finite() && d.contains(p[name]),
                    "{what}: {name} = {}",
                    p[name]
                );
            }
        }
    };
    // A single trial, and no trial at all.
    check(&[], "empty");
    let mut one = FrozenTrial::new(0, TrialState::Complete);
    one.params = RandomSampler::new(1)
        .sample(&space, &[], Direction::Minimize, 0)
        .unwrap();
    one.distributions = dists.clone();
    one.value = Some(1.0);
    check(std::slice::from_ref(&one), "single");
    // All identical trials (same params, same value).
    let same: Vec<FrozenTrial> = (0..50)
        .map(|i| FrozenTrial {
            number: i,
            ..one.clone()
        })
        .collect();
    check(&same, "identical");
    // Values all NaN / all infinite.
    for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let t: Vec<FrozenTrial> = (0..40)
            .map(|i| FrozenTrial {
                number: i,
                value: Some(v),
                ..same[0].clone()
            })
            .collect();
        check(&t, "non-finite values");
    }
    // Thousands of pruned trials, with and without intermediate values, some NaN.
    let rs = RandomSampler::new(9);
    let pruned: Vec<FrozenTrial> = (0..3000u64)
        .map(|i| {
            let mut t = FrozenTrial::new(i, TrialState::Pruned);
            t.params = rs.sample(&space, &[], Direction::Minimize, i).unwrap();
            t.distributions = dists.clone();
            for step in 0..(i % 5) {
                t.intermediate_values.insert(
                    step,
                    if i % 7 == 0 {
                        f64::NAN
                    } else {
                        (i % 13) as f64
                    },
                );
            }
            t
        })
        .collect();
    check(&pruned, "pruned");
    // Corrupted parameter values (NaN, out of range) and missing distributions.
    let mut bad = pruned[..100].to_vec();
    for t in bad.iter_mut().step_by(3) {
        t.params.insert("x".into(), f64::NAN);
        t.params.insert("c".into(), 17.0);
        t.params.insert("lr".into(), -1.0);
    }
    for t in bad.iter_mut().step_by(5) {
        t.distributions.clear();
    }
    check(&bad, "corrupted");
    // Only running trials (constant liar with nothing finished).
    let running: Vec<FrozenTrial> = (0..30)
        .map(|i| FrozenTrial {
            number: i,
            state: TrialState::Running,
            ..same[0].clone()
        })
        .collect();
    check(&running, "running");
}

#[test]
fn constant_liar_keeps_parallel_workers_apart() {
    // 20 finished trials around x = 0; 8 running trials at the same spot. With the
    // liar the running spot is "above", so the next suggestion avoids it more.
    let mut space = SearchSpace::new();
    space.push(
        "x",
        Distribution::Float {
            low: -10.0,
            high: 10.0,
            log: false,
            step: None,
        },
    );
    let d: BTreeMap<String, Distribution> = space
        .params()
        .map(|(n, d)| (n.to_string(), d.clone()))
        .collect();
    let mut trials = Vec::new();
    for i in 0..20u64 {
        let x = -10.0 + i as f64;
        let mut t = FrozenTrial::new(i, TrialState::Complete);
        t.params.insert("x".into(), x);
        t.distributions = d.clone();
        t.value = Some(x * x);
        trials.push(t);
    }
    let best_x = 0.0;
    for i in 20..28u64 {
        let mut t = FrozenTrial::new(i, TrialState::Running);
        t.params.insert("x".into(), best_x);
        t.distributions = d.clone();
        trials.push(t);
    }
    let mean_dist = |cl: bool| -> f64 {
        let s = tpe(0, true, cl);
        (0..200u64)
            .map(|k| {
                (s.sample(&space, &trials, Direction::Minimize, 1000 + k)
                    .unwrap()["x"]
                    - best_x)
                    .abs()
            })
            .sum::<f64>()
            / 200.0
    };
    let (with, without) = (mean_dist(true), mean_dist(false));
    assert!(
        with > without,
        "constant liar should push suggestions away: {with} vs {without}"
    );
}

#[test]
fn enqueued_fixed_params_are_served_first() {
    let space = small_space();
    let mut waiting = FrozenTrial::new(5, TrialState::Waiting);
    waiting.params.insert("x".into(), 1.25);
    waiting.params.insert("c".into(), 2.0);
    let mut early = FrozenTrial::new(7, TrialState::Waiting);
    early.params.insert("x".into(), 3.0);
    let trials = vec![early, waiting];
    let first = mnist_sampler::sampler::first_waiting_trial(&trials).unwrap();
    assert_eq!(first.number, 5);
    let s = tpe(1, true, true);
    let p = suggest(
        &s,
        &mut SamplerCache::default(),
        &space,
        &trials,
        Direction::Minimize,
        5,
        Some(&first.params),
    )
    .unwrap();
    assert_eq!(p["x"], 1.25);
    assert_eq!(p["c"], 2.0);
    assert_eq!(p.len(), space.len());
    let mut bad = BTreeMap::new();
    bad.insert("lr".to_string(), -3.0);
    let e = suggest(
        &s,
        &mut SamplerCache::default(),
        &space,
        &trials,
        Direction::Minimize,
        5,
        Some(&bad),
    )
    .unwrap_err();
    assert!(e.to_string().contains("lr"), "{e}");
}

#[test]
fn tpe_improves_on_random_search_on_a_quadratic() {
    let mut space = SearchSpace::new();
    for i in 0..3 {
        space.push(
            format!("x{i}"),
            Distribution::Float {
                low: -5.0,
                high: 5.0,
                log: false,
                step: None,
            },
        );
    }
    let d: BTreeMap<String, Distribution> = space
        .params()
        .map(|(n, d)| (n.to_string(), d.clone()))
        .collect();
    let run = |s: &dyn Sampler| -> f64 {
        let mut trials: Vec<FrozenTrial> = Vec::new();
        for i in 0..60u64 {
            let p = s.sample(&space, &trials, Direction::Minimize, i).unwrap();
            let v: f64 = p.values().map(|x| (x - 1.0) * (x - 1.0)).sum();
            let mut t = FrozenTrial::new(i, TrialState::Complete);
            t.params = p;
            t.distributions = d.clone();
            t.value = Some(v);
            trials.push(t);
        }
        trials
            .iter()
            .filter_map(|t| t.value)
            .fold(f64::INFINITY, f64::min)
    };
    let (mut tpe_wins, mut total) = (0, 0);
    for seed in 0..10 {
        if run(&tpe(seed, true, true)) < run(&RandomSampler::new(seed)) {
            tpe_wins += 1;
        }
        total += 1;
    }
    assert!(tpe_wins >= 8, "TPE won {tpe_wins}/{total}");
}

#[test]
fn invalid_spaces_are_errors_not_panics() {
    let bad = [
        Distribution::Float {
            low: 2.0,
            high: 1.0,
            log: false,
            step: None,
        },
        Distribution::Float {
            low: f64::NAN,
            high: 1.0,
            log: false,
            step: None,
        },
        Distribution::Float {
            low: 0.0,
            high: 1.0,
            log: true,
            step: None,
        },
        Distribution::Int {
            low: 5,
            high: 1,
            log: false,
            step: 1,
        },
        Distribution::Int {
            low: 0,
            high: 10,
            log: false,
            step: 0,
        },
        Distribution::Categorical { choices: vec![] },
    ];
    for d in bad {
        let mut space = SearchSpace::new();
        space.push("bad", d.clone());
        let samplers: Vec<Box<dyn Sampler>> = vec![
            Box::new(RandomSampler::new(0)),
            Box::new(tpe(0, true, true)),
            Box::new(GridSampler::new(0)),
        ];
        for s in &samplers {
            let e = s
                .sample(&space, &[], Direction::Minimize, 0)
                .expect_err("invalid space");
            assert!(e.to_string().contains("bad"), "{d:?}: {e}");
        }
    }
}

#[test]
fn a_large_explicit_grid_is_built_once_per_study() {
    // 200,000 explicit values (duplicates removed in linear time, not by a
    // quadratic scan); the study's cache keeps the grid between suggestions.
    let mut space = SearchSpace::new();
    space.push("x", Distribution::Int { low: 0, high: 400_000, log: false, step: 1 });
    let mut values: Vec<Choice> = (0..200_000).map(|i| Choice::Int(i * 2)).collect();
    values.push(Choice::Int(0)); // a duplicate
    let g = GridSampler::with_grid(5, [("x".to_string(), values)].into());
    assert_eq!(g.n_points(&space).unwrap(), 200_000);
    let mut cache = SamplerCache::default();
    let mut trials = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for i in 0..50u64 {
        let p = g.sample_with(&mut cache, &space, &trials, Direction::Minimize, i).unwrap();
        assert!(seen.insert(p["x"].to_bits()), "grid point repeated");
        let mut t = FrozenTrial::new(i, TrialState::Complete);
        t.params = p;
        t.value = Some(0.0);
        trials.push(t);
    }
}

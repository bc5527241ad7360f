//! Compares our numbers with exact numbers from Optuna 5.0.0, recorded by
//! `bench/sampler/make_fixture.py` in `tests/fixtures/optuna_reference.json`:
//! distribution_json strings, truncated-normal helpers, Parzen estimator kernels
//! and densities, and pruner decisions on interleaved histories.

use std::collections::BTreeMap;

use mnist_sampler::sampler::tpe::parzen::{ParzenEstimator, ParzenParams};
use mnist_sampler::sampler::tpe::truncnorm;
use mnist_sampler::{Direction, Distribution, FrozenTrial, PrunerConfig, PrunerState, TrialState};
use serde_json::Value;

fn fixture() -> Value {
    let text = include_str!("fixtures/optuna_reference.json");
    serde_json::from_str(text).expect("fixture parses")
}

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "nan" => f64::NAN,
        Value::String(s) if s == "inf" => f64::INFINITY,
        Value::String(s) if s == "-inf" => f64::NEG_INFINITY,
        other => other.as_f64().expect("number"),
    }
}

fn close(ours: f64, theirs: f64, rel: f64, what: &str) {
    if theirs.is_infinite() || ours.is_infinite() {
        assert_eq!(ours, theirs, "{what}");
        return;
    }
    let tol = rel * theirs.abs().max(1.0);
    assert!(
        (ours - theirs).abs() <= tol,
        "{what}: ours {ours} vs optuna {theirs}"
    );
}

fn user_dist(v: &Value) -> Distribution {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, x| !x.is_null()); // `"step": null` means no step
    }
    serde_json::from_value(v).expect("user distribution")
}

#[test]
fn distribution_json_is_byte_identical() {
    let f = fixture();
    for case in f["distribution_json"].as_array().unwrap() {
        let want = case["json"].as_str().unwrap();
        let ours = user_dist(&case["user"]);
        assert_eq!(ours.to_optuna_json(), want);
        let back = Distribution::from_optuna_json(want).expect("parses Optuna's JSON");
        assert_eq!(back, ours);
        assert_eq!(back.to_optuna_json(), want);
    }
}

#[test]
fn truncnorm_matches_optuna() {
    let f = fixture();
    for c in f["truncnorm"].as_array().unwrap() {
        let (a, b, q) = (num(&c["a"]), num(&c["b"]), num(&c["q"]));
        close(
            truncnorm::ppf(q, a, b),
            num(&c["ppf"]),
            1e-9,
            &format!("ppf({q},{a},{b})"),
        );
        close(
            truncnorm::log_gauss_mass(a, b),
            num(&c["log_gauss_mass"]),
            1e-12,
            &format!("mass({a},{b})"),
        );
        let x = num(&c["logpdf_x"]);
        close(
            truncnorm::logpdf(x, a, b, 0.7, 1.9),
            num(&c["logpdf"]),
            1e-12,
            &format!("logpdf({x})"),
        );
    }
    for c in f["log_ndtr"].as_array().unwrap() {
        let x = num(&c["x"]);
        close(
            truncnorm::log_ndtr(x),
            num(&c["y"]),
            1e-13,
            &format!("log_ndtr({x})"),
        );
    }
}

#[test]
fn parzen_estimator_matches_optuna() {
    let f = fixture();
    let params = ParzenParams {
        prior_weight: 1.0,
        consider_magic_clip: true,
        consider_endpoints: false,
    };
    for (ci, case) in f["parzen"].as_array().unwrap().iter().enumerate() {
        let space = case["space"].as_object().unwrap();
        let names: Vec<&String> = space.keys().collect();
        let dists: Vec<Distribution> = names
            .iter()
            .map(|n| user_dist(&space[n.as_str()]))
            .collect();
        let dref: Vec<&Distribution> = dists.iter().collect();
        let cols: Vec<Vec<f64>> = names
            .iter()
            .map(|n| {
                case["observations"][n.as_str()]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(num)
                    .collect()
            })
            .collect();
        let pe = ParzenEstimator::new(&cols, &dref, &params);
        let w: Vec<f64> = case["weights"]
            .as_array()
            .unwrap()
            .iter()
            .map(num)
            .collect();
        assert_eq!(pe.weights().len(), w.len());
        // Bit for bit: numpy's linspace ramp, numpy's pairwise sum, one division.
        for (a, b) in pe.weights().iter().zip(&w) {
            assert_eq!(a.to_bits(), b.to_bits(), "case {ci} weight: ours {a} vs optuna {b}");
        }
        for (d, n) in names.iter().enumerate() {
            let k = &case["kernels"][n.as_str()];
            if let Some(rows) = k.get("weights") {
                let want: Vec<f64> = rows
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|r| r.as_array().unwrap().iter().map(num))
                    .collect();
                let ours = pe.categorical_probs(d).unwrap();
                assert_eq!(ours.len(), want.len(), "case {ci} {n}");
                for (a, b) in ours.iter().zip(&want) {
                    close(*a, *b, 1e-12, &format!("case {ci} {n} probs"));
                }
            } else {
                let (mus, sigmas) = pe.kernels(d).unwrap();
                let wm: Vec<f64> = k["mu"].as_array().unwrap().iter().map(num).collect();
                let ws: Vec<f64> = k["sigma"].as_array().unwrap().iter().map(num).collect();
                // numpy's argsort is not stable, so kernels at tied observations may
                // swap bandwidths: compare the (mu, sigma) pairs as multisets.
                let mut ours: Vec<(f64, f64)> =
                    mus.iter().copied().zip(sigmas.iter().copied()).collect();
                let mut theirs: Vec<(f64, f64)> = wm.into_iter().zip(ws).collect();
                let key =
                    |a: &(f64, f64), b: &(f64, f64)| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1));
                ours.sort_by(key);
                theirs.sort_by(key);
                assert_eq!(ours.len(), theirs.len());
                for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                    close(a.0, b.0, 1e-12, &format!("case {ci} {n} mu[{i}]"));
                    close(a.1, b.1, 1e-12, &format!("case {ci} {n} sigma[{i}]"));
                }
            }
        }
        let n_pts = case["log_pdf"].as_array().unwrap().len();
        let points: Vec<Vec<f64>> = (0..n_pts)
            .map(|i| {
                names
                    .iter()
                    .map(|n| num(&case["points"][n.as_str()][i]))
                    .collect()
            })
            .collect();
        let lp = pe.log_pdf(&points);
        for (i, want) in case["log_pdf"]
            .as_array()
            .unwrap()
            .iter()
            .map(num)
            .enumerate()
        {
            close(lp[i], want, 1e-9, &format!("case {ci} log_pdf[{i}]"));
        }
    }
}

#[test]
fn pruner_decisions_match_optuna_on_interleaved_histories() {
    let f = fixture();
    for case in f["pruners"].as_array().unwrap() {
        let cfg: PrunerConfig =
            serde_json::from_value(case["config"].clone()).expect("pruner config");
        let pruner = cfg.build().expect("valid config");
        let direction = if case["direction"] == "maximize" {
            Direction::Maximize
        } else {
            Direction::Minimize
        };
        let mut trials: BTreeMap<u64, FrozenTrial> = BTreeMap::new();
        let mut state = PrunerState::default();
        let mut checked = 0;
        for e in case["events"].as_array().unwrap() {
            if let Some(n) = e.get("ask") {
                let n = n.as_u64().unwrap();
                trials.insert(n, FrozenTrial::new(n, TrialState::Running));
            } else if let Some(n) = e.get("report") {
                let n = n.as_u64().unwrap();
                let step = e["step"].as_u64().unwrap();
                trials
                    .get_mut(&n)
                    .unwrap()
                    .intermediate_values
                    .insert(step, num(&e["value"]));
                let all: Vec<FrozenTrial> = trials.values().cloned().collect();
                let ours = pruner.decide(&trials[&n], &all, direction, &mut state);
                assert_eq!(
                    ours.prune,
                    e["prune"].as_bool().unwrap(),
                    "{:?}: trial {n} step {step}",
                    case["config"]
                );
                // The rung values stored, as Optuna stored them.
                let t = trials.get_mut(&n).unwrap();
                t.rungs.extend(ours.rungs);
                let want: BTreeMap<u32, f64> = e
                    .get("rungs")
                    .and_then(|r| r.as_object())
                    .map(|r| {
                        r.iter()
                            .map(|(k, v)| (k.parse::<u32>().unwrap(), num(v)))
                            .collect()
                    })
                    .unwrap_or_default();
                assert_eq!(
                    t.rungs, want,
                    "{:?}: rung values of trial {n} after step {step}",
                    case["config"]
                );
                checked += 1;
            } else if let Some(n) = e.get("tell") {
                let t = trials.get_mut(&n.as_u64().unwrap()).unwrap();
                if e["state"] == "pruned" {
                    t.state = TrialState::Pruned;
                } else {
                    t.state = TrialState::Complete;
                    t.value = Some(num(&e["value"]));
                }
            }
        }
        assert!(checked > 50);
    }
}

//! Output-identity check for TPE speed work: builds fixed, varied histories
//! (mixed spaces, pruned / running / failed trials, NaN values, a parameter that
//! changes distribution or appears halfway, maximise) and prints every
//! suggestion's bits. Run it before and after a change and diff the outputs:
//! `cargo run --release -p mnist-sampler --example tpe_dump > out.txt`.

use std::collections::BTreeMap;

use mnist_sampler::rng::{trial_rng, uniform01};
use mnist_sampler::{
    Choice, Direction, Distribution, FrozenTrial, Sampler, SearchSpace, TpeConfig, TpeSampler,
    TrialState,
};

fn space(kind: usize, d: usize) -> Vec<(String, Distribution)> {
    let mut v = Vec::new();
    for i in 0..d {
        let k = (i + kind) % 9;
        let dist = match k {
            0 => Distribution::Float { low: -5.0, high: 5.0, log: false, step: None },
            1 => Distribution::Float { low: 1e-4, high: 1.0, log: true, step: None },
            2 => Distribution::Int { low: 0, high: 100, log: false, step: 1 },
            3 => Distribution::Categorical {
                choices: ["a", "b", "c", "d"].iter().map(|s| Choice::Str(s.to_string())).collect(),
            },
            4 => Distribution::Float { low: 0.0, high: 1.0, log: false, step: Some(0.1) },
            5 => Distribution::Int { low: 1, high: 1024, log: true, step: 1 },
            6 => Distribution::Int { low: 0, high: 20, log: false, step: 4 },
            7 => Distribution::Categorical {
                choices: vec![Choice::Bool(true), Choice::Bool(false), Choice::Int(3), Choice::Num(0.5), Choice::None],
            },
            _ => Distribution::Float { low: 1e-3, high: 1e3, log: true, step: None },
        };
        v.push((format!("p{i:02}_{k}"), dist));
    }
    v
}

fn draw(d: &Distribution, u: f64) -> f64 {
    match d {
        Distribution::Float { low, high, log: true, .. } => (low.ln() + u * (high.ln() - low.ln())).exp(),
        Distribution::Float { low, high, step: Some(s), .. } => low + (u * ((high - low) / s + 1.0)).floor().min((high - low) / s) * s,
        Distribution::Float { low, high, .. } => low + u * (high - low),
        Distribution::Int { low, high, log: true, .. } => ((*low as f64).ln() + u * ((*high as f64).ln() - (*low as f64).ln())).exp().round().clamp(*low as f64, *high as f64),
        Distribution::Int { low, high, step, .. } => {
            let n = (high - low) / step + 1;
            (*low + ((u * n as f64) as i64).min(n - 1) * step) as f64
        }
        Distribution::Categorical { choices } => ((u * choices.len() as f64) as usize).min(choices.len() - 1) as f64,
    }
}

/// `mode`: 0 plain, 1 with pruned/running/failed/NaN, 2 a param changes distribution
/// and one appears halfway, 3 values with ties and infinities.
fn history(params: &[(String, Distribution)], n: usize, seed: u64, mode: u32) -> Vec<FrozenTrial> {
    let mut rng = trial_rng(seed, 999_999, 77);
    let mut out = Vec::new();
    for number in 0..n {
        let mut t = FrozenTrial::new(number as u64, TrialState::Complete);
        let mut v = 0.0;
        for (j, (name, d)) in params.iter().enumerate() {
            let mut d = d.clone();
            if mode == 2 && j == 0 && number % 3 == 0 {
                d = Distribution::Float { low: -6.0, high: 6.0, log: false, step: None };
            }
            if mode == 2 && j == 1 && number < n / 2 {
                continue;
            }
            let x = draw(&d, uniform01(&mut rng));
            v += (x - 0.3 * j as f64).abs().sqrt();
            t.params.insert(name.clone(), x);
            t.distributions.insert(name.clone(), d);
        }
        t.value = Some(v);
        if mode == 1 {
            let r = uniform01(&mut rng);
            if r < 0.2 {
                t.state = TrialState::Pruned;
                t.value = None;
                let steps = (uniform01(&mut rng) * 5.0) as u64;
                for s in 0..steps {
                    t.intermediate_values.insert(s, if s == 3 { f64::NAN } else { v + s as f64 });
                }
            } else if r < 0.3 {
                t.state = TrialState::Running;
                t.value = None;
            } else if r < 0.35 {
                t.state = TrialState::Fail;
                t.value = None;
            } else if r < 0.38 {
                t.value = Some(f64::NAN);
            }
        }
        if mode == 3 {
            t.value = Some(match number % 7 {
                0 => 1.0,
                1 => f64::INFINITY,
                2 => f64::NEG_INFINITY,
                _ => (v * 2.0).round(),
            });
        }
        out.push(t);
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut cases = 0;
    for &(kind, d) in &[(0usize, 5usize), (3, 9), (5, 20), (7, 3), (1, 1)] {
        let params = space(kind, d);
        let sp = SearchSpace::from_params(params.clone())?;
        for &n in &[0usize, 5, 11, 30, 120, 1000] {
            for mode in 0..4u32 {
                if n == 1000 && (d == 20 || mode != 0 && mode != 1) {
                    continue;
                }
                let hist = history(&params, n, (kind * 1000 + n) as u64 + mode as u64, mode);
                for seed in [0u64, 1, 42] {
                    for cfg_i in 0..3 {
                        let mut cfg = TpeConfig { seed, ..TpeConfig::default() };
                        match cfg_i {
                            1 => {
                                cfg.multivariate = false;
                                cfg.constant_liar = false;
                            }
                            2 => {
                                cfg.consider_endpoints = true;
                                cfg.consider_magic_clip = false;
                                cfg.prior_weight = 0.5;
                            }
                            _ => {}
                        }
                        let dir = if seed == 1 { Direction::Maximize } else { Direction::Minimize };
                        let s = TpeSampler::new(cfg);
                        for tn in [n as u64, n as u64 + 7] {
                            let out: BTreeMap<String, f64> = s.sample(&sp, &hist, dir, tn)?;
                            let line: Vec<String> = out.iter().map(|(k, v)| format!("{k}={:016x}", v.to_bits())).collect();
                            println!("k{kind} d{d} n{n} m{mode} s{seed} c{cfg_i} t{tn}: {}", line.join(" "));
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    eprintln!("{cases} suggestions");
    Ok(())
}

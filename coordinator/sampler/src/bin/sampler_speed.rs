//! Speed benchmark helper: reads a study history (JSON file written by
//! `bench/sampler/speed.py`), times one TPE suggestion on it several times and
//! prints the timings as JSON. It calls the sampler the way the coordinator does:
//! with the study's [`SamplerCache`], synced as part of every timed call, and each
//! suggested trial is then added to the history: with `--complete` as COMPLETE
//! with a made-up objective (sum of sin(0.37 x) over its internal values, as the
//! Optuna side of `bench/sampler/speed.py` tells it), else as FAIL; so every
//! timed call also reads one new trial. Usage: `sampler-speed HISTORY.json REPS`, or
//! `sampler-speed HISTORY.json serve`: then each line `REPS` on stdin gets one
//! JSON line of timings, so the driver can interleave our rounds with Optuna's.
//! `--evict-mb N` writes an N MB buffer before every timed call (untimed), so each
//! call starts with the caches evicted, as after the other side's round.
//!
//! Two diagnostics for `bench/sampler/idle.py` (what our process loses while it
//! waits for the other side): `--keep-busy` starts a thread that spins without
//! touching memory, so the process's CPU never idles; `--warm-cache` reads the
//! sampler cache's data before each batch of calls (untimed, by cloning it), so a
//! batch starts with that data in the caches but the code cold.

use std::collections::BTreeMap;
use std::time::Instant;

use mnist_sampler::{
    sampler::SamplerCache, Direction, FrozenTrial, Sampler, SearchSpace, TpeConfig, TpeSampler,
    TrialState,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct HistTrial {
    number: u64,
    params: BTreeMap<String, f64>,
    value: f64,
}

#[derive(Deserialize)]
struct History {
    space: serde_json::Value,
    trials: Vec<HistTrial>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err(
            "usage: sampler-speed HISTORY.json (REPS | serve) [--complete] [--evict-mb N] [--keep-busy] [--warm-cache]"
                .into(),
        );
    }
    let hist: History = serde_json::from_str(&std::fs::read_to_string(&args[1])?)?;
    let serve = args[2] == "serve";
    let reps: usize = if serve { 0 } else { args[2].parse()? };
    let space = SearchSpace::from_json_str(&hist.space.to_string())?;
    let dists: BTreeMap<String, _> = space
        .params()
        .map(|(n, d)| (n.to_string(), d.clone()))
        .collect();
    let mut trials: Vec<FrozenTrial> = hist
        .trials
        .into_iter()
        .map(|t| FrozenTrial {
            number: t.number,
            state: TrialState::Complete,
            value: Some(t.value),
            params: t.params,
            distributions: dists.clone(),
            intermediate_values: BTreeMap::new(),
            rungs: BTreeMap::new(),
        })
        .collect();
    let sampler = TpeSampler::new(TpeConfig {
        seed: 0,
        ..TpeConfig::default()
    });
    let complete = args.iter().any(|a| a == "--complete");
    let evict_mb: usize = match args.iter().position(|a| a == "--evict-mb") {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|mb| *mb <= 1 << 16)
            .ok_or("--evict-mb needs a number of megabytes (at most 65536)")?,
        None => 0,
    };
    let warm_cache = args.iter().any(|a| a == "--warm-cache");
    if args.iter().any(|a| a == "--keep-busy") {
        std::thread::spawn(|| loop {
            std::hint::spin_loop();
        });
    }
    let mut evict = vec![0u8; evict_mb << 20];
    let mut next = trials.len() as u64;
    let mut cache = SamplerCache::default();
    let mut run = |reps: usize| -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        let mut times = Vec::with_capacity(reps);
        let mut checksum = 0.0;
        if warm_cache {
            std::hint::black_box(cache.clone());
        }
        for _ in 0..reps.max(1) {
            // One write per cache line of a buffer larger than the caches.
            for (i, b) in evict.iter_mut().step_by(64).enumerate() {
                *b = b.wrapping_add(i as u8);
            }
            std::hint::black_box(&evict);
            let t0 = Instant::now();
            let p = sampler.sample_with(&mut cache, &space, &trials, Direction::Minimize, next)?;
            times.push(t0.elapsed().as_secs_f64());
            checksum += p.values().sum::<f64>();
            let mut told = FrozenTrial::new(next, TrialState::Fail);
            if complete {
                // A made-up objective, so that the history changes as in a study.
                told.state = TrialState::Complete;
                told.value = Some(p.values().map(|v| (0.37 * v).sin()).sum::<f64>());
            }
            told.params = p;
            told.distributions = dists.clone();
            trials.push(told);
            next += 1;
        }
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        Ok(
            serde_json::json!({"median_s": sorted[sorted.len() / 2], "min_s": sorted[0], "times_s": times, "checksum": checksum}),
        )
    };
    if serve {
        use std::io::{BufRead, Write};
        let stdin = std::io::stdin();
        let mut out = std::io::stdout().lock();
        for line in stdin.lock().lines() {
            let reps: usize = line?.trim().parse()?;
            writeln!(out, "{}", run(reps)?)?;
            out.flush()?;
        }
    } else {
        println!("{}", run(reps)?);
    }
    Ok(())
}

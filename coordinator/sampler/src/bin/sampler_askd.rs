//! Ask/tell server over JSON lines on stdin/stdout, so the Python quality
//! benchmark (`bench/sampler/quality.py`) can drive our TPE like an Optuna study.
//!
//! Requests, one JSON object per line:
//! * `{"cmd": "new", "space": {..user format..}, "seed": 1, "direction": "minimize"}`
//! * `{"cmd": "ask"}` -> `{"number": 0, "params": {"x": 0.5, "opt": "adam"}}` (external values)
//! * `{"cmd": "tell", "number": 0, "value": 1.25}` (or `"state": "fail"`)
//! * `{"cmd": "add", "state": "running", "params": {..internal..}, "value": null}`
//!   appends a trial as it is (for comparing suggestions on a fixed history)
//! * `{"cmd": "peek", "seed": 3}`: a suggestion with another seed, not recorded
//!
//! Every reply is one line; errors come back as `{"error": "..."}`.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use mnist_sampler::{
    sampler::SamplerCache, Direction, FrozenTrial, Sampler, SearchSpace, TpeConfig, TpeSampler,
    TrialState,
};
use serde_json::{json, Value};

struct Study {
    space: SearchSpace,
    direction: Direction,
    sampler: TpeSampler,
    /// Kept across asks, as the coordinator keeps one per study.
    cache: SamplerCache,
    trials: Vec<FrozenTrial>,
}

fn handle(study: &mut Option<Study>, req: &Value) -> Result<Value, String> {
    match req["cmd"].as_str() {
        Some("new") => {
            let space =
                SearchSpace::from_json_str(&req["space"].to_string()).map_err(|e| e.to_string())?;
            let direction = if req["direction"] == "maximize" {
                Direction::Maximize
            } else {
                Direction::Minimize
            };
            let mut config = TpeConfig {
                seed: req["seed"].as_u64().unwrap_or(0),
                ..TpeConfig::default()
            };
            if let Some(cfg) = req.get("config").and_then(Value::as_object) {
                if let Some(v) = cfg.get("constant_liar").and_then(Value::as_bool) {
                    config.constant_liar = v;
                }
                if let Some(v) = cfg.get("multivariate").and_then(Value::as_bool) {
                    config.multivariate = v;
                }
            }
            *study = Some(Study {
                space,
                direction,
                sampler: TpeSampler::new(config),
                cache: SamplerCache::default(),
                trials: Vec::new(),
            });
            Ok(json!({"ok": true}))
        }
        Some("ask") => {
            let s = study.as_mut().ok_or("no study: send `new` first")?;
            let number = s.trials.len() as u64;
            let params = s
                .sampler
                .sample_with(&mut s.cache, &s.space, &s.trials, s.direction, number)
                .map_err(|e| e.to_string())?;
            let mut external = serde_json::Map::new();
            for (name, d) in s.space.params() {
                let v = params.get(name).copied().ok_or("missing parameter")?;
                external.insert(
                    name.to_string(),
                    serde_json::to_value(d.to_external(v)).map_err(|e| e.to_string())?,
                );
            }
            let mut t = FrozenTrial::new(number, TrialState::Running);
            t.params = params;
            t.distributions = s
                .space
                .params()
                .map(|(n, d)| (n.to_string(), d.clone()))
                .collect::<BTreeMap<_, _>>();
            s.trials.push(t);
            Ok(json!({"number": number, "params": external}))
        }
        Some("add") => {
            let s = study.as_mut().ok_or("no study: send `new` first")?;
            let number = s.trials.len() as u64;
            let state = match req["state"].as_str() {
                Some("running") => TrialState::Running,
                Some("pruned") => TrialState::Pruned,
                Some("fail") => TrialState::Fail,
                _ => TrialState::Complete,
            };
            let mut t = FrozenTrial::new(number, state);
            t.params = serde_json::from_value(req["params"].clone()).map_err(|e| e.to_string())?;
            t.distributions = s
                .space
                .params()
                .map(|(n, d)| (n.to_string(), d.clone()))
                .collect::<BTreeMap<_, _>>();
            t.value = req["value"].as_f64();
            s.trials.push(t);
            Ok(json!({"number": number}))
        }
        Some("peek") => {
            let s = study.as_ref().ok_or("no study: send `new` first")?;
            let mut sampler = s.sampler;
            sampler.config.seed = req["seed"].as_u64().unwrap_or(0);
            let params = sampler
                .sample(&s.space, &s.trials, s.direction, s.trials.len() as u64)
                .map_err(|e| e.to_string())?;
            Ok(json!({"params": params}))
        }
        Some("tell") => {
            let s = study.as_mut().ok_or("no study: send `new` first")?;
            let n = req["number"].as_u64().ok_or("tell needs `number`")? as usize;
            let t = s.trials.get_mut(n).ok_or("unknown trial number")?;
            if req["state"] == "fail" {
                t.state = TrialState::Fail;
            } else {
                let v = req["value"]
                    .as_f64()
                    .ok_or("tell needs a numeric `value`")?;
                t.state = TrialState::Complete;
                t.value = Some(v);
            }
            Ok(json!({"ok": true}))
        }
        _ => Err(format!("unknown request {req}")),
    }
}

fn main() -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut study = None;
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(req) => handle(&mut study, &req).unwrap_or_else(|e| json!({"error": e})),
            Err(e) => json!({"error": format!("bad JSON: {e}")}),
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    Ok(())
}

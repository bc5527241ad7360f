//! Printing coordinator results: aligned tables for people, JSON for
//! programs (`-o json`), and CSV for `study export`.

use std::collections::BTreeSet;

use mnist_proto::v1 as pb;
use serde_json::{json, Map, Value};

/// A number as JSON. JSON has no NaN or infinities (serde_json would print
/// `null`, losing the value), so those are written as the strings Python's
/// `float()` reads back: `"NaN"`, `"Infinity"`, `"-Infinity"`.
pub fn num(x: f64) -> Value {
    match mnist_sampler::pyjson::non_finite_name(x) {
        Some(name) => json!(name),
        None => json!(x),
    }
}

/// An optional number as JSON (`null` when absent), see [`num`].
pub fn opt_num_json(x: Option<f64>) -> Value {
    x.map_or(Value::Null, num)
}

/// A parameter value as JSON.
pub fn param_json(p: &pb::ParamValue) -> Value {
    use pb::param_value::Kind;
    match &p.kind {
        Some(Kind::FloatValue(x)) => num(*x),
        Some(Kind::IntValue(i)) => json!(i),
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::NullValue(_)) | None => Value::Null,
    }
}

/// A parameter value as text.
pub fn param_text(p: &pb::ParamValue) -> String {
    use pb::param_value::Kind;
    match &p.kind {
        Some(Kind::FloatValue(x)) => fmt_num(*x),
        Some(Kind::IntValue(i)) => i.to_string(),
        Some(Kind::StringValue(s)) => s.clone(),
        Some(Kind::BoolValue(b)) => b.to_string(),
        Some(Kind::NullValue(_)) | None => "null".into(),
    }
}

/// A number with up to 6 significant digits.
pub fn fmt_num(x: f64) -> String {
    if x == 0.0 || (x.abs() >= 1e-3 && x.abs() < 1e6) {
        let s = format!("{x:.6}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s.is_empty() || s == "-" {
            "0".into()
        } else {
            s.to_string()
        }
    } else {
        format!("{x:.4e}")
    }
}

/// An optional value as text ("-" when unset).
pub fn opt_num(x: Option<f64>) -> String {
    x.map(fmt_num).unwrap_or_else(|| "-".into())
}

/// A timestamp as RFC 3339 (UTC, seconds).
pub fn ts(t: &Option<mnist_proto::Timestamp>) -> Option<String> {
    let t = t.as_ref()?;
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Seconds between two timestamps.
pub fn duration_s(a: &Option<mnist_proto::Timestamp>, b: &Option<mnist_proto::Timestamp>) -> Option<f64> {
    let (a, b) = (a.as_ref()?, b.as_ref()?);
    Some((b.seconds - a.seconds) as f64 + (b.nanos - a.nanos) as f64 * 1e-9)
}

/// The state name without the enum prefix, e.g. `COMPLETE`.
pub fn trial_state(v: i32) -> &'static str {
    pb::TrialState::try_from(v).map(|s| s.as_str_name().trim_start_matches("TRIAL_STATE_")).unwrap_or("UNKNOWN")
}

/// The study state name, e.g. `RUNNING`.
pub fn study_state(v: i32) -> &'static str {
    pb::StudyState::try_from(v).map(|s| s.as_str_name().trim_start_matches("STUDY_STATE_")).unwrap_or("UNKNOWN")
}

/// The direction name, e.g. `maximize`.
pub fn direction(v: i32) -> &'static str {
    match pb::Direction::try_from(v) {
        Ok(pb::Direction::Minimize) => "minimize",
        Ok(pb::Direction::Maximize) => "maximize",
        _ => "unspecified",
    }
}

fn sorted_params(t: &pb::Trial) -> Vec<(&String, &pb::ParamValue)> {
    let mut v: Vec<_> = t.params.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

/// A trial as JSON.
pub fn trial_json(t: &pb::Trial) -> Value {
    let params: Map<String, Value> = sorted_params(t).into_iter().map(|(k, v)| (k.clone(), param_json(v))).collect();
    let mut inter: Vec<_> = t.intermediate_values.iter().collect();
    inter.sort_by_key(|(k, _)| **k);
    let inter: Map<String, Value> = inter.into_iter().map(|(k, v)| (k.to_string(), num(*v))).collect();
    let metrics: Map<String, Value> = t.metrics.iter().map(|(k, v)| (k.clone(), num(*v))).collect();
    json!({
        "study": t.study_name,
        "number": t.number,
        "trial_id": t.trial_id,
        "state": trial_state(t.state),
        "value": opt_num_json(t.value),
        "params": params,
        "intermediate_values": inter,
        "metrics": metrics,
        "datetime_start": ts(&t.datetime_start),
        "datetime_complete": ts(&t.datetime_complete),
        "duration_seconds": duration_s(&t.datetime_start, &t.datetime_complete),
        "retries": t.retries,
        "fail_reason": if t.fail_reason.is_empty() { Value::Null } else { json!(t.fail_reason) },
        "enqueued": t.enqueued,
        "holder": t.holder.as_ref().map(|h| json!({
            "id": h.holder_id, "slot": h.slot, "hostname": h.hostname, "device": h.device, "lease_expires_at": ts(&h.expires_at),
        })),
        "mlflow_run": t.mlflow_run.as_ref().map(mlflow_run_json),
    })
}

/// Where a run lives in MLflow, as JSON.
pub fn mlflow_run_json(r: &pb::MlflowRun) -> Value {
    json!({"experiment_id": r.experiment_id, "run_id": r.run_id, "url": if r.url.is_empty() { Value::Null } else { json!(r.url) }})
}

/// The MLflow outbox, as JSON.
pub fn mlflow_status_json(m: &pb::MlflowStatus) -> Value {
    json!({
        "tracking_uri": if m.tracking_uri.is_empty() { Value::Null } else { json!(m.tracking_uri) },
        "pending": m.pending,
        "delivered": m.delivered,
        "refused": m.dead,
        "last_error": if m.last_error.is_empty() { Value::Null } else { json!(m.last_error) },
        "oldest_pending_at": ts(&m.oldest_pending_at),
    })
}

/// A study as JSON.
pub fn study_json(s: &pb::Study) -> Value {
    let spec = s.spec.clone().unwrap_or_default();
    let counts = s.counts.unwrap_or_default();
    let space: Map<String, Value> = s
        .search_space
        .as_ref()
        .map(|sp| sp.params.iter().map(|p| (p.name.clone(), distribution_json(p.distribution.as_ref()))).collect())
        .unwrap_or_default();
    let opts = |t: &str| serde_json::from_str::<Value>(t).unwrap_or(Value::Null);
    json!({
        "study_id": s.study_id,
        "name": s.name,
        "state": study_state(s.state),
        "end_reason": s.end_reason,
        "direction": direction(spec.direction),
        "metric": spec.metric,
        "n_trials": spec.n_trials,
        "timeout_seconds": spec.timeout_seconds,
        "max_concurrency": spec.max_concurrency,
        "sampler": spec.sampler.as_ref().map(|x| json!({"kind": x.kind, "seed": x.seed, "options": opts(&x.options_json)})),
        "pruner": spec.pruner.as_ref().map(|x| json!({"kind": x.kind, "options": opts(&x.options_json)})),
        "retry": spec.retry.as_ref().map(|r| json!({"max_retries": r.max_retries, "fresh_params": r.fresh_params})),
        "base_config": opts(&spec.base_config_json),
        "search_space": space,
        "counts": {"waiting": counts.waiting, "running": counts.running, "complete": counts.complete, "pruned": counts.pruned, "fail": counts.fail},
        "best_trial": s.best_trial.as_ref().map(trial_json),
        "created_at": ts(&s.created_at),
        "started_at": ts(&s.started_at),
        "ended_at": ts(&s.ended_at),
        "mlflow_run": s.mlflow_run.as_ref().map(mlflow_run_json),
        "mlflow": s.mlflow.as_ref().map(mlflow_status_json),
    })
}

/// A distribution as the user JSON format.
pub fn distribution_json(d: Option<&pb::Distribution>) -> Value {
    use pb::distribution::Kind;
    match d.and_then(|d| d.kind.as_ref()) {
        Some(Kind::FloatDist(f)) => {
            let mut v = json!({"type": "float", "low": num(f.low), "high": num(f.high), "log": f.log});
            if let Some(s) = f.step {
                v["step"] = num(s);
            }
            v
        }
        Some(Kind::IntDist(i)) => json!({"type": "int", "low": i.low, "high": i.high, "log": i.log, "step": i.step}),
        Some(Kind::Categorical(c)) => json!({"type": "categorical", "choices": c.choices.iter().map(param_json).collect::<Vec<_>>()}),
        None => Value::Null,
    }
}

/// A distribution as short text.
pub fn distribution_text(d: Option<&pb::Distribution>) -> String {
    use pb::distribution::Kind;
    match d.and_then(|d| d.kind.as_ref()) {
        Some(Kind::FloatDist(f)) => {
            let mut s = format!("float {} .. {}", fmt_num(f.low), fmt_num(f.high));
            if f.log {
                s.push_str(", log");
            }
            if let Some(st) = f.step {
                s.push_str(&format!(", step {}", fmt_num(st)));
            }
            s
        }
        Some(Kind::IntDist(i)) => {
            let mut s = format!("int {} .. {}", i.low, i.high);
            if i.log {
                s.push_str(", log");
            }
            if i.step > 1 {
                s.push_str(&format!(", step {}", i.step));
            }
            s
        }
        Some(Kind::Categorical(c)) => {
            format!("categorical [{}]", c.choices.iter().map(param_text).collect::<Vec<_>>().join(", "))
        }
        None => "?".into(),
    }
}

/// Prints JSON, pretty.
pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

/// Prints an aligned table.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{:<w$}  ", c, w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// The rows of a trial table: number, state, value, params..., duration.
pub fn trial_rows(trials: &[pb::Trial]) -> (Vec<String>, Vec<Vec<String>>) {
    let names: BTreeSet<&String> = trials.iter().flat_map(|t| t.params.keys()).collect();
    let mut headers: Vec<String> = vec!["#".into(), "STATE".into(), "VALUE".into()];
    headers.extend(names.iter().map(|n| n.to_string()));
    headers.push("SECONDS".into());
    headers.push("NOTE".into());
    let rows = trials
        .iter()
        .map(|t| {
            let mut r = vec![t.number.to_string(), trial_state(t.state).to_string(), opt_num(t.value)];
            for n in &names {
                r.push(t.params.get(*n).map(param_text).unwrap_or_else(|| "-".into()));
            }
            r.push(duration_s(&t.datetime_start, &t.datetime_complete).map(|d| format!("{d:.1}")).unwrap_or_else(|| "-".into()));
            let note = match &t.holder {
                Some(h) if !h.hostname.is_empty() => format!("on {} {}", h.hostname, h.device),
                Some(h) => format!("held by {}", h.holder_id),
                None if !t.fail_reason.is_empty() => t.fail_reason.clone(),
                None => String::new(),
            };
            r.push(note);
            r
        })
        .collect();
    (headers, rows)
}

/// CSV of trials: the columns of Optuna's `trials_dataframe`, with our
/// metrics for its user attributes, the duration in seconds, and the retries
/// and failure reason.
pub fn trials_csv(trials: &[pb::Trial]) -> String {
    let params: BTreeSet<&String> = trials.iter().flat_map(|t| t.params.keys()).collect();
    let metrics: BTreeSet<&String> = trials.iter().flat_map(|t| t.metrics.keys()).collect();
    let mut out = String::new();
    let mut header = vec!["number".to_string(), "state".into(), "value".into(), "datetime_start".into(), "datetime_complete".into(), "duration_seconds".into()];
    header.extend(params.iter().map(|p| format!("params_{p}")));
    header.extend(metrics.iter().map(|m| format!("metrics_{m}")));
    header.extend(["retries".to_string(), "fail_reason".into()]);
    out.push_str(&header.iter().map(|h| csv_cell(h)).collect::<Vec<_>>().join(","));
    out.push('\n');
    for t in trials {
        let mut r = vec![
            t.number.to_string(),
            trial_state(t.state).to_string(),
            t.value.map(|v| v.to_string()).unwrap_or_default(),
            ts(&t.datetime_start).unwrap_or_default(),
            ts(&t.datetime_complete).unwrap_or_default(),
            duration_s(&t.datetime_start, &t.datetime_complete).map(|d| format!("{d:.3}")).unwrap_or_default(),
        ];
        for p in &params {
            r.push(t.params.get(*p).map(|v| match param_json(v) {
                Value::String(s) => s,
                Value::Null => String::new(),
                other => other.to_string(),
            }).unwrap_or_default());
        }
        for m in &metrics {
            r.push(t.metrics.get(*m).map(|v| v.to_string()).unwrap_or_default());
        }
        r.push(t.retries.to_string());
        r.push(t.fail_reason.clone());
        out.push_str(&r.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_csv() {
        assert_eq!(fmt_num(0.5), "0.5");
        assert_eq!(fmt_num(0.00001), "1.0000e-5");
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        let t = pb::Trial {
            number: 3,
            state: pb::TrialState::Complete as i32,
            value: Some(0.98),
            params: [("lr".to_string(), pb::ParamValue { kind: Some(pb::param_value::Kind::FloatValue(0.01)) })].into(),
            ..Default::default()
        };
        let csv = trials_csv(std::slice::from_ref(&t));
        assert!(csv.starts_with("number,state,value,"), "{csv}");
        assert!(csv.contains("3,COMPLETE,0.98"), "{csv}");
        assert_eq!(trial_json(&t)["params"]["lr"], json!(0.01));
    }

    #[test]
    fn non_finite_numbers_keep_their_value_in_json() {
        let t = pb::Trial {
            value: Some(f64::NEG_INFINITY),
            intermediate_values: [(0, f64::NAN), (1, 0.5)].into(),
            metrics: [("val_loss".to_string(), f64::INFINITY)].into(),
            params: [("x".to_string(), pb::ParamValue { kind: Some(pb::param_value::Kind::FloatValue(f64::NAN)) })].into(),
            ..Default::default()
        };
        let v = trial_json(&t);
        assert_eq!(v["value"], json!("-Infinity"));
        assert_eq!(v["intermediate_values"]["0"], json!("NaN"));
        assert_eq!(v["intermediate_values"]["1"], json!(0.5));
        assert_eq!(v["metrics"]["val_loss"], json!("Infinity"));
        assert_eq!(v["params"]["x"], json!("NaN"));
        assert_eq!(trial_json(&pb::Trial::default())["value"], Value::Null);
    }
}

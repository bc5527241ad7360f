//! `mnistctl trial`: enqueue trials with fixed parameters, list and inspect trials.

use anyhow::Context;
use mnist_proto::v1 as pb;
use serde_json::Value;

use crate::cli::{Global, OutputFormat};
use crate::client::{block_on, connect, rpc_error};
use crate::output::*;
use crate::study::{key_value, TrialsArgs};

/// Trial commands.
#[derive(Debug, clap::Subcommand)]
pub enum TrialCmd {
    /// Add a trial with fixed parameters; it runs before any sampled trial
    ///
    /// Parameters left out are sampled when the trial starts. Examples:
    ///   mnistctl trial enqueue mnist --param learning_rate=0.01 --param batch_size=64
    ///   mnistctl trial enqueue mnist --params-json '{"learning_rate": 0.01, "batch_size": 64}'
    #[command(verbatim_doc_comment)]
    Enqueue {
        /// The study name.
        study: String,
        /// A fixed parameter, NAME=VALUE (repeatable). Numbers, true/false and
        /// null are read as such; anything else is a string.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Fixed parameters as a JSON object.
        #[arg(long)]
        params_json: Option<String>,
    },
    /// List a study's trials (same as `mnistctl study trials`).
    List(TrialsArgs),
    /// Show one trial: parameters, intermediate values, metrics, holder.
    Get {
        /// The study name.
        study: String,
        /// The trial number.
        number: u64,
    },
}

fn param_value(v: &Value, name: &str) -> anyhow::Result<pb::ParamValue> {
    use pb::param_value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(true),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Kind::IntValue(i),
            None => Kind::FloatValue(n.as_f64().with_context(|| format!("parameter {name}: {n} is not a number"))?),
        },
        Value::String(s) => Kind::StringValue(s.clone()),
        other => anyhow::bail!("parameter {name}: {other} is not a number, string, boolean or null"),
    };
    Ok(pb::ParamValue { kind: Some(kind) })
}

/// The fixed parameters of `trial enqueue`, from `--params-json` and
/// `--param` (each name once).
fn enqueue_params(params: &[String], params_json: Option<&str>) -> anyhow::Result<std::collections::HashMap<String, pb::ParamValue>> {
    let mut map = std::collections::HashMap::new();
    if let Some(j) = params_json {
        match serde_json::from_str::<Value>(j).context("--params-json is not valid JSON")? {
            Value::Object(m) => {
                for (k, v) in m {
                    let pv = param_value(&v, &k)?;
                    map.insert(k, pv);
                }
            }
            _ => anyhow::bail!("--params-json must be a JSON object"),
        }
    }
    for p in params {
        let (k, v) = key_value(p)?;
        let pv = param_value(&v, &k)?;
        if map.insert(k.clone(), pv).is_some() {
            anyhow::bail!("parameter {k} is given twice (--param and --params-json, or --param twice); give it once");
        }
    }
    Ok(map)
}

/// Runs a trial command.
pub fn run(cmd: TrialCmd, global: &Global) -> anyhow::Result<()> {
    // Checked before connecting, so a mistake is named even without a coordinator.
    let enqueued = match &cmd {
        TrialCmd::Enqueue { params, params_json, .. } => Some(enqueue_params(params, params_json.as_deref())?),
        _ => None,
    };
    block_on(async move {
        let mut c = connect(global).await?;
        let json_out = global.output == OutputFormat::Json;
        match cmd {
            TrialCmd::Enqueue { study, .. } => {
                let map = enqueued.unwrap_or_default();
                let t = c
                    .study
                    .enqueue_trial(pb::EnqueueTrialRequest { study_name: study.clone(), params: map })
                    .await
                    .map_err(|e| rpc_error(&c.url, e))?
                    .into_inner();
                if json_out {
                    print_json(&trial_json(&t));
                } else {
                    println!("enqueued trial #{} in study {study:?}", t.number);
                }
                Ok(())
            }
            TrialCmd::List(args) => crate::study::trials(&mut c, &args, json_out).await,
            TrialCmd::Get { study, number } => {
                let t = c
                    .study
                    .get_trial(pb::GetTrialRequest {
                        key: Some(pb::get_trial_request::Key::Ref(pb::TrialRef { study_name: study, number })),
                    })
                    .await
                    .map_err(|e| rpc_error(&c.url, e))?
                    .into_inner();
                if json_out {
                    print_json(&trial_json(&t));
                    return Ok(());
                }
                println!("trial #{} of {:?} (id {})", t.number, t.study_name, t.trial_id);
                println!("state    {}", trial_state(t.state));
                println!("value    {}", opt_num(t.value));
                if let Some(d) = duration_s(&t.datetime_start, &t.datetime_complete) {
                    println!("duration {d:.1}s");
                }
                if t.retries > 0 {
                    println!("retries  {}", t.retries);
                }
                if !t.fail_reason.is_empty() {
                    println!("reason   {}", t.fail_reason);
                }
                if let Some(h) = &t.holder {
                    println!("held by  {} slot {} {} {}", h.holder_id, h.slot, h.hostname, h.device);
                }
                let mut params: Vec<_> = t.params.iter().collect();
                params.sort_by(|a, b| a.0.cmp(b.0));
                for (k, v) in params {
                    println!("  {k} = {}", param_text(v));
                }
                let mut steps: Vec<_> = t.intermediate_values.iter().collect();
                steps.sort_by_key(|(k, _)| **k);
                for (s, v) in steps {
                    println!("  step {s}: {}", fmt_num(*v));
                }
                let mut metrics: Vec<_> = t.metrics.iter().collect();
                metrics.sort_by(|a, b| a.0.cmp(b.0));
                for (k, v) in metrics {
                    println!("  [{k}] {}", fmt_num(*v));
                }
                Ok(())
            }
        }
    })
}

//! `coordinator-bench`: ask/tell throughput of a running coordinator.
//!
//! It creates a study (random sampler, three parameters, a trivial
//! objective), runs `--clients` concurrent gRPC clients, each on its own
//! connection, doing Ask + Tell until the study's `--trials` are done, and
//! reports cycles per second and the ask/tell latency percentiles. At the
//! end it reads the database (`--db`) and checks that the study holds exactly
//! `--trials` COMPLETE trials with numbers 0..N-1, each once, each with a
//! value: no trial lost, none duplicated. Prints one JSON line.
//!
//! Run by `bench/coordinator/run.sh`; see docs/benchmarks.md.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use mnist_proto::v1 as pb;
use mnist_proto::v1::ask_tell_service_client::AskTellServiceClient;
use mnist_proto::v1::study_service_client::StudyServiceClient;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tonic::transport::{Channel, Endpoint};

/// Ask/tell throughput of a running coordinator, with a lost/duplicate check.
#[derive(Debug, Parser)]
#[command(name = "coordinator-bench", version, about)]
struct Args {
    /// The coordinator's URL.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    coordinator: String,
    /// The coordinator's database file, read at the end to verify the trials.
    #[arg(long)]
    db: PathBuf,
    /// Concurrent gRPC clients, each on its own connection.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Trials in the study (the run ends when all are complete).
    #[arg(long, default_value_t = 20_000)]
    trials: u32,
    /// Study name; a unique one is made up by default.
    #[arg(long)]
    study: Option<String>,
    /// Sampler of the study.
    #[arg(long, default_value = "random")]
    sampler: String,
    /// Sampler seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

const SPACE: &str = r#"{"x": {"type": "float", "low": -10.0, "high": 10.0},
 "y": {"type": "int", "low": -10, "high": 10},
 "c": {"type": "categorical", "choices": ["a", "b", "c"]}}"#;

fn objective(params: &std::collections::HashMap<String, pb::ParamValue>) -> f64 {
    use pb::param_value::Kind;
    let num = |k: &str| match params.get(k).and_then(|v| v.kind.as_ref()) {
        Some(Kind::FloatValue(x)) => *x,
        Some(Kind::IntValue(i)) => *i as f64,
        _ => 0.0,
    };
    let c = matches!(params.get("c").and_then(|v| v.kind.as_ref()), Some(Kind::StringValue(s)) if s == "b");
    num("x").powi(2) + num("y").powi(2) + if c { 1.0 } else { 0.0 }
}

struct ClientStats {
    ask_us: Vec<u32>,
    tell_us: Vec<u32>,
    cycles: u64,
}

async fn client(channel: Channel, study: String, id: usize, start: Arc<tokio::sync::Barrier>) -> anyhow::Result<ClientStats> {
    let mut c = AskTellServiceClient::new(channel);
    let mut stats = ClientStats { ask_us: Vec::new(), tell_us: Vec::new(), cycles: 0 };
    start.wait().await;
    loop {
        let t0 = Instant::now();
        let resp = c
            .ask(pb::AskRequest { study_name: study.clone(), client_id: format!("bench-{id}"), slot: 0, wait_ms: 1000 })
            .await
            .context("ask")?
            .into_inner();
        let Some(trial) = resp.trial else {
            if resp.study_over {
                return Ok(stats);
            }
            tokio::time::sleep(Duration::from_millis(resp.retry_after_ms.clamp(1, 100) as u64)).await;
            continue;
        };
        stats.ask_us.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
        let value = objective(&trial.params);
        let token = trial.lease.map(|l| l.token).unwrap_or(0);
        let t1 = Instant::now();
        c.tell(pb::TellRequest {
            trial_id: trial.trial_id,
            lease_token: token,
            state: pb::TrialState::Complete as i32,
            value: Some(value),
            ..Default::default()
        })
        .await
        .context("tell")?;
        stats.tell_us.push(t1.elapsed().as_micros().min(u32::MAX as u128) as u32);
        stats.cycles += 1;
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let study = args.study.clone().unwrap_or_else(|| format!("bench-{}", uuid::Uuid::new_v4().simple()));
    let endpoint = Endpoint::from_shared(args.coordinator.clone())?.tcp_nodelay(true);
    let mut admin = StudyServiceClient::new(endpoint.connect().await.with_context(|| format!("connecting to {}", args.coordinator))?);
    admin
        .create_study(pb::CreateStudyRequest {
            spec: Some(pb::StudySpec {
                name: study.clone(),
                direction: pb::Direction::Minimize as i32,
                metric: "objective".into(),
                search_space: Some(pb::SearchSpaceSource { source: Some(pb::search_space_source::Source::Json(SPACE.into())) }),
                sampler: Some(pb::SamplerSpec { kind: args.sampler.clone(), seed: Some(args.seed), options_json: String::new() }),
                n_trials: args.trials,
                ..Default::default()
            }),
            load_if_exists: false,
        })
        .await
        .context("creating the study")?;

    let mut channels = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        channels.push(endpoint.connect().await?);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(args.clients + 1));
    let mut tasks = Vec::new();
    for (i, ch) in channels.into_iter().enumerate() {
        tasks.push(tokio::spawn(client(ch, study.clone(), i, barrier.clone())));
    }
    barrier.wait().await;
    let t0 = Instant::now();
    let mut ask_us = Vec::new();
    let mut tell_us = Vec::new();
    let cycles = AtomicU64::new(0);
    for t in tasks {
        let s = t.await??;
        ask_us.extend(s.ask_us);
        tell_us.extend(s.tell_us);
        cycles.fetch_add(s.cycles, Ordering::Relaxed);
    }
    let secs = t0.elapsed().as_secs_f64();
    ask_us.sort_unstable();
    tell_us.sort_unstable();
    let cycles = cycles.load(Ordering::Relaxed);

    let s = admin.get_study(pb::GetStudyRequest { name: study.clone() }).await?.into_inner();
    let counts = s.counts.unwrap_or_default();

    // Verify on disk: exactly N COMPLETE trials, numbers 0..N-1 once each.
    let mut conn = SqliteConnectOptions::new().filename(&args.db).read_only(true).connect().await?;
    let sid: i64 = sqlx::query_scalar("SELECT study_id FROM studies WHERE study_name = ?").bind(&study).fetch_one(&mut conn).await?;
    let (rows, distinct, min_n, max_n): (i64, i64, Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT number), MIN(number), MAX(number) FROM trials WHERE study_id = ?")
            .bind(sid)
            .fetch_one(&mut conn)
            .await?;
    let complete: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM trials WHERE study_id = ? AND state = 'COMPLETE'")
        .bind(sid)
        .fetch_one(&mut conn)
        .await?;
    let values: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM trial_values v JOIN trials t ON t.trial_id = v.trial_id WHERE t.study_id = ?",
    )
    .bind(sid)
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    let n = args.trials as i64;
    let lost = (n - complete).max(0);
    let duplicated = (rows - distinct) + (complete - n).max(0);
    let ok = rows == n && distinct == n && complete == n && values == n && min_n == Some(0) && max_n == Some(n - 1) && cycles as i64 == n;

    let json = serde_json::json!({
        "impl": "mnist-coordinator",
        "sampler": args.sampler,
        "clients": args.clients,
        "trials": args.trials,
        "seconds": secs,
        "cycles": cycles,
        "cycles_per_s": cycles as f64 / secs,
        "ask_p50_ms": percentile(&ask_us, 0.5),
        "ask_p99_ms": percentile(&ask_us, 0.99),
        "tell_p50_ms": percentile(&tell_us, 0.5),
        "tell_p99_ms": percentile(&tell_us, 0.99),
        "api_complete": counts.complete,
        "db_trials": rows,
        "db_distinct_numbers": distinct,
        "db_complete": complete,
        "db_values": values,
        "lost": lost,
        "duplicated": duplicated,
        "verified": ok,
    });
    println!("{json}");
    if !ok {
        bail!("verification failed: {json}");
    }
    Ok(())
}

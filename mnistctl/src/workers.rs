//! `mnistctl workers`: the workers registered with the coordinator, their
//! devices and the trials they hold.

use mnist_proto::v1 as pb;
use serde_json::{json, Value};

use crate::cli::{Global, OutputFormat};
use crate::client::{block_on, connect, rpc_error};
use crate::output::*;

/// `mnistctl workers`.
#[derive(Debug, clap::Args)]
pub struct WorkersArgs {
    /// Also list workers not seen recently (offline).
    #[arg(long)]
    pub all: bool,
}

fn device_text(d: &pb::Device) -> String {
    let mut s = d.name.clone();
    if !d.model.is_empty() {
        s.push_str(&format!(" ({}", d.model));
        if d.memory_bytes > 0 {
            s.push_str(&format!(", {:.0} GiB", d.memory_bytes as f64 / (1u64 << 30) as f64));
        }
        s.push(')');
    }
    s
}

/// Lists the workers.
pub fn run(args: WorkersArgs, global: &Global) -> anyhow::Result<()> {
    block_on(async move {
        let mut c = connect(global).await?;
        let workers = c
            .study
            .list_workers(pb::ListWorkersRequest { include_offline: args.all })
            .await
            .map_err(|e| rpc_error(&c.url, e))?
            .into_inner()
            .workers;
        if global.output == OutputFormat::Json {
            let v: Vec<Value> = workers
                .iter()
                .map(|w| {
                    json!({
                        "worker_id": w.worker_id,
                        "hostname": w.hostname,
                        "online": w.online,
                        "devices": w.devices.iter().map(|d| json!({"name": d.name, "kind": d.kind, "model": d.model, "memory_bytes": d.memory_bytes})).collect::<Vec<_>>(),
                        "labels": w.labels,
                        "last_seen": ts(&w.last_seen),
                        "running": w.running.iter().map(|s| json!({"slot": s.slot, "study": s.study_name, "trial_number": s.number, "trial_id": s.trial_id})).collect::<Vec<_>>(),
                    })
                })
                .collect();
            print_json(&Value::Array(v));
            return Ok(());
        }
        if workers.is_empty() {
            println!("no workers connected; start one with `mnist-worker --coordinator {}`", c.url);
            return Ok(());
        }
        let mut rows = Vec::new();
        for w in &workers {
            for (i, d) in w.devices.iter().enumerate() {
                let running = w
                    .running
                    .iter()
                    .find(|s| s.slot as usize == i)
                    .map(|s| format!("{} #{}", s.study_name, s.number))
                    .unwrap_or_else(|| "idle".into());
                rows.push(vec![
                    if i == 0 { w.worker_id.clone() } else { String::new() },
                    if i == 0 { w.hostname.clone() } else { String::new() },
                    if i == 0 { (if w.online { "online" } else { "offline" }).to_string() } else { String::new() },
                    i.to_string(),
                    device_text(d),
                    running,
                ]);
            }
        }
        print_table(&["WORKER", "HOST", "STATUS", "SLOT", "DEVICE", "TRIAL"], &rows);
        Ok(())
    })
}

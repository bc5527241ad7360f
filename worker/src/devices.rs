//! The worker's slots: the `--devices` selection resolved against what this
//! machine has (GPU names and memory from the CUDA driver, or the CPU), as
//! the tch device to train on and the `Device` message to register.

use mnist_proto::v1 as pb;
use mnist_trainer::device::{device_name, gpus, GpuInfo};
use mnist_trainer::DeviceSpec;
use tch::Device;

use crate::config::DeviceSelection;
use crate::error::WorkerError;

/// One device slot.
#[derive(Debug, Clone)]
pub struct Slot {
    /// The slot index (registration order).
    pub index: u32,
    /// Where its trials train.
    pub device: Device,
    /// What is registered with the coordinator.
    pub info: pb::Device,
}

fn describe(device: Device, gpus: &[GpuInfo]) -> pb::Device {
    match device {
        Device::Cuda(i) => {
            let g = gpus.iter().find(|g| g.index == i);
            pb::Device {
                name: device_name(device),
                kind: "cuda".into(),
                model: g.map(|g| g.name.clone()).unwrap_or_default(),
                memory_bytes: g.map(|g| g.total_memory).unwrap_or(0),
            }
        }
        _ => pb::Device { name: "cpu".into(), kind: "cpu".into(), model: cpu_model(), memory_bytes: total_memory() },
    }
}

/// The CPU's model name from /proc/cpuinfo, with the core count.
fn cpu_model() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())))
        .unwrap_or_else(|| "CPU".to_string());
    format!("{name} ({cores} cores)")
}

/// Total memory in bytes from /proc/meminfo; 0 when unknown.
fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Resolves `--devices` to slots, checking that each CUDA device exists.
pub fn resolve(selection: &DeviceSelection) -> Result<Vec<Slot>, WorkerError> {
    let gpus = gpus();
    let devices: Vec<Device> = match selection {
        DeviceSelection::All => {
            let n = if tch::Cuda::is_available() { tch::Cuda::device_count().max(0) as usize } else { 0 };
            if n == 0 {
                vec![Device::Cpu]
            } else {
                (0..n).map(Device::Cuda).collect()
            }
        }
        DeviceSelection::List(list) => list.iter().map(|s: &DeviceSpec| s.resolve()).collect::<Result<_, _>>()?,
    };
    Ok(devices
        .into_iter()
        .enumerate()
        .map(|(i, d)| Slot { index: i as u32, device: d, info: describe(d, &gpus) })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_slot_is_described() {
        let slots = resolve(&DeviceSelection::List(vec![DeviceSpec::Cpu])).unwrap();
        assert_eq!(slots.len(), 1);
        assert_eq!(slots[0].info.name, "cpu");
        assert_eq!(slots[0].info.kind, "cpu");
        assert!(slots[0].info.model.contains("cores"));
    }

    #[test]
    fn all_gives_at_least_one_slot() {
        let slots = resolve(&DeviceSelection::All).unwrap();
        assert!(!slots.is_empty());
    }
}

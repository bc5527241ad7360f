//! Devices: parsing `--device auto|cpu|cuda|cuda:N`, and what this machine
//! has (torch version, CUDA, cuDNN, GPU names and memory).
//!
//! tch has no binding for GPU names or memory, so [`gpus`] asks the CUDA
//! driver (`libcuda.so.1`) directly through `libloading`. On a machine without
//! a driver it returns an empty list.

use std::fmt;
use std::str::FromStr;
use tch::Device;

/// A device as the user names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// CUDA device 0 when CUDA is available, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

/// A device that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The text is not a device name.
    #[error("unknown device {0:?}: use auto, cpu, cuda or cuda:N")]
    Unknown(String),
    /// CUDA was asked for but libtorch sees none.
    #[error("{requested} requested but CUDA is not available to libtorch (devices visible: {count}); run `mnistctl doctor`, or train on the CPU (cpu)")]
    Unavailable { requested: String, count: usize },
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => match t.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map(DeviceSpec::Cuda)
                    .map_err(|_| DeviceError::Unknown(s.to_string())),
                None => Err(DeviceError::Unknown(s.to_string())),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// The tch device, checking that a CUDA device exists.
    pub fn resolve(self) -> Result<Device, DeviceError> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Auto => Ok(if tch::Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu }),
            DeviceSpec::Cuda(n) => {
                let count = if tch::Cuda::is_available() { tch::Cuda::device_count().max(0) as usize } else { 0 };
                if n < count {
                    Ok(Device::Cuda(n))
                } else {
                    Err(DeviceError::Unavailable { requested: self.to_string(), count })
                }
            }
        }
    }
}

/// A short name for a tch device: `cpu` or `cuda:N`.
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".to_string(),
    }
}

/// One GPU as the CUDA driver reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GpuInfo {
    /// CUDA ordinal.
    pub index: usize,
    /// Product name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Total memory in bytes.
    pub total_memory: u64,
}

/// The GPUs the CUDA driver sees; empty without a driver.
pub fn gpus() -> Vec<GpuInfo> {
    // SAFETY: we load the CUDA driver library and call its documented C API
    // with buffers of the sizes the API requires.
    unsafe { query_driver().unwrap_or_default() }
}

unsafe fn query_driver() -> Option<Vec<GpuInfo>> {
    type CuInit = unsafe extern "C" fn(u32) -> i32;
    type CuDeviceGetCount = unsafe extern "C" fn(*mut i32) -> i32;
    type CuDeviceGet = unsafe extern "C" fn(*mut i32, i32) -> i32;
    type CuDeviceGetName = unsafe extern "C" fn(*mut std::os::raw::c_char, i32, i32) -> i32;
    type CuDeviceTotalMem = unsafe extern "C" fn(*mut usize, i32) -> i32;
    let lib = libloading::Library::new("libcuda.so.1").ok()?;
    let init: libloading::Symbol<CuInit> = lib.get(b"cuInit").ok()?;
    let count_fn: libloading::Symbol<CuDeviceGetCount> = lib.get(b"cuDeviceGetCount").ok()?;
    let get: libloading::Symbol<CuDeviceGet> = lib.get(b"cuDeviceGet").ok()?;
    let name_fn: libloading::Symbol<CuDeviceGetName> = lib.get(b"cuDeviceGetName").ok()?;
    let mem_fn: libloading::Symbol<CuDeviceTotalMem> = lib.get(b"cuDeviceTotalMem_v2").ok()?;
    if init(0) != 0 {
        return None;
    }
    let mut count = 0i32;
    if count_fn(&mut count) != 0 {
        return None;
    }
    let mut out = Vec::new();
    for i in 0..count {
        let mut dev = 0i32;
        if get(&mut dev, i) != 0 {
            continue;
        }
        let mut buf = [0 as std::os::raw::c_char; 256];
        let name = if name_fn(buf.as_mut_ptr(), buf.len() as i32, dev) == 0 {
            std::ffi::CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
        } else {
            format!("CUDA device {i}")
        };
        let mut mem = 0usize;
        let total_memory = if mem_fn(&mut mem, dev) == 0 { mem as u64 } else { 0 };
        out.push(GpuInfo { index: i as usize, name, total_memory });
    }
    Some(out)
}

/// The version of the torch wheel this binary was built against.
pub const BUILD_TORCH_VERSION: &str = env!("MNIST_TORCH_VERSION");

/// The torch version of the libtorch loaded at run time, read from the
/// `version.py` beside the loaded `libtorch_cpu.so`; falls back to the build
/// version.
pub fn torch_version() -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let lib = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"));
    if let Some(lib) = lib {
        let version_py = std::path::Path::new(lib)
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("version.py"));
        if let Some(text) = version_py.and_then(|p| std::fs::read_to_string(p).ok()) {
            if let Some(v) = text
                .lines()
                .find_map(|l| l.strip_prefix("__version__ = "))
                .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
            {
                return v;
            }
        }
    }
    BUILD_TORCH_VERSION.to_string()
}

/// The path of the loaded libtorch, if it can be seen.
pub fn libtorch_path() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("auto".parse::<DeviceSpec>(), Ok(DeviceSpec::Auto));
        assert_eq!("CPU".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(3)));
        assert!(matches!("tpu".parse::<DeviceSpec>(), Err(DeviceError::Unknown(_))));
        assert!(matches!("cuda:x".parse::<DeviceSpec>(), Err(DeviceError::Unknown(_))));
        assert!(matches!("cuda:-1".parse::<DeviceSpec>(), Err(DeviceError::Unknown(_))));
    }

    #[test]
    fn missing_cuda_device_is_an_error() {
        if !tch::Cuda::is_available() {
            let err = DeviceSpec::Cuda(0).resolve().unwrap_err();
            assert!(err.to_string().contains("CUDA is not available"), "{err}");
        }
        let err = DeviceSpec::Cuda(999).resolve().unwrap_err();
        assert!(matches!(err, DeviceError::Unavailable { .. }));
    }
}

//! `mnistctl doctor`: what this machine offers for training: the torch
//! version, CUDA and cuDNN, the GPUs, CPU threads, and whether the data set is
//! present and verified.

use crate::cli::{Global, OutputFormat};
use mnist_common::mnist;
use mnist_trainer::device;
use serde::Serialize;
use std::path::PathBuf;

/// Check libtorch, CUDA and the data set.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// The data directory to check.
    #[arg(long, env = mnist::DATA_DIR_ENV, default_value = mnist::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

#[derive(Debug, Serialize)]
struct Report {
    torch_version: String,
    torch_build_version: &'static str,
    libtorch: Option<String>,
    cuda_available: bool,
    cudnn_available: bool,
    cuda_device_count: i64,
    cudnn_version: Option<i64>,
    cuda_runtime_version: Option<i64>,
    gpus: Vec<device::GpuInfo>,
    mkldnn: bool,
    cpu_threads: i32,
    data_dir: String,
    data: Vec<DataFile>,
    data_ok: bool,
}

#[derive(Debug, Serialize)]
struct DataFile {
    name: &'static str,
    path: Option<String>,
    ok: bool,
    problem: Option<String>,
}

pub fn run(args: DoctorArgs, global: &Global) -> anyhow::Result<()> {
    let cuda = tch::Cuda::is_available();
    let files: Vec<DataFile> = mnist::check_dir(&args.data_dir)
        .into_iter()
        .map(|s| DataFile {
            name: s.file.name,
            path: s.path.map(|p| p.display().to_string()),
            ok: s.result.is_ok(),
            problem: s.result.err().map(|e| e.to_string()),
        })
        .collect();
    let r = Report {
        torch_version: device::torch_version(),
        torch_build_version: device::BUILD_TORCH_VERSION,
        libtorch: device::libtorch_path(),
        cuda_available: cuda,
        cudnn_available: tch::Cuda::cudnn_is_available(),
        cuda_device_count: if cuda { tch::Cuda::device_count() } else { 0 },
        cudnn_version: cuda.then(tch::utils::version_cudnn),
        cuda_runtime_version: cuda.then(tch::utils::version_cudart),
        gpus: device::gpus(),
        mkldnn: tch::utils::has_mkldnn(),
        cpu_threads: tch::get_num_threads(),
        data_dir: args.data_dir.display().to_string(),
        data_ok: files.iter().all(|f| f.ok),
        data: files,
    };
    match global.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&r)?),
        OutputFormat::Table => {
            let yes = |b: bool| if b { "yes" } else { "no" };
            println!("torch version      {} (built against {})", r.torch_version, r.torch_build_version);
            println!("libtorch           {}", r.libtorch.as_deref().unwrap_or("?"));
            println!("CUDA available     {}", yes(r.cuda_available));
            println!("cuDNN available    {}", yes(r.cudnn_available));
            if let (Some(c), Some(rt)) = (r.cudnn_version, r.cuda_runtime_version) {
                println!("cuDNN / CUDA rt    {c} / {rt}");
            }
            println!("CUDA devices       {}", r.cuda_device_count);
            for g in &r.gpus {
                println!("  cuda:{}           {} ({:.1} GiB)", g.index, g.name, g.total_memory as f64 / (1u64 << 30) as f64);
            }
            println!("oneDNN (mkldnn)    {}", yes(r.mkldnn));
            println!("CPU threads        {}", r.cpu_threads);
            println!("data directory     {}", r.data_dir);
            for f in &r.data {
                match &f.problem {
                    None => println!("  {:<26} verified ({})", f.name, f.path.as_deref().unwrap_or("")),
                    Some(p) => println!("  {:<26} PROBLEM: {p}", f.name),
                }
            }
        }
    }
    if !r.data_ok {
        anyhow::bail!("the data set in {} is missing or failed verification (see above); `mnistctl train` downloads missing files", r.data_dir);
    }
    Ok(())
}

//! Compiles `mnist/tuning/v1/*.proto` to Rust without a system `protoc`:
//! `protox` (a pure-Rust protobuf compiler) parses the files into a
//! `FileDescriptorSet`, and `tonic-prost-build` generates the messages, the
//! clients and the servers from it.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "mnist/tuning/v1/types.proto",
    "mnist/tuning/v1/study_service.proto",
    "mnist/tuning/v1/worker_service.proto",
    "mnist/tuning/v1/ask_tell_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    for p in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let fds = protox::compile(PROTOS.iter().map(|p| root.join(p)), [root.clone()])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}

// Shared by the build scripts of every package that links libtorch
// (`include!`d, not a module): finds torch's lib directory the way torch-sys
// does (LIBTORCH, else the `torch` package of the Python on PATH when
// LIBTORCH_USE_PYTORCH=1), then
// - adds an rpath to it, so binaries run without LD_LIBRARY_PATH, and
// - links libtorch with --no-as-needed, so libtorch_cuda stays a dependency
//   and CUDA is used wherever it exists.

/// torch's lib directory and version string.
fn torch_lib_dir() -> Option<(std::path::PathBuf, String)> {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    println!("cargo:rerun-if-env-changed=PYTHON_SYS_EXECUTABLE");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        let version = std::fs::read_to_string(std::path::Path::new(&dir).join("build-version"))
            .unwrap_or_else(|_| "unknown".to_string());
        return Some((std::path::PathBuf::from(dir).join("lib"), version.trim().to_string()));
    }
    let python = std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".to_string());
    let out = std::process::Command::new(python)
        .args(["-c", "import torch, os; print(os.path.dirname(torch.__file__)); print(torch.__version__)"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let mut lines = text.lines();
    let dir = lines.next()?.trim().to_string();
    let version = lines.next().unwrap_or("unknown").trim().to_string();
    Some((std::path::PathBuf::from(dir).join("lib"), version))
}

fn link_torch() {
    match torch_lib_dir() {
        Some((lib, version)) => {
            println!("cargo:rustc-env=MNIST_TORCH_VERSION={version}");
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
            println!("cargo:rustc-link-search=native={}", lib.display());
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch");
            println!("cargo:rustc-link-arg=-Wl,--as-needed");
        }
        None => {
            println!("cargo:rustc-env=MNIST_TORCH_VERSION=unknown");
            println!("cargo:warning=could not locate libtorch; run scripts/setup.sh and source scripts/env.sh");
        }
    }
}

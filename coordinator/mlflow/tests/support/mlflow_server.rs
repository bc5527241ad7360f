//! Test support: a real `mlflow server` (3.17.2) on a free loopback port.
//!
//! Include it from a test file with
//! `#[path = "support/mlflow_server.rs"] mod mlflow_server;`
//! (other crates by a relative path). It depends on `std` and `tempfile`
//! only: readiness is polled with a hand-written HTTP/1.1 request, so it works
//! in plain `#[test]`s and inside `#[tokio::test]` alike.
//!
//! The server is started as
//! `mlflow server --backend-store-uri sqlite:///<tmp>/mlflow.db
//!  --artifacts-destination <tmp>/artifacts --host 127.0.0.1 --port <free>
//!  --workers 1` in its own process group, with
//! `MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false` (otherwise MLflow 3 starts seven
//! huey job consumers and leaves a temp dir in /dev/shm behind every kill).
//! Its stdout and stderr go to `<tmp>/server.log`.
//!
//! Environment knobs (all optional):
//! - `MLFLOW_TEST_PYTHON`: the Python (with mlflow) to use instead of the
//!   search described at [`MlflowServer::python`].
//! - `MLFLOW_TEST_STARTUP_TIMEOUT_SECS`: how long to wait for `/health`
//!   (default 120; a cold start takes 25–50 s on a loaded 2-core machine).
#![allow(dead_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The admin user created by [`MlflowServer::start_basic_auth`]. MLflow
/// 3.17.2 ships no default admin password; it requires at least 12 chars.
pub const ADMIN_USERNAME: &str = "admin";
pub const ADMIN_PASSWORD: &str = "mnist-tune-admin-pw-1";

unsafe extern "C" {
    // libc's kill(2); std links libc already.
    fn kill(pid: i32, sig: i32) -> i32;
}
const SIGKILL: i32 = 9;

/// A running (or killed, restartable) MLflow tracking server.
pub struct MlflowServer {
    child: Option<Child>,
    port: u16,
    basic_auth: bool,
    /// Backend store, artifacts, auth db, ini and log live here.
    dir: tempfile::TempDir,
}

impl MlflowServer {
    /// A plain server: sqlite backend store and artifacts dir in a fresh
    /// TempDir, on a free loopback port. Panics if it does not come up.
    pub fn start() -> MlflowServer {
        Self::start_with(false)
    }

    /// A server with `--app-name basic-auth`: the auth db lives in the
    /// TempDir and the admin is [`ADMIN_USERNAME`] / [`ADMIN_PASSWORD`]
    /// (see [`admin_credentials`](Self::admin_credentials)). Needs Flask-WTF
    /// (`pip install 'mlflow[auth]==3.17.2'`); panics with that hint if missing.
    pub fn start_basic_auth() -> MlflowServer {
        let python = Self::python();
        let ok = Command::new(&python)
            .args(["-c", "import flask_wtf"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            panic!(
                "mlflow_server: `mlflow server --app-name basic-auth` needs Flask-WTF, which {} cannot import; \
                 install the auth extra: {} -m pip install 'mlflow[auth]==3.17.2'",
                python.display(),
                python.display()
            );
        }
        Self::start_with(true)
    }

    fn start_with(basic_auth: bool) -> MlflowServer {
        let dir = tempfile::Builder::new().prefix("mlflow-test-").tempdir().expect("mlflow_server: create TempDir");
        fs::create_dir_all(dir.path().join("artifacts")).expect("mlflow_server: create artifacts dir");
        if basic_auth {
            let ini = format!(
                "[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{}\nadmin_username = {ADMIN_USERNAME}\n\
                 admin_password = {ADMIN_PASSWORD}\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
                dir.path().join("auth.db").display()
            );
            fs::write(dir.path().join("auth.ini"), ini).expect("mlflow_server: write auth.ini");
        }
        let mut server = MlflowServer { child: None, port: 0, basic_auth, dir };
        // A freshly chosen port can be taken by someone else between our probe
        // bind and mlflow's bind: pick another one a few times.
        let mut last = String::new();
        for _ in 0..3 {
            server.port = free_port();
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) if e.port_in_use => last = e.message,
                Err(e) => panic!("{}", e.message),
            }
        }
        panic!("{last}")
    }

    /// `http://127.0.0.1:PORT`
    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `Some((admin, password))` for a basic-auth server, `None` otherwise.
    pub fn admin_credentials(&self) -> Option<(String, String)> {
        self.basic_auth.then(|| (ADMIN_USERNAME.to_string(), ADMIN_PASSWORD.to_string()))
    }

    /// The directory holding `mlflow.db`, `artifacts/`, `server.log` (and
    /// `auth.db`, `auth.ini`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn artifacts_dir(&self) -> PathBuf {
        self.dir.path().join("artifacts")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The last `lines` interesting lines of the server log (warnings about
    /// deprecated starlette imports filtered out).
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path(), lines)
    }

    /// Whether a server process is running (not killed, not exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL the whole server (the CLI process, uvicorn and its workers:
    /// they share the process group) and reap it. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id() as i32;
            // SAFETY: plain syscall; pgid is the group we created with process_group(0).
            unsafe {
                kill(-pgid, SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            // Wait (briefly) until no member of the group is left, so the
            // port and the sqlite files are released.
            let deadline = Instant::now() + Duration::from_secs(10);
            while group_alive(pgid) && Instant::now() < deadline {
                // SAFETY: as above; repeat in case a worker was being forked.
                unsafe {
                    kill(-pgid, SIGKILL);
                }
                sleep(Duration::from_millis(50));
            }
        }
    }

    /// Start again on the SAME port with the SAME backend store, artifacts
    /// dir (and auth db), then poll `/health`. Kills a running server first.
    /// Tolerates the port lingering for a while.
    pub fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        for attempt in 0..6 {
            wait_port_bindable(self.port, Duration::from_secs(15));
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) if e.port_in_use => {
                    last = e.message;
                    sleep(Duration::from_millis(500 * (attempt + 1)));
                }
                Err(e) => panic!("{}", e.message),
            }
        }
        panic!("mlflow_server: restart on port {} kept failing: {last}", self.port)
    }

    /// The Python interpreter that has mlflow: `$MLFLOW_TEST_PYTHON`, else the
    /// first `.venv/bin/python` (with an `mlflow` script beside it) in
    /// `CARGO_MANIFEST_DIR` or one of its ancestors (then likewise upwards
    /// from this file when it was compiled by an absolute path), else
    /// `$VIRTUAL_ENV/bin/python`, else a `python3`/`python` on `PATH` that can
    /// `import mlflow`. Panics if none is found.
    pub fn python() -> PathBuf {
        static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        match PYTHON.get_or_init(find_python) {
            Ok(p) => p.clone(),
            Err(e) => panic!("{e}"),
        }
    }

    /// The command that runs the mlflow CLI: the `mlflow` script next to
    /// [`python`](Self::python) if there is one, else `python -m mlflow`.
    pub fn mlflow_command() -> Command {
        let python = Self::python();
        let script = python.with_file_name("mlflow");
        if script.is_file() {
            Command::new(script)
        } else {
            let mut c = Command::new(python);
            c.args(["-m", "mlflow"]);
            c
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let dir = self.dir.path().to_path_buf();
        let log_path = dir.join("server.log");
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("mlflow_server: open server.log");
        let log_start = log.seek(SeekFrom::End(0)).unwrap_or(0);
        let _ = writeln!(log, "==== mlflow_server: starting on port {} ====", self.port);
        let log_err = log.try_clone().expect("mlflow_server: clone log handle");

        let mut cmd = Self::mlflow_command();
        cmd.arg("server");
        if self.basic_auth {
            cmd.args(["--app-name", "basic-auth"]);
            cmd.env("MLFLOW_AUTH_CONFIG_PATH", dir.join("auth.ini"))
                .env("MLFLOW_FLASK_SERVER_SECRET_KEY", "mnist-tune-test-secret-key")
                // These win over the ini; set them so a caller's env can't.
                .env("MLFLOW_AUTH_ADMIN_USERNAME", ADMIN_USERNAME)
                .env("MLFLOW_AUTH_ADMIN_PASSWORD", ADMIN_PASSWORD);
        }
        cmd.arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string(), "--workers", "1"])
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONWARNINGS", "ignore::DeprecationWarning")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("mlflow_server: cannot spawn {:?}: {e}", cmd.get_program())
        });
        self.child = Some(child);

        let timeout = std::env::var("MLFLOW_TEST_STARTUP_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(120);
        let started = Instant::now();
        let deadline = started + Duration::from_secs(timeout);
        loop {
            if health_ok(self.port) {
                return Ok(());
            }
            let exited = match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(e)) => Some(e.to_string()),
                _ => None,
            };
            if let Some(status) = exited {
                self.kill();
                let new_log = log_since(&log_path, log_start);
                let port_in_use = new_log.contains("Address already in use")
                    || new_log.contains("address already in use")
                    || new_log.contains("Errno 98");
                return Err(StartError {
                    port_in_use,
                    message: format!(
                        "mlflow_server: `mlflow server` on port {} exited ({status}) before /health answered. \
                         Server log tail ({}):\n{}",
                        self.port,
                        log_path.display(),
                        log_tail(&log_path, 40)
                    ),
                });
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(StartError {
                    port_in_use: false,
                    message: format!(
                        "mlflow_server: `mlflow server` on port {} did not answer GET /health with 200 within {timeout} s \
                         (raise MLFLOW_TEST_STARTUP_TIMEOUT_SECS on a slow machine). Server log tail ({}):\n{}",
                        self.port,
                        log_path.display(),
                        log_tail(&log_path, 40)
                    ),
                });
            }
            sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        self.kill();
    }
}

struct StartError {
    port_in_use: bool,
    message: String,
}

/// A port that was free a moment ago (bind 127.0.0.1:0, read it, release it).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("mlflow_server: bind 127.0.0.1:0");
    l.local_addr().expect("mlflow_server: local_addr").port()
}

fn wait_port_bindable(port: u16, max: Duration) {
    let deadline = Instant::now() + max;
    while TcpListener::bind(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        sleep(Duration::from_millis(200));
    }
}

/// `GET /health` → 200, without an HTTP client crate.
fn health_ok(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(3)));
    let req = format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")
}

/// Whether a live (non-zombie) process is left in process group `pgid`.
/// Reparented workers may stay zombies when PID 1 does not reap, so
/// `kill(-pgid, 0)` alone would say "alive" forever; /proc tells states apart.
fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        // SAFETY: signal 0 only checks for existence.
        return unsafe { kill(-pgid, 0) } == 0;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (comm) state ppid pgrp ..." – comm may contain spaces/parens.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let _ppid = fields.next();
        let pgrp = fields.next().and_then(|f| f.parse::<i32>().ok());
        if pgrp == Some(pgid) && state != "Z" && state != "X" {
            return true;
        }
    }
    false
}

fn log_since(path: &Path, offset: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.seek(SeekFrom::Start(offset));
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        s = String::from_utf8_lossy(&bytes).into_owned();
    }
    s
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = log_since(path, 0);
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("StarletteDeprecationWarning") && !l.contains("from starlette.middleware.wsgi import"))
        .collect();
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

fn find_python() -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    if let Ok(p) = std::env::var("MLFLOW_TEST_PYTHON") {
        if !p.is_empty() {
            return Ok(PathBuf::from(p));
        }
    }
    // The including crate's manifest dir and, when rustc was given an
    // absolute path for this file (included from outside the workspace),
    // this file's own location.
    let mut roots = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR"))];
    if Path::new(file!()).is_absolute() {
        roots.push(PathBuf::from(file!()));
    }
    for dir in roots.iter().flat_map(|r| r.ancestors()) {
        let py = dir.join(".venv/bin/python");
        tried.push(py.display().to_string());
        if py.exists() && dir.join(".venv/bin/mlflow").exists() {
            return Ok(py);
        }
    }
    if let Ok(venv) = std::env::var("VIRTUAL_ENV") {
        let py = Path::new(&venv).join("bin/python");
        tried.push(py.display().to_string());
        if py.exists() && imports_mlflow(&py) {
            return Ok(py);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            for name in ["python3", "python"] {
                let py = dir.join(name);
                if py.is_file() {
                    tried.push(py.display().to_string());
                    if imports_mlflow(&py) {
                        return Ok(py);
                    }
                }
            }
        }
    }
    Err(format!(
        "mlflow_server: no Python with mlflow found (set MLFLOW_TEST_PYTHON, or create the project venv: \
         python3 -m venv .venv && .venv/bin/pip install -r requirements.txt). Tried: {}",
        tried.join(", ")
    ))
}

fn imports_mlflow(py: &Path) -> bool {
    Command::new(py)
        .args(["-c", "import mlflow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

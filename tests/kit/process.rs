//! The `authbridge` binary as a child process: where it is, how it is started (a fresh
//! `CODEX_HOME`, stderr captured), and waiting for what it prints and for its exit.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use super::backend::{MockBackend, base_url_setting};
use super::client::Client;
use super::wait::{self, within};

/// The `authbridge` binary.
///
/// Integration tests and benches are told where it is by cargo. An example is not: it
/// looks beside its own profile directory (`target/<profile>/examples/<name>` next to
/// `target/<profile>/authbridge`) and, when the binary is not there yet, builds it with
/// `$CARGO build --bin authbridge` for the same profile. The error says what failed and
/// what to run instead.
pub fn binary() -> Result<PathBuf, String> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| match option_env!("CARGO_BIN_EXE_authbridge") {
            Some(path) => Ok(PathBuf::from(path)),
            None => beside_current_exe(),
        })
        .clone()
}

fn beside_current_exe() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate this program: {e}"))?;
    // target/<profile>/{examples,deps}/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} is not inside a cargo target directory", exe.display()))?;
    let bin = profile_dir.join(format!("authbridge{}", std::env::consts::EXE_SUFFIX));
    if bin.exists() {
        return Ok(bin);
    }
    build(profile_dir)?;
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "the build finished but {} is still missing",
            bin.display()
        ))
    }
}

/// Builds the binary into `profile_dir` (`<target-dir>/<profile>`).
fn build(profile_dir: &Path) -> Result<(), String> {
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("the profile directory has no name")?;
    let target_dir = profile_dir.parent().ok_or("no target directory")?;
    let mut args = vec!["build", "--bin", "authbridge"];
    // Built beside the example that asks for it, the binary gets the example's feature set
    // (cargo unifies the dev-dependencies' features into an example's build) and reuses every
    // dependency just compiled; built alone it would compile them all a second time.
    let example = std::env::current_exe()
        .ok()
        .filter(|exe| exe.parent().and_then(Path::file_name) == Some("examples".as_ref()))
        .and_then(|exe| exe.file_stem().and_then(|n| n.to_str()).map(str::to_owned));
    if let Some(example) = &example {
        args.extend(["--example", example]);
    }
    match profile {
        "debug" => {}
        "release" => args.push("--release"),
        custom => args.extend(["--profile", custom]),
    }
    let shown = format!("cargo {}", args.join(" "));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("authbridge is not built yet; running `{shown}`");
    let status = std::process::Command::new(&cargo)
        .args(&args)
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .map_err(|e| {
            format!("could not run {cargo:?} to build authbridge ({e}); run `{shown}` first")
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "building authbridge failed ({status}); run `{shown}` to see why"
        ))
    }
}

fn binary_or_panic() -> PathBuf {
    binary().unwrap_or_else(|e| panic!("{e}"))
}

/// The binary as a blocking command with `CODEX_HOME` set to `home` and `RUST_LOG=warn`;
/// the caller adds arguments and decides what to do with its stdio.
pub fn command(home: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(binary_or_panic());
    command.env("CODEX_HOME", home).env("RUST_LOG", "warn");
    command
}

/// Runs the binary with `args`, stdin closed, on a fresh `CODEX_HOME`; returns its exit
/// status and output. Killed if it has not exited within [`wait::WAIT`].
pub async fn output(args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::from(command(home.path()));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    within(&format!("authbridge {args:?} to exit"), command.output())
        .await
        .expect("run authbridge")
}

/// Given before every test's own arguments (later `-c` win): no test reaches the real
/// issuer or takes the real callback port unless it says so.
pub const SAFE_DEFAULTS: &[&str] = &[
    "-c",
    "auth_issuer=\"http://127.0.0.1:9\"",
    "-c",
    "authbridge.login_callback_port=0",
];

/// How to start the binary: extra arguments, the log filter, and the `CODEX_HOME`.
#[derive(Default)]
pub struct Options {
    args: Vec<String>,
    rust_log: Option<String>,
    home: Option<tempfile::TempDir>,
    env: Vec<(String, String)>,
}

impl Options {
    /// Adds `args` to the command line.
    pub fn extra(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Adds `-c setting`.
    pub fn config(self, setting: &str) -> Self {
        self.extra(&["-c", setting])
    }

    /// Points the server at `backend`.
    pub fn backend(self, backend: &MockBackend) -> Self {
        self.config(&backend.config_arg())
    }

    /// Points the server at the stand-in OAuth issuer.
    pub fn issuer(self, issuer: &super::issuer::MockIssuer) -> Self {
        self.config(&issuer.config_arg())
    }

    /// Sets an environment variable of the child.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Points the server at the backend at `url`.
    pub fn base_url(self, url: &str) -> Self {
        self.config(&base_url_setting(url))
    }

    /// Runs with `RUST_LOG=filter` (the default is `warn`).
    pub fn log(mut self, filter: &str) -> Self {
        self.rust_log = Some(filter.to_owned());
        self
    }

    /// Runs on `home` as `CODEX_HOME` instead of a fresh directory.
    pub fn home(mut self, home: tempfile::TempDir) -> Self {
        self.home = Some(home);
        self
    }
}

/// The running binary with its `CODEX_HOME`; stderr is captured as it comes.
pub struct Proc {
    pub child: Child,
    pub home: tempfile::TempDir,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
}

impl Proc {
    /// Starts the binary with `args` followed by the options' arguments.
    pub fn spawn(args: &[&str], options: Options) -> Proc {
        let home = options.home.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let mut command = Command::from(command(home.path()));
        command
            .args(args)
            .args(SAFE_DEFAULTS)
            .args(&options.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(filter) = &options.rust_log {
            command.env("RUST_LOG", filter);
        }
        command.envs(options.env.iter().map(|(k, v)| (k, v)));
        let mut child = command.spawn().expect("spawn authbridge");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let stderr_reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            loop {
                match pipe.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });
        Proc {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            child,
            home,
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// `authbridge app-server` over stdio, and a client on its pipes.
    pub fn stdio(options: Options) -> (Proc, Client) {
        let mut p = Proc::spawn(&["app-server"], options);
        let (stdin, stdout) = p.pipes();
        (p, Client::over_io(stdout, stdin))
    }

    /// [`Proc::stdio`] with the client initialized as `name`, with or without
    /// `experimentalApi`.
    pub async fn initialized(options: Options, name: &str, experimental: bool) -> (Proc, Client) {
        let (p, mut c) = Proc::stdio(options);
        c.initialize(name, experimental).await;
        (p, c)
    }

    /// A WebSocket listener on an ephemeral loopback port; returns its address.
    pub async fn ws(options: Options) -> (Proc, String) {
        let p = Proc::spawn(&["app-server", "--listen", "ws://127.0.0.1:0"], options);
        let addr = p.listening_on().await;
        (p, addr)
    }

    /// A unix socket listener in a directory of the home that the server creates (private);
    /// returns the socket's path once it is listening.
    #[cfg(unix)]
    pub async fn unix(mut options: Options) -> (Proc, PathBuf) {
        let home = options
            .home
            .take()
            .unwrap_or_else(|| tempfile::tempdir().unwrap());
        let socket = home.path().join("run").join("app-server.sock");
        let listen = format!("unix://{}", socket.display());
        let p = Proc::spawn(&["app-server", "--listen", &listen], options.home(home));
        p.wait_stderr(&format!("listening on {listen}")).await;
        (p, socket)
    }

    /// The address a WebSocket listener (`ws://` or `wss://`) reports on stderr, without
    /// the scheme.
    pub async fn listening_on(&self) -> String {
        const LISTENING: &str = "listening on ws";
        wait::poll("the listening address on stderr", || {
            self.stderr()
                .lines()
                .find(|l| l.contains(LISTENING))
                .map(|l| l.rsplit("://").next().unwrap().trim().to_owned())
        })
        .await
    }

    /// The child's stdin and stdout, for a caller that drives them itself.
    pub fn pipes(&mut self) -> (ChildStdin, ChildStdout) {
        (
            self.stdin.take().expect("stdin already taken"),
            self.stdout.take().expect("stdout already taken"),
        )
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr contains `needle`; returns stderr so far.
    pub async fn wait_stderr(&self, needle: &str) -> String {
        wait::poll(&format!("{needle:?} on stderr"), || {
            let err = self.stderr();
            err.contains(needle).then_some(err)
        })
        .await
    }

    /// Sends the signal named `signal` (`TERM`, `INT`, ...) to the process.
    #[cfg(unix)]
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the process has exited").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Waits for the process to exit and for the rest of its stderr; returns the exit
    /// code (-1 when a signal ended it).
    pub async fn exit_code(&mut self) -> i32 {
        let status = within("the process to exit", self.child.wait())
            .await
            .unwrap();
        if let Some(reader) = self.stderr_reader.take() {
            within("the end of stderr", reader).await.unwrap();
        }
        status.code().unwrap_or(-1)
    }

    /// The `CODEX_HOME` directory, kept after the process is gone.
    pub fn into_home(self) -> tempfile::TempDir {
        self.home
    }
}

//! The `authbridge` command line. Parses flags, builds the server, runs it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use authbridge::broker_server::BrokerAccess;
use authbridge::ws_tls::{Listener, ServerTls};
use authbridge::{Config, Server, cli, default_codex_home, ws_token as ws};

#[derive(Parser)]
#[command(
    name = "authbridge",
    version,
    about = "Account and auth app-server speaking the Codex app-server protocol"
)]
struct Cli {
    /// Override a config key, as TOML: -c key=value (repeatable; before or after the subcommand).
    #[arg(short = 'c', long = "config", value_name = "KEY=VALUE", global = true)]
    overrides: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the app-server protocol.
    AppServer(AppServerArgs),
    /// Write the JSON Schema of the protocol types into a directory.
    GenerateJsonSchema {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Sign in to ChatGPT (browser by default) or store an API key.
    Login(LoginArgs),
    /// Sign out: revoke a ChatGPT sign-in's refresh token and delete the credential.
    Logout(LogoutArgs),
    /// Print the current access token alone on stdout, refreshed first when needed (from
    /// this home, or from a credential broker). Exit codes as `login refresh`.
    Token(TokenArgs),
    /// Show where each setting came from, the store, the credential's state, held locks,
    /// CA and proxy variables and the keyring's availability (never a secret).
    Doctor(DoctorArgs),
    /// Own named ChatGPT credentials and serve their access tokens to workers over WebSocket.
    Broker(BrokerArgs),
    /// List, import, delete or sign in a broker's credentials (an admin principal's token).
    BrokerAdmin(BrokerAdminArgs),
    /// Run an app-server (CMD) as a child over stdio, logged in and refreshed from the
    /// credential broker; the parent's messages pass through unchanged.
    Worker(WorkerArgs),
}

#[derive(clap::Args)]
struct BrokerArgs {
    /// ws://IP:PORT or wss://IP:PORT to listen on (port 0 takes a free one).
    #[arg(long, value_name = "URL")]
    listen: String,
    #[command(flatten)]
    tls: TlsArgs,
    /// File holding the WebSocket bearer token (trimmed): one admin principal over the
    /// credential `default`.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["ws_token_sha256", "principals"])]
    ws_token_file: Option<PathBuf>,
    /// SHA-256 (hex) of the WebSocket bearer token.
    #[arg(long, value_name = "HEX", conflicts_with = "principals")]
    ws_token_sha256: Option<String>,
    /// TOML file of principals (`[[principal]]`: name, token_sha256, credentials, admin),
    /// re-read when it changes.
    #[arg(long, value_name = "FILE")]
    principals: Option<PathBuf>,
    /// `file` (the credential of CODEX_HOME) or postgres://USER@HOST:PORT/DB (the sealing
    /// key is read from the file named by AUTHBRIDGE_STORE_KEY_FILE).
    #[arg(long, default_value = "file", value_name = "STORE")]
    store: String,
    /// Move the ChatGPT sign-in of this auth.json into the store first; the file keeps no
    /// usable refresh token afterwards.
    #[arg(long, value_name = "PATH")]
    import_auth_json: Option<PathBuf>,
    /// Append the audit log (one JSON line per credential call) to this file, created
    /// 0600, instead of stderr.
    #[arg(long, value_name = "PATH")]
    audit_log: Option<PathBuf>,
    /// Serve Prometheus metrics at http://IP:PORT/metrics (keep it on loopback, e.g.
    /// 127.0.0.1:9464: there is no authentication).
    #[arg(long, value_name = "IP:PORT")]
    metrics_listen: Option<SocketAddr>,
}

#[derive(clap::Args)]
struct BrokerAdminArgs {
    /// The credential broker: ws://HOST:PORT or wss://HOST:PORT.
    #[arg(long, value_name = "URL")]
    broker: String,
    /// File holding an admin principal's bearer token (trimmed).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    action: BrokerAdminAction,
}

#[derive(Subcommand)]
enum BrokerAdminAction {
    /// The stored credentials: who, plan, expiry, last refresh, generation, state.
    List {
        /// The broker's answer as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move the ChatGPT sign-in of an auth.json into NAME (replacing what it held); the
    /// file keeps no usable refresh token afterwards.
    Import {
        name: authbridge::CredentialName,
        path: PathBuf,
    },
    /// Delete NAME.
    Delete {
        name: authbridge::CredentialName,
        /// Revoke its refresh token at the issuer first (kept if that fails).
        #[arg(long)]
        revoke: bool,
    },
    /// Have the broker sign NAME in with a device code: prints the URL and the code, waits
    /// for the result.
    Login { name: authbridge::CredentialName },
}

#[derive(clap::Args)]
struct WorkerArgs {
    /// The credential broker: ws://HOST:PORT.
    #[arg(long, value_name = "URL")]
    broker: String,
    /// File holding the broker's bearer token (trimmed).
    #[arg(long, value_name = "PATH")]
    broker_token_file: Option<PathBuf>,
    /// The broker's credential to log the child in with.
    #[arg(long, value_name = "NAME", default_value = "default")]
    credential: authbridge::CredentialName,
    /// The app-server to run, after `--`: `authbridge app-server` or `codex app-server`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<std::ffi::OsString>,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct LoginArgs {
    #[command(subcommand)]
    action: Option<LoginAction>,
    /// Sign in with a one-time code entered on any device, instead of a local browser.
    #[arg(long, conflicts_with = "with_api_key")]
    device_auth: bool,
    /// Read an API key from standard input and store it.
    #[arg(long, conflicts_with = "with_access_token")]
    with_api_key: bool,
    /// Read a ChatGPT access token from standard input and store it alone: used until it
    /// expires, never refreshed.
    #[arg(long, conflicts_with = "device_auth")]
    with_access_token: bool,
    /// Open the sign-in URL in the default browser (it is always printed).
    #[arg(long, conflicts_with_all = ["device_auth", "with_api_key", "with_access_token"])]
    open: bool,
}

#[derive(Subcommand)]
enum LoginAction {
    /// Show who is signed in (never a secret); exit code 0 when signed in, 1 when not.
    Status {
        /// One JSON object on stdout instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// Refresh the ChatGPT tokens now (no backend or model call). Exit code 0 valid,
    /// 2 a new sign-in is needed, 3 try again later, 1 anything else.
    Refresh {
        /// Only when a call would refresh (expiry within five minutes, or eight days old).
        #[arg(long)]
        if_stale: bool,
        /// Also when the access token expires within this long (e.g. 2h); implies --if-stale.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        min_validity: Option<std::time::Duration>,
        /// The status object with `refreshed` on stdout instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// Write the stored credential document (auth.json's format) to stdout.
    Export,
    /// Store the credential document read from stdin (atomically, under the refresh lock).
    Import {
        /// Refuse (exit code 4, nothing written) a document older than the stored one.
        #[arg(long)]
        if_newer: bool,
    },
}

#[derive(clap::Args)]
struct LogoutArgs {
    /// Keep the refresh token valid at the issuer (other machines may share it).
    #[arg(long)]
    no_revoke: bool,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Refresh first when the access token expires within this long (e.g. 30m).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    min_validity: Option<std::time::Duration>,
    /// Ask a credential broker (ws://HOST:PORT) instead of this home.
    #[arg(long, value_name = "URL")]
    broker: Option<String>,
    /// File holding the broker's bearer token (trimmed).
    #[arg(long, value_name = "PATH", requires = "broker")]
    broker_token_file: Option<PathBuf>,
    /// The broker's credential (`default` when not given).
    #[arg(
        long,
        value_name = "NAME",
        requires = "broker",
        default_value = "default"
    )]
    credential: authbridge::CredentialName,
}

#[derive(clap::Args)]
struct DoctorArgs {
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Also check that the issuer and the backend answer.
    #[arg(long)]
    network: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum WsAuth {
    CapabilityToken,
    SignedBearerToken,
}

/// The certificate of a `wss://` listener.
#[derive(clap::Args)]
struct TlsArgs {
    /// PEM certificate chain for --listen wss:// (leaf first); re-read when renewed.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1); re-read when renewed.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct AppServerArgs {
    #[command(subcommand)]
    action: Option<AppServerAction>,
    /// stdio:// (default), ws://IP:PORT, wss://IP:PORT or unix://PATH (unix:// alone: the
    /// default socket under CODEX_HOME).
    /// Repeat it to serve one WebSocket listener and one unix socket together.
    #[arg(long, default_value = "stdio://", value_name = "URL")]
    listen: Vec<String>,
    #[command(flatten)]
    tls: TlsArgs,
    /// capability-token (the default: the token flags below) or signed-bearer-token (an
    /// HS256 JWT signed with --ws-shared-secret-file).
    #[arg(long, value_enum)]
    ws_auth: Option<WsAuth>,
    #[command(flatten)]
    signed: SignedBearerArgs,
    /// File holding the WebSocket bearer token (trimmed).
    #[arg(long, value_name = "PATH", conflicts_with = "ws_token_sha256")]
    ws_token_file: Option<PathBuf>,
    /// SHA-256 (hex) of the WebSocket bearer token.
    #[arg(long, value_name = "HEX")]
    ws_token_sha256: Option<String>,
}

#[derive(Subcommand)]
enum AppServerAction {
    /// Join stdin and stdout to a running app-server's unix socket.
    Proxy {
        /// The socket (default: app-server-control/app-server-control.sock in CODEX_HOME).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
}

/// `--ws-auth signed-bearer-token` and what its tokens must carry.
#[derive(clap::Args)]
struct SignedBearerArgs {
    /// File holding the HS256 secret (at least 32 bytes, trimmed) for signed-bearer-token.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["ws_token_file", "ws_token_sha256"])]
    ws_shared_secret_file: Option<PathBuf>,
    /// The `iss` a signed bearer token must carry.
    #[arg(long, value_name = "ISSUER", requires = "ws_shared_secret_file")]
    ws_issuer: Option<String>,
    /// An `aud` a signed bearer token must carry.
    #[arg(long, value_name = "AUDIENCE", requires = "ws_shared_secret_file")]
    ws_audience: Option<String>,
    /// Clock skew allowed for `exp`, `nbf` and `iat` (default 30).
    #[arg(long, value_name = "SECONDS", requires = "ws_shared_secret_file")]
    ws_max_clock_skew_seconds: Option<u64>,
}

/// The JWT verifier when `--ws-auth signed-bearer-token` is chosen; its flags without it,
/// or it without a secret, stop start-up.
fn signed_bearer(
    mode: Option<WsAuth>,
    args: SignedBearerArgs,
) -> Result<Option<authbridge::ws_signed_bearer::SignedBearer>, String> {
    match (mode, args.ws_shared_secret_file) {
        (Some(WsAuth::SignedBearerToken), Some(path)) => {
            authbridge::ws_signed_bearer::SignedBearer::load(
                &path,
                args.ws_issuer,
                args.ws_audience,
                args.ws_max_clock_skew_seconds,
            )
            .map(Some)
            .map_err(|e| e.to_string())
        }
        (Some(WsAuth::SignedBearerToken), None) => {
            Err("--ws-auth signed-bearer-token needs --ws-shared-secret-file FILE".into())
        }
        (_, Some(_)) => {
            Err("--ws-shared-secret-file applies only to --ws-auth signed-bearer-token".into())
        }
        (_, None) => Ok(None),
    }
}

enum Listen {
    Stdio,
    Unix(PathBuf),
    Ws(SocketAddr),
    Wss(SocketAddr),
}

fn parse_listen(url: &str) -> Result<Listen, String> {
    if url == "stdio://" || url == "stdio" {
        return Ok(Listen::Stdio);
    }
    if let Some(addr) = url.strip_prefix("ws://") {
        let addr = addr.trim_end_matches('/');
        return addr
            .parse()
            .map(Listen::Ws)
            .map_err(|_| format!("invalid --listen {url:?}: expected ws://IP:PORT"));
    }
    if let Some(path) = url.strip_prefix("unix://") {
        return Ok(Listen::Unix(if path.is_empty() {
            authbridge::unix_socket::default_path(&default_codex_home())
        } else {
            PathBuf::from(path)
        }));
    }
    if let Some(addr) = url.strip_prefix("wss://") {
        return addr
            .trim_end_matches('/')
            .parse()
            .map(Listen::Wss)
            .map_err(|_| format!("invalid --listen {url:?}: expected wss://IP:PORT"));
    }
    Err(format!(
        "unsupported --listen {url:?}: use stdio://, ws://IP:PORT, wss://IP:PORT or unix://PATH"
    ))
}

/// The listener's certificate: `wss://` needs both files, any other scheme takes none.
/// Loaded here so that an unusable pair stops start-up.
fn server_tls(listen: &Listen, args: &TlsArgs) -> Result<Option<ServerTls>, String> {
    match (listen, &args.tls_cert, &args.tls_key) {
        (Listen::Wss(_), Some(cert), Some(key)) => ServerTls::load(cert, key)
            .map(Some)
            .map_err(|e| e.to_string()),
        (Listen::Wss(_), _, _) => {
            Err("--listen wss:// needs --tls-cert FILE and --tls-key FILE".into())
        }
        (_, None, None) => Ok(None),
        _ => Err("--tls-cert and --tls-key apply only to --listen wss://IP:PORT".into()),
    }
}

fn token_digest(
    ws_token_file: &Option<PathBuf>,
    ws_token_sha256: &Option<String>,
) -> Result<Option<[u8; 32]>, String> {
    if let Some(path) = ws_token_file {
        let token = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --ws-token-file {}: {e}", path.display()))?;
        let token = zeroize::Zeroizing::new(token);
        if token.trim().is_empty() {
            return Err(format!("--ws-token-file {} is empty", path.display()));
        }
        return Ok(Some(ws::token_digest(&token)));
    }
    if let Some(hex) = ws_token_sha256 {
        return ws::parse_hex_digest(hex)
            .map(Some)
            .ok_or_else(|| "--ws-token-sha256 must be 64 hex characters".to_owned());
    }
    Ok(None)
}

/// SIGINT and SIGTERM end the server cleanly (exit code 0). The signals stay blocked from
/// the first line of `main` until tokio's handlers are installed, so one that arrives
/// during start-up waits for them instead of killing the process.
#[cfg(test)]
mod tests {
    #[test]
    fn overrides_on_both_sides_of_the_subcommand_all_count_in_order() {
        let args = [
            "authbridge",
            "-c",
            "a=1",
            "login",
            "--config=b=2",
            "-cc=3",
            "--",
            "-c",
            "x",
        ];
        let found = super::overrides_in_order(args.iter().map(std::ffi::OsString::from));
        assert_eq!(found, ["a=1", "b=2", "c=3"]);
    }
}

#[cfg(unix)]
mod signals {
    fn set(how: libc::c_int) {
        // SAFETY: plain libc calls on a signal set owned by this frame.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(how, &set, std::ptr::null_mut());
        }
    }

    /// Called first thing in `main`, before any thread exists, so every thread inherits it.
    pub fn block() {
        set(libc::SIG_BLOCK);
    }

    /// Called on the main thread once the handlers are installed; the runtime's worker
    /// threads keep them blocked, so the signal is delivered where a handler waits.
    pub fn unblock() {
        set(libc::SIG_UNBLOCK);
    }
}

fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            signals::unblock();
            return token;
        };
        let fire = token.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("signal received; finishing in-flight work");
            fire.cancel();
        });
        signals::unblock();
    }
    #[cfg(not(unix))]
    {
        let fire = token.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            fire.cancel();
        });
    }
    token
}

async fn app_server(overrides: &[String], args: AppServerArgs) -> Result<(), String> {
    // Handlers first: a signal during start-up must also end in a clean exit.
    let shutdown = shutdown_on_signals();
    let (ws_listen, unix_path) = listeners(&args.listen)?;
    let tls = server_tls(ws_listen.as_ref().unwrap_or(&Listen::Stdio), &args.tls)?;
    let digest = token_digest(&args.ws_token_file, &args.ws_token_sha256)?;
    let verifier = signed_bearer(args.ws_auth, args.signed)?;
    if ws_listen.is_none() && (digest.is_some() || verifier.is_some()) {
        return Err(
            "--ws-token-file/--ws-token-sha256/--ws-auth apply only to a ws:// listener".into(),
        );
    }
    let config = Config::load(&default_codex_home(), overrides).map_err(|e| e.to_string())?;
    let server = Arc::new(Server::new(config).map_err(|e| e.to_string())?);
    if shutdown.is_cancelled() {
        return Ok(());
    }
    if ws_listen.is_none() && unix_path.is_none() {
        server.serve_stdio(shutdown).await;
        return Ok(());
    }
    // Everything is bound before anything is served: a taken port or a refused socket
    // directory stops start-up instead of leaving half a server.
    let ws = match ws_listen {
        Some(Listen::Ws(addr) | Listen::Wss(addr)) => {
            if !addr.ip().is_loopback() && digest.is_none() && verifier.is_none() {
                return Err(format!(
                    "refusing to start a WebSocket listener on non-loopback {addr} without auth; \
                     pass --ws-token-file PATH, --ws-token-sha256 HEX or \
                     --ws-auth signed-bearer-token --ws-shared-secret-file FILE"
                ));
            }
            let listener = Listener::new(
                bind_listener(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?,
                tls,
            );
            let url = listener.url().map_err(|e| e.to_string())?;
            Some((listener, url))
        }
        _ => None,
    };
    #[cfg(unix)]
    let unix = match unix_path {
        Some(path) => Some(
            authbridge::unix_socket::UnixSocket::bind(&path)
                .await
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    // One line per listener on stderr that tools can wait for (the port may have been 0).
    let ws = ws.map(|(listener, url)| {
        tracing::info!("listening on {url}");
        eprintln!("authbridge listening on {url}");
        listener
    });
    let serve_ws = async {
        let served = match (ws, verifier) {
            (Some(listener), Some(verifier)) => {
                server
                    .serve_ws_signed_bearer(listener, verifier, shutdown.clone())
                    .await
            }
            (Some(listener), None) => server.serve_ws(listener, digest, shutdown.clone()).await,
            (None, _) => Ok(()),
        };
        served.map_err(|e| e.to_string())
    };
    #[cfg(unix)]
    let serve_unix = async {
        if let Some(socket) = unix {
            tracing::info!("listening on {}", socket.url());
            eprintln!("authbridge listening on {}", socket.url());
            server.serve_unix(socket, shutdown.clone()).await;
        }
    };
    #[cfg(not(unix))]
    let serve_unix = async {};
    let (served, ()) = tokio::join!(serve_ws, serve_unix);
    served
}

/// The `--listen` values as at most one WebSocket listener and at most one unix socket
/// (served together, sharing one server); `stdio://` stands alone.
fn listeners(urls: &[String]) -> Result<(Option<Listen>, Option<PathBuf>), String> {
    let (mut ws, mut unix) = (None, None);
    for url in urls {
        match parse_listen(url)? {
            Listen::Stdio if urls.len() == 1 => {}
            Listen::Stdio => return Err("--listen stdio:// cannot be combined with another".into()),
            Listen::Unix(path) => {
                if unix.replace(path).is_some() {
                    return Err("at most one --listen unix:// is served".into());
                }
            }
            listen => {
                if ws.replace(listen).is_some() {
                    return Err("at most one --listen ws:// or wss:// is served".into());
                }
            }
        }
    }
    if cfg!(not(unix)) && unix.is_some() {
        return Err("--listen unix:// needs a unix system".into());
    }
    Ok((ws, unix))
}

async fn broker(overrides: &[String], args: BrokerArgs) -> Result<(), String> {
    let shutdown = shutdown_on_signals();
    let listen = parse_listen(&args.listen)?;
    let (Listen::Ws(addr) | Listen::Wss(addr)) = listen else {
        return Err(
            "the broker serves WebSocket only: --listen ws://IP:PORT or wss://IP:PORT".into(),
        );
    };
    let tls = server_tls(&listen, &args.tls)?;
    let access = match &args.principals {
        Some(path) => BrokerAccess::Principals(path.clone()),
        None => {
            let digest = token_digest(&args.ws_token_file, &args.ws_token_sha256)?;
            if !addr.ip().is_loopback() && digest.is_none() {
                return Err(format!(
                    "refusing to serve credentials on non-loopback {addr} without auth; \
                     pass --principals FILE, --ws-token-file PATH or --ws-token-sha256 HEX"
                ));
            }
            BrokerAccess::Token(digest)
        }
    };
    let store = authbridge::broker_server::BrokerStore::parse(&args.store)?;
    let config = Config::load(&default_codex_home(), overrides).map_err(|e| e.to_string())?;
    let metrics = match args.metrics_listen {
        Some(addr) => Some(
            authbridge::broker::ops::MetricsListener::bind(addr)
                .await
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let audit = match args.audit_log {
        Some(path) => authbridge::broker::ops::AuditTarget::File(path),
        None => authbridge::broker::ops::AuditTarget::Stderr,
    };
    let broker = Arc::new(
        authbridge::broker_server::Broker::start(
            config,
            store,
            args.import_auth_json.as_deref(),
            access,
            &audit,
        )
        .await?,
    );
    let listener = Listener::new(
        bind_listener(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?,
        tls,
    );
    if let Some(metrics) = &metrics {
        eprintln!(
            "authbridge metrics on http://{}/metrics",
            metrics.local_addr().map_err(|e| e.to_string())?
        );
    }
    eprintln!(
        "authbridge listening on {}",
        listener.url().map_err(|e| e.to_string())?
    );
    let (served, ()) = tokio::join!(
        broker.serve_ws(listener, shutdown.clone()),
        broker.operate(metrics, shutdown)
    );
    broker.close_audit();
    served.map_err(|e| e.to_string())
}

/// A listener with room for bursts of clients: the default backlog of 128 overflowed
/// when a fleet connected at once, and each dropped SYN costs the client a second.
fn bind_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Logs go to stderr, filtered by `RUST_LOG`. Dependencies never log below `info`,
/// whatever `RUST_LOG` says: at `trace` the WebSocket stack prints every frame it receives,
/// tokens included, and no setting may put a token in a log.
///
/// `RUST_LOG` is a list of `target=level` and a bare default level (`Targets`), not
/// `EnvFilter`'s span and field filters: those compile regular expressions at every start
/// and bring two regex crates into the binary. A value that does not parse, or none, means
/// `warn`.
fn init_logging() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::WARN));
    let own_or_quiet = tracing_subscriber::filter::filter_fn(|meta| {
        *meta.level() <= tracing::Level::INFO || meta.target().starts_with("authbridge")
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    tracing_subscriber::registry()
        .with(layer.with_filter(filter).with_filter(own_or_quiet))
        .init();
}

/// The sign-in commands run on a one-thread runtime of their own; signals are theirs to
/// handle (Ctrl-C ends a pending sign-in cleanly).
fn account_command(overrides: &[String], command: Command) -> Result<ExitCode, String> {
    #[cfg(unix)]
    signals::unblock();
    let config = Config::load(&default_codex_home(), overrides).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut out = std::io::stderr();
    let code = |code: u8| ExitCode::from(code);
    let result = runtime.block_on(async {
        match command {
            Command::Login(LoginArgs {
                action: Some(LoginAction::Status { json }),
                ..
            }) => if json {
                cli::status_json(&config, &mut std::io::stdout())
            } else {
                cli::status(&config, &mut std::io::stdout())
            }
            .map(|signed_in| {
                if signed_in {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }),
            Command::Login(LoginArgs {
                action:
                    Some(LoginAction::Refresh {
                        if_stale,
                        min_validity,
                        json,
                    }),
                ..
            }) => {
                let want = if if_stale || min_validity.is_some() {
                    cli::RefreshWhen::IfStale { min_validity }
                } else {
                    cli::RefreshWhen::Now
                };
                cli::refresh(&config, want, json, &mut std::io::stdout(), &mut out)
                    .await
                    .map(code)
            }
            Command::Login(LoginArgs {
                action: Some(LoginAction::Export),
                ..
            }) => cli::export(&config, &mut std::io::stdout()).await.map(code),
            Command::Login(LoginArgs {
                action: Some(LoginAction::Import { if_newer }),
                ..
            }) => cli::import(&config, if_newer, &mut out).await.map(code),
            Command::Token(args) => {
                let source = match args.broker {
                    Some(url) => cli::TokenSource::Broker {
                        url,
                        token_file: args.broker_token_file,
                        credential: args.credential,
                    },
                    None => cli::TokenSource::Home,
                };
                cli::token(
                    &config,
                    source,
                    args.min_validity,
                    &mut std::io::stdout(),
                    &mut out,
                )
                .await
                .map(code)
            }
            Command::Doctor(args) => cli::doctor(
                &config,
                overrides,
                args.json,
                args.network,
                &mut std::io::stdout(),
            )
            .await
            .map(code),
            Command::Login(args) => {
                let method = if args.with_access_token {
                    cli::LoginMethod::AccessToken
                } else if args.with_api_key {
                    cli::LoginMethod::ApiKey
                } else if args.device_auth {
                    cli::LoginMethod::DeviceCode
                } else {
                    cli::LoginMethod::Browser { open: args.open }
                };
                cli::login(&config, method, &mut out)
                    .await
                    .map(|()| ExitCode::SUCCESS)
            }
            Command::Logout(args) => cli::logout(&config, args.no_revoke, &mut out)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::AppServer(_)
            | Command::GenerateJsonSchema { .. }
            | Command::Broker(_)
            | Command::BrokerAdmin(_)
            | Command::Worker(_) => {
                unreachable!("served by main")
            }
        }
    });
    runtime.shutdown_background();
    result
}

/// Every `-c` in the order given, wherever it stands. Clap keeps only the occurrences of a
/// global option after the subcommand when there are some on both sides, so `authbridge -c
/// a=1 login -c b=2` lost `a=1`; the arguments are read again here. Scanning stops at `--`.
fn overrides_in_order(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<String> {
    let mut found = Vec::new();
    let mut args = args.skip(1).map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "-c" || arg == "--config" {
            found.extend(args.next());
        } else if let Some(value) = arg.strip_prefix("--config=") {
            found.push(value.to_owned());
        } else if let Some(value) = arg.strip_prefix("-c").filter(|v| !v.is_empty()) {
            found.push(value.trim_start_matches('=').to_owned());
        }
    }
    found
}

fn main() -> ExitCode {
    authbridge::heap::fix_thresholds();
    #[cfg(unix)]
    signals::block();
    let mut cli = Cli::parse();
    cli.overrides = overrides_in_order(std::env::args_os());
    init_logging();
    let result = match cli.command {
        command @ (Command::Login(_)
        | Command::Logout(_)
        | Command::Token(_)
        | Command::Doctor(_)) => match account_command(&cli.overrides, command) {
            Ok(code) => return code,
            Err(message) => Err(message),
        },
        Command::GenerateJsonSchema { out } => {
            #[cfg(unix)]
            signals::unblock();
            authbridge::schema::write(&out)
                .map_err(|e| format!("cannot write the schema to {}: {e}", out.display()))
        }
        Command::Broker(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            let result = runtime.block_on(broker(&cli.overrides, args));
            runtime.shutdown_background();
            result
        }
        Command::AppServer(AppServerArgs {
            action: Some(AppServerAction::Proxy { socket }),
            ..
        }) => {
            #[cfg(unix)]
            signals::unblock();
            let path = socket
                .unwrap_or_else(|| authbridge::unix_socket::default_path(&default_codex_home()));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            let result = runtime
                .block_on(authbridge::unix_socket::proxy(&path))
                .map_err(|e| e.to_string());
            // A read of stdin may still be parked on a blocking thread; do not wait for it.
            runtime.shutdown_background();
            result
        }
        Command::AppServer(args) => {
            // One thread serves every connection. With two workers, each round trip
            // woke the other thread (strace: 4 futex calls and an eventfd write per
            // request): stdio round trips went from 45 to 18 µs and WebSocket ones from
            // about 100 to 32 µs on one thread, and 1,000 WebSocket sessions with 64
            // requests in flight were served faster too. The work per request is small;
            // waiting (backend, parent) is asynchronous.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            let result = runtime.block_on(app_server(&cli.overrides, args));
            // A read of stdin may still be parked on a blocking thread; do not wait for it.
            runtime.shutdown_background();
            result
        }
        Command::BrokerAdmin(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            let command = match args.action {
                BrokerAdminAction::List { json } => cli::AdminCommand::List { json },
                BrokerAdminAction::Import { name, path } => {
                    cli::AdminCommand::Import { name, path }
                }
                BrokerAdminAction::Delete { name, revoke } => {
                    cli::AdminCommand::Delete { name, revoke }
                }
                BrokerAdminAction::Login { name } => cli::AdminCommand::Login { name },
            };
            let result = runtime.block_on(cli::broker_admin(
                &args.broker,
                args.token_file.as_deref(),
                command,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            ));
            runtime.shutdown_background();
            match result {
                Ok(code) => return ExitCode::from(code),
                Err(message) => Err(message),
            }
        }
        Command::Worker(args) => {
            // One thread, like the app-server: the worker only moves lines and waits.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            let options = authbridge::worker::WorkerOptions {
                broker: args.broker,
                broker_token_file: args.broker_token_file,
                credential: args.credential,
                command: args.command,
            };
            // The signal handlers first: they unblock SIGINT/SIGTERM, which the child
            // inherits, and a signal is then passed on to the child.
            let result = runtime
                .block_on(async { authbridge::worker::run(options, shutdown_on_signals()).await });
            // A read of stdin may still be parked on a blocking thread; do not wait for it.
            runtime.shutdown_background();
            match result {
                Ok(code) => return ExitCode::from(u8::try_from(code).unwrap_or(1)),
                Err(message) => Err(message),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("authbridge: {message}");
            ExitCode::FAILURE
        }
    }
}

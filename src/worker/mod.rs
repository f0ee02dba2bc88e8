//! `authbridge worker`: wraps any Codex-protocol app-server started as a child over stdio,
//! logs it in with `chatgptAuthTokens` from the credential broker, answers its
//! `account/chatgptAuthTokens/refresh` requests from the broker, and otherwise passes the
//! parent's messages through unchanged in both directions. The child never sees a refresh
//! token; the parent sees an ordinary app-server.
//!
//! Three tasks move lines: the parent's stdin to the child ([`proxy::parent_to_child`]),
//! the child's stdout to the parent ([`proxy::ChildToParent`], which also drives the
//! logins), and one writer per output. Channels between them are bounded in messages; the
//! worker's own few messages to the child go on a separate unbounded queue, so the
//! child-to-parent side never waits on the child's input (which could wait on it in turn).

pub(crate) mod broker_client;
mod proxy;
mod resend;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use futures::StreamExt;
use secrecy::SecretString;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

use broker_client::{BrokerClient, BrokerTarget};

/// Longest line accepted in either direction; a longer one is dropped with a warning.
const MAX_LINE: usize = 64 * 1024 * 1024;
/// Lines queued per direction before the reader waits.
const QUEUE: usize = 64;
/// How long the child may take to exit once its input is closed or it got SIGTERM.
const CHILD_EXIT_WAIT: Duration = Duration::from_secs(10);
/// How long the child's last output and the writes to the parent may take after it exits.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// What `authbridge worker` was given.
pub struct WorkerOptions {
    /// `ws://HOST:PORT` or `wss://HOST:PORT` of the broker.
    pub broker: String,
    /// A file holding the broker's bearer token (trimmed).
    pub broker_token_file: Option<PathBuf>,
    /// The broker's credential the child is logged in with.
    pub credential: crate::vocabulary::CredentialName,
    /// The child's program and arguments.
    pub command: Vec<OsString>,
}

pub(crate) fn read_token(path: &PathBuf) -> Result<SecretString, String> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --broker-token-file {}: {e}", path.display()))?,
    );
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("--broker-token-file {} is empty", path.display()));
    }
    Ok(SecretString::from(token))
}

/// Runs the worker until the child exits; returns the child's exit code (128 + the signal
/// when a signal ended it). `shutdown` (SIGTERM/SIGINT) is passed on to the child as
/// SIGTERM. Call it with SIGINT and SIGTERM unblocked: the child inherits the mask.
pub async fn run(options: WorkerOptions, shutdown: CancellationToken) -> Result<i32, String> {
    let WorkerOptions {
        broker,
        broker_token_file,
        credential,
        command,
    } = options;
    if !(broker.starts_with("ws://") || broker.starts_with("wss://")) {
        return Err(format!(
            "unsupported --broker {broker:?}: use ws://HOST:PORT or wss://HOST:PORT"
        ));
    }
    let network = crate::net::Network::from_env().map_err(|e| e.to_string())?;
    let token = broker_token_file.as_ref().map(read_token).transpose()?;
    let (program, args) = command
        .split_first()
        .ok_or("no command to run: authbridge worker --broker URL -- CMD [ARGS...]")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.to_string_lossy()))?;
    let child_stdin = child.stdin.take().expect("piped stdin");
    let child_stdout = child.stdout.take().expect("piped stdout");

    let broker = BrokerClient::start(BrokerTarget {
        url: broker,
        token,
        network,
        credential,
    });
    let (to_child, to_child_rx) = mpsc::channel(QUEUE);
    let (to_child_own, to_child_own_rx) = mpsc::unbounded_channel();
    let (to_parent, to_parent_rx) = mpsc::channel(QUEUE);
    let (parent_lines, parent_lines_rx) = mpsc::channel(QUEUE);
    let (child_lines, child_lines_rx) = mpsc::channel(QUEUE);

    let child_writer = tokio::spawn(write_lines(child_stdin, to_child_rx, Some(to_child_own_rx)));
    let parent_writer = tokio::spawn(write_lines(tokio::io::stdout(), to_parent_rx, None));
    let (parent_gone_tx, parent_gone) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        read_lines(tokio::io::stdin(), parent_lines, "the parent").await;
        let _ = parent_gone_tx.send(());
    });
    let child_reader = tokio::spawn(read_lines(child_stdout, child_lines, "the child"));

    let (shared, gate, login_rx) = proxy::Shared::new(broker, to_child_own);
    let forward = tokio::spawn(proxy::parent_to_child(
        shared.clone(),
        parent_lines_rx,
        to_child,
        gate,
    ));
    let back =
        tokio::spawn(proxy::ChildToParent::new(shared, to_parent, login_rx).run(child_lines_rx));

    let status = tokio::select! {
        status = child.wait() => status,
        _ = parent_gone => {
            // The parent's input ended: the child's input closes once the queued lines
            // are written; the child then finishes and exits on its own.
            let _ = tokio::time::timeout(CHILD_EXIT_WAIT, forward).await;
            wait_or_kill(&mut child, "its input closed").await
        }
        () = shutdown.cancelled() => {
            terminate(&child);
            wait_or_kill(&mut child, "SIGTERM").await
        }
    }
    .map_err(|e| format!("cannot wait for the child: {e}"))?;
    // What the child wrote before it exited still goes to the parent.
    let _ = tokio::time::timeout(DRAIN_WAIT, async {
        let _ = child_reader.await;
        let _ = back.await;
        let _ = parent_writer.await;
    })
    .await;
    child_writer.abort();
    Ok(exit_code(status))
}

async fn wait_or_kill(
    child: &mut tokio::process::Child,
    after: &str,
) -> std::io::Result<ExitStatus> {
    match tokio::time::timeout(CHILD_EXIT_WAIT, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            tracing::warn!(
                "the child did not exit within {CHILD_EXIT_WAIT:?} after {after}; killing it"
            );
            child.kill().await?;
            child.wait().await
        }
    }
}

/// Passes SIGTERM on to the child.
fn terminate(child: &tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok()) {
        // SAFETY: kill(2) on the child's pid, which is ours until we reap it.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    #[cfg(not(unix))]
    let _ = child;
}

fn exit_code(status: ExitStatus) -> i32 {
    if let Some(code) = status.code() {
        return code;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return 128 + signal;
        }
    }
    1
}

/// Reads newline-delimited lines into `lines` until EOF or a read error.
async fn read_lines<R: AsyncRead + Unpin>(reader: R, lines: mpsc::Sender<String>, from: &str) {
    let mut framed = FramedRead::new(reader, LinesCodec::new_with_max_length(MAX_LINE));
    while let Some(line) = framed.next().await {
        match line {
            Ok(line) => {
                if line.trim().is_empty() {
                    continue;
                }
                if lines.send(line).await.is_err() {
                    return;
                }
            }
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                tracing::warn!("dropped a line from {from} longer than {MAX_LINE} bytes");
            }
            Err(LinesCodecError::Io(e)) => {
                tracing::warn!("stopped reading {from}: {e}");
                return;
            }
        }
    }
}

/// Writes `lines` (and, first, `own`) one per line, flushing when nothing more is queued;
/// shuts the output down when `lines` closes. Lines are wiped once written: they may carry
/// tokens.
async fn write_lines<W: AsyncWrite + Unpin>(
    writer: W,
    mut lines: mpsc::Receiver<String>,
    mut own: Option<mpsc::UnboundedReceiver<String>>,
) {
    let mut out = BufWriter::new(writer);
    let mut broken = false;
    loop {
        let own_next = async {
            match own.as_mut() {
                Some(own) => own.recv().await,
                None => std::future::pending().await,
            }
        };
        let mut line = tokio::select! {
            biased;
            Some(line) = own_next => line,
            line = lines.recv() => match line {
                Some(line) => line,
                None => break,
            },
        };
        if !broken {
            let written = async {
                out.write_all(line.as_bytes()).await?;
                out.write_all(b"\n").await?;
                let idle = lines.is_empty() && own.as_ref().is_none_or(|own| own.is_empty());
                if idle {
                    out.flush().await?;
                }
                std::io::Result::Ok(())
            };
            if let Err(e) = written.await {
                // Keep draining so nobody waits on this output; the child's exit ends us.
                tracing::warn!("cannot write: {e}");
                broken = true;
            }
        }
        zeroize::Zeroize::zeroize(&mut line);
    }
    let _ = out.flush().await;
    let _ = out.shutdown().await;
}

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
//!
//! [`run`] is the command: it starts the child process and uses the process's stdio.
//! [`serve`] is the same worker over streams it is handed, for benches and embedders that
//! drive many workers in one process.

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
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
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
    let network = checked_network(&broker)?;
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

    let target = BrokerTarget {
        url: broker,
        token,
        network,
        credential,
    };
    let mut pipes = Pipes::start(
        target,
        child_stdout,
        child_stdin,
        tokio::io::stdin(),
        tokio::io::stdout(),
    );
    let status = tokio::select! {
        status = child.wait() => status,
        _ = &mut pipes.parent_gone => {
            // The parent's input ended: the child's input closes once the queued lines
            // are written; the child then finishes and exits on its own.
            let _ = tokio::time::timeout(CHILD_EXIT_WAIT, &mut pipes.forward).await;
            wait_or_kill(&mut child, "its input closed").await
        }
        () = shutdown.cancelled() => {
            terminate(&child);
            wait_or_kill(&mut child, "SIGTERM").await
        }
    }
    .map_err(|e| format!("cannot wait for the child: {e}"))?;
    pipes.drain().await;
    Ok(exit_code(status))
}

/// Where [`serve`] gets the child's credential: the broker part of [`WorkerOptions`].
pub struct WorkerBroker {
    /// `ws://HOST:PORT` or `wss://HOST:PORT` of the broker.
    pub url: String,
    /// The broker's bearer token.
    pub token: Option<SecretString>,
    /// The broker's credential the child is logged in with.
    pub credential: crate::vocabulary::CredentialName,
}

/// The worker over streams instead of a child process and the process's stdio, so that
/// benches and embedders can drive many workers in one process (a child of their own
/// making behind `child_output`/`child_input`, a parent behind `parent_input`/
/// `parent_output`). It behaves as [`run`] does, except that the child's output ending
/// stands for its exit: once the parent's input ends, the child's input is closed and the
/// child gets as long to close its output as [`run`] gives a child to exit. Returns when
/// the child's output has ended and what it said has been written to the parent (within
/// a bound); the connection to the broker ends with it.
pub async fn serve<CO, CI, PI, PO>(
    broker: WorkerBroker,
    child_output: CO,
    child_input: CI,
    parent_input: PI,
    parent_output: PO,
) -> Result<(), String>
where
    CO: AsyncRead + Unpin + Send + 'static,
    CI: AsyncWrite + Unpin + Send + 'static,
    PI: AsyncRead + Unpin + Send + 'static,
    PO: AsyncWrite + Unpin + Send + 'static,
{
    let network = checked_network(&broker.url)?;
    let target = BrokerTarget {
        url: broker.url,
        token: broker.token,
        network,
        credential: broker.credential,
    };
    let mut pipes = Pipes::start(
        target,
        child_output,
        child_input,
        parent_input,
        parent_output,
    );
    tokio::select! {
        _ = &mut pipes.child_done => {}
        _ = &mut pipes.parent_gone => {
            let _ = tokio::time::timeout(CHILD_EXIT_WAIT, &mut pipes.forward).await;
            if tokio::time::timeout(CHILD_EXIT_WAIT, &mut pipes.child_done).await.is_err() {
                tracing::warn!(
                    "the child did not close its output within {CHILD_EXIT_WAIT:?} after its \
                     input closed; stopping"
                );
            }
        }
    }
    pipes.drain().await;
    Ok(())
}

/// The broker URL's scheme checked, and the roots and proxies to reach it with.
fn checked_network(broker: &str) -> Result<crate::net::Network, String> {
    if !(broker.starts_with("ws://") || broker.starts_with("wss://")) {
        return Err(format!(
            "unsupported --broker {broker:?}: use ws://HOST:PORT or wss://HOST:PORT"
        ));
    }
    crate::net::Network::from_env().map_err(|e| e.to_string())
}

/// The worker's tasks between the child's pipes and the parent's, whatever they are.
/// Dropping it stops whichever are still running, so a [`serve`] that is dropped leaves
/// nothing behind.
struct Pipes {
    forward: JoinHandle<()>,
    back: JoinHandle<()>,
    child_reader: JoinHandle<()>,
    parent_writer: JoinHandle<()>,
    child_writer: JoinHandle<()>,
    parent_reader: JoinHandle<()>,
    /// Fires when the parent's input ends.
    parent_gone: oneshot::Receiver<()>,
    /// Fires when the child's output ends.
    child_done: oneshot::Receiver<()>,
}

impl Pipes {
    fn start<CO, CI, PI, PO>(
        target: BrokerTarget,
        child_output: CO,
        child_input: CI,
        parent_input: PI,
        parent_output: PO,
    ) -> Pipes
    where
        CO: AsyncRead + Unpin + Send + 'static,
        CI: AsyncWrite + Unpin + Send + 'static,
        PI: AsyncRead + Unpin + Send + 'static,
        PO: AsyncWrite + Unpin + Send + 'static,
    {
        let broker = BrokerClient::start(target);
        let (to_child, to_child_rx) = mpsc::channel(QUEUE);
        let (to_child_own, to_child_own_rx) = mpsc::unbounded_channel();
        let (to_parent, to_parent_rx) = mpsc::channel(QUEUE);
        let (parent_lines, parent_lines_rx) = mpsc::channel(QUEUE);
        let (child_lines, child_lines_rx) = mpsc::channel(QUEUE);

        let child_writer =
            tokio::spawn(write_lines(child_input, to_child_rx, Some(to_child_own_rx)));
        let parent_writer = tokio::spawn(write_lines(parent_output, to_parent_rx, None));
        let (parent_gone_tx, parent_gone) = oneshot::channel::<()>();
        let parent_reader = tokio::spawn(async move {
            read_lines(parent_input, parent_lines, "the parent").await;
            let _ = parent_gone_tx.send(());
        });
        let (child_done_tx, child_done) = oneshot::channel::<()>();
        let child_reader = tokio::spawn(async move {
            read_lines(child_output, child_lines, "the child").await;
            let _ = child_done_tx.send(());
        });

        let (shared, gate, login_rx) = proxy::Shared::new(broker, to_child_own);
        let forward = tokio::spawn(proxy::parent_to_child(
            shared.clone(),
            parent_lines_rx,
            to_child,
            gate,
        ));
        let back = tokio::spawn(
            proxy::ChildToParent::new(shared, to_parent, login_rx).run(child_lines_rx),
        );
        Pipes {
            forward,
            back,
            child_reader,
            parent_writer,
            child_writer,
            parent_reader,
            parent_gone,
            child_done,
        }
    }

    /// What the child wrote before it exited still goes to the parent.
    async fn drain(mut self) {
        let _ = tokio::time::timeout(DRAIN_WAIT, async {
            let _ = (&mut self.child_reader).await;
            let _ = (&mut self.back).await;
            let _ = (&mut self.parent_writer).await;
        })
        .await;
    }
}

impl Drop for Pipes {
    fn drop(&mut self) {
        for task in [
            &self.forward,
            &self.back,
            &self.child_reader,
            &self.parent_writer,
            &self.child_writer,
            &self.parent_reader,
        ] {
            task.abort();
        }
    }
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

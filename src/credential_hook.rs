//! `authbridge.on_credential_change`: the user's command, run after every rotation this
//! process stores, with the new document on its standard input. It is how an ephemeral
//! runner's secret manager follows rotations made by any authbridge process of the home.
//!
//! The rotation is on disk before the hook starts, so nothing the hook does can lose it. A
//! failure is logged (its exit status only: the document is the command's business) and the
//! next rotation runs the hook again with a newer document. Runs of one process go one at a
//! time, in order, so a slow run never lands after a newer one.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;

use crate::auth::RotationHook;
use crate::auth::storage::AuthDocument;

/// How long one run may take before it is killed and counted as failed.
const RUN_LIMIT: Duration = Duration::from_secs(60);

pub(crate) struct CommandHook {
    program: String,
    args: Vec<String>,
    /// Held for the length of a run: runs of this process never overlap.
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
}

impl CommandHook {
    /// `command` is the program then its arguments; `None` when it is empty.
    pub fn new(command: &[String]) -> Option<Self> {
        let (program, args) = command.split_first()?;
        Some(Self {
            program: program.clone(),
            args: args.to_vec(),
            one_at_a_time: Arc::default(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("cannot start it: {0}")]
    Spawn(std::io::Error),
    #[error("cannot write the document to its standard input: {0}")]
    Stdin(std::io::Error),
    #[error("it exited with {0}")]
    Exit(std::process::ExitStatus),
    #[error("it did not finish within {0:?} and was killed")]
    Timeout(Duration),
    #[error("cannot wait for it: {0}")]
    Wait(std::io::Error),
}

async fn run(program: &str, args: &[String], body: &[u8]) -> Result<(), RunError> {
    // Its standard output is not ours to share: it may be the protocol (app-server) or the
    // token a script reads (`authbridge token`).
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(RunError::Spawn)?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let finished = async {
        // A hook that does not read its input gets EPIPE; its exit status still decides.
        let written = stdin.write_all(body).await;
        drop(stdin);
        let status = child.wait().await.map_err(RunError::Wait)?;
        match written {
            Err(e) if status.success() => Err(RunError::Stdin(e)),
            _ if !status.success() => Err(RunError::Exit(status)),
            _ => Ok(()),
        }
    };
    tokio::time::timeout(RUN_LIMIT, finished)
        .await
        .unwrap_or(Err(RunError::Timeout(RUN_LIMIT)))
}

impl RotationHook for CommandHook {
    fn rotated(&self, document: &AuthDocument) -> BoxFuture<'static, ()> {
        let body = document.to_pretty();
        let program = self.program.clone();
        let args = self.args.clone();
        let turn = self.one_at_a_time.clone();
        Box::pin(async move {
            let _turn = turn.lock().await;
            match run(&program, &args, &body).await {
                Ok(()) => tracing::info!(program, "on_credential_change ran"),
                Err(e) => tracing::warn!(
                    program,
                    "on_credential_change failed ({e}); the credential is stored here all \
                     the same, and the next rotation runs the hook again"
                ),
            }
        })
    }
}

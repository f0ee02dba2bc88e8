//! The binary's one-shot commands (`login …`, `token`, `doctor`) as a script runs them: on a
//! given `CODEX_HOME`, some bytes on stdin, the exit code and both outputs back. Every run
//! is bounded by [`super::wait::WAIT`].

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::issuer::MockIssuer;
use super::process::{SAFE_DEFAULTS, command};
use super::wait::within;

/// What a command did.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// How to run one command.
#[derive(Default)]
pub struct Run<'a> {
    pub stdin: &'a [u8],
    pub env: &'a [(&'a str, &'a str)],
    /// `RUST_LOG` (the default is `warn`).
    pub log: Option<&'a str>,
}

/// The started command, for a caller that starts several at once.
pub fn start(
    home: &Path,
    issuer: &MockIssuer,
    args: &[&str],
    how: &Run<'_>,
) -> tokio::process::Child {
    let mut command = tokio::process::Command::from(command(home));
    command
        .args(args)
        .args(SAFE_DEFAULTS)
        .args(["-c", &issuer.config_arg()])
        .envs(how.env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(filter) = how.log {
        command.env("RUST_LOG", filter);
    }
    command.spawn().expect("start authbridge")
}

/// Waits for a command [`start`] started, writing `stdin` first.
pub async fn finish(mut child: tokio::process::Child, stdin: &[u8]) -> Ran {
    let mut input = child.stdin.take().unwrap();
    // A command that never reads its input closes it early: that is not an error here.
    let _ = input.write_all(stdin).await;
    drop(input);
    let out = within("the command to exit", child.wait_with_output())
        .await
        .unwrap();
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `authbridge ARGS` on `home` against `issuer`.
pub async fn run(home: &Path, issuer: &MockIssuer, args: &[&str], how: Run<'_>) -> Ran {
    finish(start(home, issuer, args, &how), how.stdin).await
}

/// A home holding a ChatGPT sign-in the issuer just made (its refresh token is live).
pub fn signed_in_home(issuer: &MockIssuer) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("auth.json"),
        serde_json::to_vec_pretty(&issuer.mint_auth_json()).unwrap(),
    )
    .unwrap();
    home
}

/// A stand-in issuer and a home holding its sign-in: where most command cases start. Its
/// commands run on that home unless a case names another (an empty one, a runner's).
pub struct SignedIn {
    pub issuer: MockIssuer,
    pub home: tempfile::TempDir,
}

impl SignedIn {
    pub async fn start() -> SignedIn {
        let issuer = MockIssuer::start().await;
        let home = signed_in_home(&issuer);
        SignedIn { issuer, home }
    }

    /// `authbridge ARGS` on the home, nothing on stdin.
    pub async fn run(&self, args: &[&str]) -> Ran {
        self.run_in(self.home.path(), args).await
    }

    /// `authbridge ARGS` on `home`, against the same issuer, nothing on stdin.
    pub async fn run_in(&self, home: &Path, args: &[&str]) -> Ran {
        run(home, &self.issuer, args, Run::default()).await
    }

    /// `authbridge ARGS` on `home` with `stdin` written to it.
    pub async fn run_fed(&self, home: &Path, args: &[&str], stdin: &[u8]) -> Ran {
        let how = Run {
            stdin,
            ..Run::default()
        };
        run(home, &self.issuer, args, how).await
    }
}

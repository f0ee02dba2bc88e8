//! One run of a provider's auth command: its trimmed stdout is the bearer token. The child
//! runs under `tokio::process` (never blocking the runtime), with no stdin, bounded output
//! and a deadline after which it is killed. What it wrote to stderr reaches errors only
//! capped and scrubbed: a script that echoes its token on failure must not put it in a
//! turn's error or the log.

use std::process::Stdio;

use secrecy::SecretString;
use tokio::io::{AsyncRead, AsyncReadExt};
use zeroize::Zeroizing;

use super::scrub;
use crate::config::CommandSettings;

/// Most bytes of stdout kept: a bearer token is far smaller; more is a broken command.
const MAX_STDOUT: usize = 64 * 1024;
/// Most bytes of stderr kept for an error message (before scrubbing).
pub(crate) const MAX_STDERR: usize = 2 * 1024;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum CommandError {
    #[error("cannot start the auth command {command:?}: {message}")]
    Spawn { command: String, message: String },
    #[error("the auth command {command:?} did not finish within {ms} ms and was killed")]
    Timeout { command: String, ms: u128 },
    #[error("the auth command {command:?} failed ({status}){}", stderr_suffix(.stderr))]
    Failed {
        command: String,
        status: String,
        /// Capped and scrubbed.
        stderr: String,
    },
    #[error("the auth command {command:?} printed no token{}", stderr_suffix(.stderr))]
    Empty { command: String, stderr: String },
    #[error("the auth command {command:?} printed {what}")]
    Unusable { command: String, what: &'static str },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; stderr: {stderr}")
    }
}

/// Reads all of `reader`, keeping at most `cap` bytes: the rest is drained, so a chatty
/// child is never blocked on a full pipe until its deadline.
async fn read_capped(mut reader: impl AsyncRead + Unpin, cap: usize) -> Zeroizing<Vec<u8>> {
    let mut kept = Zeroizing::new(Vec::new());
    let mut buf = Zeroizing::new([0u8; 4096]);
    loop {
        match reader.read(&mut buf[..]).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// Runs the command once and returns the token it printed.
pub(crate) async fn run(settings: &CommandSettings) -> Result<SecretString, CommandError> {
    let command = settings.command.clone();
    let mut cmd = tokio::process::Command::new(&settings.command);
    cmd.args(&settings.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = &settings.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd.spawn().map_err(|e| CommandError::Spawn {
        command: command.clone(),
        message: e.to_string(),
    })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let work = async {
        let (status, out, err) = tokio::join!(
            child.wait(),
            read_capped(stdout, MAX_STDOUT),
            read_capped(stderr, MAX_STDERR)
        );
        (status, out, err)
    };
    let outcome = tokio::time::timeout(settings.timeout, work).await;
    let (status, out, err) = match outcome {
        Ok(done) => done,
        Err(_) => {
            // Dropping the child kills it too; this reaps it now rather than later.
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(CommandError::Timeout {
                command,
                ms: settings.timeout.as_millis(),
            });
        }
    };
    let out_text = std::str::from_utf8(&out).map(str::trim);
    let known = out_text.ok().filter(|t| !t.is_empty());
    let stderr = scrub::scrub(&String::from_utf8_lossy(&err), known);
    let status = status.map_err(|e| CommandError::Spawn {
        command: command.clone(),
        message: e.to_string(),
    })?;
    if !status.success() {
        return Err(CommandError::Failed {
            command,
            status: describe_status(status),
            stderr,
        });
    }
    let token = match out_text {
        Err(_) => {
            return Err(CommandError::Unusable {
                command,
                what: "output that is not UTF-8",
            });
        }
        Ok("") => return Err(CommandError::Empty { command, stderr }),
        Ok(t) => t,
    };
    if token.len() >= MAX_STDOUT {
        return Err(CommandError::Unusable {
            command,
            what: "more than 64 KiB",
        });
    }
    // The token goes into an `Authorization` header: one line of visible ASCII.
    if !token.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(CommandError::Unusable {
            command,
            what: "a token with spaces, line breaks or characters not allowed in a header",
        });
    }
    Ok(SecretString::from(token.to_owned()))
}

fn describe_status(status: std::process::ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    "no exit code".into()
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::{Duration, Instant};

    use secrecy::ExposeSecret;

    use super::*;

    fn sh(script: &str, timeout_ms: u64) -> CommandSettings {
        CommandSettings {
            command: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            timeout: Duration::from_millis(timeout_ms),
            refresh_interval: None,
            cwd: None,
        }
    }

    #[tokio::test]
    async fn stdout_trimmed_is_the_token() {
        let t = run(&sh("printf '  tok-123\\n\\n'", 5_000)).await.unwrap();
        assert_eq!(t.expose_secret(), "tok-123");
    }

    #[tokio::test]
    async fn a_slow_command_is_killed_at_its_deadline() {
        let started = Instant::now();
        let e = run(&sh("sleep 30", 200)).await.unwrap_err();
        assert!(matches!(e, CommandError::Timeout { ms: 200, .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_failure_quotes_stderr_capped_and_without_the_token() {
        let e = run(&sh(
            "echo tok-printed-ABCDEFGHIJKLMNOP; head -c 100000 /dev/zero | tr '\\0' x >&2; exit 3",
            5_000,
        ))
        .await
        .unwrap_err();
        let CommandError::Failed { status, stderr, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(status, "exit code 3");
        assert!(stderr.len() <= MAX_STDERR + 64, "{}", stderr.len());
        let e = run(&sh(
            "echo 'refresh failed for Bearer sk-live-0123456789abcdefXYZ' >&2; exit 1",
            5_000,
        ))
        .await
        .unwrap_err()
        .to_string();
        assert!(!e.contains("sk-live-0123456789abcdefXYZ"), "{e}");
        assert!(e.contains("refresh failed"), "{e}");
    }

    #[tokio::test]
    async fn unusable_output_is_refused() {
        assert!(matches!(
            run(&sh("true", 5_000)).await,
            Err(CommandError::Empty { .. })
        ));
        assert!(matches!(
            run(&sh("echo 'two words'", 5_000)).await,
            Err(CommandError::Unusable { .. })
        ));
        assert!(matches!(
            run(&CommandSettings {
                command: "/nonexistent/auth-command".into(),
                ..sh("", 5_000)
            })
            .await,
            Err(CommandError::Spawn { .. })
        ));
    }
}

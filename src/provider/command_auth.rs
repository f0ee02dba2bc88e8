//! A provider's bearer token from its auth command, kept between turns: reused while it is
//! younger than `refresh_interval_ms` (or until a 401 when that is 0), and replaced by one
//! run of the command at a time. Concurrent turns that find no usable token, or whose
//! token got 401, share that one run through `SingleFlight`, keyed by the generation of
//! the token they found; the run stores what it got itself, so a turn that goes away
//! mid-run loses nothing.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;
use secrecy::SecretString;
use tokio::sync::watch;

use super::command::{self, CommandError};
use super::error::ProviderAuthError;
use crate::auth::single_flight::{SingleFlight, Waited};
use crate::backend::BackendError;
use crate::backend::client::{Bearer, CallAuth};
use crate::config::CommandSettings;
use crate::unpoisoned::lock;

struct Cached {
    token: Option<(Arc<SecretString>, Instant)>,
    /// Bumped each time a run stores a token.
    generation: u64,
}

struct Inner {
    provider: String,
    settings: CommandSettings,
    cached: Mutex<Cached>,
    generation: watch::Sender<u64>,
    flights: SingleFlight<u64, Result<(), CommandError>>,
    runs: std::sync::atomic::AtomicU64,
}

/// Cheap to clone; one per configured provider with an `auth` table, for the process.
#[derive(Clone)]
pub(crate) struct CommandAuth {
    inner: Arc<Inner>,
}

impl CommandAuth {
    pub fn new(provider: &str, settings: CommandSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                provider: provider.to_owned(),
                settings,
                cached: Mutex::new(Cached {
                    token: None,
                    generation: 0,
                }),
                generation: watch::channel(0).0,
                flights: SingleFlight::default(),
                runs: Default::default(),
            }),
        }
    }

    /// How many times the command was started.
    #[cfg(test)]
    pub fn runs(&self) -> u64 {
        self.inner.runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The token in effect when it may still be used, with its generation.
    fn usable(&self) -> Result<Bearer, u64> {
        let c = lock(&self.inner.cached);
        match &c.token {
            Some((token, at))
                if self
                    .inner
                    .settings
                    .refresh_interval
                    .is_none_or(|every| at.elapsed() < every) =>
            {
                Ok(bearer(token.clone(), c.generation))
            }
            _ => Err(c.generation),
        }
    }

    /// Whatever token is stored now (a run just finished), fresh or not.
    fn stored(&self) -> Option<Bearer> {
        let c = lock(&self.inner.cached);
        c.token
            .as_ref()
            .map(|(token, _)| bearer(token.clone(), c.generation))
    }

    /// Replaces the token of generation `replacing`, sharing a run in flight for it.
    async fn replace(&self, replacing: u64) -> Result<Bearer, BackendError> {
        let mut generation = self.inner.generation.subscribe();
        let inner = self.inner.clone();
        let waited = self
            .inner
            .flights
            .run(replacing, &mut generation, move || run_and_store(inner))
            .await;
        let failed = |e: CommandError| {
            BackendError::from(ProviderAuthError::Command {
                provider: self.inner.provider.clone(),
                error: e,
            })
        };
        match waited {
            Waited::Done(Err(e)) => Err(failed(e)),
            Waited::Done(Ok(())) | Waited::Moved => self.stored().ok_or_else(|| {
                failed(CommandError::Empty {
                    command: self.inner.settings.command.clone(),
                    stderr: String::new(),
                })
            }),
            Waited::Crashed => Err(failed(CommandError::Spawn {
                command: self.inner.settings.command.clone(),
                message: "the run ended abnormally".into(),
            })),
        }
    }
}

fn bearer(token: Arc<SecretString>, generation: u64) -> Bearer {
    Bearer {
        token,
        account_id: None,
        generation,
    }
}

fn run_and_store(inner: Arc<Inner>) -> BoxFuture<'static, Result<(), CommandError>> {
    async move {
        let run = 1 + inner
            .runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(provider = %inner.provider, run, "running the provider's auth command");
        let token = command::run(&inner.settings).await.inspect_err(|e| {
            tracing::warn!(provider = %inner.provider, "provider auth command: {e}");
        })?;
        let generation = {
            let mut c = lock(&inner.cached);
            c.generation += 1;
            c.token = Some((Arc::new(token), Instant::now()));
            c.generation
        };
        inner.generation.send_replace(generation);
        Ok(())
    }
    .boxed()
}

impl CallAuth for CommandAuth {
    fn bearer(&self) -> BoxFuture<'_, Result<Option<Bearer>, BackendError>> {
        async move {
            match self.usable() {
                Ok(b) => Ok(Some(b)),
                Err(generation) => self.replace(generation).await.map(Some),
            }
        }
        .boxed()
    }

    fn recover<'a>(
        &'a self,
        failed: Option<&'a Bearer>,
    ) -> Option<BoxFuture<'a, Result<Bearer, BackendError>>> {
        let failed = failed?.generation;
        Some(
            async move {
                // Another turn's run may already have replaced the token that failed.
                if let Some(current) = self.stored()
                    && current.generation != failed
                {
                    return Ok(current);
                }
                self.replace(failed).await
            }
            .boxed(),
        )
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    use secrecy::ExposeSecret;

    use super::*;

    /// A command that prints `tok-N` for its Nth run, counted in a file under `dir`.
    fn counting(dir: &std::path::Path, refresh: Option<Duration>, delay: &str) -> CommandAuth {
        let script = format!(
            "sleep {delay}; n=$(( $(cat count 2>/dev/null || echo 0) + 1 )); echo $n > count; echo tok-$n"
        );
        CommandAuth::new(
            "corp",
            CommandSettings {
                command: "/bin/sh".into(),
                args: vec!["-c".into(), script],
                timeout: Duration::from_secs(10),
                refresh_interval: refresh,
                cwd: Some(dir.to_owned()),
            },
        )
    }

    async fn token(auth: &CommandAuth) -> String {
        let b = auth.bearer().await.unwrap().unwrap();
        b.token.expose_secret().to_owned()
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_run_and_reuse_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let auth = counting(dir.path(), None, "0.2");
        let all = futures::future::join_all((0..8).map(|_| token(&auth))).await;
        assert!(all.iter().all(|t| t == "tok-1"), "{all:?}");
        assert_eq!(token(&auth).await, "tok-1", "reused until a 401");
        assert_eq!(auth.runs(), 1);
    }

    #[tokio::test]
    async fn a_401_reruns_once_for_all_who_saw_the_same_token() {
        let dir = tempfile::tempdir().unwrap();
        let auth = counting(dir.path(), None, "0.1");
        let first = auth.bearer().await.unwrap().unwrap();
        let recovered = futures::future::join_all(
            (0..4).map(|_| async { auth.recover(Some(&first)).unwrap().await.unwrap() }),
        )
        .await;
        assert!(
            recovered.iter().all(|b| b.token.expose_secret() == "tok-2"),
            "one rerun for all"
        );
        assert_eq!(auth.runs(), 2);
        // A caller that failed with the old token after the rerun gets the new one.
        let late = auth.recover(Some(&first)).unwrap().await.unwrap();
        assert_eq!(late.token.expose_secret(), "tok-2");
        assert_eq!(auth.runs(), 2);
    }

    #[tokio::test]
    async fn an_interval_makes_a_stale_token_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let auth = counting(dir.path(), Some(Duration::from_millis(1000)), "0");
        assert_eq!(token(&auth).await, "tok-1");
        assert_eq!(token(&auth).await, "tok-1");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(token(&auth).await, "tok-2");
    }
}

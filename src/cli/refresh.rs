//! `login refresh`: the app-server's own refresh, from a terminal or a scheduled job,
//! without a backend call or a model call. It goes through `AuthManager::freshen`, so the
//! single flight, the refresh lock, the re-read under it, the latch and Codex's commit
//! locks are the very ones a running app-server uses: jobs started together on one home
//! make one grant, and the others adopt it.

use std::io::Write;

use serde::Serialize;

use super::exit;
use super::status::{StatusReport, lasts, report, rfc3339};
use crate::auth::{AuthError, CallCredentialsError, Freshened, Freshness, NoChatgpt};
use crate::config::Config;

/// A refresh a script asks for: now, or only when stale (with an optional minimum
/// validity on top of the usual rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshWhen {
    Now,
    IfStale {
        min_validity: Option<std::time::Duration>,
    },
}

impl From<RefreshWhen> for Freshness {
    fn from(want: RefreshWhen) -> Self {
        match want {
            RefreshWhen::Now => Freshness::Now,
            RefreshWhen::IfStale { min_validity } => Freshness::IfStale { min_validity },
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RefreshReport {
    refreshed: bool,
    #[serde(flatten)]
    status: StatusReport,
}

/// The exit code a script acts on, and what to tell its user.
pub(super) fn classify(e: &CallCredentialsError) -> (u8, String) {
    match e {
        CallCredentialsError::Missing(NoChatgpt::SignedOut) => {
            (exit::FAILED, "not signed in; run `authbridge login`".into())
        }
        CallCredentialsError::Missing(NoChatgpt::ApiKey) => (
            exit::FAILED,
            "signed in with an API key, which has no ChatGPT token to refresh".into(),
        ),
        CallCredentialsError::Auth(e @ AuthError::LoginRequired(_)) => {
            (exit::SIGN_IN_NEEDED, e.to_string())
        }
        CallCredentialsError::Auth(e @ AuthError::RefreshUnavailable(_)) => (
            exit::TRY_LATER,
            format!("{e}; nothing was lost, try again later"),
        ),
        CallCredentialsError::Auth(e) => (exit::FAILED, e.to_string()),
    }
}

/// An access token given alone is never refreshed: once it no longer lasts `min_validity`
/// (or has expired), only a new one helps. Says so, or `None` while it still serves.
pub(super) fn given_alone_expired(
    fresh: &Freshened,
    min_validity: Option<std::time::Duration>,
) -> Option<String> {
    let min = min_validity.unwrap_or(std::time::Duration::from_secs(1));
    if fresh.renewable || lasts(fresh.expires_at, min) {
        return None;
    }
    let when = fresh.expires_at.map(rfc3339).unwrap_or_default();
    Some(format!(
        "the access token (given alone, never refreshed) expires at {when}; sign in with a \
         new one: `authbridge login --with-access-token`"
    ))
}

/// What a successful freshen says on stdout.
pub(super) fn describe(fresh: &Freshened) -> String {
    let until = fresh
        .expires_at
        .map(|exp| format!("valid until {}", rfc3339(exp)))
        .unwrap_or_else(|| "valid (it names no expiry)".into());
    if fresh.refreshed {
        format!("Refreshed: the access token is {until}.")
    } else if !fresh.renewable {
        format!("No refresh possible or needed: the access token, given alone, is {until}.")
    } else {
        format!("No refresh needed: the access token is {until}.")
    }
}

/// Runs the refresh `want` asks for; returns the exit code. The outcome goes to `out`
/// (one line, or the status object with `refreshed` when `json`), a failure's reason to
/// `err`.
pub async fn refresh(
    config: &Config,
    want: RefreshWhen,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, String> {
    let cx = super::context(config)?;
    let result = cx.auth.freshen(want.into()).await;
    // A hook started by this rotation finishes before the command exits.
    cx.auth.settle().await;
    let min_validity = match want {
        RefreshWhen::Now => None,
        RefreshWhen::IfStale { min_validity } => min_validity,
    };
    let (code, line) = match &result {
        Ok(fresh) => match given_alone_expired(fresh, min_validity) {
            Some(line) => (exit::SIGN_IN_NEEDED, line),
            None => (exit::OK, describe(fresh)),
        },
        Err(e) => classify(e),
    };
    super::login_log::append(&config.codex_home, "login refresh", &line);
    if json {
        let shown = RefreshReport {
            refreshed: result.as_ref().is_ok_and(|f| f.refreshed),
            status: report(&cx.auth),
        };
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string(&shown).expect("plain data")
        );
    } else if code == exit::OK {
        let _ = writeln!(out, "{line}");
    }
    if code != exit::OK {
        let _ = writeln!(err, "authbridge: {line}");
    }
    Ok(code)
}

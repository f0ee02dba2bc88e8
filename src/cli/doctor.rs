//! `authbridge doctor`: what a runner's operator needs to see when a sign-in misbehaves,
//! without a secret in it: where each setting came from, the store and its fallback, the
//! credential's state, which lock files another process holds, the trusted-roots and proxy
//! variables, whether the keyring answers, and with `--network` whether the issuer and the
//! backend answer.
//!
//! Every probe is bounded: keyring calls by the store's own limit, network checks by the
//! configured timeouts, locks are tried once without waiting.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::network_env::{self, SetVariable};
use super::setting_sources::{Setting, settings};
use super::status::{StatusReport, report};
use crate::auth::file_lock::{self, CODEX_COMMIT_LOCKS, REFRESH_LOCK};
use crate::config::Config;

/// Environment variables authbridge reads besides the network ones, and what each does.
const ENV_VARIABLES: &[(&str, &str)] = &[
    ("CODEX_HOME", "the home"),
    ("CODEX_APP_SERVER_LOGIN_ISSUER", "replaces auth_issuer"),
    (
        "CODEX_REFRESH_TOKEN_URL_OVERRIDE",
        "where the refresh grant goes",
    ),
    ("CODEX_REVOKE_TOKEN_URL_OVERRIDE", "where sign-out revokes"),
    (
        "CODEX_AUTH_JSON",
        "seeds an empty store (its content is never shown)",
    ),
];

#[derive(Debug, Serialize)]
struct EnvVariable {
    name: &'static str,
    meaning: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Store {
    kind: &'static str,
    location: String,
    /// Set while `auto` keeps the credential in the file because the keyring failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    fallback: Option<String>,
}

#[derive(Debug, Serialize)]
struct Lock {
    file: &'static str,
    state: String,
}

#[derive(Debug, Serialize)]
struct Keyring {
    available: bool,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Network {
    /// The roots every outbound connection trusts, and where they came from.
    roots: String,
    /// The proxies in effect (no credentials).
    proxies: String,
    /// Which trusted-roots and proxy variables are set (see `network_env`).
    variables: Vec<SetVariable>,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    url: String,
    answered: bool,
    detail: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Doctor {
    codex_home: String,
    settings: Vec<Setting>,
    environment: Vec<EnvVariable>,
    store: Store,
    /// `None` when the store cannot be read; `credentialError` says why.
    credential: Option<StatusReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential_error: Option<String>,
    locks: Vec<Lock>,
    keyring: Keyring,
    network: Network,
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<Vec<Check>>,
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

fn locks(home: &Path) -> Vec<Lock> {
    std::iter::once(REFRESH_LOCK)
        .chain(CODEX_COMMIT_LOCKS)
        .map(|file| Lock {
            file,
            state: match file_lock::probe(&home.join(file)) {
                Ok(probe) => probe.as_str().to_owned(),
                Err(e) => format!("cannot be tried: {e}"),
            },
        })
        .collect()
}

async fn keyring(home: &Path) -> Keyring {
    let home = home.to_owned();
    let probed = tokio::task::spawn_blocking(move || crate::auth::storage::probe_keyring(&home))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    match probed {
        Ok(()) => Keyring {
            available: true,
            detail: "answered".into(),
        },
        Err(detail) => Keyring {
            available: false,
            detail,
        },
    }
}

/// Whether `url` answers HTTP at all (any status counts: the point is the path to it).
async fn check(name: &'static str, url: String, config: &Config) -> Check {
    let client = reqwest::Client::builder()
        .connect_timeout(config.backend_connect_timeout)
        .timeout(config.backend_connect_timeout.min(Duration::from_secs(15)))
        .redirect(reqwest::redirect::Policy::none())
        .build();
    let (answered, detail) = match client {
        Err(e) => (false, e.without_url().to_string()),
        Ok(client) => match client.get(&url).send().await {
            Ok(r) => (true, format!("HTTP {}", r.status().as_u16())),
            Err(e) => (false, crate::backend::client::describe_transport_error(&e)),
        },
    };
    Check {
        name,
        url,
        answered,
        detail,
    }
}

fn store_kind(config: &Config) -> &'static str {
    use crate::vocabulary::CredentialsStore as S;
    match config.credentials_store {
        S::File => "file",
        S::Keyring => "keyring",
        S::Auto => "auto",
        S::Ephemeral => "ephemeral",
    }
}

/// Prints the report (JSON with `json`); exit code 0 when the credential is usable.
pub async fn doctor(
    config: &Config,
    overrides: &[String],
    json: bool,
    network: bool,
    out: &mut dyn Write,
) -> Result<u8, String> {
    // An unreadable store is one of the things to diagnose, not a reason to stop.
    let cx = super::context(config);
    let home = &config.codex_home;
    let checks = if network {
        Some(vec![
            check("issuer", format!("{}/", config.issuer.issuer), config).await,
            check("backend", format!("{}/", config.chatgpt_base_url), config).await,
        ])
    } else {
        None
    };
    let doctor = Doctor {
        codex_home: home.display().to_string(),
        settings: settings(home, overrides),
        environment: ENV_VARIABLES
            .iter()
            .filter(|(name, _)| env_set(name))
            .map(|&(name, meaning)| EnvVariable { name, meaning })
            .collect(),
        store: Store {
            kind: store_kind(config),
            location: cx
                .as_ref()
                .map(|cx| cx.auth.store().describe())
                .unwrap_or_else(|_| "unreadable".into()),
            fallback: cx.as_ref().ok().and_then(|cx| cx.auth.store().warning()),
        },
        credential: cx.as_ref().ok().map(|cx| report(&cx.auth)),
        credential_error: cx.as_ref().err().cloned(),
        locks: locks(home),
        keyring: keyring(home).await,
        network: Network {
            roots: config.network.describe().0,
            proxies: config.network.describe().1,
            variables: network_env::set_variables(|name| std::env::var(name).ok()),
        },
        checks,
    };
    let usable = doctor.credential.as_ref().is_some_and(StatusReport::usable);
    let code = if usable { 0 } else { 1 };
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string(&doctor).expect("plain data")
        );
    } else {
        print_text(&doctor, out);
    }
    Ok(code)
}

fn print_text(d: &Doctor, out: &mut dyn Write) {
    let mut lines = vec![format!("home: {}", d.codex_home)];
    lines.push("settings (others are defaults):".into());
    if d.settings.is_empty() {
        lines.push("  none set".into());
    }
    for s in &d.settings {
        let over = if s.overridden.is_empty() {
            String::new()
        } else {
            format!(", replacing {}", s.overridden.join(", "))
        };
        lines.push(format!("  {}: {}{over}", s.key, s.source));
    }
    for e in &d.environment {
        lines.push(format!("  environment {} is set: {}", e.name, e.meaning));
    }
    lines.push(format!(
        "store: {} ({}){}",
        d.store.kind,
        d.store.location,
        d.store
            .fallback
            .as_deref()
            .map(|f| format!("; fallback: {f}"))
            .unwrap_or_default()
    ));
    match (&d.credential, &d.credential_error) {
        (Some(c), _) => lines.push(format!(
            "credential: {}{}{}{}",
            c.state,
            c.auth_mode.map(|m| format!(", {m}")).unwrap_or_default(),
            c.account_id
                .as_deref()
                .map(|a| format!(", account {a}"))
                .unwrap_or_default(),
            c.access_token_expires_at
                .as_deref()
                .map(|e| format!(", access token expires {e}"))
                .unwrap_or_default()
        )),
        (None, error) => lines.push(format!(
            "credential: cannot be read: {}",
            error.as_deref().unwrap_or("unknown")
        )),
    }
    for l in &d.locks {
        lines.push(format!("lock {}: {}", l.file, l.state));
    }
    lines.push(format!(
        "keyring: {} ({})",
        if d.keyring.available {
            "available"
        } else {
            "unavailable"
        },
        d.keyring.detail
    ));
    lines.push(format!("network: trusted roots: {}", d.network.roots));
    lines.push(format!("network: proxies: {}", d.network.proxies));
    if d.network.variables.is_empty() {
        lines.push("network: no CA or proxy variable set".into());
    }
    for v in &d.network.variables {
        lines.push(format!("network: {}={}", v.name, v.value));
    }
    for c in d.checks.iter().flatten() {
        lines.push(format!(
            "check {} {}: {} ({})",
            c.name,
            c.url,
            if c.answered { "answered" } else { "no answer" },
            c.detail
        ));
    }
    let _ = writeln!(out, "{}", lines.join("\n"));
}

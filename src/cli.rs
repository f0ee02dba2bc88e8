//! The sign-in commands of the command line (`login`, `login status`, `logout`): the same
//! flows, store and policy as the app-server's methods, reporting to a terminal instead of
//! a client. `main.rs` parses the arguments; everything else is here.
//!
//! The commands CI runners and scripts call live beside it, one file each: `status`
//! (`login status --json`), `refresh`, `token`, `transfer` (export, import), `doctor`; and
//! `login_log`, the record of command-line sign-ins; and `broker_admin`, the broker's admin
//! methods from any machine.

mod broker_admin;
mod doctor;
mod login_log;
mod network_env;
mod refresh;
mod setting_sources;
mod status;
mod token;
mod transfer;

pub use broker_admin::{AdminCommand, broker_admin};
pub use doctor::doctor;
pub use refresh::{RefreshWhen, refresh};
pub use token::{Source as TokenSource, token};
pub use transfer::{export, import};

/// The exit codes of the commands scripts call. Scripts branch on them, so they are part
/// of the contract, not details.
pub mod exit {
    /// Done; the credential is valid.
    pub const OK: u8 = 0;
    /// Anything else: not signed in, a bad configuration, an unreadable store.
    pub const FAILED: u8 = 1;
    /// A new sign-in is needed (the refresh token is dead, and latched as such).
    pub const SIGN_IN_NEEDED: u8 = 2;
    /// A transient failure; nothing was lost, try again later.
    pub const TRY_LATER: u8 = 3;
    /// `login import --if-newer`: the given document is older than the stored one.
    pub const OLDER: u8 = 4;
}

use std::io::Write;
use std::sync::Arc;

use secrecy::SecretString;
use tokio::sync::mpsc;

use crate::auth::{AuthEvent, AuthManager, Events, Identity};
use crate::config::Config;
use crate::login::{Logins, Started};

/// How `authbridge login` signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginMethod {
    Browser {
        open: bool,
    },
    DeviceCode,
    /// The key is read from standard input.
    ApiKey,
    /// A ChatGPT access token alone, read from standard input; never refreshed.
    AccessToken,
}

struct Context {
    auth: Arc<AuthManager>,
    logins: Arc<Logins>,
    events: mpsc::UnboundedReceiver<AuthEvent>,
}

fn context(config: &Config) -> Result<Context, String> {
    let (tx, events) = mpsc::unbounded_channel();
    let sink = Events::to(Arc::new(move |event| {
        let _ = tx.send(event);
    }));
    let (auth, issuer) = crate::wiring::managed_auth_to(config, sink).map_err(|e| e.to_string())?;
    let logins = crate::wiring::logins(config, &auth, issuer);
    Ok(Context {
        auth,
        logins,
        events,
    })
}

/// Signs in; returns once the sign-in succeeded or failed. Instructions go to `out`. The
/// outcome is recorded in the login log.
pub async fn login(
    config: &Config,
    method: LoginMethod,
    out: &mut (dyn Write + Send),
) -> Result<(), String> {
    let outcome = sign_in(config, method, out).await;
    let command = match method {
        LoginMethod::Browser { .. } => "login (browser)",
        LoginMethod::DeviceCode => "login --device-auth",
        LoginMethod::ApiKey => "login --with-api-key",
        LoginMethod::AccessToken => "login --with-access-token",
    };
    let line = match &outcome {
        Ok(signed_in) => format!("signed in ({signed_in})"),
        Err(e) => format!("failed: {e}"),
    };
    login_log::append(&config.codex_home, command, &line);
    outcome.map(drop)
}

/// The sign-in itself; returns who is signed in now, as the log shows it.
async fn sign_in(
    config: &Config,
    method: LoginMethod,
    out: &mut (dyn Write + Send),
) -> Result<String, String> {
    let mut cx = context(config)?;
    let started = match method {
        LoginMethod::AccessToken => {
            let token = read_secret_from_stdin(
                "access token",
                "printenv CODEX_ACCESS_TOKEN | authbridge login --with-access-token",
            )
            .await?;
            let superseded = cx
                .auth
                .login_access_token(token)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(old) = superseded.filter(|_| config.revoke_replaced)
                && let Err(e) = cx.logins.issuer().revoke(&old).await
            {
                let _ = writeln!(out, "warning: revoking the replaced credential: {e}");
            }
            let (_, exp) = cx.auth.token_details();
            let until = exp
                .map(|exp| format!("until {}", status::rfc3339(exp)))
                .unwrap_or_else(|| "with no expiry named".into());
            let _ = writeln!(
                out,
                "Signed in with an access token, valid {until} and never refreshed ({}).",
                cx.auth.store().describe()
            );
            let account = cx
                .auth
                .chatgpt_credentials()
                .ok()
                .and_then(|c| c.account_id)
                .unwrap_or_else(|| "unknown".into());
            return Ok(format!(
                "access token for ChatGPT account {account}, valid {until}, store {}",
                cx.auth.store().describe()
            ));
        }
        LoginMethod::ApiKey => {
            let key = read_secret_from_stdin(
                "API key",
                "printenv OPENAI_API_KEY | authbridge login --with-api-key",
            )
            .await?;
            cx.auth
                .login_api_key(key)
                .await
                .map_err(|e| e.to_string())?;
            let _ = writeln!(
                out,
                "Signed in with an API key ({}).",
                cx.auth.store().describe()
            );
            return Ok(format!("API key, store {}", cx.auth.store().describe()));
        }
        LoginMethod::Browser { .. } => cx.logins.start_browser("codex_cli_rs").await,
        LoginMethod::DeviceCode => cx.logins.start_device().await,
    }
    .map_err(|e| e.to_string())?;
    let login_id = match started {
        Started::Browser { login_id, auth_url } => {
            let _ = writeln!(
                out,
                "Open this URL in a browser to sign in to ChatGPT:\n\n{auth_url}\n"
            );
            if let LoginMethod::Browser { open: true } = method {
                open_browser(&auth_url);
            }
            login_id
        }
        Started::Device {
            login_id,
            verification_url,
            user_code,
            verification_url_complete,
        } => {
            let _ = writeln!(
                out,
                "Open {verification_url} on any device and enter this one-time code \
                 (expires in {} minutes):\n\n    {user_code}\n",
                config.device_code_timeout.as_secs().div_ceil(60)
            );
            if let Some(complete) = verification_url_complete {
                let _ = writeln!(out, "Or open {complete}, which has the code filled in.\n");
            }
            login_id
        }
    };
    let _ = out.flush();
    let outcome = tokio::select! {
        outcome = wait_for(&mut cx.events, &login_id) => outcome,
        _ = tokio::signal::ctrl_c() => Err("sign-in interrupted".into()),
    };
    cx.logins.cancel_all();
    cx.logins.wait_idle().await;
    outcome?;
    let _ = writeln!(out, "Signed in ({}).", cx.auth.store().describe());
    let account = cx
        .auth
        .chatgpt_credentials()
        .ok()
        .and_then(|c| c.account_id)
        .unwrap_or_else(|| "unknown".into());
    Ok(format!(
        "ChatGPT account {account}, store {}",
        cx.auth.store().describe()
    ))
}

async fn wait_for(
    events: &mut mpsc::UnboundedReceiver<AuthEvent>,
    login_id: &str,
) -> Result<(), String> {
    while let Some(event) = events.recv().await {
        match event {
            AuthEvent::LoggedIn {
                login_id: Some(id), ..
            } if id == login_id => return Ok(()),
            AuthEvent::LoginFailed {
                login_id: id,
                error,
            } if id == login_id => {
                return Err(error);
            }
            _ => {}
        }
    }
    Err("the sign-in ended without an answer".into())
}

/// Reads a secret (`what`) from standard input; `example` shows how to pipe it in.
async fn read_secret_from_stdin(what: &str, example: &str) -> Result<SecretString, String> {
    let text = tokio::task::spawn_blocking(|| {
        let mut text = zeroize::Zeroizing::new(String::new());
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| text)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot read the {what} from standard input: {e}"))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(format!(
            "no {what} on standard input (pipe it in: `{example}`)"
        ));
    }
    Ok(SecretString::from(key))
}

/// Best effort: a failure only means the user opens the printed URL themselves.
fn open_browser(url: &str) {
    let command = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    if let Err(e) = std::process::Command::new(command)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        tracing::info!("cannot open a browser ({command}): {e}");
    }
}

/// Signs out: revokes a managed refresh token (best effort; not with `no_revoke` or
/// `authbridge.revoke_on_logout = false`) and deletes the credential.
pub async fn logout(
    config: &Config,
    no_revoke: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), String> {
    let cx = context(config)?;
    let had = cx.auth.identity().is_some();
    let revoke = config.revoke_on_logout && !no_revoke;
    let mut revoked = "no refresh token to revoke";
    if let Some(refresh_token) = cx.auth.logout().await.map_err(|e| e.to_string())? {
        revoked = "refresh token kept at the issuer";
        if revoke {
            revoked = match cx.logins.issuer().revoke(&refresh_token).await {
                Ok(()) => "refresh token revoked",
                Err(e) => {
                    let _ = writeln!(out, "warning: {e}; the credential is deleted all the same");
                    "revocation failed"
                }
            };
        }
    }
    login_log::append(
        &config.codex_home,
        "logout",
        &format!(
            "{} ({revoked})",
            if had { "signed out" } else { "not signed in" }
        ),
    );
    let _ = writeln!(
        out,
        "{}",
        if had { "Signed out." } else { "Not signed in." }
    );
    Ok(())
}

/// `login status --json`: the status object on `out`; returns whether the credential is
/// signed in and usable.
pub fn status_json(config: &Config, out: &mut dyn Write) -> Result<bool, String> {
    let cx = context(config)?;
    let shown = status::report(&cx.auth);
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string(&shown).expect("plain data")
    );
    Ok(shown.usable())
}

/// Prints who is signed in, never a secret. Returns whether someone is.
pub fn status(config: &Config, out: &mut dyn Write) -> Result<bool, String> {
    let cx = context(config)?;
    let store = cx.auth.store().describe();
    let signed_in = match cx.auth.identity() {
        None => {
            let _ = writeln!(out, "Not signed in (store: {store}).");
            false
        }
        Some(Identity::ApiKey) => {
            let _ = writeln!(out, "Signed in with an API key (store: {store}).");
            true
        }
        Some(Identity::Chatgpt { email, plan, .. }) => {
            let account = cx
                .auth
                .chatgpt_credentials()
                .ok()
                .and_then(|c| c.account_id)
                .unwrap_or_else(|| "unknown".into());
            let _ = writeln!(
                out,
                "Signed in with ChatGPT: {} (account {account}, plan {}; store: {store}).",
                email.as_deref().unwrap_or("no email"),
                serde_json::to_value(plan)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            );
            true
        }
    };
    if let Some(warning) = cx.auth.store().warning() {
        let _ = writeln!(out, "warning: {warning}");
    }
    let (roots, proxies) = config.network.describe();
    let _ = writeln!(out, "Trusted roots: {roots}.\nProxies: {proxies}.");
    Ok(signed_in)
}

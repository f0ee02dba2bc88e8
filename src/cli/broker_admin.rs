//! `authbridge broker-admin`: the broker's admin methods from any machine that reaches it,
//! over the crate's own JSON-RPC client. `login` has the broker run the device-code flow,
//! so the refresh token goes from the issuer to the broker's store and never to this
//! machine; `import` moves a sign-in in and leaves the file without a usable refresh token,
//! as `broker --import-auth-json` does.
//!
//! Exit codes: [`exit::OK`]; [`exit::FAILED`] when the broker refused (the token, or the
//! request) or the sign-in did not complete (the message says why); [`exit::TRY_LATER`]
//! when the broker cannot be reached or the connection was lost.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::mpsc;

use super::exit;
use crate::auth::storage;
use crate::protocol::credential::*;
use crate::protocol::methods::{self, CREDENTIAL_LOGIN_COMPLETED, Method};
use crate::rpc::client::{CallError, Client, ClientHandler, ClientRequest};
use crate::rpc::envelope::SecretJson;
use crate::rpc::ws_client::{self, WsClientOptions, WsTarget};
use crate::vocabulary::CredentialName;

/// Bound on one admin request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on waiting for the user to enter the code: beyond the broker's own limit (15
/// minutes by default), which ends the sign-in and reports it.
const LOGIN_WAIT: Duration = Duration::from_secs(20 * 60);

/// What to ask the broker.
#[derive(Debug, Clone)]
pub enum AdminCommand {
    List { json: bool },
    Import { name: CredentialName, path: PathBuf },
    Delete { name: CredentialName, revoke: bool },
    Login { name: CredentialName },
}

/// The admin methods as the client calls them: the protocol's own types.
macro_rules! client_request {
    ($ty:ident, $method:ty) => {
        struct $ty;
        impl ClientRequest for $ty {
            const METHOD: &'static str = <$method as Method>::NAME;
            type Params = <$method as Method>::Params;
            type Result = <$method as Method>::Result;
        }
    };
}

client_request!(List, methods::CredentialList);
client_request!(Import, methods::CredentialImport);
client_request!(Delete, methods::CredentialDelete);
client_request!(LoginStart, methods::CredentialLoginStart);

/// Passes `credential/login/completed` on to the waiting command.
struct Completions(mpsc::UnboundedSender<CredentialLoginCompleted>);

impl ClientHandler for Completions {
    fn notification(&self, method: &str, params: Option<SecretJson>) {
        if method != CREDENTIAL_LOGIN_COMPLETED {
            return;
        }
        let parsed = params.and_then(|p| {
            crate::protocol::decode::decode_object::<CredentialLoginCompleted>(p.get()).ok()
        });
        if let Some(completed) = parsed {
            let _ = self.0.send(completed);
        }
    }
}

fn read_token(path: &Path) -> Result<SecretString, String> {
    let bytes = crate::regular_file::read(path)
        .map_err(|e| format!("cannot read --token-file {}: {e}", path.display()))?;
    let bytes = zeroize::Zeroizing::new(bytes);
    let token = std::str::from_utf8(&bytes)
        .map_err(|_| format!("--token-file {} is not UTF-8", path.display()))?
        .trim();
    if token.is_empty() {
        return Err(format!("--token-file {} is empty", path.display()));
    }
    Ok(SecretString::from(token))
}

/// A failed call as the operator reads it, with its exit code.
fn failed(err: &mut dyn Write, what: &str, e: CallError) -> u8 {
    let (code, line) = match &e {
        CallError::Rejected { message, .. } => (exit::FAILED, format!("{what}: {message}")),
        CallError::Disconnected | CallError::Timeout(_) => {
            (exit::TRY_LATER, format!("{what}: {e}"))
        }
        _ => (exit::FAILED, format!("{what}: {e}")),
    };
    let _ = writeln!(err, "authbridge: {line}");
    code
}

fn time(seconds: Option<i64>) -> String {
    seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(|s| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(s))
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

fn print_list(out: &mut dyn Write, list: &CredentialListResponse) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<20} {:<14} {:<20} {:<28} {:<10} {:<21} {:<21} GENERATION",
        "NAME", "STATE", "ACCOUNT", "EMAIL", "PLAN", "EXPIRES", "LAST REFRESH"
    )?;
    for c in &list.credentials {
        let state = match (c.state, &c.auth_error) {
            (CredentialState::Ok, _) => "ok".to_owned(),
            (CredentialState::LoginRequired, Some(why)) => format!("login ({why})"),
            (CredentialState::LoginRequired, None) => "login".to_owned(),
        };
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:<20} {:<14} {:<20} {:<28} {:<10} {:<21} {:<21} {}",
            c.name.as_str(),
            state,
            dash(&c.account_id),
            dash(&c.email),
            dash(&c.plan_type),
            time(c.expires_at),
            time(c.last_refresh),
            c.generation
        )?;
    }
    Ok(())
}

/// Runs one admin command against the broker at `url`; returns the exit code.
pub async fn broker_admin(
    url: &str,
    token_file: Option<&Path>,
    command: AdminCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, String> {
    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
        return Err(format!(
            "unsupported --broker {url:?}: use ws://HOST:PORT or wss://HOST:PORT"
        ));
    }
    let bearer = token_file.map(read_token).transpose()?;
    // An import is checked (and its file read) before anything goes out.
    let import = match &command {
        AdminCommand::Import { path, .. } => {
            Some(storage::read_import(path).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let network = crate::net::Network::from_env().map_err(|e| e.to_string())?;
    let (completions, mut completed) = mpsc::unbounded_channel();
    let target = WsTarget {
        url: url.to_owned(),
        bearer,
    };
    let client: Client = match ws_client::connect_with(
        &target,
        &WsClientOptions::new(network),
        Arc::new(Completions(completions)),
    )
    .await
    {
        Ok(client) => client,
        // Asking again with the same token cannot help.
        Err(ws_client::ConnectError::Refused(status)) if status.as_u16() == 401 => {
            let _ = writeln!(
                err,
                "authbridge: the broker at {url} refused the token (not a principal's)"
            );
            return Ok(exit::FAILED);
        }
        Err(e) => {
            let _ = writeln!(err, "authbridge: cannot reach the broker at {url}: {e}");
            return Ok(exit::TRY_LATER);
        }
    };
    let write = |e: std::io::Error| format!("cannot write the output: {e}");
    match command {
        AdminCommand::List { json } => {
            let list = match client
                .request::<List>(&CredentialListParams {}, REQUEST_TIMEOUT)
                .await
            {
                Ok(list) => list,
                Err(e) => return Ok(failed(err, "credential/list", e)),
            };
            if json {
                let text = serde_json::to_string_pretty(&list).map_err(|e| e.to_string())?;
                writeln!(out, "{text}").map_err(write)?;
            } else {
                print_list(out, &list).map_err(write)?;
            }
        }
        AdminCommand::Import { name, path } => {
            let doc = import.expect("read above");
            let text = String::from_utf8(doc.to_compact().to_vec())
                .map_err(|_| "the document is not UTF-8".to_owned())?;
            let params = CredentialImportParams {
                credential: name.clone(),
                auth_json: AuthJson::new(text),
            };
            let imported = match client.request::<Import>(&params, REQUEST_TIMEOUT).await {
                Ok(imported) => imported,
                Err(e) => return Ok(failed(err, "credential/import", e)),
            };
            // The broker owns the refresh token now: this file must not spend it.
            storage::retire_import(&path, doc).map_err(|e| {
                format!(
                    "imported {name}, but {} still holds its refresh token: {e}",
                    path.display()
                )
            })?;
            writeln!(
                out,
                "imported {name} (generation {}); {} keeps no usable refresh token",
                imported.generation,
                path.display()
            )
            .map_err(write)?;
        }
        AdminCommand::Delete { name, revoke } => {
            let params = CredentialDeleteParams {
                credential: name.clone(),
                revoke,
            };
            if let Err(e) = client.request::<Delete>(&params, REQUEST_TIMEOUT).await {
                return Ok(failed(err, "credential/delete", e));
            }
            let how = if revoke {
                " (refresh token revoked)"
            } else {
                ""
            };
            writeln!(out, "deleted {name}{how}").map_err(write)?;
        }
        AdminCommand::Login { name } => {
            let params = CredentialLoginStartParams {
                credential: name.clone(),
                kind: CredentialLoginType::ChatgptDeviceCode,
            };
            let started = match client.request::<LoginStart>(&params, REQUEST_TIMEOUT).await {
                Ok(started) => started,
                Err(e) => return Ok(failed(err, "credential/login/start", e)),
            };
            writeln!(
                out,
                "To sign {name} in, open {} and enter the code {}",
                started.verification_url, started.user_code
            )
            .and_then(|()| out.flush())
            .map_err(write)?;
            let waited = tokio::time::timeout(LOGIN_WAIT, async {
                loop {
                    tokio::select! {
                        done = completed.recv() => match done {
                            Some(done) if done.login_id == started.login_id => return Some(done),
                            Some(_) => {}
                            None => return None,
                        },
                        () = client.closed() => return None,
                    }
                }
            })
            .await;
            match waited {
                Ok(Some(done)) if done.success => {
                    writeln!(out, "signed in {name}").map_err(write)?;
                }
                Ok(Some(done)) => {
                    let why = done.error.unwrap_or_else(|| "no reason given".into());
                    let _ = writeln!(err, "authbridge: the sign-in of {name} failed: {why}");
                    return Ok(exit::FAILED);
                }
                Ok(None) => {
                    let _ = writeln!(
                        err,
                        "authbridge: the connection to the broker was lost before the sign-in ended"
                    );
                    return Ok(exit::TRY_LATER);
                }
                Err(_) => {
                    let _ = writeln!(
                        err,
                        "authbridge: no outcome of the sign-in within {}",
                        humantime::format_duration(LOGIN_WAIT)
                    );
                    return Ok(exit::TRY_LATER);
                }
            }
        }
    }
    client.close();
    Ok(exit::OK)
}

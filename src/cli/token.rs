//! `authbridge token`: the current access token alone on stdout, for a script or a custom
//! model provider's `auth.command`. From the home it is refreshed first through the same
//! path as `login refresh`; from a broker it is asked of the broker with the worker's own
//! client, so a runner using the broker holds no refresh token at all. A refresh token is
//! never printed: neither source hands one out.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::exit;
use super::refresh::{classify, given_alone_expired};
use super::status::lasts;
use crate::auth::{AuthError, CallCredentialsError, Freshness};
use crate::config::Config;
use crate::vocabulary::CredentialName;
use crate::worker::broker_client::{BrokerClient, BrokerError, BrokerTarget};

/// Where the token comes from.
pub enum Source {
    /// The home's credential, through the configuration.
    Home,
    /// `ws://HOST:PORT` of a broker, the file holding its bearer token, and the credential.
    Broker {
        url: String,
        token_file: Option<PathBuf>,
        credential: CredentialName,
    },
}

/// Prints the token; returns the exit code (that of `login refresh` for each failure).
pub async fn token(
    config: &Config,
    source: Source,
    min_validity: Option<Duration>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, String> {
    match source {
        Source::Home => from_home(config, min_validity, out, err).await,
        Source::Broker {
            url,
            token_file,
            credential,
        } => from_broker(url, token_file, credential, min_validity, out, err).await,
    }
}

/// The token and a newline: a script that gets nothing must see a failure, not exit 0.
fn print(out: &mut dyn Write, token: &secrecy::SecretString) -> Result<u8, String> {
    writeln!(out, "{}", token.expose_secret())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the token: {e}"))?;
    Ok(exit::OK)
}

async fn from_home(
    config: &Config,
    min_validity: Option<Duration>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, String> {
    let cx = super::context(config)?;
    let result = cx.auth.freshen(Freshness::IfStale { min_validity }).await;
    cx.auth.settle().await;
    let token = match result {
        Ok(fresh) => {
            if let Some(line) = given_alone_expired(&fresh, min_validity) {
                let _ = writeln!(err, "authbridge: {line}");
                return Ok(exit::SIGN_IN_NEEDED);
            }
            fresh.credentials.access_token
        }
        // As before a backend call: a proactive grant that fails for now leaves a token
        // that still works, unless the caller asked for more validity than it has left.
        Err(CallCredentialsError::Auth(e @ AuthError::RefreshUnavailable(_)))
            if min_validity.is_none()
                && lasts(cx.auth.token_details().1, Duration::from_secs(1)) =>
        {
            let _ = writeln!(err, "warning: {e}; printing the current token");
            cx.auth
                .chatgpt_credentials()
                .map_err(|_| "signed out meanwhile".to_owned())?
                .access_token
        }
        Err(e) => {
            let (code, line) = classify(&e);
            let _ = writeln!(err, "authbridge: {line}");
            return Ok(code);
        }
    };
    print(out, &token)
}

async fn from_broker(
    url: String,
    token_file: Option<PathBuf>,
    credential: CredentialName,
    min_validity: Option<Duration>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, String> {
    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
        return Err(format!(
            "unsupported --broker {url:?}: use ws://HOST:PORT or wss://HOST:PORT"
        ));
    }
    let token = token_file
        .as_ref()
        .map(crate::worker::read_token)
        .transpose()?;
    let network = crate::net::Network::from_env().map_err(|e| e.to_string())?;
    let broker = BrokerClient::start(BrokerTarget {
        url,
        token,
        network,
        credential,
    });
    let mut answer = broker.read().await;
    if let (Ok(current), Some(min)) = (&answer, min_validity)
        && !lasts(current.expires_at, min)
    {
        answer = broker.refresh(&current.access_token).await;
    }
    match answer {
        Ok(credential) => {
            if let Some(min) = min_validity.filter(|min| !lasts(credential.expires_at, *min)) {
                let _ = writeln!(
                    err,
                    "warning: the broker's token expires in less than {}",
                    humantime::format_duration(min)
                );
            }
            print(out, &credential.access_token)
        }
        Err(e) => {
            let code = match e {
                BrokerError::Permanent { .. } => exit::SIGN_IN_NEEDED,
                // A name the broker does not serve to this token: the command is wrong.
                BrokerError::Unknown { .. } => exit::FAILED,
                BrokerError::Transient { .. } => exit::TRY_LATER,
            };
            let _ = writeln!(err, "authbridge: the broker gave no token: {e}");
            Ok(code)
        }
    }
}

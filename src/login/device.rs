//! The device-code sign-in: the user types a short code on another device; the server
//! polls the issuer until it hands out an authorization code (with the PKCE pair it made).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Logins;
use super::issuer::{DeviceGrant, IssuerClient, IssuerError, UserCode};

impl Logins {
    pub(super) async fn run_device(
        self: Arc<Self>,
        login_id: String,
        code: UserCode,
        cancel: CancellationToken,
        limit: Duration,
    ) {
        let outcome = self.poll_device(&login_id, &code, &cancel, limit).await;
        if let Err(message) = outcome {
            self.auth.login_failed(login_id.clone(), message);
        }
        self.finish(&login_id);
    }

    async fn poll_device(
        &self,
        login_id: &str,
        code: &UserCode,
        cancel: &CancellationToken,
        limit: Duration,
    ) -> Result<(), String> {
        let grant = await_device_grant(&self.issuer, code, cancel, limit).await?;
        let redirect_uri = self.issuer.endpoints().device_redirect_uri();
        self.complete(
            login_id,
            &grant.authorization_code,
            &redirect_uri,
            &grant.code_verifier,
            cancel,
            false,
        )
        .await
    }
}

/// Polls the issuer at its interval until the user entered `code` (the grant to exchange
/// at `device_redirect_uri`), within `limit`, until `cancel`; the error is the sentence
/// the sign-in reports. Shared by the app-server's sign-in and the broker's.
pub(crate) async fn await_device_grant(
    issuer: &IssuerClient,
    code: &UserCode,
    cancel: &CancellationToken,
    limit: Duration,
) -> Result<DeviceGrant, String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "device auth timed out after {}",
                describe_minutes(limit)
            ));
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err("Login server error: Login was not completed".into()),
            _ = tokio::time::sleep(code.interval.min(left)) => {}
        }
        let poll = tokio::select! {
            _ = cancel.cancelled() => return Err("Login server error: Login was not completed".into()),
            poll = issuer.poll_device(code) => poll,
        };
        match poll {
            Ok(None) => {}
            Ok(Some(grant)) => return Ok(grant),
            // A network blip is not the user's answer: poll again.
            Err(e @ IssuerError::Transport { .. }) => {
                tracing::info!("device code poll: {e}; polling again");
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn describe_minutes(limit: Duration) -> String {
    let minutes = limit.as_secs() / 60;
    if minutes >= 1 && limit.as_secs().is_multiple_of(60) {
        format!("{minutes} minute{}", if minutes == 1 { "" } else { "s" })
    } else {
        format!("{} seconds", limit.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_time_limit_reads_as_the_reference_words_it() {
        use std::time::Duration;
        assert_eq!(
            super::describe_minutes(Duration::from_secs(900)),
            "15 minutes"
        );
        assert_eq!(
            super::describe_minutes(Duration::from_millis(1500)),
            "1.5 seconds"
        );
    }
}

//! The account's security reminder: `GET {base}/wham/security-setup`, through the 401 loop.
//! No reminder (a 404, an empty or unreadable notice) reads as none: the read is advisory
//! and must never fail a client's start-up for want of one.

use serde::Deserialize;

use super::client::{BackendClient, BackendError, Caller};
use crate::protocol::startup::{AccountSecuritySetupNotice, GetAccountSecuritySetupResponse};

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    notice: Option<serde_json::Value>,
}

impl BackendClient {
    pub async fn security_setup(
        &self,
        caller: &Caller,
    ) -> Result<GetAccountSecuritySetupResponse, BackendError> {
        let url = format!(
            "{}/wham/security-setup",
            self.base_url().trim_end_matches('/')
        );
        let notice = match self.get_json::<Answer>(caller, &url).await {
            Ok(answer) => answer
                .notice
                .and_then(|n| serde_json::from_value::<AccountSecuritySetupNotice>(n).ok())
                .filter(|n| n.action.url.starts_with("https://")),
            Err(BackendError::Status { status, .. }) if status.as_u16() == 404 => None,
            Err(e) => return Err(e),
        };
        Ok(GetAccountSecuritySetupResponse { notice })
    }
}

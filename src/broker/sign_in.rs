//! `credential/login/start`: the broker itself signs a name in with the device-code flow
//! (the same polling as the app-server's), so the refresh token goes from the issuer to the
//! store and never to the admin's machine. The outcome goes to the connection that started
//! it as `credential/login/completed`; a success replaces the credential, and the workers
//! that use it hear `credential/changed`.
//!
//! Bounded: at most [`MAX_PENDING`] sign-ins at once, each within the device-code time
//! limit, each ended by `credential/login/cancel`, by the close of the connection that
//! started it, or by the broker's shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::credentials::Entry;
use crate::auth::storage::{AuthDocument, TokenData};
use crate::login::device::await_device_grant;
use crate::login::{IssuerClient, IssuerError};
use crate::protocol::credential::{CredentialLoginCompleted, CredentialLoginStartResponse};
use crate::protocol::methods::CREDENTIAL_LOGIN_COMPLETED;
use crate::rpc::Peer;

/// Sign-ins waiting for their user at once.
pub(crate) const MAX_PENDING: usize = 16;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SignInError {
    #[error("{MAX_PENDING} sign-ins are already waiting; cancel one or let it end")]
    TooMany,
    #[error(transparent)]
    Issuer(#[from] IssuerError),
}

pub(crate) struct SignIns {
    issuer: IssuerClient,
    limit: Duration,
    pending: Mutex<HashMap<String, CancellationToken>>,
    shutdown: CancellationToken,
}

impl SignIns {
    pub fn new(issuer: IssuerClient, limit: Duration, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            issuer,
            limit,
            pending: Mutex::new(HashMap::new()),
            shutdown,
        })
    }

    /// Asks the issuer for a code and waits for the user in a task of its own.
    pub async fn start(
        self: &Arc<Self>,
        entry: Arc<Entry>,
        peer: Peer,
    ) -> Result<CredentialLoginStartResponse, SignInError> {
        if crate::unpoisoned::lock(&self.pending).len() >= MAX_PENDING {
            return Err(SignInError::TooMany);
        }
        let code = self.issuer.request_user_code().await?;
        let login_id = uuid::Uuid::new_v4().to_string();
        let cancel = self.shutdown.child_token();
        {
            let mut pending = crate::unpoisoned::lock(&self.pending);
            if pending.len() >= MAX_PENDING {
                return Err(SignInError::TooMany);
            }
            pending.insert(login_id.clone(), cancel.clone());
        }
        let started = CredentialLoginStartResponse {
            login_id: login_id.clone(),
            verification_url: self.issuer.endpoints().device_verification_url(),
            user_code: code.user_code.clone(),
        };
        tracing::info!(login_id, credential = %entry.name, "broker device code sign-in started");
        let this = self.clone();
        tokio::spawn(async move {
            // Nobody is left to tell, nor to cancel it: the sign-in ends with its connection.
            let outcome = tokio::select! {
                outcome = this.wait(&entry, &code, &cancel) => outcome,
                () = peer.closed() => {
                    cancel.cancel();
                    Err("the admin connection closed before the sign-in ended".into())
                }
            };
            crate::unpoisoned::lock(&this.pending).remove(&login_id);
            let completed = CredentialLoginCompleted {
                login_id: login_id.clone(),
                credential: entry.name.clone(),
                success: outcome.is_ok(),
                error: outcome.err(),
            };
            tracing::info!(login_id, credential = %entry.name, success = completed.success, "broker sign-in ended");
            let _ = peer.notify(CREDENTIAL_LOGIN_COMPLETED, &completed).await;
        });
        Ok(started)
    }

    async fn wait(
        &self,
        entry: &Entry,
        code: &crate::login::issuer::UserCode,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let grant = await_device_grant(&self.issuer, code, cancel, self.limit).await?;
        let redirect_uri = self.issuer.endpoints().device_redirect_uri();
        let signed_in = self
            .issuer
            .exchange_code(
                &grant.authorization_code,
                &redirect_uri,
                &grant.code_verifier,
            )
            .await
            .map_err(|e| e.to_string())?;
        if cancel.is_cancelled() {
            return Err("Login was not completed".into());
        }
        let tokens = TokenData {
            id_token: signed_in.id_token,
            access_token: signed_in.access_token,
            refresh_token: signed_in.refresh_token,
            account_id: None,
            other: Default::default(),
        };
        let doc = AuthDocument::default().with_chatgpt(tokens, None, SystemTime::now());
        entry
            .owner
            .import(doc)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Ends the pending sign-in `login_id`; false when there is none of that id.
    pub fn cancel(&self, login_id: &str) -> bool {
        match crate::unpoisoned::lock(&self.pending).get(login_id) {
            Some(cancel) if !cancel.is_cancelled() => {
                cancel.cancel();
                true
            }
            _ => false,
        }
    }
}

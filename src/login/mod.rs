//! Managed ChatGPT sign-in: the browser flow (PKCE through a local callback server) and
//! the device-code flow, against a configurable OAuth issuer.
//!
//! At most one sign-in is pending at a time, as in the reference: starting one ends the
//! previous one, which reports "Login was not completed". Each runs in its own task, which
//! ends by itself (time limit), on `account/login/cancel`, or on logout, and always reports
//! its end once: a success through the auth state (`account/login/completed` then
//! `account/updated`), a failure as `account/login/completed {success: false}`.

pub(crate) mod authorize;
mod browser;
mod callback;
pub(crate) mod device;
pub(crate) mod issuer;
mod pages;
mod pkce;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::storage::{SecretText, TokenData};
use crate::auth::{AuthManager, PolicyError};
pub(crate) use callback::BindError;
pub(crate) use issuer::{IssuerClient, IssuerError};

/// What the flows need from the configuration.
#[derive(Clone)]
pub(crate) struct LoginSettings {
    /// 0 takes any free port; the default port falls back to the reference's second one.
    pub callback_port: u16,
    pub browser_timeout: Duration,
    pub device_timeout: Duration,
    pub workspaces: Option<Vec<String>>,
    /// Whether a sign-in revokes the refresh token of the credential it replaces. Off by
    /// default: that token may be the one other machines still use (openai/codex #22577).
    pub revoke_replaced: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("failed to start login server: {0}")]
    Bind(#[from] BindError),
    #[error(transparent)]
    Issuer(#[from] IssuerError),
}

/// A sign-in that started: what the user needs to finish it.
pub(crate) enum Started {
    Browser {
        login_id: String,
        auth_url: String,
    },
    Device {
        login_id: String,
        verification_url: String,
        user_code: String,
        verification_url_complete: Option<String>,
    },
}

struct Pending {
    login_id: String,
    cancel: CancellationToken,
}

pub(crate) struct Logins {
    auth: Arc<AuthManager>,
    issuer: IssuerClient,
    settings: LoginSettings,
    pending: Mutex<Option<Pending>>,
    tasks: TaskTracker,
}

impl Logins {
    pub fn new(auth: Arc<AuthManager>, issuer: IssuerClient, settings: LoginSettings) -> Arc<Self> {
        Arc::new(Self {
            auth,
            issuer,
            settings,
            pending: Mutex::new(None),
            tasks: TaskTracker::new(),
        })
    }

    pub fn issuer(&self) -> &IssuerClient {
        &self.issuer
    }

    /// Makes `login_id` the pending sign-in, ending the one before it.
    fn begin(&self, login_id: &str) -> CancellationToken {
        let cancel = CancellationToken::new();
        let previous = crate::unpoisoned::lock(&self.pending).replace(Pending {
            login_id: login_id.to_owned(),
            cancel: cancel.clone(),
        });
        if let Some(previous) = previous {
            previous.cancel.cancel();
        }
        cancel
    }

    fn finish(&self, login_id: &str) {
        let mut pending = crate::unpoisoned::lock(&self.pending);
        if pending.as_ref().is_some_and(|p| p.login_id == login_id) {
            *pending = None;
        }
    }

    /// Ends the pending sign-in named `login_id`; false when it is not the pending one.
    pub fn cancel(&self, login_id: &str) -> bool {
        let pending = crate::unpoisoned::lock(&self.pending);
        match pending.as_ref() {
            Some(p) if p.login_id == login_id && !p.cancel.is_cancelled() => {
                p.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    /// Ends whatever sign-in is pending (logout, shutdown).
    pub fn cancel_all(&self) {
        if let Some(p) = crate::unpoisoned::lock(&self.pending).as_ref() {
            p.cancel.cancel();
        }
    }

    /// Waits until every flow task has ended (after `cancel_all`, they end promptly).
    pub async fn wait_idle(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }

    pub async fn start_browser(self: &Arc<Self>, originator: &str) -> Result<Started, StartError> {
        self.auth.allow_managed_login()?;
        // The pending sign-in ends first, so that it frees the port (and reports "not
        // completed") before this one binds it.
        let login_id = uuid::Uuid::new_v4().to_string();
        let cancel = self.begin(&login_id);
        let port = self.settings.callback_port;
        let fallback =
            (port == crate::config::DEFAULT_LOGIN_CALLBACK_PORT).then_some(callback::FALLBACK_PORT);
        let listener = match callback::bind(port, fallback).await {
            Ok(listener) => listener,
            Err(e) => {
                self.finish(&login_id);
                return Err(e.into());
            }
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
        let redirect_uri = format!("http://127.0.0.1:{port}/auth/callback");
        let pkce = pkce::Pkce::generate();
        let state = pkce::state();
        let auth_url = authorize::authorize_url(
            self.issuer.endpoints(),
            &authorize::AuthorizeRequest {
                redirect_uri: &redirect_uri,
                code_challenge: &pkce.challenge,
                state: state.expose(),
                originator,
                allowed_workspaces: self.settings.workspaces.as_deref(),
            },
        );
        let (events_tx, events) = mpsc::channel(8);
        let (phase, phase_rx) = watch::channel(browser::Phase::Waiting);
        let routes = Arc::new(browser::CallbackRoutes::new(state, events_tx, phase_rx));
        let stop_server = CancellationToken::new();
        let server = tokio::spawn(callback::serve(listener, routes, stop_server.clone()));
        tracing::info!(login_id, port, "browser sign-in started");
        let run = browser::BrowserRun {
            login_id: login_id.clone(),
            cancel,
            events,
            phase,
            redirect_uri,
            verifier: pkce.verifier,
            timeout: self.settings.browser_timeout,
            stop_server,
            server,
        };
        self.tasks.spawn(self.clone().run_browser(run));
        Ok(Started::Browser { login_id, auth_url })
    }

    pub async fn start_device(self: &Arc<Self>) -> Result<Started, StartError> {
        self.auth.allow_managed_login()?;
        // Before any code is shown: a server without device code says so here.
        let code = self.issuer.request_user_code().await?;
        let login_id = uuid::Uuid::new_v4().to_string();
        let cancel = self.begin(&login_id);
        let started = Started::Device {
            login_id: login_id.clone(),
            verification_url: self.issuer.endpoints().device_verification_url(),
            user_code: code.user_code.clone(),
            verification_url_complete: code.verification_url_complete.clone(),
        };
        tracing::info!(login_id, "device code sign-in started");
        let limit = self.settings.device_timeout;
        self.tasks
            .spawn(self.clone().run_device(login_id, code, cancel, limit));
        Ok(started)
    }

    /// Exchanges an authorization code and stores the credential: the ending shared by
    /// both flows. The API-key exchange is the browser flow's only, as in the reference.
    async fn complete(
        &self,
        login_id: &str,
        code: &SecretText,
        redirect_uri: &str,
        verifier: &SecretText,
        cancel: &CancellationToken,
        with_api_key: bool,
    ) -> Result<(), String> {
        let signed_in = self
            .issuer
            .exchange_code(code, redirect_uri, verifier)
            .await
            .map_err(|e| e.to_string())?;
        let api_key = if with_api_key {
            self.issuer.exchange_api_key(&signed_in.id_token).await
        } else {
            None
        };
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
        let superseded = self
            .auth
            .login_managed(tokens, api_key, Some(login_id.to_owned()))
            .await
            .map_err(|e| e.to_string())?;
        if let Some(old) = superseded.filter(|_| self.settings.revoke_replaced) {
            let issuer = self.issuer.clone();
            self.tasks.spawn(async move {
                if let Err(e) = issuer.revoke(&old).await {
                    tracing::info!("revoking the superseded refresh token: {e}");
                }
            });
        }
        Ok(())
    }
}

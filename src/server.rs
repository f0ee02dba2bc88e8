//! Wiring: configuration in, a server that serves connections out. Each transport brings
//! its own connection policy in its [`Link`]; the server only passes it along.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, Announcer, Api, Connections, Threads};
use crate::auth::storage::{CredentialStore, StorageError};
use crate::auth::{AuthEvent, AuthManager, AuthSetup, Events, Policy};
use crate::backend::{BackendClient, BackendOptions, ClientBuildError};
use crate::config::Config;
use crate::login::{IssuerClient, LoginSettings, Logins};
use crate::rpc::{ConnectionOptions, Dispatcher, serve_connection};
use crate::transport::ws::{self, WsOptions};
use crate::transport::{Link, stdio};

/// Why the server could not start; its message says what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

impl From<StorageError> for StartError {
    fn from(e: StorageError) -> Self {
        Self(e.to_string())
    }
}

impl From<ClientBuildError> for StartError {
    fn from(e: ClientBuildError) -> Self {
        Self(e.to_string())
    }
}

/// `CODEX_AUTH_JSON` (a whole `auth.json`, as CI secrets hold it) seeds a store that holds
/// no credential yet; one that does is left alone.
pub(crate) fn seed_from_env(store: &CredentialStore) -> Result<(), StorageError> {
    let Some(contents) = std::env::var_os("CODEX_AUTH_JSON").filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    let contents = zeroize::Zeroizing::new(contents.into_encoded_bytes());
    if store.seed(&contents)? {
        tracing::info!(store = %store.describe(), "credential seeded from CODEX_AUTH_JSON");
    }
    Ok(())
}

/// The auth state every command builds the same way: the configured store (seeded from
/// `CODEX_AUTH_JSON`), the policy, and the issuer client that performs the refresh grant.
/// Without clients to tell (the broker), events go nowhere.
pub(crate) fn managed_auth(
    config: &Config,
) -> Result<(Arc<AuthManager>, IssuerClient), StartError> {
    managed_auth_to(config, Events::default())
}

/// [`managed_auth`] whose events (a warning of the store included) go to `events`.
pub(crate) fn managed_auth_to(
    config: &Config,
    events: Events,
) -> Result<(Arc<AuthManager>, IssuerClient), StartError> {
    let policy = Policy {
        workspaces: config.forced_workspace_ids.clone(),
        login_method: config.forced_login_method,
    };
    let warnings = events.clone();
    let store = Arc::new(CredentialStore::new(
        &config.codex_home,
        config.credentials_store,
        Some(Arc::new(move |message| {
            warnings.emit(AuthEvent::Warning { message })
        })),
    ));
    seed_from_env(&store)?;
    let issuer = IssuerClient::new(
        config.issuer.clone(),
        config.backend_connect_timeout,
        config.issuer_timeout,
    )
    .map_err(StartError)?;
    let auth = Arc::new(AuthManager::new(AuthSetup {
        store,
        policy,
        refresh_timeout: config.refresh_timeout,
        issuer: Arc::new(issuer.clone()),
        events,
    })?);
    Ok((auth, issuer))
}

/// The sign-in flows, as the configuration sets them up.
pub(crate) fn logins(
    config: &Config,
    auth: &Arc<AuthManager>,
    issuer: IssuerClient,
) -> Arc<Logins> {
    Logins::new(
        auth.clone(),
        issuer,
        LoginSettings {
            callback_port: config.login_callback_port,
            browser_timeout: config.login_timeout,
            device_timeout: config.device_code_timeout,
            workspaces: config.forced_workspace_ids.clone(),
        },
    )
}

pub struct Server {
    api: Arc<Api>,
    dispatcher: Arc<Dispatcher>,
    options: ConnectionOptions,
}

impl Server {
    /// Builds everything that can fail up front: the stored credential is read and the HTTP
    /// client is built here, so a broken setup stops start-up instead of failing calls.
    pub fn new(config: Config) -> Result<Self, StartError> {
        let config = Arc::new(config);
        let connections = Arc::new(Connections::default());
        let announcer = Announcer::new(connections.clone());
        let events = Events::to(Arc::new(move |event| announcer.on_event(event)));
        let (auth, issuer) = managed_auth_to(&config, events)?;
        let backend = BackendClient::new(
            BackendOptions {
                base_url: config.chatgpt_base_url.clone(),
                connect_timeout: config.backend_connect_timeout,
                timeout: config.backend_timeout,
                max_body_bytes: config.max_backend_body_bytes,
            },
            auth.clone(),
        )?;
        let logins = logins(&config, &auth, issuer);
        let options = ConnectionOptions {
            shutdown_grace: config.shutdown_grace,
            ..ConnectionOptions::default()
        };
        let instructions = config.instructions.as_str().into();
        let api = Arc::new(Api {
            config,
            auth,
            backend,
            connections,
            logins,
            threads: Arc::new(Threads::default()),
            instructions,
        });
        let dispatcher = Arc::new(api::dispatcher(api.clone()));
        Ok(Self {
            api,
            dispatcher,
            options,
        })
    }

    pub fn config(&self) -> &Config {
        &self.api.config
    }

    async fn serve(&self, link: Link, shutdown: CancellationToken) {
        serve_connection(
            self.dispatcher.clone(),
            link,
            self.options.clone(),
            shutdown,
            self.api.clone(),
        )
        .await
    }

    /// Serves newline-delimited JSON over any byte stream (a pipe, an in-memory duplex),
    /// as stdio is served: the client is waited for, never dropped.
    pub async fn serve_io<R, W>(&self, reader: R, writer: W, shutdown: CancellationToken)
    where
        R: AsyncRead + Send + 'static,
        W: AsyncWrite + Send + 'static,
    {
        let config = &self.api.config;
        let link = stdio::lines(
            reader,
            writer,
            config.max_message_bytes,
            config.max_outgoing_bytes,
        );
        self.serve(link, shutdown).await
    }

    pub async fn serve_stdio(&self, shutdown: CancellationToken) {
        let config = &self.api.config;
        let link = stdio::link(config.max_message_bytes, config.max_outgoing_bytes);
        self.serve(link, shutdown).await
    }

    /// Serves WebSocket connections until `shutdown`, then waits for open sessions to end
    /// (each within its shutdown grace).
    pub async fn serve_ws(
        self: &Arc<Self>,
        listener: TcpListener,
        token_sha256: Option<[u8; 32]>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let server = self.clone();
        let options = WsOptions::from_config(&self.api.config, token_sha256);
        ws::serve_sessions(listener, options, shutdown, move |link, shutdown| {
            let server = server.clone();
            async move { server.serve(link, shutdown).await }
        })
        .await
    }
}

//! `authbridge broker`, the serving half (beside the app-server's `server`): serves the
//! one credential it owns to workers over authenticated
//! WebSocket. The store is `$CODEX_HOME` (as the app-server's managed mode keeps it) or a
//! PostgreSQL row several broker instances share.

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::api::{BrokerApi, broker_dispatcher};
use crate::auth::storage::{self, TokenData};
use crate::broker::owner::{CredentialOwner, HomeOwner, PgOwner};
use crate::broker::{ImportedCredential, PgOptions, PgStore, SealKey};
use crate::config::Config;
use crate::login::IssuerClient;
use crate::rpc::{ConnectionHooks, ConnectionId, ConnectionOptions, Dispatcher, serve_connection};
use crate::transport::ws::{self, WsOptions};

/// Where the broker keeps the credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerStore {
    /// `$CODEX_HOME`, with `cli_auth_credentials_store` deciding file or keyring.
    Home,
    /// `postgres://USER@HOST:PORT/DB`.
    Postgres(String),
}

impl BrokerStore {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "file" || text == "home" {
            Ok(Self::Home)
        } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Ok(Self::Postgres(text.to_owned()))
        } else {
            Err(format!(
                "--store must be `file` or a postgres:// URL, not {text:?}"
            ))
        }
    }
}

/// Connections keep no state in the broker.
struct Stateless;

impl ConnectionHooks for Stateless {
    fn closed(&self, _id: ConnectionId) {}
}

pub struct Broker {
    dispatcher: Arc<Dispatcher>,
    options: ConnectionOptions,
    config: Arc<Config>,
}

impl Broker {
    /// Opens the store and, with `import`, moves a sign-in into it first: the source file
    /// keeps no usable refresh token afterwards.
    pub async fn start(
        config: Config,
        store: BrokerStore,
        import: Option<&Path>,
    ) -> Result<Self, String> {
        let imported = match import {
            Some(path) => Some((path, storage::read_import(path).map_err(|e| e.to_string())?)),
            None => None,
        };
        let owner: Arc<dyn CredentialOwner> = match store {
            BrokerStore::Home => {
                let (auth, _) = crate::wiring::managed_auth(&config).map_err(|e| e.to_string())?;
                if let Some((path, doc)) = &imported {
                    let own = config.codex_home.join(storage::AUTH_FILE);
                    if !same_file(path, &own) {
                        let tokens = doc.tokens.clone().expect("checked by read_import");
                        auth.login_managed(
                            TokenData {
                                account_id: None,
                                ..tokens
                            },
                            doc.api_key.clone(),
                            None,
                        )
                        .await
                        .map_err(|e| format!("cannot import {}: {e}", path.display()))?;
                        storage::retire_import(path, doc.clone()).map_err(|e| e.to_string())?;
                    }
                }
                Arc::new(HomeOwner { auth })
            }
            BrokerStore::Postgres(url) => {
                let issuer = IssuerClient::new(
                    &config.network,
                    config.issuer.clone(),
                    config.backend_connect_timeout,
                    config.issuer_timeout,
                )?;
                let key = SealKey::from_env().map_err(|e| e.to_string())?;
                let pg = Arc::new(
                    PgStore::connect_with(&url, key, pg_options(&config))
                        .await
                        .map_err(|e| format!("cannot open the PostgreSQL store: {e}"))?,
                );
                if let Some((path, doc)) = &imported {
                    let credential = ImportedCredential::from_document(doc)
                        .ok_or_else(|| format!("{} holds no ChatGPT sign-in", path.display()))?;
                    pg.import(credential)
                        .await
                        .map_err(|e| format!("cannot import {}: {e}", path.display()))?;
                    storage::retire_import(path, doc.clone()).map_err(|e| e.to_string())?;
                }
                Arc::new(PgOwner::new(pg, issuer))
            }
        };
        let dispatcher = Arc::new(broker_dispatcher(Arc::new(BrokerApi { owner })));
        Ok(Self {
            dispatcher,
            options: ConnectionOptions {
                shutdown_grace: config.shutdown_grace,
                handshake: false,
                ..ConnectionOptions::default()
            },
            config: Arc::new(config),
        })
    }

    /// Serves workers (in clear or over TLS, as `listener` says) until `shutdown`.
    pub async fn serve_ws(
        self: &Arc<Self>,
        listener: impl Into<ws::Listener>,
        token_sha256: Option<[u8; 32]>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let broker = self.clone();
        let options = WsOptions::from_config(&self.config, token_sha256);
        ws::serve_sessions(listener.into(), options, shutdown, move |link, shutdown| {
            let broker = broker.clone();
            async move {
                serve_connection(
                    broker.dispatcher.clone(),
                    link,
                    broker.options.clone(),
                    shutdown,
                    Arc::new(Stateless),
                )
                .await
            }
        })
        .await
    }
}

/// The store trusts what every other connection of the program trusts.
fn pg_options(config: &Config) -> PgOptions {
    PgOptions {
        network: Some(config.network.clone()),
        ..PgOptions::default()
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

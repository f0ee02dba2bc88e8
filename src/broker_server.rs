//! `authbridge broker`, the serving half (beside the app-server's `server`): serves the
//! one credential it owns to workers over authenticated
//! WebSocket. The store is `$CODEX_HOME` (as the app-server's managed mode keeps it) or a
//! PostgreSQL row several broker instances share.

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::api::{BrokerApi, broker_dispatcher};
use crate::auth::storage::{self, TokenData};
use crate::broker::ops::{
    AuditTarget, BrokerOps, DEFAULT_PRINCIPAL, KeepWarm, MetricsListener, WarmSet, Warmable,
};
use crate::broker::owner::{CredentialOwner, HomeOwner, PgOwner};
use crate::broker::{ImportedCredential, PgOptions, PgStore, SealKey};
use crate::config::Config;
use crate::login::IssuerClient;
use crate::rpc::{ConnectionHooks, ConnectionId, ConnectionOptions, Dispatcher, serve_connection};
use crate::transport::ws::{self, WsOptions};
use crate::vocabulary::CredentialName;

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
    ops: Arc<BrokerOps>,
    keep_warm: Arc<KeepWarm>,
    warm_set: WarmSet,
}

impl Broker {
    /// Opens the store and, with `import`, moves a sign-in into it first: the source file
    /// keeps no usable refresh token afterwards. Audit lines go to `audit`.
    pub async fn start(
        config: Config,
        store: BrokerStore,
        import: Option<&Path>,
        audit: &AuditTarget,
    ) -> Result<Self, String> {
        let ops = BrokerOps::new(audit).map_err(|e| e.to_string())?;
        let credential = CredentialName::default();
        let imported = match import {
            Some(path) => Some((path, storage::read_import(path).map_err(|e| e.to_string())?)),
            None => None,
        };
        let (owner, warmable): (Arc<dyn CredentialOwner>, Arc<dyn Warmable>) = match store {
            BrokerStore::Home => {
                let (auth, _) =
                    crate::wiring::managed_auth(&config, |issuer| ops.meter(&credential, issuer))
                        .map_err(|e| e.to_string())?;
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
                let owner = Arc::new(HomeOwner { auth });
                (owner.clone(), owner)
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
                let owner = Arc::new(PgOwner::new(pg, ops.meter(&credential, Arc::new(issuer))));
                (owner.clone(), owner)
            }
        };
        let dispatcher = Arc::new(broker_dispatcher(Arc::new(BrokerApi {
            owner,
            ops: ops.clone(),
        })));
        let keep_warm = KeepWarm::new(config.keep_warm_after, ops.metrics().clone());
        let warm_set: WarmSet = Arc::new(move || vec![(credential.clone(), warmable.clone())]);
        Ok(Self {
            ops,
            keep_warm,
            warm_set,
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
                let _connected = broker.ops.connected(DEFAULT_PRINCIPAL);
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

impl Broker {
    /// Keep-warm and, with `metrics`, the metrics listener, until `shutdown`.
    pub async fn operate(&self, metrics: Option<MetricsListener>, shutdown: CancellationToken) {
        let keep_warm = self
            .keep_warm
            .clone()
            .run(self.warm_set.clone(), shutdown.clone());
        let serve_metrics = async {
            if let Some(listener) = metrics {
                crate::broker::ops::serve_metrics(
                    listener,
                    self.ops.metrics().clone(),
                    self.config.header_read_timeout,
                    shutdown.clone(),
                )
                .await
            }
        };
        tokio::join!(keep_warm, serve_metrics);
    }

    /// Writes out the audit lines still queued (bounded): once the connections are done.
    pub fn close_audit(&self) {
        self.ops.close();
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

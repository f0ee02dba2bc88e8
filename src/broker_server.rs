//! `authbridge broker`, the serving half (beside the app-server's `server`): serves the
//! named credentials it owns to workers over authenticated WebSocket, each principal the
//! ones it is bound to. The store is `$CODEX_HOME` (as the app-server's managed mode keeps
//! it) or PostgreSQL rows several broker instances share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::api::{BrokerApi, broker_dispatcher};
use crate::auth::storage::{self, TokenData};
use crate::broker::credentials::Credentials;
use crate::broker::ops::{AuditTarget, BrokerOps, KeepWarm, MetricsListener};
use crate::broker::principals::{Admitted, PrincipalGate, Principals};
use crate::broker::sign_in::SignIns;
use crate::broker::{ImportedCredential, PgOptions, PgStore, SealKey};
use crate::config::Config;
use crate::login::IssuerClient;
use crate::rpc::{ConnectionOptions, Dispatcher, serve_connection};
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

/// Who may connect: `--principals FILE`, or one admin principal over `default` known by
/// `--ws-token-file`/`--ws-token-sha256` (or, on loopback, anyone).
#[derive(Debug, Clone)]
pub enum BrokerAccess {
    Principals(PathBuf),
    Token(Option<[u8; 32]>),
}

pub struct Broker {
    dispatcher: Arc<Dispatcher>,
    api: Arc<BrokerApi>,
    ops: Arc<BrokerOps>,
    keep_warm: Arc<KeepWarm>,
    options: ConnectionOptions,
    config: Arc<Config>,
    gate: Arc<PrincipalGate>,
    /// Ends the sign-ins still waiting for their user when the broker stops.
    sign_ins_stop: CancellationToken,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.sign_ins_stop.cancel();
    }
}

impl Broker {
    /// Opens the store and, with `import`, moves a sign-in into its `default` first: the
    /// source file keeps no usable refresh token afterwards. A principals file that cannot
    /// be used stops start-up here. Audit lines go to `audit`.
    pub async fn start(
        config: Config,
        store: BrokerStore,
        import: Option<&Path>,
        access: BrokerAccess,
        audit: &AuditTarget,
    ) -> Result<Self, String> {
        let ops = BrokerOps::new(audit).map_err(|e| e.to_string())?;
        let gate = match access {
            BrokerAccess::Principals(path) => {
                PrincipalGate::from_file(&path).map_err(|e| e.to_string())?
            }
            BrokerAccess::Token(digest) => PrincipalGate::fixed(Principals::single(digest)),
        };
        let imported = match import {
            Some(path) => Some((path, storage::read_import(path).map_err(|e| e.to_string())?)),
            None => None,
        };
        let issuer = IssuerClient::new(
            &config.network,
            config.issuer.clone(),
            config.backend_connect_timeout,
            config.issuer_timeout,
        )?;
        let config = Arc::new(config);
        let credentials = match store {
            BrokerStore::Home => {
                let default = crate::vocabulary::CredentialName::default();
                let (auth, _) =
                    crate::wiring::managed_auth(&config, |issuer| ops.meter(&default, issuer))
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
                Credentials::home(
                    config.clone(),
                    issuer.clone(),
                    gate.clone(),
                    ops.clone(),
                    auth,
                )
            }
            BrokerStore::Postgres(url) => {
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
                Credentials::postgres(pg, issuer.clone(), gate.clone(), ops.clone())
            }
        };
        credentials
            .open_stored()
            .await
            .map_err(|e| format!("cannot open the stored credentials: {e}"))?;
        let sign_ins_stop = CancellationToken::new();
        let keep_warm = KeepWarm::new(config.keep_warm_after, ops.metrics().clone());
        let api = Arc::new(BrokerApi {
            credentials,
            gate: gate.clone(),
            sign_ins: SignIns::new(issuer, config.device_code_timeout, sign_ins_stop.clone()),
            ops: ops.clone(),
        });
        let dispatcher = Arc::new(broker_dispatcher(api.clone()));
        Ok(Self {
            dispatcher,
            api,
            ops,
            keep_warm,
            options: ConnectionOptions {
                shutdown_grace: config.shutdown_grace,
                handshake: false,
                ..ConnectionOptions::default()
            },
            config,
            gate,
            sign_ins_stop,
        })
    }

    /// Serves workers (in clear or over TLS, as `listener` says) until `shutdown`. A
    /// connection whose token leaves the principals file is closed.
    pub async fn serve_ws(
        self: &Arc<Self>,
        listener: impl Into<ws::Listener>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let broker = self.clone();
        let mut options = WsOptions::from_config(&self.config, None);
        options.gate = Some(self.gate.clone());
        self.gate.watch_file(shutdown.clone());
        ws::serve_sessions(listener.into(), options, shutdown, move |link, shutdown| {
            let broker = broker.clone();
            async move {
                let stop = shutdown.child_token();
                let admitted = link
                    .admitted
                    .clone()
                    .and_then(|a| a.downcast::<Admitted>().ok());
                // Counted by principal while it is connected.
                let principal = admitted
                    .as_ref()
                    .and_then(|a| broker.gate.principal_of(a))
                    .map(|p| p.name.clone())
                    .unwrap_or_default();
                let _connected = broker.ops.connected(&principal);
                if let Some(admitted) = admitted {
                    tokio::spawn(close_when_refused(
                        broker.gate.clone(),
                        admitted,
                        stop.clone(),
                    ));
                }
                serve_connection(
                    broker.dispatcher.clone(),
                    link,
                    broker.options.clone(),
                    stop.clone(),
                    broker.api.clone(),
                )
                .await;
                stop.cancel();
            }
        })
        .await
    }
}

impl Broker {
    /// Keep-warm over every credential the registry holds and, with `metrics`, the
    /// metrics listener, until `shutdown`.
    pub async fn operate(&self, metrics: Option<MetricsListener>, shutdown: CancellationToken) {
        let keep_warm = self
            .keep_warm
            .clone()
            .run(self.api.credentials.warm_set(), shutdown.clone());
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

/// Ends a connection (through `stop`) once the principals in effect no longer know the
/// token it was admitted with; ends by itself when the connection does.
async fn close_when_refused(
    gate: Arc<PrincipalGate>,
    admitted: Arc<Admitted>,
    stop: CancellationToken,
) {
    let mut sets = gate.subscribe();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = sets.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        if gate.principal_of(&admitted).is_none() {
            tracing::info!("closing a connection whose bearer token was removed");
            stop.cancel();
            return;
        }
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

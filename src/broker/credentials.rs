//! The broker's named credentials: which owner serves a name, created on first use, and
//! the one place the store kind is chosen.
//!
//! - The file store (`$CODEX_HOME`): `default` is `$CODEX_HOME/auth.json`, which Codex
//!   reads; any other name is `$CODEX_HOME/credentials/<name>/auth.json`. Each is an
//!   `AuthManager` of its own over its own directory, so each has its own refresh lock,
//!   single grant, latch and generation.
//! - PostgreSQL: one row per name, each a `PgOwner` over a sibling `PgStore` (shared reading
//!   connection, a writing connection and a change feed of its own).
//!
//! Each credential also keeps the connections that read or refreshed it, and tells them
//! `credential/changed` whenever its generation moves, whoever moved it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::ops::{BrokerOps, WarmSet, Warmable};
use super::owner::{CredentialOwner, HomeOwner, PgOwner};
use super::principals::{Admitted, PrincipalGate};
use super::{PgStore, StoreError};
use crate::config::Config;
use crate::login::IssuerClient;
use crate::protocol::credential::CredentialChanged;
use crate::protocol::methods::CREDENTIAL_CHANGED;
use crate::rpc::{ConnectionId, Peer};
use crate::vocabulary::CredentialName;

/// Where other names than `default` live in `$CODEX_HOME`.
pub(crate) const CREDENTIALS_DIR: &str = "credentials";

/// How new owners are made.
enum Kind {
    Home {
        config: Arc<Config>,
        issuer: IssuerClient,
    },
    Postgres {
        /// The store of `default`, whose siblings the other names are.
        base: Arc<PgStore>,
        issuer: IssuerClient,
    },
}

/// A connection told about a credential's changes, with whom it was admitted as (it is
/// told only while that principal is still bound to the credential), and the newest
/// generation it holds or was told of (it is told only of newer ones).
struct Subscriber {
    peer: Peer,
    admitted: Arc<Admitted>,
    known: u64,
}

#[derive(Default)]
struct Subscribers(Mutex<HashMap<ConnectionId, Subscriber>>);

/// One credential: its owner (and keep-warm's view of it), and the connections that use it.
pub(crate) struct Entry {
    pub name: CredentialName,
    pub owner: Arc<dyn CredentialOwner>,
    warm: Arc<dyn Warmable>,
    subscribers: Arc<Subscribers>,
    announcer: tokio::task::AbortHandle,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.announcer.abort();
    }
}

impl Entry {
    /// `peer` was just handed `generation` (0: nothing) and hears of every newer one from
    /// now on (until it closes). One that moved past it meanwhile is told at once.
    pub fn subscribe(&self, peer: &Peer, admitted: Arc<Admitted>, generation: u64) {
        let current = *self.owner.generation().borrow();
        let late = {
            let mut subs = crate::unpoisoned::lock(&self.subscribers.0);
            let s = subs.entry(peer.id()).or_insert_with(|| Subscriber {
                peer: peer.clone(),
                admitted,
                known: 0,
            });
            s.known = s.known.max(generation);
            let late = current > s.known;
            if late {
                s.known = current;
            }
            late
        };
        if late {
            let notice = CredentialChanged {
                credential: self.name.clone(),
                generation: current,
            };
            let peer = peer.clone();
            tokio::spawn(async move {
                let _ = peer.notify(CREDENTIAL_CHANGED, &notice).await;
            });
        }
    }
}

pub(crate) struct Credentials {
    kind: Kind,
    gate: Arc<PrincipalGate>,
    /// Grants are counted and timed per credential.
    ops: Arc<BrokerOps>,
    entries: Mutex<HashMap<CredentialName, Arc<Entry>>>,
    /// Held while an owner is made, so two first uses of a name make one.
    opening: tokio::sync::Mutex<()>,
}

/// A store's owner, as both views the registry keeps of it.
fn views<T: CredentialOwner + Warmable>(
    owner: Arc<T>,
) -> (Arc<dyn CredentialOwner>, Arc<dyn Warmable>) {
    (owner.clone(), owner)
}

/// Why a credential could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("{0}")]
    Home(String),
    #[error("the PostgreSQL store: {0}")]
    Store(#[from] StoreError),
}

impl Credentials {
    /// The file store of `config`'s home; `default` is opened at once (the home's own
    /// `auth.json`, as the app-server's managed mode keeps it).
    pub fn home(
        config: Arc<Config>,
        issuer: IssuerClient,
        gate: Arc<PrincipalGate>,
        ops: Arc<BrokerOps>,
        default: Arc<crate::auth::AuthManager>,
    ) -> Arc<Self> {
        let this = Arc::new(Self {
            kind: Kind::Home {
                config,
                issuer: issuer.clone(),
            },
            gate,
            ops,
            entries: Default::default(),
            opening: Default::default(),
        });
        let (owner, warm) = views(Arc::new(HomeOwner {
            auth: default,
            issuer,
        }));
        let entry = this.entry(CredentialName::default(), owner, warm);
        crate::unpoisoned::lock(&this.entries).insert(CredentialName::default(), entry);
        this
    }

    /// PostgreSQL: `base` is the store of `default`.
    pub fn postgres(
        base: Arc<PgStore>,
        issuer: IssuerClient,
        gate: Arc<PrincipalGate>,
        ops: Arc<BrokerOps>,
    ) -> Arc<Self> {
        Arc::new(Self {
            kind: Kind::Postgres { base, issuer },
            gate,
            ops,
            entries: Default::default(),
            opening: Default::default(),
        })
    }

    /// The owner of `name`, made on first use (a name that holds nothing yet answers
    /// "signed out" until an import or a sign-in).
    pub async fn get(&self, name: &CredentialName) -> Result<Arc<Entry>, OpenError> {
        if let Some(entry) = crate::unpoisoned::lock(&self.entries).get(name) {
            return Ok(entry.clone());
        }
        let _opening = self.opening.lock().await;
        if let Some(entry) = crate::unpoisoned::lock(&self.entries).get(name) {
            return Ok(entry.clone());
        }
        let (owner, warm) = match &self.kind {
            Kind::Home { config, issuer } => {
                let home = config.codex_home.join(CREDENTIALS_DIR).join(name.as_str());
                let auth = open_home(config, home, &self.ops, name).await?;
                views(Arc::new(HomeOwner {
                    auth,
                    issuer: issuer.clone(),
                }))
            }
            Kind::Postgres { base, issuer } => {
                let store = if name.is_default() {
                    base.clone()
                } else {
                    Arc::new(base.sibling(name.as_str()))
                };
                let grants = self.ops.meter(name, Arc::new(issuer.clone()));
                views(Arc::new(PgOwner::new(store, grants, issuer.clone())))
            }
        };
        let entry = self.entry(name.clone(), owner, warm);
        crate::unpoisoned::lock(&self.entries).insert(name.clone(), entry.clone());
        Ok(entry)
    }

    /// Every credential opened so far, for keep-warm (asked again at each pass).
    pub fn warm_set(self: &Arc<Self>) -> WarmSet {
        let this = Arc::downgrade(self);
        Arc::new(move || {
            let Some(this) = this.upgrade() else {
                return Vec::new();
            };
            crate::unpoisoned::lock(&this.entries)
                .values()
                .map(|e| (e.name.clone(), e.warm.clone()))
                .collect()
        })
    }

    /// Opens every stored credential, so keep-warm looks at the ones nobody has asked
    /// for since start-up too.
    pub async fn open_stored(&self) -> Result<(), OpenError> {
        for name in self.names().await? {
            self.get(&name).await?;
        }
        Ok(())
    }

    fn entry(
        &self,
        name: CredentialName,
        owner: Arc<dyn CredentialOwner>,
        warm: Arc<dyn Warmable>,
    ) -> Arc<Entry> {
        let subscribers = Arc::new(Subscribers::default());
        let announcer = tokio::spawn(announce(
            name.clone(),
            owner.generation(),
            subscribers.clone(),
            self.gate.clone(),
        ))
        .abort_handle();
        Arc::new(Entry {
            name,
            owner,
            warm,
            subscribers,
            announcer,
        })
    }

    /// The names that may hold a credential, `default` first: the home's directories, or
    /// the table's rows. (Whether one does is the owner's to say.)
    pub async fn names(&self) -> Result<Vec<CredentialName>, OpenError> {
        let mut names = vec![CredentialName::default()];
        let found: Vec<String> = match &self.kind {
            Kind::Home { config, .. } => {
                let dir = config.codex_home.join(CREDENTIALS_DIR);
                tokio::task::spawn_blocking(move || {
                    let Ok(read) = std::fs::read_dir(&dir) else {
                        return Vec::new();
                    };
                    let mut found: Vec<String> = read
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .filter_map(|e| e.file_name().into_string().ok())
                        .collect();
                    found.sort();
                    found
                })
                .await
                .unwrap_or_default()
            }
            Kind::Postgres { base, .. } => base.ids().await?,
        };
        for text in found {
            if let Ok(name) = text.parse::<CredentialName>()
                && !names.contains(&name)
            {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// A connection closed: it is told nothing more.
    pub fn closed(&self, id: ConnectionId) {
        let entries: Vec<Arc<Entry>> = crate::unpoisoned::lock(&self.entries)
            .values()
            .cloned()
            .collect();
        for entry in entries {
            crate::unpoisoned::lock(&entry.subscribers.0).remove(&id);
        }
    }
}

/// An `AuthManager` over `home` (made 0700 if missing), built as the app-server's managed
/// mode builds its own, without the environment's one-off credentials (`CODEX_AUTH_JSON`,
/// `CODEX_ACCESS_TOKEN`), which are `default`'s.
async fn open_home(
    config: &Config,
    home: PathBuf,
    ops: &Arc<BrokerOps>,
    name: &CredentialName,
) -> Result<Arc<crate::auth::AuthManager>, OpenError> {
    let config = Config {
        codex_home: home.clone(),
        ..config.clone()
    };
    let (ops, name) = (ops.clone(), name.clone());
    tokio::task::spawn_blocking(move || {
        create_private_dir(&home)
            .map_err(|e| OpenError::Home(format!("cannot create {}: {e}", home.display())))?;
        crate::wiring::managed_auth_in(&config, |issuer| ops.meter(&name, issuer))
            .map(|(auth, _)| auth)
            .map_err(|e| OpenError::Home(e.to_string()))
    })
    .await
    .map_err(|_| OpenError::Home("opening the credential failed unexpectedly".into()))?
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Tells the subscribers of `name` every new generation, until the entry goes.
async fn announce(
    name: CredentialName,
    mut generations: watch::Receiver<u64>,
    subscribers: Arc<Subscribers>,
    gate: Arc<PrincipalGate>,
) {
    while generations.changed().await.is_ok() {
        let generation = *generations.borrow_and_update();
        let notice = CredentialChanged {
            credential: name.clone(),
            generation,
        };
        let peers: Vec<Peer> = {
            let mut subs = crate::unpoisoned::lock(&subscribers.0);
            subs.retain(|_, s| !s.peer.is_closed());
            subs.values_mut()
                .filter(|s| s.known < generation)
                .filter(|s| {
                    gate.principal_of(&s.admitted)
                        .is_some_and(|p| p.may_use(&name))
                })
                .map(|s| {
                    s.known = generation;
                    s.peer.clone()
                })
                .collect()
        };
        tracing::debug!(credential = %name, generation, connections = peers.len(), "credential changed");
        // A WebSocket peer never makes this wait: one whose outbox is full is disconnected.
        for peer in peers {
            let _ = peer.notify(CREDENTIAL_CHANGED, &notice).await;
        }
    }
}

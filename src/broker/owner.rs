//! The one owner of a refresh token, behind the broker's methods: the credential in
//! `$CODEX_HOME` (managed by the same machinery as the app-server's managed mode: refresh
//! lock, re-read, latch) or a row in PostgreSQL shared by several broker instances.
//!
//! Both answer the same two questions: "what is the current access token?" and "this token
//! got a 401: give me a better one". The second makes a grant only when the token that
//! failed is still the current one; every caller holding it shares that one grant.
//!
//! Each owner is one credential (one name): the admin methods replace it (import), remove
//! it (delete) and describe it (list), and its generation is watched to tell the workers.

mod warm;

use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{GrantTokens, ImportedCredential, PgStore, StoreError, row::CredentialRow};
use crate::auth::grant::{PROACTIVE_MARGIN, PermanentFailure, RefreshReason, TokenIssuer};
use crate::auth::single_flight::{SingleFlight, Waited};
use crate::auth::storage::{self, AuthDocument, SecretText, StorageError, TokenData};
use crate::auth::{AuthError, AuthManager, CallCredentialsError, LoginError};
use crate::login::{IssuerClient, IssuerError};
use crate::protocol::credential::{CredentialState, CredentialSummary, IssuedCredential};
use crate::vocabulary::CredentialName;

/// The token a worker says failed.
pub(crate) enum Previous {
    Token(SecretString),
    Sha256([u8; 32]),
    Unknown,
}

impl Previous {
    fn matches(&self, current: &SecretString) -> bool {
        match self {
            Previous::Token(t) => t.expose_secret() == current.expose_secret(),
            Previous::Sha256(d) => Sha256::digest(current.expose_secret().as_bytes())[..] == d[..],
            Previous::Unknown => false,
        }
    }
}

/// Why an admin method could not change or describe a credential.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    #[error("the auth.json document holds no ChatGPT sign-in (tokens with a refresh token)")]
    NotChatgpt,
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the PostgreSQL store: {0}")]
    Store(#[from] StoreError),
    /// `revoke: true` and the issuer did not revoke: the credential is kept.
    #[error("the refresh token was not revoked, so the credential was kept: {0}")]
    Revoke(IssuerError),
}

pub(crate) trait CredentialOwner: Send + Sync + 'static {
    fn read(&self) -> BoxFuture<'_, Result<IssuedCredential, AuthError>>;
    fn refresh(&self, previous: Previous) -> BoxFuture<'_, Result<IssuedCredential, AuthError>>;
    /// The newest generation this owner knows of; moves with every change, whoever made it.
    fn generation(&self) -> watch::Receiver<u64>;
    /// What an operator sees of it; `None` when nothing is stored under the name.
    fn summary<'a>(
        &'a self,
        name: &'a CredentialName,
    ) -> BoxFuture<'a, Result<Option<CredentialSummary>, AdminError>>;
    /// Replaces the credential with the sign-in of `doc`; returns its new generation.
    fn import(&self, doc: AuthDocument) -> BoxFuture<'_, Result<u64, AdminError>>;
    /// Removes the credential (revoking its refresh token first when asked); false when
    /// there was none.
    fn delete(&self, revoke: bool) -> BoxFuture<'_, Result<bool, AdminError>>;
}

fn unix_seconds(t: SystemTime) -> Option<i64> {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

/// The part of a summary the ID token tells: who signed in.
fn claims_of(id_token: &str) -> (Option<String>, Option<String>) {
    match crate::auth::jwt::parse(id_token) {
        Ok(c) => (c.email, plan_name(c.chatgpt_plan_type)),
        Err(_) => (None, None),
    }
}

fn state_of(latched: Option<PermanentFailure>) -> (CredentialState, Option<String>) {
    match latched {
        Some(f) => (CredentialState::LoginRequired, Some(f.kind().to_owned())),
        None => (CredentialState::Ok, None),
    }
}

/// Moves `generations` up to `to`, never down.
fn bump(generations: &watch::Sender<u64>, to: u64) {
    generations.send_if_modified(|g| {
        let newer = to > *g;
        if newer {
            *g = to;
        }
        newer
    });
}

fn plan_name(plan: Option<crate::vocabulary::PlanType>) -> Option<String> {
    plan.and_then(|p| serde_json::to_value(p).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// The credential of `$CODEX_HOME` (file or keyring), refreshed as the app-server's
/// managed mode refreshes it.
pub(crate) struct HomeOwner {
    pub auth: Arc<AuthManager>,
    /// For revoking the refresh token of a deleted credential.
    pub issuer: IssuerClient,
}

impl HomeOwner {
    fn issued(&self, creds: crate::auth::ChatgptCredentials) -> IssuedCredential {
        let (plan, expires_at) = self.auth.token_details();
        IssuedCredential {
            access_token: (*creds.access_token).clone(),
            account_id: creds.account_id,
            plan_type: plan_name(plan),
            expires_at,
            generation: creds.generation,
        }
    }
}

fn call_error(e: CallCredentialsError) -> AuthError {
    match e {
        CallCredentialsError::Missing(_) => AuthError::SignedOut,
        CallCredentialsError::Auth(a) => a,
    }
}

impl CredentialOwner for HomeOwner {
    fn read(&self) -> BoxFuture<'_, Result<IssuedCredential, AuthError>> {
        Box::pin(async move {
            let creds = self.auth.credentials_for_call().await.map_err(call_error)?;
            Ok(self.issued(creds))
        })
    }

    fn refresh(&self, previous: Previous) -> BoxFuture<'_, Result<IssuedCredential, AuthError>> {
        Box::pin(async move {
            let current = self.auth.credentials_for_call().await.map_err(call_error)?;
            if !previous.matches(&current.access_token) {
                // The worker holds an older token: the current one is the answer.
                return Ok(self.issued(current));
            }
            // The current token got a 401, whatever its `exp` says: one shared grant.
            let fresh = self.auth.recover(&current).await?;
            Ok(self.issued(fresh))
        })
    }

    fn generation(&self) -> watch::Receiver<u64> {
        self.auth.generations()
    }

    fn summary<'a>(
        &'a self,
        name: &'a CredentialName,
    ) -> BoxFuture<'a, Result<Option<CredentialSummary>, AdminError>> {
        Box::pin(async move {
            let doc = storage::off_runtime(self.auth.store_handle(), |s| s.load_document()).await?;
            let Some(tokens) = doc.as_ref().and_then(|d| d.tokens.as_ref()) else {
                return Ok(None);
            };
            let (email, plan_type) = claims_of(tokens.id_token.expose());
            let expires_at = crate::auth::jwt::parse(tokens.access_token.expose())
                .ok()
                .and_then(|c| c.exp);
            let last_refresh = doc
                .as_ref()
                .and_then(|d| d.last_refresh.as_deref())
                .and_then(crate::auth::storage::document::parse_timestamp)
                .and_then(unix_seconds);
            let (state, auth_error) = state_of(self.auth.login_required());
            Ok(Some(CredentialSummary {
                name: name.clone(),
                account_id: tokens.account_id.clone(),
                email,
                plan_type,
                expires_at,
                last_refresh,
                generation: *self.auth.generations().borrow(),
                state,
                auth_error,
            }))
        })
    }

    fn import(&self, doc: AuthDocument) -> BoxFuture<'_, Result<u64, AdminError>> {
        Box::pin(async move {
            ImportedCredential::from_document(&doc).ok_or(AdminError::NotChatgpt)?;
            let tokens = doc.tokens.clone().ok_or(AdminError::NotChatgpt)?;
            self.auth
                .login_managed(
                    TokenData {
                        account_id: None,
                        ..tokens
                    },
                    doc.api_key.clone(),
                    None,
                )
                .await?;
            Ok(*self.auth.generations().borrow())
        })
    }

    fn delete(&self, revoke: bool) -> BoxFuture<'_, Result<bool, AdminError>> {
        Box::pin(async move {
            let doc = storage::off_runtime(self.auth.store_handle(), |s| s.load_document()).await?;
            let Some(doc) = doc else { return Ok(false) };
            if revoke
                && let Some(token) = doc.tokens.as_ref().map(|t| t.refresh_token.clone())
                && !token.expose().is_empty()
            {
                self.issuer
                    .revoke(&token)
                    .await
                    .map_err(AdminError::Revoke)?;
            }
            self.auth.logout().await?;
            Ok(true)
        })
    }
}

/// A row in PostgreSQL, shared with other broker instances: the row lock orders grants
/// between instances, and one shared task orders them within this one.
pub(crate) struct PgOwner {
    store: Arc<PgStore>,
    issuer: Arc<dyn TokenIssuer>,
    /// For revoking the refresh token of a deleted credential.
    revoker: IssuerClient,
    /// The grant in flight here, by the generation it replaces.
    grants: SingleFlight<i64, Result<CredentialRow, AuthError>>,
    /// The row as `LISTEN/NOTIFY` last delivered it: reads are served from here.
    feed: super::Subscription,
    /// The newest generation this instance wrote or read; a cached row older than it is
    /// not served (the notification of our own write may still be on its way). Waiters for
    /// a grant of an older generation end when it moves.
    newest: watch::Sender<i64>,
    /// The newest generation from any instance (the feed included), for the workers.
    generations: watch::Sender<u64>,
}

/// A latched row without a reason (none is ever written so) still needs a sign-in.
fn permanent_of(reason: Option<PermanentFailure>) -> PermanentFailure {
    reason.unwrap_or(PermanentFailure::Rejected)
}

fn store_error(e: StoreError) -> AuthError {
    match e {
        StoreError::NeedsRelogin { reason } => AuthError::LoginRequired(permanent_of(reason)),
        StoreError::NoCredential { .. } => AuthError::SignedOut,
        other => AuthError::RefreshUnavailable(other.to_string()),
    }
}

fn issued_row(row: &CredentialRow) -> IssuedCredential {
    IssuedCredential {
        access_token: row.access_token.clone(),
        account_id: row.account_id.clone(),
        plan_type: row.plan.clone(),
        expires_at: row.access_exp.and_then(|t| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs() as i64)
        }),
        generation: row.generation.max(0) as u64,
    }
}

fn check_state(row: CredentialRow) -> Result<CredentialRow, AuthError> {
    if row.state == super::CredentialState::NeedsRelogin {
        return Err(AuthError::LoginRequired(permanent_of(row.reason)));
    }
    Ok(row)
}

fn expiring(row: &CredentialRow) -> bool {
    row.access_exp.is_some_and(|exp| {
        exp.duration_since(SystemTime::now())
            .map(|left| left <= PROACTIVE_MARGIN)
            .unwrap_or(true)
    })
}

impl PgOwner {
    /// Grants go through `issuer`; a revocation (`credential/delete {revoke}`) through
    /// `revoker`.
    pub fn new(store: Arc<PgStore>, issuer: Arc<dyn TokenIssuer>, revoker: IssuerClient) -> Self {
        let feed = store.subscribe();
        let generations = watch::Sender::new(0);
        tokio::spawn(follow_feed(feed.rows(), generations.clone()));
        Self {
            store,
            issuer,
            revoker,
            grants: SingleFlight::default(),
            feed,
            newest: watch::Sender::new(0),
            generations,
        }
    }

    fn saw(&self, row: &CredentialRow) {
        bump(&self.generations, row.generation.max(0) as u64);
        self.newest.send_if_modified(|newest| {
            let newer = row.generation > *newest;
            if newer {
                *newest = row.generation;
            }
            newer
        });
    }

    /// The row from the change feed when it is connected and not older than what this
    /// instance already saw; else from the database.
    async fn cached(&self) -> Result<CredentialRow, AuthError> {
        let newest = *self.newest.borrow();
        if self.feed.is_connected()
            && let Some(row) = self.feed.current()
            && row.generation >= newest
        {
            return check_state(row);
        }
        self.current().await
    }

    /// One grant task for `generation` in this instance, which no caller can interrupt
    /// between the grant and the commit. Only a proactive refresh lets a row whose token
    /// is far from expiry stand; a 401 or keep-warm grants whenever `generation` is still
    /// the row's.
    async fn grant(
        &self,
        generation: i64,
        reason: RefreshReason,
    ) -> Result<CredentialRow, AuthError> {
        let store = self.store.clone();
        let issuer = self.issuer.clone();
        let must_grant = reason != RefreshReason::ProactiveExpiry;
        let start = move || async move {
            store
                .rotate(generation, must_grant, |refresh_token| async move {
                    let token = SecretText::new(refresh_token.expose_secret().to_owned());
                    let r = issuer.refresh(token, reason).await?;
                    let secret = |t: SecretText| SecretString::from(t.expose());
                    Ok(GrantTokens {
                        id_token: r.id_token.map(secret),
                        access_token: r.access_token.map(secret),
                        refresh_token: r.refresh_token.map(secret),
                    })
                })
                .await
                .map(|r| r.row)
                .map_err(store_error)
        };
        let mut newest = self.newest.subscribe();
        let outcome = match self.grants.run(generation, &mut newest, start).await {
            Waited::Done(outcome) => outcome,
            // This instance already saw a newer row: the database has the answer.
            Waited::Moved => self.current().await,
            Waited::Crashed => Err(AuthError::RefreshUnavailable(
                "the grant task ended abnormally".into(),
            )),
        };
        if let Ok(row) = &outcome {
            self.saw(row);
        }
        outcome
    }

    async fn current(&self) -> Result<CredentialRow, AuthError> {
        let row = self
            .store
            .read()
            .await
            .map_err(store_error)?
            .ok_or(AuthError::SignedOut)?;
        check_state(row)
    }
}

/// Moves `generations` with the rows the change feed delivers (another instance's grant,
/// import or delete); ends with the feed.
async fn follow_feed(
    mut rows: watch::Receiver<Option<CredentialRow>>,
    generations: watch::Sender<u64>,
) {
    let mut last: Option<i64> = None;
    loop {
        let row = rows.borrow_and_update().clone();
        match (row, last) {
            (Some(row), _) => {
                bump(&generations, row.generation.max(0) as u64);
                last = Some(row.generation);
            }
            // Deleted: one above the row that was there.
            (None, Some(was)) => {
                bump(&generations, (was + 1).max(0) as u64);
                last = None;
            }
            (None, None) => {}
        }
        if rows.changed().await.is_err() {
            return;
        }
    }
}

impl CredentialOwner for PgOwner {
    fn read(&self) -> BoxFuture<'_, Result<IssuedCredential, AuthError>> {
        Box::pin(async move {
            let row = self.cached().await?;
            if expiring(&row) {
                match self
                    .grant(row.generation, RefreshReason::ProactiveExpiry)
                    .await
                {
                    Ok(fresh) => return Ok(issued_row(&fresh)),
                    Err(e @ AuthError::LoginRequired(_)) => return Err(e),
                    Err(e) => {
                        tracing::info!("proactive refresh failed ({e}); serving the current token")
                    }
                }
            }
            Ok(issued_row(&row))
        })
    }

    fn refresh(&self, previous: Previous) -> BoxFuture<'_, Result<IssuedCredential, AuthError>> {
        Box::pin(async move {
            // A refresh decides on the database's row, never on a cached one.
            let row = self.current().await?;
            if !previous.matches(&row.access_token) {
                return Ok(issued_row(&row));
            }
            let fresh = self
                .grant(row.generation, RefreshReason::UnauthorizedRecovery)
                .await?;
            Ok(issued_row(&fresh))
        })
    }

    fn generation(&self) -> watch::Receiver<u64> {
        self.generations.subscribe()
    }

    fn summary<'a>(
        &'a self,
        name: &'a CredentialName,
    ) -> BoxFuture<'a, Result<Option<CredentialSummary>, AdminError>> {
        Box::pin(async move {
            let Some(row) = self.store.read().await? else {
                return Ok(None);
            };
            let (email, id_plan) = claims_of(row.id_token.expose_secret());
            let latched = (row.state == super::CredentialState::NeedsRelogin)
                .then(|| permanent_of(row.reason));
            let (state, auth_error) = state_of(latched);
            Ok(Some(CredentialSummary {
                name: name.clone(),
                account_id: row.account_id.clone(),
                email,
                plan_type: row.plan.clone().or(id_plan),
                expires_at: row.access_exp.and_then(unix_seconds),
                last_refresh: row.last_refresh.and_then(unix_seconds),
                generation: row.generation.max(0) as u64,
                state,
                auth_error,
            }))
        })
    }

    fn import(&self, doc: AuthDocument) -> BoxFuture<'_, Result<u64, AdminError>> {
        Box::pin(async move {
            let credential =
                ImportedCredential::from_document(&doc).ok_or(AdminError::NotChatgpt)?;
            let floor = *self.generations.borrow() as i64 + 1;
            let row = self.store.import_above(credential, floor).await?;
            self.saw(&row);
            Ok(row.generation.max(0) as u64)
        })
    }

    fn delete(&self, revoke: bool) -> BoxFuture<'_, Result<bool, AdminError>> {
        Box::pin(async move {
            if revoke {
                let token = match self.store.unseal_refresh_token().await {
                    Ok(token) => token,
                    Err(StoreError::NoCredential { .. }) => return Ok(false),
                    Err(e) => return Err(e.into()),
                };
                let token = SecretText::new(token.expose_secret().to_owned());
                self.revoker
                    .revoke(&token)
                    .await
                    .map_err(AdminError::Revoke)?;
            }
            let Some(generation) = self.store.delete().await? else {
                return Ok(false);
            };
            // Reads wait for nothing older than the deletion, and the workers hear of it.
            self.newest.send_replace(generation + 1);
            bump(&self.generations, (generation + 1).max(0) as u64);
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_failure_of_the_store_is_for_now_never_a_new_sign_in() {
        let failure = StoreError::Tls {
            setting: "sslmode=verify-full, trusting only sslrootcert ca.pem".into(),
            detail: "the server's certificate is signed by an unknown authority".into(),
        };
        match store_error(failure) {
            AuthError::RefreshUnavailable(message) => {
                assert!(message.contains("unknown authority"), "{message}")
            }
            other => panic!("not a passing failure: {other:?}"),
        }
    }
}

//! The managed credential's refresh grant, safe across processes that share a store.
//!
//! One grant per credential, everywhere:
//! - in the process, callers share one refresh (`single_flight.rs`, through the state's
//!   `refreshes`);
//! - across processes, the grant runs under an exclusive lock beside the store, held from
//!   the re-read through the request to the persist. Under the lock the store is read
//!   again: a credential another process already rotated is adopted without a request;
//! - Codex's own commit locks are taken only around the write, and the file is compared
//!   with the in-lock read first, so a Codex process that rotated meanwhile keeps its
//!   tokens.
//!
//! A permanent failure is latched: later calls fail at once, without a request, until a
//! new sign-in or a changed store. A transient one backs off; the next attempt re-reads
//! the store before it spends anything, since a lost answer may have rotated the token.
//!
//! The grant runs in its own task: a caller that goes away, or a login that replaces the
//! credential, cannot interrupt it between the request and the persist.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use super::error::AuthError;
use super::events::AuthEvent;
use futures::future::BoxFuture;

use super::file_lock::{self, CODEX_COMMIT_LOCKS, FileLock, REFRESH_LOCK};
use super::grant::{PROACTIVE_MARGIN, PermanentFailure, RefreshReason, Refreshed, TokenIssuer};
use super::policy::Policy;
use super::rotation::{self, Decision, Latch, LockFuture, Locked, Rotated, RotatingStore};
use super::rotation_hook::RotationHook;
use super::state::{AuthState, ChatgptCredentials, State};
use super::storage::{
    self, AuthDocument, CredentialStore, DocumentMode, SecretText, StorageError, Stored, Swap,
};
use super::store_watch::{Look, StoreWatch};
use crate::unpoisoned::lock;
/// Without an `exp`, a credential is refreshed once its last refresh is this old.
pub(crate) const SCHEDULED_AGE: Duration = Duration::from_secs(8 * 24 * 3600);
/// How long a Codex commit lock is waited for before the write goes ahead without it: a
/// rotated token is never given up for a lock.
const COMMIT_LOCK_WAIT: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Transient failures space out attempts.
#[derive(Default)]
pub(crate) struct Backoff {
    until: Option<Instant>,
    next: Option<Duration>,
    last_error: String,
}

pub(super) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Why the managed credential of `state` should be refreshed before a call, if it should.
pub(super) fn due(state: &State) -> Option<RefreshReason> {
    let Some(Stored::Chatgpt(t)) = &state.stored else {
        return None;
    };
    if state.external.is_some() || state.managed_failure.is_some() || !t.refreshable {
        return None;
    }
    match t.access_expires {
        Some(exp) if exp - now_secs() <= PROACTIVE_MARGIN.as_secs() as i64 => {
            Some(RefreshReason::ProactiveExpiry)
        }
        Some(_) => None,
        None => match t.last_refresh {
            Some(at) if at.elapsed().unwrap_or_default() < SCHEDULED_AGE => None,
            _ => Some(RefreshReason::Scheduled),
        },
    }
}

/// Whether the stored document holds the same credential as the one in memory.
fn same_tokens(doc: &AuthDocument, access: &SecretString) -> bool {
    matches!(
        doc.mode(),
        Some(DocumentMode::Chatgpt | DocumentMode::AccessToken)
    ) && doc
        .tokens
        .as_ref()
        .is_some_and(|t| t.access_token.expose() == access.expose_secret())
}

/// The document after a grant: each field the issuer sent replaces the stored one. An ID
/// token that does not parse is not stored (the old one stays): the rotated tokens must be
/// kept whatever else is wrong with the answer.
fn apply(mut doc: AuthDocument, answer: Refreshed) -> AuthDocument {
    if let Some(tokens) = doc.tokens.as_mut() {
        if let Some(id) = answer.id_token {
            if super::jwt::parse(id.expose()).is_ok() {
                tokens.id_token = id;
            } else {
                tracing::warn!("the refreshed ID token is not a JWT; keeping the previous one");
            }
        }
        if let Some(access) = answer.access_token {
            tokens.access_token = access;
        }
        if let Some(refresh) = answer.refresh_token {
            tokens.refresh_token = refresh;
        }
    }
    doc.last_refresh = Some(super::storage::document::timestamp(SystemTime::now()));
    doc
}

fn unavailable(e: impl std::fmt::Display) -> AuthError {
    AuthError::RefreshUnavailable(e.to_string())
}

/// The managed credential's refresh, and keeping the state in step with the store.
pub(crate) struct ManagedRefresh {
    pub state: Arc<AuthState>,
    pub store: Arc<CredentialStore>,
    pub watch: Arc<StoreWatch>,
    pub policy: Policy,
    pub issuer: Arc<dyn TokenIssuer>,
    /// How long a refresh waits for another process's refresh lock.
    pub lock_wait: Duration,
    pub backoff: Mutex<Backoff>,
    /// Told of every rotation stored here; its runs are tracked so a short-lived command
    /// can wait for them before it exits.
    pub hook: Option<Arc<dyn RotationHook>>,
    pub hook_runs: tokio_util::task::TaskTracker,
}

impl ManagedRefresh {
    /// Where the refresh lock lives: beside a store other processes can share.
    fn lock_dir(&self) -> Option<std::path::PathBuf> {
        self.store
            .is_shared()
            .then(|| self.store.home().to_path_buf())
    }

    /// A new sign-in starts without the back-off of the credential it replaced.
    pub fn reset_backoff(&self) {
        *lock(&self.backoff) = Backoff::default();
    }

    /// One refresh for `generation`, shared by every caller that asks for it; it runs as
    /// its own task (see the module's doc).
    pub async fn refresh(
        self: &Arc<Self>,
        generation: u64,
        reason: RefreshReason,
    ) -> Result<ChatgptCredentials, AuthError> {
        let this = self.clone();
        self.state
            .refresh(generation, move || this.refresh_managed(generation, reason))
            .await
    }

    /// The refresh, as one task: see the module's doc.
    async fn refresh_managed(
        self: Arc<Self>,
        generation: u64,
        reason: RefreshReason,
    ) -> Result<ChatgptCredentials, AuthError> {
        {
            let backoff = lock(&self.backoff);
            if backoff.until.is_some_and(|u| Instant::now() < u) {
                return Err(AuthError::RefreshUnavailable(backoff.last_error.clone()));
            }
        }
        // Did someone else (another process, a sign-in) change the credential?
        let decide = |read: Option<&AuthDocument>| {
            let state = self.state.lock();
            if state.generation != generation {
                return Decision::Stop(state.credentials().map_err(|_| AuthError::SignedOut));
            }
            let ours = match &state.stored {
                // An access token given alone has nothing to spend: the 401 stands.
                Some(Stored::Chatgpt(t)) if state.external.is_none() && !t.refreshable => {
                    return Decision::Stop(Err(AuthError::Unauthorized));
                }
                Some(Stored::Chatgpt(t)) if state.external.is_none() => &t.access_token,
                _ => return Decision::Stop(Err(AuthError::SignedOut)),
            };
            if !read.is_some_and(|d| same_tokens(d, ours) && d.tokens.is_some()) {
                tracing::info!("the stored credential changed; adopting it instead of refreshing");
                return Decision::Adopt;
            }
            match state.managed_failure {
                Some(failure) => Decision::Stop(Err(AuthError::LoginRequired(failure))),
                None => Decision::Grant,
            }
        };
        let grant = |refresh_token| {
            tracing::info!(reason = reason.as_str(), "refreshing the ChatGPT tokens");
            self.issuer.refresh(refresh_token, reason)
        };
        match rotation::rotate(&*self, decide, grant, None).await? {
            Rotated::Adopted(doc) => self.adopt(doc),
            Rotated::Granted(doc) => {
                lock(&self.backoff).next = None;
                if let Some(hook) = &self.hook {
                    self.hook_runs.spawn(hook.rotated(&doc));
                }
                self.adopt(Some(doc))
            }
            Rotated::Dead(failure) => {
                tracing::warn!(
                    failure = failure.kind(),
                    "the refresh token cannot be used; a new sign-in is needed"
                );
                let mut state = self.state.lock();
                if state.generation == generation {
                    state.managed_failure = Some(failure);
                    self.state.changed(&mut state, AuthEvent::Changed);
                }
                Err(AuthError::LoginRequired(failure))
            }
            Rotated::Unsure(message) => {
                let mut backoff = lock(&self.backoff);
                let wait = backoff.next.unwrap_or(FIRST_BACKOFF);
                backoff.until = Some(Instant::now() + wait);
                backoff.next = Some((wait * 2).min(MAX_BACKOFF));
                backoff.last_error = message.clone();
                tracing::warn!(retry_after = ?wait, "the token refresh failed: {message}");
                Err(AuthError::RefreshUnavailable(message))
            }
            Rotated::Stopped(outcome) => outcome,
        }
    }

    /// Writes `fresh` under Codex's commit locks, unless the store changed since
    /// `in_lock` was read (a Codex process rotated meanwhile): then the store's document
    /// wins. Returns the document in effect.
    async fn commit_under_codex_locks(
        &self,
        in_lock: &Option<AuthDocument>,
        fresh: AuthDocument,
    ) -> Result<AuthDocument, AuthError> {
        let mut held = Vec::new();
        if let Some(dir) = self.lock_dir() {
            for name in CODEX_COMMIT_LOCKS {
                match file_lock::acquire(&dir.join(name), COMMIT_LOCK_WAIT).await {
                    Ok(lock) => held.push(lock),
                    Err(e) => {
                        tracing::warn!("{e}; writing the rotated tokens without it");
                        break;
                    }
                }
            }
        }
        let expected = in_lock.clone();
        let result = storage::off_runtime(&self.store, move |store| {
            match store.compare_and_swap(&expected, fresh)? {
                Swap::Swapped(doc) | Swap::Moved(Some(doc)) => Ok(doc),
                Swap::Moved(None) => Err(StorageError::Format {
                    place: "the credential store (signed out during a refresh)".into(),
                }),
            }
        })
        .await;
        drop(held);
        self.watch.remember();
        result.map_err(|e| {
            tracing::error!("the rotated tokens could not be stored: {e}");
            unavailable(e)
        })
    }

    /// Puts a document read from the store in effect (a refresh's result, or what another
    /// process wrote). Announces a change of who is signed in; a plain rotation is silent,
    /// as the reference's.
    fn adopt(&self, doc: Option<AuthDocument>) -> Result<ChatgptCredentials, AuthError> {
        let stored = doc
            .as_ref()
            .and_then(Stored::from_document)
            .filter(|s| self.policy.admits(s));
        let mut state = self.state.lock();
        // Adopting what is already in effect (two paths noticed the same write) changes
        // nothing: a new generation would make callers holding these very tokens look
        // stale, and a refresh of them look pointless.
        let unchanged = state.managed_failure.is_none()
            && match (&state.stored, &stored) {
                (Some(Stored::Chatgpt(a)), Some(Stored::Chatgpt(b))) => {
                    a.access_token.expose_secret() == b.access_token.expose_secret()
                }
                (Some(Stored::ApiKey(a)), Some(Stored::ApiKey(b))) => {
                    a.expose_secret() == b.expose_secret()
                }
                (None, None) => true,
                _ => false,
            };
        let before = (state.status(), identity_key(&state.stored));
        state.stored = stored;
        state.managed_failure = None;
        let after = (state.status(), identity_key(&state.stored));
        if before != after {
            self.state.changed(&mut state, AuthEvent::Changed);
        } else if !unchanged {
            self.state.bump(&mut state);
        }
        drop(state);
        self.watch.remember();
        let state = self.state.lock();
        match (&state.external, &state.stored) {
            (None, Some(Stored::Chatgpt(_))) => {
                state.credentials().map_err(|_| AuthError::SignedOut)
            }
            _ => Err(AuthError::SignedOut),
        }
    }

    /// Re-reads the store when its file changed since this process last read or wrote it,
    /// so a sign-in, sign-out or rotation by another process takes effect here.
    pub async fn notice_store_change(&self, look: Look) {
        let latched = self.state.lock().managed_failure.is_some();
        if !self.watch.changed(latched, look) {
            return;
        }
        match storage::off_runtime(&self.store, |s| s.load_document()).await {
            Ok(doc) => {
                let current = {
                    let state = self.state.lock();
                    match &state.stored {
                        Some(Stored::Chatgpt(t)) => doc
                            .as_ref()
                            .is_some_and(|d| same_tokens(d, &t.access_token)),
                        Some(Stored::ApiKey(_)) => {
                            doc.as_ref().and_then(|d| d.mode()) == Some(DocumentMode::ApiKey)
                        }
                        None => doc.is_none(),
                    }
                };
                if current {
                    self.watch.remember();
                } else {
                    tracing::info!("the credential store changed; reloading it");
                    let _ = self.adopt(doc);
                }
            }
            // A torn or foreign file: keep what is in effect and look again next time.
            Err(e) => tracing::debug!("the credential store changed but cannot be read: {e}"),
        }
    }

    /// A refresh before a call, when due; best effort while the token is still valid.
    pub async fn refresh_if_due(
        self: &Arc<Self>,
        current: ChatgptCredentials,
        reason: RefreshReason,
        expires: Option<i64>,
    ) -> Result<ChatgptCredentials, AuthError> {
        match self.refresh(current.generation, reason).await {
            Ok(fresh) => Ok(fresh),
            Err(e @ AuthError::LoginRequired(_)) => Err(e),
            Err(e) if expires.is_some_and(|exp| exp > now_secs()) => {
                tracing::info!("proactive refresh failed ({e}); using the current token");
                Ok(current)
            }
            Err(e) => Err(e),
        }
    }
}

/// The home's credential under the refresh lock beside it (no lock for a store no other
/// process sees). The latch lives in memory, not in the store: Codex reads the same
/// document.
impl RotatingStore for ManagedRefresh {
    type Credential = AuthDocument;
    type Token = SecretText;
    type Answer = Refreshed;
    type Lock = Option<FileLock>;
    type Error = AuthError;

    fn lock(&self) -> LockFuture<'_, Self> {
        Box::pin(async move {
            let held = match self.lock_dir() {
                Some(dir) => Some(
                    file_lock::acquire(&dir.join(REFRESH_LOCK), self.lock_wait)
                        .await
                        .map_err(unavailable)?,
                ),
                None => None,
            };
            let read = storage::off_runtime(&self.store, |s| s.load_document())
                .await
                .map_err(unavailable)?;
            Ok(Locked { lock: held, read })
        })
    }

    fn refresh_token(
        &self,
        _lock: &Option<FileLock>,
        read: &AuthDocument,
    ) -> Result<SecretText, AuthError> {
        read.tokens
            .as_ref()
            .map(|t| t.refresh_token.clone())
            .ok_or(AuthError::SignedOut)
    }

    fn commit(
        &self,
        lock: Option<FileLock>,
        read: AuthDocument,
        answer: Refreshed,
    ) -> BoxFuture<'_, Result<AuthDocument, AuthError>> {
        Box::pin(async move {
            let fresh = apply(read.clone(), answer);
            let in_effect = self.commit_under_codex_locks(&Some(read), fresh).await;
            drop(lock);
            in_effect
        })
    }

    /// Another process may have rotated the token under a lock we do not share (Codex
    /// takes none): the store is read once more before the credential is declared dead.
    fn latch(
        &self,
        lock: Option<FileLock>,
        read: AuthDocument,
        _failure: PermanentFailure,
    ) -> BoxFuture<'_, Result<Latch<AuthDocument>, AuthError>> {
        Box::pin(async move {
            let again = storage::off_runtime(&self.store, |s| s.load_document())
                .await
                .map_err(unavailable)?;
            drop(lock);
            if AuthDocument::same_credential(&again, &Some(read)) {
                Ok(Latch::Latched)
            } else {
                tracing::info!("the refresh failed but the store changed; adopting it");
                Ok(Latch::Moved(again))
            }
        })
    }

    fn release(&self, lock: Option<FileLock>) -> BoxFuture<'_, Result<(), AuthError>> {
        drop(lock);
        Box::pin(async { Ok(()) })
    }
}

/// What identifies the signed-in credential, beyond the status clients see.
fn identity_key(stored: &Option<Stored>) -> Option<Option<String>> {
    match stored {
        Some(Stored::Chatgpt(t)) => Some(t.account_id.clone()),
        Some(Stored::ApiKey(_)) => Some(None),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_answer_replaces_only_what_it_carries() {
        use crate::auth::storage::{SecretText, TokenData};
        let doc = AuthDocument::default().with_chatgpt(
            TokenData {
                id_token: SecretText::new("old.id.token".into()),
                access_token: SecretText::new("old-access".into()),
                refresh_token: SecretText::new("old-refresh".into()),
                account_id: Some("ws".into()),
                other: Default::default(),
            },
            None,
            SystemTime::UNIX_EPOCH,
        );
        let fresh = apply(
            doc.clone(),
            Refreshed {
                id_token: Some(SecretText::new("not a jwt".into())),
                access_token: Some(SecretText::new("new-access".into())),
                refresh_token: None,
            },
        );
        let t = fresh.tokens.as_ref().unwrap();
        assert_eq!(t.access_token.expose(), "new-access");
        assert_eq!(t.refresh_token.expose(), "old-refresh");
        assert_eq!(
            t.id_token.expose(),
            "old.id.token",
            "a broken ID token is not stored"
        );
        assert_ne!(fresh.last_refresh, doc.last_refresh);
        assert!(!AuthDocument::same_credential(&Some(fresh), &Some(doc)));
    }
}

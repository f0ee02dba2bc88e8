//! The one place the auth state, the issuer client and the sign-in flows are built from
//! the configuration. The app-server, the sign-in commands and the broker all start here,
//! so they cannot drift apart in policy or storage.

use std::sync::Arc;

use crate::auth::grant::TokenIssuer;
use crate::auth::storage::{AuthDocument, CredentialStore, SecretText, StorageError};
use crate::auth::{AuthEvent, AuthManager, AuthSetup, Events, Policy};
use crate::backend::ClientBuildError;
use crate::config::Config;
use crate::login::{IssuerClient, LoginSettings, Logins};

/// Why the server could not start; its message says what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub(crate) String);

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

/// `CODEX_ACCESS_TOKEN`, as Codex reads it: an access token given alone, used instead of
/// the home's store while it is set. It lives in memory only (an `ephemeral` store holding
/// it), so nothing is written and no other process's credential is touched; its claims are
/// read once, here, and it is never refreshed.
fn access_token_from_env() -> Result<Option<CredentialStore>, StartError> {
    let Some(token) = std::env::var("CODEX_ACCESS_TOKEN")
        .ok()
        .filter(|v| !v.trim().is_empty())
    else {
        return Ok(None);
    };
    let token = zeroize::Zeroizing::new(token);
    let claims = crate::auth::jwt::parse(token.trim())
        .map_err(|e| StartError(format!("CODEX_ACCESS_TOKEN {e}")))?;
    let store = CredentialStore::new(
        std::path::Path::new(""),
        crate::vocabulary::CredentialsStore::Ephemeral,
        None,
    );
    let doc = AuthDocument::default().with_access_token(
        SecretText::new(token.trim().to_owned()),
        claims.chatgpt_account_id,
        std::time::SystemTime::now(),
    );
    store.save(&doc)?;
    Ok(Some(store))
}

/// The auth state every command builds the same way: the configured store (seeded from
/// `CODEX_AUTH_JSON`), the policy, and the issuer client that performs the refresh grant.
/// Without clients to tell (the broker), events go nowhere; its grants go through
/// `grants`, given the issuer client (the broker counts and times them).
pub(crate) fn managed_auth(
    config: &Config,
    grants: impl FnOnce(Arc<dyn TokenIssuer>) -> Arc<dyn TokenIssuer>,
) -> Result<(Arc<AuthManager>, IssuerClient), StartError> {
    managed_auth_with(config, Events::default(), grants, true)
}

/// The auth state whose events (a warning of the store included) go to `events`.
pub(crate) fn managed_auth_to(
    config: &Config,
    events: Events,
) -> Result<(Arc<AuthManager>, IssuerClient), StartError> {
    managed_auth_with(config, events, |issuer| issuer, true)
}

/// [`managed_auth`] over `config`'s home alone: the environment's one-off credentials
/// (`CODEX_AUTH_JSON`, `CODEX_ACCESS_TOKEN`) are not looked at. The broker's named
/// credentials, each in a home of its own, are built so.
pub(crate) fn managed_auth_in(
    config: &Config,
    grants: impl FnOnce(Arc<dyn TokenIssuer>) -> Arc<dyn TokenIssuer>,
) -> Result<(Arc<AuthManager>, IssuerClient), StartError> {
    managed_auth_with(config, Events::default(), grants, false)
}

fn managed_auth_with(
    config: &Config,
    events: Events,
    grants: impl FnOnce(Arc<dyn TokenIssuer>) -> Arc<dyn TokenIssuer>,
    from_env: bool,
) -> Result<(Arc<AuthManager>, IssuerClient), StartError> {
    let policy = Policy {
        workspaces: config.forced_workspace_ids.clone(),
        login_method: config.forced_login_method,
    };
    let (roots, proxies) = config.network.describe_sources();
    tracing::info!(%roots, %proxies, "outbound connections");
    let warnings = events.clone();
    let from_env_token = if from_env {
        access_token_from_env()?
    } else {
        None
    };
    let store = Arc::new(match from_env_token {
        Some(store) => store,
        None => CredentialStore::new(
            &config.codex_home,
            config.credentials_store,
            Some(Arc::new(move |message| {
                warnings.emit(AuthEvent::Warning { message })
            })),
        ),
    });
    if from_env {
        seed_from_env(&store)?;
    }
    let issuer = IssuerClient::new(
        &config.network,
        config.issuer.clone(),
        config.backend_connect_timeout,
        config.issuer_timeout,
    )
    .map_err(StartError)?;
    let auth = Arc::new(AuthManager::new(AuthSetup {
        store,
        policy,
        refresh_timeout: config.refresh_timeout,
        issuer: grants(Arc::new(issuer.clone())),
        events,
        on_rotation: config
            .on_credential_change
            .as_deref()
            .and_then(crate::credential_hook::CommandHook::new)
            .map(|hook| Arc::new(hook) as Arc<dyn crate::auth::RotationHook>),
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
            revoke_replaced: config.revoke_replaced,
        },
    )
}

//! Why a provider's own credential could not be had. Told in the turn's error: every
//! variant names the provider and the setting, never a value.

use super::command::CommandError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ProviderAuthError {
    #[error(
        "model provider {provider:?} needs the environment variable {var} (its env_key), which is not set or empty{}",
        instructions.as_deref().map(|i| format!(": {i}")).unwrap_or_default()
    )]
    MissingEnvKey {
        provider: String,
        var: String,
        instructions: Option<String>,
    },
    #[error("model provider {provider:?}: {error}")]
    Command {
        provider: String,
        error: CommandError,
    },
}

impl From<ProviderAuthError> for crate::backend::BackendError {
    fn from(e: ProviderAuthError) -> Self {
        Self::Unavailable(Box::new(crate::backend::client::CredentialUnavailable {
            message: e.to_string(),
            kind: e.kind(),
        }))
    }
}

impl ProviderAuthError {
    /// The stable name a client can match, beside the message (`additionalDetails`).
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderAuthError::MissingEnvKey { .. } => "providerEnvKeyMissing",
            ProviderAuthError::Command { .. } => "providerAuthCommandFailed",
        }
    }
}

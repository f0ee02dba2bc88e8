//! The two settings both the configuration and the auth state speak of: who may sign in,
//! and where a managed credential is kept.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who may sign in, as the Codex config spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ForcedLoginMethod {
    Chatgpt,
    Api,
}

/// Where a managed credential is kept (`cli_auth_credentials_store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CredentialsStore {
    /// `$CODEX_HOME/auth.json`.
    #[default]
    File,
    /// The operating system's keyring.
    Keyring,
    /// The keyring; the file, with a visible warning, when the keyring fails.
    Auto,
    /// Memory only: gone when the process ends.
    Ephemeral,
}

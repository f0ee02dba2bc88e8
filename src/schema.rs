//! `generate-json-schema`: the JSON Schema of every type on the wire, from the Rust types.
//! `schema/` in the repository is this output; a test keeps the two in step.

use std::path::Path;

use schemars::{JsonSchema, Schema, schema_for};

use crate::protocol::account::*;
use crate::protocol::methods;
use crate::protocol::turns::*;

fn entry<T: JsonSchema>(name: &'static str) -> (&'static str, Schema) {
    (name, schema_for!(T))
}

/// Every file, by name, in a stable order: each declared method's params and result (the
/// app-server's, then the broker's; a type shared by two methods once), then what the
/// server sends.
pub fn all() -> Vec<(&'static str, Schema)> {
    let mut files: Vec<(&'static str, Schema)> = Vec::new();
    for declared in methods::app_server().into_iter().chain(methods::broker()) {
        for (name, schema) in [declared.params, declared.result] {
            if !files.iter().any(|(have, _)| *have == name) {
                files.push((name, schema()));
            }
        }
    }
    files.extend([
        entry::<AccountLoginCompletedNotification>("AccountLoginCompletedNotification"),
        entry::<AccountUpdatedNotification>("AccountUpdatedNotification"),
        entry::<WarningNotification>("WarningNotification"),
        entry::<ChatgptAuthTokensRefreshParams>("ChatgptAuthTokensRefreshParams"),
        entry::<ExternalTokens>("ChatgptAuthTokensRefreshResponse"),
        entry::<ThreadStartedNotification>("ThreadStartedNotification"),
        entry::<TurnStartedNotification>("TurnStartedNotification"),
        entry::<TurnCompletedNotification>("TurnCompletedNotification"),
        entry::<ItemStartedNotification>("ItemStartedNotification"),
        entry::<ItemCompletedNotification>("ItemCompletedNotification"),
        entry::<AgentMessageDeltaNotification<'static>>("AgentMessageDeltaNotification"),
        entry::<ErrorNotification>("ErrorNotification"),
        entry::<ThreadTokenUsageUpdatedNotification>("ThreadTokenUsageUpdatedNotification"),
        entry::<AccountRateLimitsUpdatedNotification>("AccountRateLimitsUpdatedNotification"),
        entry::<AuthRecoveryNotification>("AuthRecoveryNotification"),
        // The broker's.
        entry::<crate::protocol::credential::CredentialChanged>("CredentialChangedNotification"),
        entry::<crate::protocol::credential::CredentialLoginCompleted>(
            "CredentialLoginCompletedNotification",
        ),
    ]);
    files
}

/// Renders each schema as the text written to `<name>.json`.
pub fn render() -> Vec<(String, String)> {
    all()
        .into_iter()
        .map(|(name, schema)| {
            let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
            text.push('\n');
            (format!("{name}.json"), text)
        })
        .collect()
}

pub fn write(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (file, text) in render() {
        std::fs::write(dir.join(file), text)?;
    }
    Ok(())
}

//! `initialize`: records the connection's session and answers who we are.

use std::path::Path;
use std::sync::OnceLock;

use super::{Api, ApiError, Session};
use crate::auth::{Identity, Mode};
use crate::protocol::account::{AccountUpdateReason, AccountUpdatedNotification, AuthMode};
use crate::protocol::initialize::{ClientInfo, InitializeParams, InitializeResponse};
use crate::protocol::methods::ACCOUNT_UPDATED;
use crate::rpc::RequestContext;

pub(super) async fn initialize(
    api: &Api,
    ctx: &RequestContext,
    p: InitializeParams,
) -> Result<InitializeResponse, ApiError> {
    let capabilities = p.capabilities.unwrap_or_default();
    let user_agent = user_agent(&p.client_info);
    let session = Session {
        client_name: p.client_info.name.clone(),
        experimental_api: capabilities.experimental_api,
        opt_out: capabilities
            .opt_out_notification_methods
            .unwrap_or_default()
            .into_iter()
            .collect(),
        user_agent: user_agent.clone(),
    };
    let opted_out = session.opted_out(ACCOUNT_UPDATED);
    // The connection layer lets `initialize` through once; this cannot fail twice.
    api.connections.open(ctx.peer.clone(), session);
    // Joined to broadcasts only once the result is written, so no notification overtakes it.
    let (connections, id) = (api.connections.clone(), ctx.peer.id());
    ctx.after.push(async move { connections.join(id) });
    if let Some(ready) = routing_ready(api)
        && !opted_out
    {
        let peer = ctx.peer.clone();
        ctx.after.push(async move {
            // A connection already gone has nobody to tell.
            let _ = peer.notify(ACCOUNT_UPDATED, &ready).await;
        });
    }
    Ok(InitializeResponse {
        user_agent,
        codex_home: absolute(&api.config.codex_home),
        platform_family: if cfg!(windows) { "windows" } else { "unix" }.to_owned(),
        platform_os: std::env::consts::OS.to_owned(),
    })
}

/// Codex 0.171 follows start-up with an `account/updated` of reason `workspaceRoutingReady`
/// once a stored ChatGPT sign-in is loaded; its clients wait for it before they route
/// requests to the workspace. authbridge knows the stored sign-in as soon as it starts, so
/// each connection gets it right after its `initialize` result. External tokens and API
/// keys are not a stored ChatGPT sign-in: nothing is sent for them.
fn routing_ready(api: &Api) -> Option<AccountUpdatedNotification> {
    if api.auth.mode() != Some(Mode::Chatgpt) {
        return None;
    }
    let plan = match api.auth.identity()? {
        Identity::Chatgpt { plan, .. } => plan,
        Identity::ApiKey => return None,
    };
    Some(AccountUpdatedNotification {
        auth_mode: Some(AuthMode::Chatgpt),
        plan_type: Some(plan),
        reason: Some(AccountUpdateReason::WorkspaceRoutingReady),
    })
}

fn absolute(path: &Path) -> String {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    abs.display().to_string()
}

/// `<originator>/<version> (<os> <os version>; <arch>) <terminal> (<client>; <client version>)`,
/// the reference's layout. The originator is the connection's own client name.
fn user_agent(client: &ClientInfo) -> String {
    format!(
        "{}/{} ({}; {}) {} ({}; {})",
        client.name,
        env!("CARGO_PKG_VERSION"),
        os_description(),
        std::env::consts::ARCH,
        terminal(),
        client.name,
        client.version
    )
}

/// The OS name and version, read once. `sysinfo` knows each platform's way of telling
/// and reads it from files or system calls; `os_info` ran `lsb_release` (a Python script
/// on Debian), which made start-up 17 ms slower.
fn os_description() -> &'static str {
    static OS: OnceLock<String> = OnceLock::new();
    OS.get_or_init(|| {
        let name = sysinfo::System::name().unwrap_or_else(|_| std::env::consts::OS.to_owned());
        match sysinfo::System::os_version() {
            Ok(version) => format!("{name} {version}"),
            Err(_) => name,
        }
    })
}

fn terminal() -> String {
    ["TERM_PROGRAM", "TERM"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

//! `initialize`: records the connection's session and answers who we are.

use std::path::Path;
use std::sync::OnceLock;

use super::{Api, ApiError, Session};
use crate::protocol::initialize::{ClientInfo, InitializeParams, InitializeResponse};
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
    // The connection layer lets `initialize` through once; this cannot fail twice.
    api.connections.open(ctx.peer.clone(), session);
    // Joined to broadcasts only once the result is written, so no notification overtakes it.
    let (connections, id) = (api.connections.clone(), ctx.peer.id());
    ctx.after.push(async move { connections.join(id) });
    Ok(InitializeResponse {
        user_agent,
        codex_home: absolute(&api.config.codex_home),
        platform_family: if cfg!(windows) { "windows" } else { "unix" }.to_owned(),
        platform_os: std::env::consts::OS.to_owned(),
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

//! `initialize`: fixes the connection's session and answers who we are.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use jsonrpsee::types::Params;

use super::Api;
use super::params::parse;
use crate::protocol::initialize::{ClientInfo, InitializeParams, InitializeResponse};
use crate::rpc::{RequestContext, RpcError, Session};

pub async fn initialize(
    params: Params<'static>,
    api: Arc<Api>,
    ctx: RequestContext,
) -> Result<InitializeResponse, RpcError> {
    let p: InitializeParams = parse(&params)?;
    let capabilities = p.capabilities.unwrap_or_default();
    let user_agent = user_agent(&p.client_info);
    let session = Session {
        client_name: p.client_info.name.clone(),
        client_version: p.client_info.version.clone(),
        experimental_api: capabilities.experimental_api,
        opt_out: capabilities
            .opt_out_notification_methods
            .unwrap_or_default()
            .into_iter()
            .collect(),
        user_agent: user_agent.clone(),
    };
    if !ctx.peer.set_session(session) {
        return Err(RpcError::invalid_request_plain("Already initialized"));
    }
    // Joined to broadcasts only once the result is written, so no notification overtakes it.
    let (connections, peer) = (api.connections.clone(), ctx.peer.clone());
    ctx.after.push(async move { connections.add(peer) });
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
pub fn user_agent(client: &ClientInfo) -> String {
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

fn os_description() -> &'static str {
    static OS: OnceLock<String> = OnceLock::new();
    OS.get_or_init(|| {
        let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let field = |key: &str| {
            release
                .lines()
                .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                .map(|v| v.trim_matches('"').to_owned())
        };
        match (field("NAME"), field("VERSION_ID")) {
            (Some(name), Some(version)) => format!("{name} {version}"),
            (Some(name), None) => name,
            _ => std::env::consts::OS.to_owned(),
        }
    })
}

fn terminal() -> String {
    ["TERM_PROGRAM", "TERM"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

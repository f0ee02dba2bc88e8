//! Configuration: `$CODEX_HOME/config.toml`, overridden by `-c key=value`, validated once
//! at start-up so that nothing later has to second-guess it.
//!
//! The file is shared with Codex itself, so unknown keys are ignored and authbridge's own
//! knobs live under an `[authbridge]` table.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod providers;
pub use providers::{CommandSettings, DEFAULT_OPENAI_BASE_URL, ModelProvider, OPENAI_PROVIDER_ID};

pub const DEFAULT_CHATGPT_BASE_URL: &str = "https://chatgpt.com/backend-api/";
pub const DEFAULT_AUTH_ISSUER: &str = "https://auth.openai.com";
/// The browser sign-in's callback port; the issuer only redirects to the ports it knows.
pub const DEFAULT_LOGIN_CALLBACK_PORT: u16 = 1455;
/// The model of a thread that names none (Codex's `model` key overrides it).
pub const DEFAULT_MODEL: &str = "gpt-5-codex";
/// The system prompt of a turn when `authbridge.instructions` is unset: authbridge runs no
/// tools, so the model is told to answer in text only.
pub const DEFAULT_INSTRUCTIONS: &str =
    "You are a helpful assistant. Answer in plain text; no tools are available.";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid TOML in {path}: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("invalid override `{0}`: expected key=value")]
    Override(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error(transparent)]
    Network(#[from] crate::net::NetworkError),
    #[error(transparent)]
    Requirements(#[from] crate::requirements::RequirementsError),
}

pub use crate::vocabulary::{CredentialsStore, ForcedLoginMethod};

/// The OAuth issuer's endpoints. All derive from the issuer, except where the reference's
/// environment overrides name another URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerEndpoints {
    /// Without a trailing slash.
    pub issuer: String,
    /// Where the refresh grant goes (`CODEX_REFRESH_TOKEN_URL_OVERRIDE`).
    pub refresh_token_url: String,
    /// Where logout revokes (`CODEX_REVOKE_TOKEN_URL_OVERRIDE`).
    pub revoke_url: String,
}

impl IssuerEndpoints {
    pub fn new(issuer: String) -> Self {
        Self {
            refresh_token_url: format!("{issuer}/oauth/token"),
            revoke_url: format!("{issuer}/oauth/revoke"),
            issuer,
        }
    }

    pub fn authorize_url(&self) -> String {
        format!("{}/oauth/authorize", self.issuer)
    }

    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.issuer)
    }

    pub fn device_usercode_url(&self) -> String {
        format!("{}/api/accounts/deviceauth/usercode", self.issuer)
    }

    pub fn device_token_url(&self) -> String {
        format!("{}/api/accounts/deviceauth/token", self.issuer)
    }

    pub fn device_verification_url(&self) -> String {
        format!("{}/codex/device", self.issuer)
    }

    pub fn device_redirect_uri(&self) -> String {
        format!("{}/deviceauth/callback", self.issuer)
    }

    /// Whether this is the production issuer (the success page links differ).
    pub fn is_default(&self) -> bool {
        self.issuer == DEFAULT_AUTH_ISSUER
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum WorkspaceIds {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    chatgpt_base_url: Option<String>,
    forced_chatgpt_workspace_id: Option<WorkspaceIds>,
    forced_login_method: Option<ForcedLoginMethod>,
    auth_issuer: Option<String>,
    #[serde(default)]
    cli_auth_credentials_store: CredentialsStore,
    model: Option<String>,
    model_provider: Option<String>,
    model_providers: Option<toml::Table>,
    openai_base_url: Option<String>,
    #[serde(default)]
    authbridge: RawOwn,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOwn {
    max_message_bytes: Option<usize>,
    refresh_timeout_ms: Option<u64>,
    backend_connect_timeout_ms: Option<u64>,
    backend_timeout_ms: Option<u64>,
    shutdown_grace_ms: Option<u64>,
    max_outgoing_bytes: Option<usize>,
    max_backend_body_bytes: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    login_callback_port: Option<u16>,
    login_timeout_ms: Option<u64>,
    device_code_timeout_ms: Option<u64>,
    issuer_timeout_ms: Option<u64>,
    // Turns.
    instructions: Option<String>,
    stream_idle_timeout_ms: Option<u64>,
    // CI runners and scripts.
    on_credential_change: Option<Vec<String>>,
    revoke_on_logout: Option<bool>,
    revoke_replaced: Option<bool>,
    // The broker.
    keep_warm_after: Option<DurationSetting>,
}

/// A duration as a number of seconds or a humantime text (`"7d"`, `"12h 30m"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DurationSetting {
    Seconds(u64),
    Text(String),
}

/// `authbridge.KEY` as a duration of at least a second.
fn duration_setting(
    key: &str,
    value: Option<DurationSetting>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let value = match value {
        None => return Ok(default),
        Some(DurationSetting::Seconds(secs)) => Duration::from_secs(secs),
        Some(DurationSetting::Text(text)) => humantime::parse_duration(text.trim()).map_err(|e| {
            ConfigError::Invalid(format!(
                "authbridge.{key} = {text:?} is not a duration ({e}); write seconds or e.g. \"7d\""
            ))
        })?,
    };
    if value < Duration::from_secs(1) {
        return Err(ConfigError::Invalid(format!(
            "authbridge.{key} must be at least 1 second"
        )));
    }
    Ok(value)
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub codex_home: PathBuf,
    /// Base URL of the ChatGPT backend, normalized (scheme and host in lower case), without
    /// a trailing slash.
    pub chatgpt_base_url: String,
    /// Workspaces external and managed ChatGPT sign-in must belong to, when set.
    pub forced_workspace_ids: Option<Vec<String>>,
    pub forced_login_method: Option<ForcedLoginMethod>,
    /// Longest accepted message (a stdio line or a WebSocket message).
    pub max_message_bytes: usize,
    /// How long the parent has to answer `account/chatgptAuthTokens/refresh`.
    pub refresh_timeout: Duration,
    pub backend_connect_timeout: Duration,
    pub backend_timeout: Duration,
    /// How long in-flight requests may finish after the input ends or a signal arrives.
    pub shutdown_grace: Duration,
    /// Most bytes queued for one client before it is waited for (stdio) or disconnected
    /// (WebSocket).
    pub max_outgoing_bytes: usize,
    /// Largest backend response body read.
    pub max_backend_body_bytes: usize,
    /// How long an HTTP client of the WebSocket listener has to send its request head.
    pub header_read_timeout: Duration,
    pub issuer: IssuerEndpoints,
    pub credentials_store: CredentialsStore,
    /// The browser sign-in's callback port; 0 takes any free port (tests).
    pub login_callback_port: u16,
    /// How long a browser sign-in may wait for its callback.
    pub login_timeout: Duration,
    /// How long a device-code sign-in may poll.
    pub device_code_timeout: Duration,
    /// Budget of one request to the issuer.
    pub issuer_timeout: Duration,
    /// Turns: the default model, the system prompt, and how long a response stream may
    /// stay silent before the turn fails.
    pub model: String,
    pub instructions: String,
    pub stream_idle_timeout: Duration,
    /// The provider of threads that name none: `openai` or a key of `model_providers`.
    pub model_provider: String,
    /// The configured providers besides the built-in `openai`, by id.
    pub model_providers: std::collections::BTreeMap<String, ModelProvider>,
    /// The OpenAI API (API-key turns, and providers without a `base_url`), normalized
    /// like `chatgpt_base_url`.
    pub openai_base_url: String,
    /// The trusted roots and the proxies, from the environment: every outbound connection
    /// is made with them.
    pub network: crate::net::Network,
    /// The managed requirements applied over everything above, when a file sets them.
    pub requirements: Option<std::sync::Arc<crate::requirements::Requirements>>,
    /// A command (program and arguments) run with the new document on stdin after every
    /// rotation this process stores, so a secret manager can keep the only copy current.
    pub on_credential_change: Option<Vec<String>>,
    /// Whether `account/logout` and `logout` revoke the refresh token (Codex does; users
    /// whose other machines share the sign-in may not want it).
    pub revoke_on_logout: bool,
    /// Whether a new sign-in revokes the credential it replaces.
    pub revoke_replaced: bool,
    /// The broker refreshes a credential whose last refresh is older than this, used or
    /// not, so its refresh token never lapses.
    pub keep_warm_after: Duration,
}

impl Config {
    /// Loads `codex_home/config.toml` (when present) and applies `overrides` in order.
    pub fn load(codex_home: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let path = codex_home.join("config.toml");
        let mut table = match crate::regular_file::read(&path) {
            Ok(bytes) => std::str::from_utf8(&bytes)
                .map_err(|_| ConfigError::Toml {
                    path: path.clone(),
                    message: "not UTF-8".into(),
                })?
                .parse::<toml::Table>()
                .map_err(|e| ConfigError::Toml {
                    path: path.clone(),
                    message: e.message().to_owned(),
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        let mut config = Self::from_table(codex_home.to_path_buf(), table)?;
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        config.apply_env(var)?;
        if let Some(requirements) = crate::requirements::Requirements::load(var)? {
            config.apply_requirements(requirements)?;
        }
        Ok(config)
    }

    /// The managed requirements win over the file, `-c` and the environment: applied last.
    pub fn apply_requirements(
        &mut self,
        requirements: crate::requirements::Requirements,
    ) -> Result<(), ConfigError> {
        self.forced_login_method = requirements.login_method(self.forced_login_method)?;
        self.forced_workspace_ids = requirements.workspaces(self.forced_workspace_ids.take())?;
        if let Some(store) = requirements.cli_auth_credentials_store {
            self.credentials_store = store;
        }
        if let Some(url) = &requirements.chatgpt_base_url {
            self.chatgpt_base_url = validate_url(
                &format!("chatgpt_base_url of {}", requirements.path.display()),
                url,
            )?;
        }
        self.requirements = Some(std::sync::Arc::new(requirements));
        Ok(())
    }

    /// The reference's environment overrides of the issuer's URLs, read after the file and
    /// `-c`, as the reference reads them; each is held to the same rules as the config key.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(issuer) = var("CODEX_APP_SERVER_LOGIN_ISSUER") {
            self.issuer =
                IssuerEndpoints::new(validate_url("CODEX_APP_SERVER_LOGIN_ISSUER", &issuer)?);
        }
        if let Some(url) = var("CODEX_REFRESH_TOKEN_URL_OVERRIDE") {
            self.issuer.refresh_token_url = validate_url("CODEX_REFRESH_TOKEN_URL_OVERRIDE", &url)?;
        }
        if let Some(url) = var("CODEX_REVOKE_TOKEN_URL_OVERRIDE") {
            self.issuer.revoke_url = validate_url("CODEX_REVOKE_TOKEN_URL_OVERRIDE", &url)?;
        }
        Ok(())
    }

    pub fn from_table(codex_home: PathBuf, table: toml::Table) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_owned()))?;
        let forced_workspace_ids = match raw.forced_chatgpt_workspace_id {
            None => None,
            Some(WorkspaceIds::One(s)) if s.contains(',') => {
                return Err(ConfigError::Invalid(format!(
                    "forced_chatgpt_workspace_id = {s:?} looks like several ids in one string; \
                     write a TOML list instead, e.g. forced_chatgpt_workspace_id = [\"ws-1\", \"ws-2\"]"
                )));
            }
            Some(WorkspaceIds::One(s)) => Some(vec![s.trim().to_owned()]),
            Some(WorkspaceIds::Many(v)) => {
                Some(v.into_iter().map(|s| s.trim().to_owned()).collect())
            }
        };
        if forced_workspace_ids
            .as_ref()
            .is_some_and(|v| v.is_empty() || v.iter().any(String::is_empty))
        {
            return Err(ConfigError::Invalid(
                "forced_chatgpt_workspace_id must not be empty".into(),
            ));
        }
        let base = raw
            .chatgpt_base_url
            .unwrap_or_else(|| DEFAULT_CHATGPT_BASE_URL.to_owned());
        let chatgpt_base_url = validate_url("chatgpt_base_url", &base)?;
        let issuer = IssuerEndpoints::new(validate_url(
            "auth_issuer",
            raw.auth_issuer.as_deref().unwrap_or(DEFAULT_AUTH_ISSUER),
        )?);
        let openai_base_url = validate_url(
            "openai_base_url",
            raw.openai_base_url
                .as_deref()
                .unwrap_or(DEFAULT_OPENAI_BASE_URL),
        )?;
        let model_providers = providers::parse_all(raw.model_providers, &codex_home, validate_url)?;
        let model_provider = match raw.model_provider {
            None => OPENAI_PROVIDER_ID.to_owned(),
            Some(id) if id == OPENAI_PROVIDER_ID || model_providers.contains_key(&id) => id,
            Some(id) => {
                return Err(ConfigError::Invalid(format!(
                    "model_provider = {id:?} names no provider: define [model_providers.{id}] \
                     or use \"openai\""
                )));
            }
        };
        let own = raw.authbridge;
        let at_least = |key: &str, value: Option<usize>, default: usize, min: usize| {
            let value = value.unwrap_or(default);
            if value < min {
                return Err(ConfigError::Invalid(format!(
                    "authbridge.{key} must be at least {min}"
                )));
            }
            Ok(value)
        };
        // A zero timeout would fail every call at once: refused rather than obeyed.
        let timeout = |key: &str, value: Option<u64>, default: u64| {
            let value = value.unwrap_or(default);
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "authbridge.{key} must be at least 1 (milliseconds)"
                )));
            }
            Ok(Duration::from_millis(value))
        };
        Ok(Self {
            network: crate::net::Network::from_env()?,
            requirements: None,
            codex_home,
            chatgpt_base_url,
            forced_workspace_ids,
            forced_login_method: raw.forced_login_method,
            max_message_bytes: at_least(
                "max_message_bytes",
                own.max_message_bytes,
                8 * 1024 * 1024,
                1024,
            )?,
            refresh_timeout: timeout("refresh_timeout_ms", own.refresh_timeout_ms, 10_000)?,
            backend_connect_timeout: timeout(
                "backend_connect_timeout_ms",
                own.backend_connect_timeout_ms,
                10_000,
            )?,
            backend_timeout: timeout("backend_timeout_ms", own.backend_timeout_ms, 60_000)?,
            shutdown_grace: Duration::from_millis(own.shutdown_grace_ms.unwrap_or(5_000)),
            max_outgoing_bytes: at_least(
                "max_outgoing_bytes",
                own.max_outgoing_bytes,
                4 * 1024 * 1024,
                64 * 1024,
            )?,
            max_backend_body_bytes: at_least(
                "max_backend_body_bytes",
                own.max_backend_body_bytes,
                4 * 1024 * 1024,
                1024,
            )?,
            header_read_timeout: timeout(
                "header_read_timeout_ms",
                own.header_read_timeout_ms,
                10_000,
            )?,
            issuer,
            credentials_store: raw.cli_auth_credentials_store,
            login_callback_port: own
                .login_callback_port
                .unwrap_or(DEFAULT_LOGIN_CALLBACK_PORT),
            login_timeout: timeout("login_timeout_ms", own.login_timeout_ms, 10 * 60_000)?,
            device_code_timeout: timeout(
                "device_code_timeout_ms",
                own.device_code_timeout_ms,
                15 * 60_000,
            )?,
            issuer_timeout: timeout("issuer_timeout_ms", own.issuer_timeout_ms, 30_000)?,
            model: non_empty("model", raw.model, DEFAULT_MODEL)?,
            instructions: non_empty(
                "authbridge.instructions",
                own.instructions,
                DEFAULT_INSTRUCTIONS,
            )?,
            stream_idle_timeout: timeout(
                "stream_idle_timeout_ms",
                own.stream_idle_timeout_ms,
                300_000,
            )?,
            model_provider,
            model_providers,
            openai_base_url,
            on_credential_change: hook_command(own.on_credential_change)?,
            revoke_on_logout: own.revoke_on_logout.unwrap_or(true),
            revoke_replaced: own.revoke_replaced.unwrap_or(false),
            keep_warm_after: duration_setting(
                "keep_warm_after",
                own.keep_warm_after,
                Duration::from_secs(7 * 24 * 3600),
            )?,
        })
    }
}

impl Config {
    /// Whether a model call may go over plain http: only when a configured URL says so,
    /// and `validate_url` allows that for loopback hosts alone.
    pub fn uses_plain_http(&self) -> bool {
        let plain = |u: &str| u.starts_with("http://");
        plain(&self.chatgpt_base_url)
            || plain(&self.openai_base_url)
            || self
                .model_providers
                .values()
                .filter_map(|p| p.base_url.as_deref())
                .any(plain)
    }
}

/// A hook with no program, or an empty one, would fail at every rotation instead of now.
fn hook_command(command: Option<Vec<String>>) -> Result<Option<Vec<String>>, ConfigError> {
    match command {
        Some(c) if c.first().is_none_or(|program| program.trim().is_empty()) => {
            Err(ConfigError::Invalid(
                "authbridge.on_credential_change must name a program: [\"cmd\", \"arg\", ...]"
                    .into(),
            ))
        }
        other => Ok(other),
    }
}

/// An empty model or prompt would only fail later, at the backend.
fn non_empty(key: &str, value: Option<String>, default: &str) -> Result<String, ConfigError> {
    match value {
        None => Ok(default.to_owned()),
        Some(v) if v.trim().is_empty() => {
            Err(ConfigError::Invalid(format!("{key} must not be empty")))
        }
        Some(v) => Ok(v),
    }
}

/// `-c a.b=value`: the value is TOML; a bare word that is not TOML is taken as a string,
/// as Codex does (`-c forced_login_method=api`).
fn apply_override(table: &mut toml::Table, o: &str) -> Result<(), ConfigError> {
    let (key, value) = o
        .split_once('=')
        .ok_or_else(|| ConfigError::Override(o.to_owned()))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(ConfigError::Override(o.to_owned()));
    }
    let value = value.trim();
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let mut parts: Vec<&str> = key.split('.').map(str::trim).collect();
    let last = parts.pop().expect("split yields at least one part");
    let mut current = table;
    for part in parts {
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        current = entry.as_table_mut().expect("just made a table");
    }
    current.insert(last.to_owned(), parsed);
    Ok(())
}

/// Tokens must never travel in clear text: `http://` is accepted only for loopback hosts.
/// `key` names the setting in errors.
fn validate_url(key: &str, base: &str) -> Result<String, ConfigError> {
    let url = reqwest::Url::parse(base)
        .map_err(|e| ConfigError::Invalid(format!("{key} {base:?} is not a URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(ConfigError::Invalid(format!(
                "{key} {base:?} uses plain http to a non-loopback host; tokens would travel \
                 in clear text. Use https, or http only for 127.0.0.1, ::1 or localhost"
            )));
        }
        other => {
            return Err(ConfigError::Invalid(format!(
                "{key} scheme {other:?} is not http(s)"
            )));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::Invalid(format!(
            "{key} must not carry credentials"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::Invalid(format!(
            "{key} must not carry a query or a fragment"
        )));
    }
    // The parsed form, not the text: `HTTP://Host/` and `http://host/` are one URL, and
    // everything later (the https rule of the client) reads the scheme from it.
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// `$CODEX_HOME`, else `~/.codex`.
pub fn default_codex_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CODEX_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".codex")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(overrides: &[&str]) -> Result<Config, ConfigError> {
        let mut t = toml::Table::new();
        for o in overrides {
            apply_override(&mut t, o)?;
        }
        Config::from_table(PathBuf::from("home"), t)
    }

    #[test]
    fn defaults() {
        let c = load(&[]).unwrap();
        assert_eq!(c.chatgpt_base_url, "https://chatgpt.com/backend-api");
        assert_eq!(c.refresh_timeout, Duration::from_secs(10));
        assert_eq!(c.max_message_bytes, 8 * 1024 * 1024);
        assert!(c.forced_workspace_ids.is_none());
    }

    #[test]
    fn overrides_are_toml_with_bare_word_fallback_and_dotted_keys() {
        let c = load(&[
            r#"chatgpt_base_url="http://127.0.0.1:9/backend-api/""#,
            "forced_login_method=api",
            r#"forced_chatgpt_workspace_id=["a","b"]"#,
            "authbridge.refresh_timeout_ms=250",
        ])
        .unwrap();
        assert_eq!(c.chatgpt_base_url, "http://127.0.0.1:9/backend-api");
        assert_eq!(c.forced_login_method, Some(ForcedLoginMethod::Api));
        assert_eq!(
            c.forced_workspace_ids,
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(c.refresh_timeout, Duration::from_millis(250));
    }

    #[test]
    fn comma_separated_workspaces_ask_for_a_list() {
        let e = load(&[r#"forced_chatgpt_workspace_id="a,b""#])
            .unwrap_err()
            .to_string();
        assert!(e.contains("TOML list"), "{e}");
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(load(&[r#"chatgpt_base_url="http://localhost:1/backend-api/""#]).is_ok());
        assert!(load(&[r#"chatgpt_base_url="http://[::1]:1/""#]).is_ok());
        let e = load(&[r#"chatgpt_base_url="http://example.com/backend-api/""#])
            .unwrap_err()
            .to_string();
        assert!(e.contains("clear text"), "{e}");
        assert!(load(&[r#"chatgpt_base_url="https://user:pw@example.com/""#]).is_err());
    }

    #[test]
    fn an_upper_case_scheme_is_normalized_before_the_https_rule() {
        let c = load(&[r#"chatgpt_base_url="HTTP://LocalHost:9/backend-api/""#]).unwrap();
        assert_eq!(c.chatgpt_base_url, "http://localhost:9/backend-api");
        let e = load(&[r#"chatgpt_base_url="HTTP://example.com/""#])
            .unwrap_err()
            .to_string();
        assert!(e.contains("clear text"), "{e}");
        let c = load(&[r#"chatgpt_base_url="HTTPS://Example.COM/backend-api""#]).unwrap();
        assert_eq!(c.chatgpt_base_url, "https://example.com/backend-api");
    }

    #[test]
    fn zero_timeouts_and_tiny_bounds_are_refused() {
        for key in [
            "refresh_timeout_ms",
            "backend_timeout_ms",
            "backend_connect_timeout_ms",
            "header_read_timeout_ms",
            "stream_idle_timeout_ms",
        ] {
            let e = load(&[&format!("authbridge.{key}=0")])
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{e}");
        }
        assert!(load(&["authbridge.max_outgoing_bytes=10"]).is_err());
        assert!(
            load(&["authbridge.shutdown_grace_ms=0"]).is_ok(),
            "no grace is a choice"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_in_place_of_config_toml_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo =
            std::ffi::CString::new(dir.path().join("config.toml").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let e = Config::load(dir.path(), &[]).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn the_issuer_and_its_environment_overrides() {
        let c = load(&[]).unwrap();
        assert_eq!(c.issuer.token_url(), "https://auth.openai.com/oauth/token");
        assert_eq!(c.credentials_store, CredentialsStore::File);
        assert_eq!(c.login_callback_port, 1455);
        let mut c = load(&[
            r#"auth_issuer="http://127.0.0.1:7/""#,
            "cli_auth_credentials_store=auto",
        ])
        .unwrap();
        assert_eq!(
            c.issuer.device_verification_url(),
            "http://127.0.0.1:7/codex/device"
        );
        assert_eq!(c.credentials_store, CredentialsStore::Auto);
        assert!(load(&[r#"auth_issuer="http://auth.example.com""#]).is_err());
        c.apply_env(|name| match name {
            "CODEX_APP_SERVER_LOGIN_ISSUER" => Some("http://localhost:8".into()),
            "CODEX_REVOKE_TOKEN_URL_OVERRIDE" => Some("http://127.0.0.1:9/revoke".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            c.issuer.authorize_url(),
            "http://localhost:8/oauth/authorize"
        );
        assert_eq!(c.issuer.refresh_token_url, "http://localhost:8/oauth/token");
        assert_eq!(c.issuer.revoke_url, "http://127.0.0.1:9/revoke");
        let e = c
            .apply_env(|name| {
                (name == "CODEX_REFRESH_TOKEN_URL_OVERRIDE").then(|| "http://example.com/t".into())
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("CODEX_REFRESH_TOKEN_URL_OVERRIDE"), "{e}");
    }

    #[test]
    fn model_providers_are_read_as_codex_reads_them() {
        let c = load(&[]).unwrap();
        assert_eq!(c.model_provider, "openai");
        assert_eq!(c.openai_base_url, "https://api.openai.com/v1");
        assert!(c.model_providers.is_empty());
        let c = load(&[
            "model_provider=\"corp\"",
            "model_providers.corp.base_url=\"https://gw.example.com/v1/\"",
            "model_providers.corp.http_headers.X-Team=\"alpha\"",
            "model_providers.corp.query_params.api-version=\"1\"",
            "model_providers.corp.auth.command=\"print-token\"",
            "model_providers.corp.auth.args=[\"--secret=abc\"]",
            "model_providers.corp.auth.cwd=\"scripts\"",
            "model_providers.corp.auth.refresh_interval_ms=0",
            "model_providers.corp.request_max_retries=2",
        ])
        .unwrap();
        let p = &c.model_providers["corp"];
        assert_eq!(p.base_url.as_deref(), Some("https://gw.example.com/v1"));
        assert_eq!(p.name, "corp");
        assert!(!p.requires_openai_auth);
        let auth = p.auth.as_ref().unwrap();
        assert_eq!(auth.timeout, Duration::from_secs(5));
        assert_eq!(auth.refresh_interval, None);
        assert_eq!(auth.cwd.as_deref(), Some(Path::new("home/scripts")));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("abc") && !shown.contains("alpha"),
            "{shown}"
        );
        let p = &load(&["model_providers.x.auth.command=\"t\""])
            .unwrap()
            .model_providers["x"];
        assert_eq!(
            p.auth.as_ref().unwrap().refresh_interval,
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn bad_provider_entries_name_their_key() {
        for (settings, needle) in [
            (&["model_provider=\"ghost\""][..], "model_provider"),
            (
                &["model_providers.c.wire_api=\"chat\""][..],
                "model_providers.c.wire_api",
            ),
            (
                &[
                    "model_providers.c.auth.command=\"t\"",
                    "model_providers.c.requires_openai_auth=true",
                ][..],
                "requires_openai_auth",
            ),
            (
                &[
                    "model_providers.c.auth.command=\"t\"",
                    "model_providers.c.auth.timeout_ms=0",
                ][..],
                "model_providers.c.auth.timeout_ms",
            ),
            (
                &[
                    "model_providers.c.auth.command=\"t\"",
                    "model_providers.c.auth.bogus=1",
                ][..],
                "model_providers.c",
            ),
            (
                &[
                    "model_providers.c.env_key=\"K\"",
                    "model_providers.c.http_headers.Authorization=\"Bearer x\"",
                ][..],
                "Authorization",
            ),
            (&["model_providers.\"a b\".name=\"x\""][..], "provider id"),
            (
                &["openai_base_url=\"http://example.com\""][..],
                "openai_base_url",
            ),
        ] {
            let e = load(settings).unwrap_err().to_string();
            assert!(e.contains(needle), "{settings:?}: {e}");
        }
    }

    #[test]
    fn keep_warm_after_takes_seconds_or_a_humantime_text() {
        let week = Duration::from_secs(7 * 24 * 3600);
        assert_eq!(load(&[]).unwrap().keep_warm_after, week);
        assert_eq!(
            load(&["authbridge.keep_warm_after=90"])
                .unwrap()
                .keep_warm_after,
            Duration::from_secs(90)
        );
        assert_eq!(
            load(&[r#"authbridge.keep_warm_after="3d 12h""#])
                .unwrap()
                .keep_warm_after,
            Duration::from_secs(84 * 3600)
        );
        for bad in ["0", r#""soon""#, r#""10ms""#] {
            let e = load(&[&format!("authbridge.keep_warm_after={bad}")])
                .unwrap_err()
                .to_string();
            assert!(e.contains("authbridge.keep_warm_after"), "{e}");
        }
    }

    #[test]
    fn unknown_own_keys_are_refused_but_foreign_keys_pass() {
        assert_eq!(load(&["model=\"o3\""]).unwrap().model, "o3");
        assert!(load(&["model=\"\""]).is_err());
        assert!(load(&["authbridge.nope=1"]).is_err());
    }
}

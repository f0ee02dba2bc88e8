//! `[model_providers.<id>]` as Codex reads it, checked once at start-up: a header that
//! cannot be sent, a URL that would carry a bearer in clear text or an auth command with
//! no program stops start-up naming its key, instead of failing every turn later.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::ConfigError;

/// The provider every configuration has, whatever `model_providers` says.
pub const OPENAI_PROVIDER_ID: &str = "openai";
/// Where API-key turns go unless `openai_base_url` says otherwise (Codex's default).
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// Codex's defaults for a provider's auth command.
const DEFAULT_COMMAND_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_REFRESH_INTERVAL_MS: u64 = 300_000;

/// One entry as written; unknown keys are Codex's (retries, WebSocket tuning) and ignored.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawProvider {
    name: Option<String>,
    base_url: Option<String>,
    env_key: Option<String>,
    env_key_instructions: Option<String>,
    wire_api: Option<String>,
    query_params: Option<BTreeMap<String, String>>,
    http_headers: Option<BTreeMap<String, String>>,
    env_http_headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    requires_openai_auth: bool,
    auth: Option<RawCommand>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    timeout_ms: Option<u64>,
    refresh_interval_ms: Option<u64>,
    cwd: Option<PathBuf>,
}

/// A configured provider other than the built-in `openai`.
#[derive(Debug, Clone)]
pub struct ModelProvider {
    pub id: String,
    pub name: String,
    /// Validated and without a trailing slash; `None`: the OpenAI API's, as in Codex.
    pub base_url: Option<String>,
    pub env_key: Option<String>,
    pub env_key_instructions: Option<String>,
    pub query_params: BTreeMap<String, String>,
    /// Marked sensitive: `Debug` of the configuration does not show their values.
    pub http_headers: Vec<(HeaderName, HeaderValue)>,
    /// Header name and the environment variable its value is read from at each call.
    pub env_http_headers: Vec<(HeaderName, String)>,
    pub requires_openai_auth: bool,
    pub auth: Option<CommandSettings>,
}

/// `[model_providers.<id>.auth]`: the program that prints the provider's bearer token.
#[derive(Clone)]
pub struct CommandSettings {
    pub command: String,
    pub args: Vec<String>,
    pub timeout: Duration,
    /// `None` (`refresh_interval_ms = 0`): the token is reused until the provider answers 401.
    pub refresh_interval: Option<Duration>,
    pub cwd: Option<PathBuf>,
}

/// Arguments may carry secrets (a client secret passed on the command line): not shown.
impl std::fmt::Debug for CommandSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandSettings")
            .field("command", &self.command)
            .field("args", &format_args!("[{} redacted]", self.args.len()))
            .field("timeout", &self.timeout)
            .field("refresh_interval", &self.refresh_interval)
            .field("cwd", &self.cwd)
            .finish()
    }
}

/// An id is a TOML key and the `provider` of notifications: kept to a readable alphabet.
fn check_id(id: &str) -> Result<(), ConfigError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "model_providers.{id:?}: a provider id is 1 to 64 letters, digits, '-', '_' or '.'"
        )))
    }
}

fn header_name(key: &str, name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConfigError::Invalid(format!("{key}: {name:?} is not a header name")))
}

impl RawProvider {
    /// `validate_url` is the configuration's own rule for URLs (https, or http to loopback).
    pub(crate) fn validate(
        self,
        id: &str,
        codex_home: &Path,
        validate_url: impl Fn(&str, &str) -> Result<String, ConfigError>,
    ) -> Result<ModelProvider, ConfigError> {
        check_id(id)?;
        let key = |field: &str| format!("model_providers.{id}.{field}");
        if id == OPENAI_PROVIDER_ID {
            return Err(ConfigError::Invalid(format!(
                "model_providers.{id}: `{id}` is built in and cannot be redefined; \
                 use chatgpt_base_url or openai_base_url to move it"
            )));
        }
        if let Some(wire) = self.wire_api.as_deref()
            && wire != "responses"
        {
            return Err(ConfigError::Invalid(format!(
                "{} = {wire:?}: authbridge speaks the Responses API only; set wire_api = \"responses\"",
                key("wire_api")
            )));
        }
        let base_url = self
            .base_url
            .as_deref()
            .map(|u| validate_url(&key("base_url"), u))
            .transpose()?;
        if let Some(var) = &self.env_key
            && (var.is_empty() || var.contains(['=', '\0']))
        {
            return Err(ConfigError::Invalid(format!(
                "{} must name an environment variable",
                key("env_key")
            )));
        }
        let mut http_headers = vec![];
        for (name, value) in self.http_headers.unwrap_or_default() {
            let k = key("http_headers");
            let name = header_name(&k, &name)?;
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                ConfigError::Invalid(format!("{k}: the value of {name} is not a header value"))
            })?;
            value.set_sensitive(true);
            http_headers.push((name, value));
        }
        let mut env_http_headers = vec![];
        for (name, var) in self.env_http_headers.unwrap_or_default() {
            env_http_headers.push((header_name(&key("env_http_headers"), &name)?, var));
        }
        let bearer_elsewhere =
            self.auth.is_some() || self.env_key.is_some() || self.requires_openai_auth;
        if bearer_elsewhere
            && (http_headers
                .iter()
                .any(|(n, _)| n == reqwest::header::AUTHORIZATION)
                || env_http_headers
                    .iter()
                    .any(|(n, _)| n == reqwest::header::AUTHORIZATION))
        {
            return Err(ConfigError::Invalid(format!(
                "model_providers.{id}: an Authorization header cannot be combined with auth, \
                 env_key or requires_openai_auth, which supply the bearer"
            )));
        }
        let auth = match self.auth {
            None => None,
            Some(raw) => {
                let mut conflicts = vec![];
                if self.env_key.is_some() {
                    conflicts.push("env_key");
                }
                if self.requires_openai_auth {
                    conflicts.push("requires_openai_auth");
                }
                if !conflicts.is_empty() {
                    return Err(ConfigError::Invalid(format!(
                        "{} cannot be combined with {}: the bearer would come from two places",
                        key("auth"),
                        conflicts.join(", ")
                    )));
                }
                Some(raw.validate(&key("auth"), codex_home)?)
            }
        };
        Ok(ModelProvider {
            id: id.to_owned(),
            name: self
                .name
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| id.to_owned()),
            base_url,
            env_key: self.env_key,
            env_key_instructions: self.env_key_instructions,
            query_params: self.query_params.unwrap_or_default(),
            http_headers,
            env_http_headers,
            requires_openai_auth: self.requires_openai_auth,
            auth,
        })
    }
}

impl RawCommand {
    fn validate(self, key: &str, codex_home: &Path) -> Result<CommandSettings, ConfigError> {
        if self.command.trim().is_empty() {
            return Err(ConfigError::Invalid(format!(
                "{key}.command must name a program"
            )));
        }
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_COMMAND_TIMEOUT_MS);
        if timeout_ms == 0 {
            return Err(ConfigError::Invalid(format!(
                "{key}.timeout_ms must be at least 1 (milliseconds)"
            )));
        }
        let refresh = self
            .refresh_interval_ms
            .unwrap_or(DEFAULT_REFRESH_INTERVAL_MS);
        // Relative to the file that names it, as Codex resolves paths in config.toml.
        let cwd = self.cwd.map(|c| {
            if c.is_absolute() {
                c
            } else {
                codex_home.join(c)
            }
        });
        Ok(CommandSettings {
            command: self.command,
            args: self.args,
            timeout: Duration::from_millis(timeout_ms),
            refresh_interval: (refresh > 0).then(|| Duration::from_millis(refresh)),
            cwd,
        })
    }
}

/// Parses `model_providers` (absent: none).
pub(crate) fn parse_all(
    raw: Option<toml::Table>,
    codex_home: &Path,
    validate_url: impl Fn(&str, &str) -> Result<String, ConfigError> + Copy,
) -> Result<BTreeMap<String, ModelProvider>, ConfigError> {
    let mut out = BTreeMap::new();
    for (id, value) in raw.unwrap_or_default() {
        let raw: RawProvider = value.try_into().map_err(|e: toml::de::Error| {
            ConfigError::Invalid(format!("model_providers.{id}: {}", e.message()))
        })?;
        out.insert(id.clone(), raw.validate(&id, codex_home, validate_url)?);
    }
    Ok(out)
}

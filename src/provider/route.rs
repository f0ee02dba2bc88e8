//! Where a turn goes and whose bearer it carries, decided per turn from the thread's
//! provider and, for providers that use OpenAI auth, from the sign-in in effect:
//!
//! | provider | signed in with | URL | bearer |
//! | --- | --- | --- | --- |
//! | `openai` | ChatGPT | `{chatgpt_base_url}/codex/responses` | the ChatGPT access token |
//! | `openai` | an API key | `{openai_base_url}/responses` | the key |
//! | custom, `requires_openai_auth` | either | `{base_url}/responses` | as above |
//! | custom, `auth` | - | `{base_url}/responses` | the auth command's token |
//! | custom, `env_key` | - | `{base_url}/responses` | the variable, read at each call |
//! | custom, none of these | - | `{base_url}/responses` | none |

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::SecretString;

use super::command_auth::CommandAuth;
use super::error::ProviderAuthError;
use crate::auth::AuthManager;
use crate::backend::BackendError;
use crate::backend::client::{Bearer, CallAuth, chatgpt_bearer, chatgpt_recover};
use crate::config::Config;
use crate::config::{ModelProvider, OPENAI_PROVIDER_ID};

/// The OpenAI sign-in a turn of a provider that `requires_openai_auth` uses.
pub(crate) enum OpenaiAuth {
    Chatgpt(Arc<AuthManager>),
    ApiKey(SecretString),
}

/// The bearer source of one turn.
pub(crate) enum RouteAuth {
    Chatgpt(Arc<AuthManager>),
    /// An API key: there is no other to try after a 401.
    Fixed(Bearer),
    EnvKey {
        provider: String,
        var: String,
        instructions: Option<String>,
    },
    Command(CommandAuth),
    Anonymous,
}

/// One turn's destination.
pub(crate) struct Route {
    /// The provider id, as notifications name it.
    pub provider: String,
    /// With the provider's query parameters.
    pub url: String,
    /// The provider's own headers (`http_headers`, `env_http_headers`).
    pub headers: HeaderMap,
    pub auth: RouteAuth,
}

struct Custom {
    settings: ModelProvider,
    command: Option<CommandAuth>,
}

/// The configured providers, with each auth command's token cache: built once at
/// start-up, shared by every turn.
pub(crate) struct Providers {
    chatgpt_base_url: String,
    openai_base_url: String,
    custom: BTreeMap<String, Custom>,
}

/// Headers whose values come from the environment at each call; an unset, empty or
/// unsendable variable leaves its header out, as in Codex.
fn env_headers(into: &mut HeaderMap, pairs: &[(HeaderName, String)]) {
    for (name, var) in pairs {
        let Some(value) = std::env::var(var).ok().filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        match HeaderValue::from_str(&value) {
            Ok(mut v) => {
                v.set_sensitive(true);
                into.insert(name.clone(), v);
            }
            Err(_) => tracing::warn!(header = %name, var, "not sendable as a header; left out"),
        }
    }
}

fn with_query(url: String, params: &BTreeMap<String, String>) -> String {
    if params.is_empty() {
        return url;
    }
    match reqwest::Url::parse(&url) {
        Ok(mut u) => {
            u.query_pairs_mut().extend_pairs(params);
            u.to_string()
        }
        Err(_) => url,
    }
}

impl Providers {
    pub fn new(config: &Config) -> Self {
        let custom = config
            .model_providers
            .iter()
            .map(|(id, settings)| {
                let command = settings.auth.clone().map(|auth| CommandAuth::new(id, auth));
                (
                    id.clone(),
                    Custom {
                        settings: settings.clone(),
                        command,
                    },
                )
            })
            .collect();
        Self {
            chatgpt_base_url: config.chatgpt_base_url.clone(),
            openai_base_url: config.openai_base_url.clone(),
            custom,
        }
    }

    pub fn knows(&self, id: &str) -> bool {
        id == OPENAI_PROVIDER_ID || self.custom.contains_key(id)
    }

    /// Whether turns of `id` use the OpenAI sign-in (`openai` always does).
    pub fn requires_openai_auth(&self, id: &str) -> bool {
        self.custom
            .get(id)
            .is_none_or(|c| c.settings.requires_openai_auth)
    }

    /// The configured providers besides `openai`, by id.
    pub fn custom(&self) -> impl Iterator<Item = &ModelProvider> {
        self.custom.values().map(|c| &c.settings)
    }

    /// The route of a turn of provider `id` (one `knows`); `openai` is the sign-in to use
    /// when `requires_openai_auth(id)`, and is ignored otherwise.
    pub fn route(&self, id: &str, openai: Option<OpenaiAuth>) -> Route {
        let Some(custom) = self.custom.get(id) else {
            return self.openai_route(openai);
        };
        let p = &custom.settings;
        let mut headers = HeaderMap::new();
        for (name, value) in &p.http_headers {
            headers.insert(name.clone(), value.clone());
        }
        env_headers(&mut headers, &p.env_http_headers);
        let (default_base, auth) = match (&custom.command, &p.env_key, openai) {
            (Some(command), _, _) => (
                self.openai_base_url.clone(),
                RouteAuth::Command(command.clone()),
            ),
            (None, Some(var), _) => (
                self.openai_base_url.clone(),
                RouteAuth::EnvKey {
                    provider: id.to_owned(),
                    var: var.clone(),
                    instructions: p.env_key_instructions.clone(),
                },
            ),
            (None, None, Some(o)) if p.requires_openai_auth => self.openai_parts(o),
            (None, None, _) => (self.openai_base_url.clone(), RouteAuth::Anonymous),
        };
        let base = p.base_url.clone().unwrap_or(default_base);
        Route {
            provider: id.to_owned(),
            url: with_query(format!("{base}/responses"), &p.query_params),
            headers,
            auth,
        }
    }

    /// The base URL and bearer of an OpenAI sign-in: ChatGPT's Codex backend, or the API.
    fn openai_parts(&self, openai: OpenaiAuth) -> (String, RouteAuth) {
        match openai {
            OpenaiAuth::Chatgpt(auth) => (
                format!("{}/codex", self.chatgpt_base_url),
                RouteAuth::Chatgpt(auth),
            ),
            OpenaiAuth::ApiKey(key) => (
                self.openai_base_url.clone(),
                RouteAuth::Fixed(Bearer {
                    token: Arc::new(key),
                    account_id: None,
                    generation: 0,
                }),
            ),
        }
    }

    fn openai_route(&self, openai: Option<OpenaiAuth>) -> Route {
        let mut headers = HeaderMap::new();
        let (base, auth) = match openai {
            Some(o) => self.openai_parts(o),
            // The caller checked the sign-in; a route without one fails at the first send.
            None => (self.openai_base_url.clone(), RouteAuth::Anonymous),
        };
        if matches!(auth, RouteAuth::Fixed(_)) {
            // The API's organization and project, from the environment, as Codex sends them.
            env_headers(
                &mut headers,
                &[
                    (
                        HeaderName::from_static("openai-organization"),
                        "OPENAI_ORGANIZATION".into(),
                    ),
                    (
                        HeaderName::from_static("openai-project"),
                        "OPENAI_PROJECT".into(),
                    ),
                ],
            );
        }
        Route {
            provider: OPENAI_PROVIDER_ID.to_owned(),
            url: format!("{base}/responses"),
            headers,
            auth,
        }
    }
}

impl CallAuth for RouteAuth {
    fn bearer(&self) -> BoxFuture<'_, Result<Option<Bearer>, BackendError>> {
        async move {
            match self {
                RouteAuth::Chatgpt(auth) => chatgpt_bearer(auth).await.map(Some),
                RouteAuth::Fixed(b) => Ok(Some(b.clone())),
                RouteAuth::EnvKey {
                    provider,
                    var,
                    instructions,
                } => match std::env::var(var).ok().filter(|v| !v.trim().is_empty()) {
                    Some(value) => Ok(Some(Bearer {
                        token: Arc::new(SecretString::from(value.trim().to_owned())),
                        account_id: None,
                        generation: 0,
                    })),
                    None => Err(ProviderAuthError::MissingEnvKey {
                        provider: provider.clone(),
                        var: var.clone(),
                        instructions: instructions.clone(),
                    }
                    .into()),
                },
                RouteAuth::Command(c) => c.bearer().await,
                RouteAuth::Anonymous => Ok(None),
            }
        }
        .boxed()
    }

    fn recover<'a>(
        &'a self,
        failed: Option<&'a Bearer>,
    ) -> Option<BoxFuture<'a, Result<Bearer, BackendError>>> {
        match self {
            RouteAuth::Chatgpt(auth) => {
                let failed = failed?;
                Some(chatgpt_recover(auth, failed).boxed())
            }
            RouteAuth::Command(c) => c.recover(failed),
            RouteAuth::Fixed(_) | RouteAuth::EnvKey { .. } | RouteAuth::Anonymous => None,
        }
    }
}

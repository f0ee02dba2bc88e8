//! `configRequirements/read`, `config/read`, `model/list` and `modelProvider/list`: answered
//! from the validated configuration, so a client's start-up sees the settings authbridge
//! actually applies. Nothing here calls the backend.

use std::collections::BTreeMap;

use super::error::ApiError;
use super::{Api, NeedsChatgpt, RequestContext};
use crate::protocol::startup::*;

use crate::config::{ModelProvider, OPENAI_PROVIDER_ID};

/// The managed requirements in effect (see `requirements.rs`), null when no file sets any.
pub(super) async fn config_requirements(
    api: &Api,
    _ctx: &RequestContext,
    _p: ConfigRequirementsReadParams,
) -> Result<ConfigRequirementsReadResponse, ApiError> {
    let requirements = api
        .config
        .requirements
        .as_ref()
        .map(|r| ConfigRequirements {
            allowed_login_methods: r.allowed_login_methods.clone(),
            chatgpt_base_url: r
                .chatgpt_base_url
                .as_ref()
                .map(|_| api.config.chatgpt_base_url.clone()),
            cli_auth_credentials_store: r.cli_auth_credentials_store,
        });
    Ok(ConfigRequirementsReadResponse { requirements })
}

pub(super) async fn config(
    api: &Api,
    _ctx: &RequestContext,
    _p: ConfigReadParams,
) -> Result<ConfigReadResponse, ApiError> {
    let config = &api.config;
    let workspaces = config.forced_workspace_ids.clone().map(|mut ids| {
        if ids.len() == 1 {
            WorkspaceIds::One(ids.remove(0))
        } else {
            WorkspaceIds::Many(ids)
        }
    });
    Ok(ConfigReadResponse {
        config: EffectiveConfig {
            model: config.model.clone(),
            model_provider: config.model_provider.clone(),
            forced_login_method: config.forced_login_method,
            forced_chatgpt_workspace_id: workspaces,
            instructions: config.instructions.clone(),
        },
        origins: BTreeMap::new(),
    })
}

pub(super) async fn models(
    api: &Api,
    _ctx: &RequestContext,
    p: ModelListParams,
) -> Result<ModelListResponse, ApiError> {
    // The configured model belongs to the configured provider; another has none here,
    // and a cursor past the one page is the end.
    let data = if p
        .model_provider
        .as_deref()
        .is_some_and(|id| id != api.config.model_provider)
        || p.cursor.is_some()
        || p.limit == Some(0)
    {
        vec![]
    } else {
        let model = api.config.model.clone();
        vec![Model {
            id: model.clone(),
            model: model.clone(),
            display_name: model,
            description: "The model configured for new threads".into(),
            hidden: false,
            is_default: true,
            default_reasoning_effort: "medium".into(),
            supported_reasoning_efforts: vec![],
        }]
    };
    Ok(ModelListResponse {
        data,
        next_cursor: None,
    })
}

pub(super) async fn providers(
    api: &Api,
    _ctx: &RequestContext,
    _p: ModelProviderListParams,
) -> Result<ModelProviderListResponse, ApiError> {
    let openai = ModelProviderSummary {
        id: OPENAI_PROVIDER_ID.into(),
        name: "OpenAI".into(),
        base_url: Some(api.config.chatgpt_base_url.clone()),
        can_edit: false,
        settings: ProviderSettings::Openai,
    };
    let data = std::iter::once(openai)
        .chain(api.providers.custom().map(summary))
        .collect();
    Ok(ModelProviderListResponse {
        can_change_default: false,
        data,
        default_provider_id: api.config.model_provider.clone(),
    })
}

/// A custom provider as the list shows it: its URL without the query (which may carry a
/// key), and how its bearer is had, never the bearer.
fn summary(p: &ModelProvider) -> ModelProviderSummary {
    let auth = match (&p.auth, &p.env_key) {
        (Some(_), _) => GatewayAuth::ExternallyConfigured { env_key: None },
        (None, Some(var)) => GatewayAuth::EnvironmentVariable {
            env_key: var.clone(),
        },
        (None, None) if p.requires_openai_auth => {
            GatewayAuth::ExternallyConfigured { env_key: None }
        }
        (None, None) => GatewayAuth::None,
    };
    ModelProviderSummary {
        id: p.id.clone(),
        name: p.name.clone(),
        base_url: p.base_url.clone(),
        can_edit: false,
        settings: ProviderSettings::CustomGateway { auth },
    }
}

/// Through the backend's 401 loop, as `account/rateLimits/read`.
pub(super) async fn security_setup(
    api: &Api,
    ctx: &RequestContext,
    _p: GetAccountSecuritySetupParams,
) -> Result<GetAccountSecuritySetupResponse, ApiError> {
    const FAILED: &str = "failed to read the account's security setup";
    api.require_chatgpt(NeedsChatgpt {
        signed_out: "codex account authentication required to read the security setup",
        api_key: "chatgpt authentication required to read the security setup",
        failed: FAILED,
    })
    .await?;
    let caller = api.caller(ctx)?;
    api.backend
        .security_setup(&caller)
        .await
        .map_err(|error| ApiError::Backend {
            what: FAILED,
            error,
        })
}

/// authbridge fetches no workspace messages: the feature reads as off, with none.
pub(super) async fn workspace_messages(
    _api: &Api,
    _ctx: &RequestContext,
    _p: GetWorkspaceMessagesParams,
) -> Result<GetWorkspaceMessagesResponse, ApiError> {
    Ok(GetWorkspaceMessagesResponse {
        feature_enabled: false,
        messages: vec![],
    })
}

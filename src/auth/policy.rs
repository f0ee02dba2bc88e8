//! Who may sign in: `forced_login_method` and `forced_chatgpt_workspace_id`.
//! Messages say what was refused and what to do instead.

use super::storage::Stored;
use crate::vocabulary::ForcedLoginMethod;

#[derive(Debug, Clone, Default)]
pub(crate) struct Policy {
    pub workspaces: Option<Vec<String>>,
    pub login_method: Option<ForcedLoginMethod>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum PolicyError {
    #[error("External ChatGPT auth is disabled. Use API key login instead.")]
    ExternalDisabled,
    #[error("ChatGPT login is disabled. Use API key login instead.")]
    ChatgptDisabled,
    #[error("API key login is disabled. Use ChatGPT login instead.")]
    ApiKeyDisabled,
    #[error(
        "External auth is active. Use account/login/start (chatgptAuthTokens) to update it or account/logout to clear it."
    )]
    ExternalActive,
    #[error("External auth must use one of workspace(s) {allowed:?}, but received {received:?}.")]
    Workspace {
        allowed: Vec<String>,
        received: String,
    },
    #[error(
        "External auth must use one of workspace(s) {0:?}, but the tokens name no workspace; supply chatgptAccountId."
    )]
    WorkspaceMissing(Vec<String>),
}

/// Why a managed sign-in's account is refused, in the reference's words.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ManagedWorkspaceError {
    #[error(
        "Login is restricted to a specific workspace, but the token did not include an chatgpt_account_id claim."
    )]
    Missing,
    #[error("Login is restricted to workspace id(s) {0}.")]
    Outside(String),
}

impl Policy {
    /// Whether a stored credential may be used: one of a forbidden kind is not (and is
    /// not deleted either: it is not ours to judge for other programs sharing the home).
    pub fn admits(&self, stored: &Stored) -> bool {
        match stored {
            Stored::ApiKey(_) => self.allow_api_key().is_ok(),
            Stored::Chatgpt(t) => {
                self.allow_managed_chatgpt().is_ok()
                    && self.check_workspace(t.account_id.as_deref()).is_ok()
            }
        }
    }

    /// The check of a managed sign-in's ID token (browser, device code, CLI).
    pub fn check_managed_workspace(
        &self,
        account_id: Option<&str>,
    ) -> Result<(), ManagedWorkspaceError> {
        let Some(allowed) = &self.workspaces else {
            return Ok(());
        };
        match account_id {
            None => Err(ManagedWorkspaceError::Missing),
            Some(id) if allowed.iter().any(|a| a == id) => Ok(()),
            Some(_) => Err(ManagedWorkspaceError::Outside(allowed.join(", "))),
        }
    }

    pub fn allow_external(&self) -> Result<(), PolicyError> {
        match self.login_method {
            Some(ForcedLoginMethod::Api) => Err(PolicyError::ExternalDisabled),
            _ => Ok(()),
        }
    }

    pub fn allow_managed_chatgpt(&self) -> Result<(), PolicyError> {
        match self.login_method {
            Some(ForcedLoginMethod::Api) => Err(PolicyError::ChatgptDisabled),
            _ => Ok(()),
        }
    }

    pub fn allow_api_key(&self) -> Result<(), PolicyError> {
        match self.login_method {
            Some(ForcedLoginMethod::Chatgpt) => Err(PolicyError::ApiKeyDisabled),
            _ => Ok(()),
        }
    }

    /// Every id the tokens carry (the declared account and the token's own claim) must be
    /// in the allowed set; a token that names no workspace cannot satisfy the policy.
    pub fn check_workspace<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), PolicyError> {
        let Some(allowed) = &self.workspaces else {
            return Ok(());
        };
        let mut seen = false;
        for id in ids {
            seen = true;
            if !allowed.iter().any(|a| a == id) {
                return Err(PolicyError::Workspace {
                    allowed: allowed.clone(),
                    received: id.to_owned(),
                });
            }
        }
        if seen {
            Ok(())
        } else {
            Err(PolicyError::WorkspaceMissing(allowed.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_policy_checks_every_id() {
        let p = Policy {
            workspaces: Some(vec!["ws-1".into()]),
            login_method: None,
        };
        assert!(p.check_workspace(["ws-1"]).is_ok());
        assert!(p.check_workspace(["ws-1", "ws-1"]).is_ok());
        let e = p.check_workspace(["ws-1", "ws-2"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"External auth must use one of workspace(s) ["ws-1"], but received "ws-2"."#
        );
        assert!(matches!(
            p.check_workspace([]),
            Err(PolicyError::WorkspaceMissing(_))
        ));
        assert!(Policy::default().check_workspace([]).is_ok());
    }

    #[test]
    fn login_method_policy() {
        let api = Policy {
            workspaces: None,
            login_method: Some(ForcedLoginMethod::Api),
        };
        assert_eq!(api.allow_external(), Err(PolicyError::ExternalDisabled));
        assert_eq!(
            api.allow_managed_chatgpt(),
            Err(PolicyError::ChatgptDisabled)
        );
        assert!(api.allow_api_key().is_ok());
        let chatgpt = Policy {
            workspaces: None,
            login_method: Some(ForcedLoginMethod::Chatgpt),
        };
        assert_eq!(chatgpt.allow_api_key(), Err(PolicyError::ApiKeyDisabled));
        assert!(chatgpt.allow_external().is_ok());
    }
}

//! Managed requirements: `/etc/codex/requirements.toml`, the file an administrator uses to
//! lock sign-in down on a company's machines. Read as Codex reads the keys authbridge
//! enforces (`allowed_login_methods`, `allowed_chatgpt_workspaces`, and the exact
//! `cli_auth_credentials_store` and `chatgpt_base_url`), and applied after `config.toml`,
//! `-c` and the environment, so nothing a user sets can loosen them. Codex's other
//! requirement keys (sandboxes, approvals, MCP servers…) are outside authbridge's job and
//! are left alone.
//!
//! Because everything else is built from the one validated `Config`, every way in (the
//! methods, the command line, the broker) obeys them without a check of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::vocabulary::{CredentialsStore, ForcedLoginMethod};

/// Where administrators put the file.
pub const SYSTEM_PATH: &str = "/etc/codex/requirements.toml";

/// Read only when the system file does not exist, so that it cannot be used to step around
/// an administrator's file; the tests (and unusual installations) name theirs with it.
pub const PATH_VARIABLE: &str = "AUTHBRIDGE_REQUIREMENTS_FILE";

/// The requirements in effect, with the file they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    pub path: PathBuf,
    pub allowed_login_methods: Option<Vec<ForcedLoginMethod>>,
    pub allowed_chatgpt_workspaces: Option<Vec<String>>,
    pub cli_auth_credentials_store: Option<CredentialsStore>,
    pub chatgpt_base_url: Option<String>,
}

/// Why the requirements stop start-up; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum RequirementsError {
    #[error("cannot read the requirements file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("invalid requirements file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("the requirements file {path} {reason}")]
    Conflict { path: PathBuf, reason: String },
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    allowed_login_methods: Option<Vec<ForcedLoginMethod>>,
    #[serde(default)]
    allowed_chatgpt_workspaces: Option<Workspaces>,
    #[serde(default)]
    cli_auth_credentials_store: Option<CredentialsStore>,
    #[serde(default)]
    chatgpt_base_url: Option<String>,
}

/// A list of ids, or Codex's table of id → allowed.
#[derive(Deserialize)]
#[serde(untagged)]
enum Workspaces {
    List(Vec<String>),
    Table(BTreeMap<String, bool>),
}

impl Requirements {
    /// The file in effect, if any: the system one, else the one `var` names.
    pub fn load(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, RequirementsError> {
        let system = Path::new(SYSTEM_PATH);
        let path = if system.exists() {
            system.to_path_buf()
        } else {
            match var(PATH_VARIABLE) {
                Some(path) => PathBuf::from(path),
                None => return Ok(None),
            }
        };
        let bytes = crate::regular_file::read(&path).map_err(|e| RequirementsError::Read {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let invalid = |reason: String| RequirementsError::Invalid {
            path: path.clone(),
            reason,
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| invalid("not UTF-8".into()))?;
        let raw: Raw = toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
        let workspaces = raw.allowed_chatgpt_workspaces.map(|w| match w {
            Workspaces::List(ids) => ids,
            Workspaces::Table(ids) => ids
                .into_iter()
                .filter_map(|(id, allowed)| allowed.then_some(id))
                .collect(),
        });
        let workspaces = workspaces.map(|ids| {
            ids.into_iter()
                .map(|id| id.trim().to_owned())
                .filter(|id| !id.is_empty())
                .collect::<Vec<_>>()
        });
        Ok(Some(Self {
            path,
            allowed_login_methods: raw.allowed_login_methods,
            allowed_chatgpt_workspaces: workspaces,
            cli_auth_credentials_store: raw.cli_auth_credentials_store,
            chatgpt_base_url: raw.chatgpt_base_url,
        }))
    }

    /// The login method the configuration may force under these requirements: the
    /// configured one if allowed, the only allowed one when there is one, none when both
    /// are allowed. A configured method they forbid, or an empty list, stops start-up.
    pub fn login_method(
        &self,
        configured: Option<ForcedLoginMethod>,
    ) -> Result<Option<ForcedLoginMethod>, RequirementsError> {
        let Some(allowed) = &self.allowed_login_methods else {
            return Ok(configured);
        };
        match (configured, allowed.as_slice()) {
            (_, []) => Err(self.conflict("allows no login method (allowed_login_methods = [])")),
            (Some(method), _) if !allowed.contains(&method) => Err(self.conflict(&format!(
                "does not allow forced_login_method = {:?} (allowed_login_methods = {:?})",
                name(method),
                allowed.iter().map(|m| name(*m)).collect::<Vec<_>>()
            ))),
            (Some(method), _) => Ok(Some(method)),
            (None, [only]) => Ok(Some(*only)),
            (None, _)
                if allowed.contains(&ForcedLoginMethod::Chatgpt)
                    && allowed.contains(&ForcedLoginMethod::Api) =>
            {
                Ok(None)
            }
            (None, [first, ..]) => Ok(Some(*first)),
        }
    }

    /// The workspaces sign-in is held to: the configured ones that are allowed, else all
    /// the allowed ones. None left stops start-up (fail closed, as Codex).
    pub fn workspaces(
        &self,
        configured: Option<Vec<String>>,
    ) -> Result<Option<Vec<String>>, RequirementsError> {
        let Some(allowed) = &self.allowed_chatgpt_workspaces else {
            return Ok(configured);
        };
        let effective: Vec<String> = match configured {
            Some(configured) => configured
                .into_iter()
                .filter(|id| allowed.contains(id))
                .collect(),
            None => allowed.clone(),
        };
        if effective.is_empty() {
            return Err(self.conflict(
                "leaves no ChatGPT workspace to sign in to (allowed_chatgpt_workspaces and \
                 forced_chatgpt_workspace_id have none in common)",
            ));
        }
        Ok(Some(effective))
    }

    fn conflict(&self, reason: &str) -> RequirementsError {
        RequirementsError::Conflict {
            path: self.path.clone(),
            reason: reason.to_owned(),
        }
    }
}

fn name(method: ForcedLoginMethod) -> &'static str {
    match method {
        ForcedLoginMethod::Chatgpt => "chatgpt",
        ForcedLoginMethod::Api => "api",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requirements(methods: Option<Vec<ForcedLoginMethod>>, ws: Option<&[&str]>) -> Requirements {
        Requirements {
            path: PathBuf::from("requirements.toml"),
            allowed_login_methods: methods,
            allowed_chatgpt_workspaces: ws.map(|w| w.iter().map(|s| s.to_string()).collect()),
            cli_auth_credentials_store: None,
            chatgpt_base_url: None,
        }
    }

    #[test]
    fn the_login_method_narrows_to_what_is_allowed_and_a_conflict_names_the_file() {
        use ForcedLoginMethod::*;
        let only_chatgpt = requirements(Some(vec![Chatgpt]), None);
        assert_eq!(only_chatgpt.login_method(None).unwrap(), Some(Chatgpt));
        assert_eq!(
            only_chatgpt.login_method(Some(Chatgpt)).unwrap(),
            Some(Chatgpt)
        );
        let e = only_chatgpt
            .login_method(Some(Api))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("requirements.toml") && e.contains("\"api\""),
            "{e}"
        );
        let both = requirements(Some(vec![Api, Chatgpt]), None);
        assert_eq!(both.login_method(None).unwrap(), None);
        assert!(requirements(Some(vec![]), None).login_method(None).is_err());
    }

    #[test]
    fn workspaces_are_the_configured_ones_allowed_else_all_allowed_and_none_left_fails() {
        let r = requirements(None, Some(&["ws-a", "ws-b"]));
        assert_eq!(
            r.workspaces(None).unwrap(),
            Some(vec!["ws-a".into(), "ws-b".into()])
        );
        assert_eq!(
            r.workspaces(Some(vec!["ws-b".into(), "ws-x".into()]))
                .unwrap(),
            Some(vec!["ws-b".into()])
        );
        assert!(r.workspaces(Some(vec!["ws-x".into()])).is_err());
    }
}

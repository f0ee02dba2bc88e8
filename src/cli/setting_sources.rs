//! Where each setting `doctor` shows came from: `config.toml`, then every `-c` in order, the
//! last layer winning as `Config::load` applies them. Keys not listed are defaults.

use std::path::Path;

use serde::Serialize;

/// The top-level keys of `config.toml` authbridge reads; everything under `[authbridge]`
/// is its own. Codex's other keys are none of its business and are not listed.
const TOP_LEVEL_KEYS: &[&str] = &[
    "chatgpt_base_url",
    "forced_chatgpt_workspace_id",
    "forced_login_method",
    "auth_issuer",
    "cli_auth_credentials_store",
    "model",
];

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Setting {
    pub key: String,
    /// `config.toml` or `-c` (the last layer that set it); keys not listed are defaults.
    pub source: &'static str,
    /// The layers a later one replaced.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overridden: Vec<&'static str>,
}

/// Keys `table` sets that authbridge reads, dotted.
fn keys_in(table: &toml::Table) -> Vec<String> {
    let mut keys: Vec<String> = TOP_LEVEL_KEYS
        .iter()
        .filter(|k| table.contains_key(**k))
        .map(|k| (*k).to_owned())
        .collect();
    if let Some(own) = table.get("authbridge").and_then(toml::Value::as_table) {
        keys.extend(own.keys().map(|k| format!("authbridge.{k}")));
    }
    keys
}

/// Where each key that is not a default came from: `config.toml`, then `-c` in order.
pub(crate) fn settings(home: &Path, overrides: &[String]) -> Vec<Setting> {
    let file = std::fs::read_to_string(home.join("config.toml"))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .unwrap_or_default();
    let mut found: Vec<Setting> = keys_in(&file)
        .into_iter()
        .map(|key| Setting {
            key,
            source: "config.toml",
            overridden: vec![],
        })
        .collect();
    for o in overrides {
        let Some((key, _)) = o.split_once('=') else {
            continue;
        };
        let key = key.split('.').map(str::trim).collect::<Vec<_>>().join(".");
        match found.iter_mut().find(|s| s.key == key) {
            Some(s) if s.source == "-c" => {}
            Some(s) => {
                s.overridden.push(s.source);
                s.source = "-c";
            }
            None => found.push(Setting {
                key,
                source: "-c",
                overridden: vec![],
            }),
        }
    }
    found.sort_by(|a, b| a.key.cmp(&b.key));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_says_which_layer_set_it_and_which_it_replaced() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(
            home.path().join("config.toml"),
            "model = \"m\"\nmodel_providers = {}\n[authbridge]\nrevoke_replaced = true\n",
        )
        .unwrap();
        let found = settings(
            home.path(),
            &[
                "authbridge.revoke_replaced=false".into(),
                "auth_issuer=x".into(),
            ],
        );
        let shown: Vec<_> = found
            .iter()
            .map(|s| (s.key.as_str(), s.source, s.overridden.clone()))
            .collect();
        assert_eq!(
            shown,
            [
                ("auth_issuer", "-c", vec![]),
                ("authbridge.revoke_replaced", "-c", vec!["config.toml"]),
                ("model", "config.toml", vec![]),
            ]
        );
    }
}
